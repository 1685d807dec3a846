"""scikit-learn -> ONNX through skl2onnx (LightGBM / XGBoost through onnxmltools),
checked against the estimator.

Choices:
- Classifiers export without ZipMap by default: probabilities are a plain
  ``[N, classes]`` float tensor, not a list of dicts (``zipmap=True`` restores it).
- Input types come from ``--sample`` (an .npy matrix -> one input ``X``; a CSV with a
  header -> one ``[N, 1]`` input per column, numeric columns float, others string,
  which is what ColumnTransformer pipelines need) or from ``--input`` specs.
- Parity: labels must match ``predict`` exactly; probabilities, decision values,
  regression outputs, transforms and cluster distances within tolerance; on the
  sample rows, or on generated rows when there is no sample.
"""

from __future__ import annotations

import ast
import contextlib
import csv
import logging
import re
from pathlib import Path
from typing import Any, Mapping, Sequence

from onnxforge.errors import BadInputError, ConversionError, MissingDependencyError, UsageError, first_line, require
from onnxforge.types import ParityReport, StepResult, TensorSpec, Tolerance

log = logging.getLogger("onnxforge")

_BOOSTING = {
    "lightgbm": ("LGBMClassifier", "LGBMRegressor"),
    "xgboost": ("XGBClassifier", "XGBRegressor"),
}


def _all_estimators(est) -> list:
    from sklearn.base import BaseEstimator

    found = [est]
    try:
        params = est.get_params(deep=True)
    except Exception:
        params = {}
    for v in params.values():
        if isinstance(v, BaseEstimator) and all(v is not f for f in found):
            found.append(v)
        elif isinstance(v, (list, tuple)):
            for item in v:
                cand = item[1] if isinstance(item, tuple) and len(item) >= 2 else item
                if isinstance(cand, BaseEstimator) and all(cand is not f for f in found):
                    found.append(cand)
    return found


def _final_estimator(est):
    steps = getattr(est, "steps", None)
    return _final_estimator(steps[-1][1]) if steps else est


def _parse_option_value(v: str):
    try:
        return ast.literal_eval(v)
    except (ValueError, SyntaxError):
        return v


def read_csv(path: str | Path) -> dict[str, Any]:
    """A headed CSV -> {column: array}; numeric columns float64, others str."""
    import numpy as np

    from onnxforge.fileio import check_readable_file

    p = check_readable_file(path, "sample CSV")
    with open(p, newline="") as f:
        rows = list(csv.reader(f))
    if len(rows) < 2 or not rows[0]:
        raise BadInputError(f"{p}: a sample CSV needs a header row and at least one data row")
    header = [h.strip() for h in rows[0]]
    cols: dict[str, Any] = {}
    for j, name in enumerate(header):
        values = [r[j] if j < len(r) else "" for r in rows[1:]]
        try:
            cols[name] = np.array([float(v) for v in values], dtype=np.float64)
        except ValueError:
            cols[name] = np.array(values, dtype=object)
    return cols


def sklearn_runner(est, input_names: Sequence[str] | None = None):
    """A Runner over a fitted estimator, with outputs in skl2onnx's order:
    classifier (label, probabilities), cluster model (label, scores), regressor and
    transformer (variable)."""
    import numpy as np
    from sklearn.base import is_classifier

    final = _final_estimator(est)

    def to_X(feeds: Mapping[str, Any]):
        # float32 values widen to float64 exactly: sklearn sees the values ONNX sees,
        # and estimators fitted on float64 (KMeans) accept them
        arrays = [np.asarray(a, dtype=np.float64) if np.asarray(a).dtype.kind == "f" else a for a in feeds.values()]
        if len(arrays) == 1:
            return arrays[0]
        import pandas as pd

        names = list(input_names or feeds.keys())
        return pd.DataFrame({n: np.asarray(a).reshape(-1) for n, a in zip(names, arrays)})

    def run(feeds: Mapping[str, Any]) -> dict:
        try:
            return predict(to_X(feeds))
        except Exception as exc:
            raise BadInputError(f"the estimator fails on these inputs ({type(exc).__name__}: {first_line(exc)})",
                                hint="check the columns and dtypes against what it was fitted on") from None

    def predict(X) -> dict:
        if is_classifier(est):
            out = {"label": np.asarray(est.predict(X))}
            if hasattr(est, "predict_proba") and _has_proba(est):
                out["probabilities"] = np.asarray(est.predict_proba(X))
            elif hasattr(est, "decision_function"):
                d = np.asarray(est.decision_function(X))
                out["probabilities"] = np.stack([-d, d], axis=1) if d.ndim == 1 else d
            return out
        if hasattr(final, "cluster_centers_") and hasattr(est, "transform") and hasattr(est, "predict"):
            return {"label": np.asarray(est.predict(X)), "scores": np.asarray(est.transform(X))}
        if hasattr(est, "predict"):
            return {"variable": np.asarray(est.predict(X))}
        return {"variable": np.asarray(est.transform(X))}

    return run


