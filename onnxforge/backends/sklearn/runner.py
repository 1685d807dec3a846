"""A fitted scikit-learn estimator (or pipeline) as a Runner, with its outputs in
skl2onnx's order: classifier (label, probabilities), cluster model (label, scores),
outlier detector (label, scores), regressor and transformer (variable). Given the
ONNX model's output names, the outputs are named by position after them."""

from __future__ import annotations

from typing import Any, Mapping, Sequence

from onnxforge.core.errors import BadInputError, first_line
from onnxforge.backends.base import Runner
from onnxforge.backends.sklearn.sources import load_sklearn


def final_estimator(est):
    steps = getattr(est, "steps", None)
    return final_estimator(steps[-1][1]) if steps else est


def _has_proba(est) -> bool:
    try:
        getattr(est, "predict_proba")
        return True
    except AttributeError:  # SVC(probability=False) raises on access
        return False


def _is_outlier_detector(est) -> bool:
    from sklearn import base

    return base.is_outlier_detector(est) if hasattr(base, "is_outlier_detector") else \
        getattr(est, "_estimator_type", None) == "outlier_detector"


def predict_all(est, X) -> dict:
    """Every output skl2onnx gives this kind of estimator, under skl2onnx's names."""
    import numpy as np
    from sklearn.base import is_classifier

    final = final_estimator(est)
    if is_classifier(est):
        out = {"label": np.asarray(est.predict(X))}
        if hasattr(est, "predict_proba") and _has_proba(est):
            out["probabilities"] = np.asarray(est.predict_proba(X))
        elif hasattr(est, "decision_function"):
            d = np.asarray(est.decision_function(X))
            out["probabilities"] = np.stack([-d, d], axis=1) if d.ndim == 1 else d
        return out
    if _is_outlier_detector(final) and hasattr(est, "decision_function"):
        return {"label": np.asarray(est.predict(X)), "scores": np.asarray(est.decision_function(X))}
    if hasattr(final, "cluster_centers_") and hasattr(est, "transform") and hasattr(est, "predict"):
        return {"label": np.asarray(est.predict(X)), "scores": np.asarray(est.transform(X))}
    if hasattr(est, "predict"):
        return {"variable": np.asarray(est.predict(X))}
    return {"variable": np.asarray(est.transform(X))}


def sklearn_runner(est, input_names: Sequence[str] | None = None, output_names: Sequence[str] | None = None, *,
                   label: str | None = None) -> Runner:
    """Inputs: one matrix, or one [N, 1] column per input (a DataFrame for
    ColumnTransformer pipelines). Floats reach the estimator as float64."""
    import numpy as np

    def to_X(feeds: Mapping[str, Any]):
        arrays = [np.asarray(a, dtype=np.float64) if np.asarray(a).dtype.kind == "f" else a for a in feeds.values()]
        if len(arrays) == 1:
            return arrays[0]
        import pandas as pd

        names = list(input_names or feeds.keys())
        return pd.DataFrame({n: np.asarray(a).reshape(-1) for n, a in zip(names, arrays)})

    def run(feeds: Mapping[str, Any]) -> dict:
        try:
            out = predict_all(est, to_X(feeds))
        except Exception as exc:
            raise BadInputError(f"the estimator fails on these inputs ({type(exc).__name__}: {first_line(exc)})",
                                hint="check the columns and dtypes against what it was fitted on") from None
        if output_names and set(out) != set(output_names) and len(out) == len(output_names):
            out = dict(zip(output_names, out.values()))  # skl2onnx's order, the ONNX model's names
        return out

    from sklearn.base import is_classifier

    names = list(output_names or ("label", "probabilities"))
    ties = {names[0]: names[1]} if is_classifier(est) and len(names) == 2 else None
    return Runner(label=label or f"sklearn:{type(est).__name__}", kind="sklearn", fn=run, label_scores=ties)


def sklearn_source_runner(spec: Any, *, label: str | None = None, trust: Sequence[str] = (),
                          trust_pickle: bool = False, **_ignored) -> Runner:
    est = load_sklearn(spec, trust=trust, trust_pickle=trust_pickle)
    return sklearn_runner(est, label=label)