def _has_proba(est) -> bool:
    try:
        getattr(est, "predict_proba")
        return True
    except AttributeError:  # SVC(probability=False) raises on access
        return False


def _register_boosting(est) -> bool:
    """LightGBM and XGBoost estimators convert through onnxmltools' converters.
    Returns whether the model holds any."""
    mods = {type(e).__module__.split(".")[0] for e in _all_estimators(est)}
    wanted = [m for m in _BOOSTING if m in mods]
    if not wanted:
        return False
    try:
        import onnxmltools  # noqa: F401
    except ImportError:
        raise MissingDependencyError(
            f"converting {', '.join(wanted)} models needs onnxmltools",
            hint="pip install 'onnxforge[boosting]' (onnxmltools provides the LightGBM/XGBoost converters)",
        ) from None
    from skl2onnx import update_registered_converter
    from skl2onnx.common.shape_calculator import (
        calculate_linear_classifier_output_shapes,
        calculate_linear_regressor_output_shapes,
    )

    if "lightgbm" in wanted:
        import lightgbm
        from onnxmltools.convert.lightgbm.operator_converters.LightGbm import convert_lightgbm

        update_registered_converter(lightgbm.LGBMClassifier, "LightGbmLGBMClassifier",
                                    calculate_linear_classifier_output_shapes, convert_lightgbm,
                                    options={"nocl": [True, False], "zipmap": [True, False, "columns"]})
        update_registered_converter(lightgbm.LGBMRegressor, "LightGbmLGBMRegressor",
                                    calculate_linear_regressor_output_shapes, convert_lightgbm,
                                    options={"split": None})
    if "xgboost" in wanted:
        import xgboost
        from onnxmltools.convert.xgboost.operator_converters.XGBoost import convert_xgboost

        update_registered_converter(xgboost.XGBClassifier, "XGBoostXGBClassifier",
                                    calculate_linear_classifier_output_shapes, convert_xgboost,
                                    options={"nocl": [True, False], "zipmap": [True, False, "columns"]})
        update_registered_converter(xgboost.XGBRegressor, "XGBoostXGBRegressor",
                                    calculate_linear_regressor_output_shapes, convert_xgboost)
    return True


def _initial_types(specs: Sequence[TensorSpec], double: bool):
    from skl2onnx.common import data_types as dt

    table = {
        "float32": dt.FloatTensorType, "float64": dt.DoubleTensorType, "int64": dt.Int64TensorType,
        "int32": dt.Int32TensorType, "str": dt.StringTensorType, "bool": dt.BooleanTensorType,
    }
    out = []
    for s in specs:
        dtype = "float64" if double and s.dtype == "float32" else s.dtype
        if dtype not in table:
            raise UsageError(f"input {s.name}: skl2onnx does not take {dtype}", hint=f"use one of {', '.join(table)}")
        out.append((s.name, table[dtype]([d if isinstance(d, int) else None for d in s.shape])))
    return out


def convert_sklearn(
    source: Any,
    output: str | Path,
    *,
    sample: str | Path | Any | None = None,
    inputs: Sequence[str | TensorSpec] = (),
    zipmap: bool = False,
    options: Mapping[str, str] | None = None,
    target_opset: int | None = None,
    double: bool = False,
    trust: Sequence[str] = (),
    trust_pickle: bool = False,
    check: bool = True,
    tolerance: Tolerance | None = None,
    seed: int = 0,
    rows: int = 200,
    force: bool = False,
    keep_failed: bool = False,
) -> StepResult:
    import numpy as np

    from onnxforge.converters.loading import load_sklearn
    from onnxforge.fileio import check_output_path, scratch_dir
    from onnxforge.specs import generate_inputs, parse_spec
    from onnxforge.validators.parity import DEFAULT_TOLERANCE

    require("skl2onnx", "sklearn")
    from sklearn.base import is_classifier

    target = check_output_path(output, force=force, inputs=(source if isinstance(source, (str, Path)) else None,))
    est = load_sklearn(source, trust=trust, trust_pickle=trust_pickle)
    notes: list[str] = []
    float_t = np.float64 if double else np.float32

    # input specs and parity data
    data: dict[str, Any] | None = None
    if sample is not None and not isinstance(sample, (str, Path)):
        arr = np.asarray(sample)
        specs = [TensorSpec("X", "float64" if double else "float32", (None, arr.shape[1]))]
        data = {"X": arr.astype(float_t)}
    elif sample is not None and str(sample).endswith(".csv"):
        cols = read_csv(sample)
        expected = list(getattr(est, "feature_names_in_", []))
        missing = [c for c in expected if c not in cols]
        if missing:
            raise BadInputError(f"{sample}: missing column(s) {', '.join(missing)} the model was fitted on",
                                hint=f"the model expects: {', '.join(expected)}")
        use = expected or list(cols)
        specs, data = [], {}
        for c in use:
            v = cols[c]
            if v.dtype == object:
                specs.append(TensorSpec(c, "str", (None, 1)))
                data[c] = v.reshape(-1, 1)
            else:
                specs.append(TensorSpec(c, "float64" if double else "float32", (None, 1)))
                data[c] = v.astype(float_t).reshape(-1, 1)
    elif sample is not None:
        from onnxforge.specs import load_samples

        s = load_samples(sample, names=["X"])[0]
        arr = np.asarray(next(iter(s.values())))
        if arr.ndim != 2:
            raise BadInputError(f"{sample}: the sample must be a 2-D matrix [rows, features], got shape {list(arr.shape)}")
        specs = [TensorSpec("X", "float64" if double else "float32", (None, arr.shape[1]))]
        data = {"X": arr.astype(float_t)}
    elif inputs:
        specs = [parse_spec(s) if isinstance(s, str) else s for s in inputs]
    else:
        n = getattr(est, "n_features_in_", None)
        if n is None:
            raise UsageError("cannot tell the input width", hint="pass --sample X.npy or --input X:float32:?xN")
        specs = [TensorSpec("X", "float64" if double else "float32", (None, int(n)))]
        notes.append(f"no sample given: input X has {n} features (n_features_in_), checked on generated rows")
    width = getattr(est, "n_features_in_", None)
    if len(specs) == 1 and width is not None and isinstance(specs[0].shape[-1], int) and specs[0].shape[-1] != width:
        raise BadInputError(f"input {specs[0].name} has {specs[0].shape[-1]} features, the model was fitted on {width}",
                            hint="give a sample with the training columns")
    if data is None:
        data = generate_inputs(specs, seed=seed, dims={}, default_dim=rows, val_ranges={"": (-3.0, 3.0)})

    # skl2onnx options: no ZipMap for every classifier, then the user's for the final step
    opts: dict = {}
    for e in _all_estimators(est):
        if is_classifier(e) and not type(e).__name__.endswith(("Pipeline", "Search", "CV")):
            opts.setdefault(type(e), {})["zipmap"] = zipmap
    if options:
        final = _final_estimator(est)
        opts.setdefault(type(final), {}).update({k: _parse_option_value(v) for k, v in options.items()})
    opset_arg: Any = target_opset
    if _register_boosting(est):
        # onnxmltools' tree converters emit ai.onnx.ml 3 nodes; skl2onnx must be told
        from skl2onnx import get_latest_tested_opset_version

        opset_arg = {"": target_opset or get_latest_tested_opset_version(), "ai.onnx.ml": 3}
    from skl2onnx import convert_sklearn as _skl_convert

    try:
        with _numpy_scalar_attributes():
            onx = _skl_convert(est, initial_types=_initial_types(specs, double), options=opts or None,
                               target_opset=opset_arg)
    except Exception as exc:
        raise _conversion_error(est, exc) from None
    if not zipmap and any(o.type.HasField("sequence_type") for o in onx.graph.output):
        notes.append("an output is still a ZipMap sequence (the estimator's converter ignores zipmap=False)")
    onx.doc_string = ""
    data_bytes = onx.SerializeToString()

    checks: list[ParityReport] = []
    if check:
        checks = [_parity(est, data_bytes, data, [s.name for s in specs], tolerance or DEFAULT_TOLERANCE, double)]
    passed = all(c.passed for c in checks)
    if not check:
        notes.append("parity check skipped (--no-check)")
    from onnxforge.steps import finish, save_scratch

    outputs = [o.name for o in onx.graph.output]
    with scratch_dir(target) as tmp:
        save_scratch(onx, tmp / target.name)
        return finish(tmp / target.name, target, step="convert:sklearn", passed=passed, keep_failed=keep_failed,
                      force=force, external_data=None, lineage=("convert:sklearn",), checks=checks, notes=notes,
                      details={"estimator": type(est).__name__, "inputs": [str(s) for s in specs],
                               "outputs": outputs, "zipmap": zipmap, "double": double,
                               "rows_checked": int(len(next(iter(data.values()))))})


@contextlib.contextmanager
def _numpy_scalar_attributes():
    """skl2onnx 1.20 passes numpy uint8 / bool flags for HistGradientBoosting's
    ``nodes_missing_value_tracks_true``, which protobuf 7 refuses in an ints field.
    While converting, retry such attributes with the flags made Python ints."""
    from onnx import helper

    original = helper.make_attribute

    def tolerant(key, value, *args, **kwargs):
        try:
            return original(key, value, *args, **kwargs)
        except TypeError:
            if isinstance(value, (list, tuple)) and value and all(hasattr(v, "item") or isinstance(v, bool) for v in value):
                return original(key, [int(v) for v in value], *args, **kwargs)
            raise

    helper.make_attribute = tolerant
    try:
        yield
    finally:
        helper.make_attribute = original


def _conversion_error(est, exc: Exception) -> ConversionError:
    text = str(exc)
    m = re.search(r"type '?<class '([\w.]+)'>", text)
    if type(exc).__name__ in ("MissingShapeCalculator", "MissingConverter") or "Unable to find a shape calculator" in text:
        from skl2onnx import supported_converters

        bad = m.group(1).rsplit(".", 1)[-1] if m else "an estimator in the model"
        names = supported_converters(from_sklearn=True)
        return ConversionError(
            f"skl2onnx has no converter for {bad}",
            hint=f"skl2onnx.supported_converters() lists {len(names)}: {', '.join(names)}; "
            "replace the step or register a custom converter",
        )
    return ConversionError(f"skl2onnx failed on {type(est).__name__}: {first_line(exc)}",
                           hint="try --target-opset, --double, or --option KEY=VALUE for the estimator")


def _has_trees(est) -> bool:
    return any(hasattr(e, "estimators_") or hasattr(e, "tree_") or hasattr(e, "_predictors")
               or type(e).__module__.split(".")[0] in _BOOSTING for e in _all_estimators(est))


def _parity(est, model_bytes: bytes, data: Mapping[str, Any], names: Sequence[str], tol: Tolerance,
            double: bool = False) -> ParityReport:
    from dataclasses import replace

    import numpy as np

    from onnxforge.errors import OnnxforgeError
    from onnxforge.runtime import create_session, run_session
    from onnxforge.validators.parity import compare

    try:
        sess = create_session(model_bytes, "cpu")
    except OnnxforgeError as exc:
        hint = ("onnxruntime has no double-precision kernel for this estimator's outputs; drop --double"
                if double else "the converter produced a model this onnxruntime cannot run; try --target-opset")
        raise ConversionError(f"the converted model does not load in onnxruntime ({exc.message.split('(', 1)[-1].rstrip(')')})",
                              hint=hint) from None
    onnx_out = run_session(sess, dict(data))
    ref = sklearn_runner(est, names)(data)
    onnx_names = list(onnx_out)
    if set(ref) != set(onnx_names):
        ref = dict(zip(onnx_names, ref.values()))  # positional: skl2onnx's output order
    for k in list(ref):
        if k in onnx_out and np.asarray(ref[k]).size == np.asarray(onnx_out[k]).size:
            ref[k] = np.asarray(ref[k]).reshape(np.asarray(onnx_out[k]).shape)
    rep = compare(ref, onnx_out, tol, reference=f"sklearn:{type(est).__name__}", candidate="onnx",
                  outputs=[n for n in onnx_names if n in ref and not isinstance(onnx_out[n], list)])
    if not rep.passed and _has_trees(est) and not double:
        hint = ("float32 thresholds can flip tree decisions: fit the model on float32 data "
                "(X.astype('float32')) or convert with --double (regressors)")
        rep = replace(rep, problems=rep.problems + (hint,))
    return rep
