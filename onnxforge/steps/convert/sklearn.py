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

import contextlib
import logging
import re
from dataclasses import replace
from pathlib import Path
from typing import Any, Mapping, Sequence

from onnxforge.core.errors import (
    BadInputError,
    ConversionError,
    MissingDependencyError,
    UsageError,
    first_line,
    require,
    OnnxforgeError,
)
from onnxforge.steps.convert.options import ConvertSklearnOptions
from onnxforge.backends.sklearn.runner import final_estimator, sklearn_runner
from onnxforge.core.types import ParityReport, StepResult, TensorSpec
from onnxforge.backends.sklearn.sources import load_sklearn
from onnxforge.core.options import resolve
from onnxforge.data.specs import parse_spec

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


def _specs_and_data(est, o: ConvertSklearnOptions, notes: list) -> tuple[list[TensorSpec], dict | None]:
    """Input specs and the rows the check runs on: from the sample, --input specs, or
    n_features_in_. The rows keep the sample's own values (float64 stays float64): the
    estimator sees the data as given, the ONNX model the data cast to its input type."""
    import numpy as np

    from onnxforge.data.samples import load_samples

    ftype = "float64" if o.double else "float32"
    if o.sample is not None and not isinstance(o.sample, (str, Path)):
        arr = np.asarray(o.sample)
        return [TensorSpec("X", ftype, (None, arr.shape[1]))], {"X": arr}
    if o.sample is not None and str(o.sample).endswith(".csv"):
        return _csv_specs(est, o.sample, ftype)
    if o.sample is not None:
        arr = np.asarray(next(iter(load_samples(o.sample, names=["X"])[0].values())))
        if arr.ndim != 2:
            raise BadInputError(f"{o.sample}: the sample must be a 2-D matrix [rows, features], got shape {list(arr.shape)}")
        return [TensorSpec("X", ftype, (None, arr.shape[1]))], {"X": arr}
    if o.inputs:
        return [parse_spec(s) for s in o.inputs], None
    n = getattr(est, "n_features_in_", None)
    if n is None:
        raise UsageError("cannot tell the input width", hint="pass --sample X.npy or --input X:float32:?xN")
    notes.append(f"no sample given: input X has {n} features (n_features_in_), checked on generated rows")
    return [TensorSpec("X", ftype, (None, int(n)))], None


def _csv_specs(est, sample, ftype: str) -> tuple[list[TensorSpec], dict]:
    from onnxforge.data.samples import read_csv

    cols = read_csv(sample)
    expected = list(getattr(est, "feature_names_in_", []))
    missing = [c for c in expected if c not in cols]
    if missing:
        raise BadInputError(f"{sample}: missing column(s) {', '.join(missing)} the model was fitted on",
                            hint=f"the model expects: {', '.join(expected)}")
    names = expected or list(cols)
    if not _takes_columns(est):  # one matrix X: skl2onnx refuses one input per column for it
        return _csv_matrix(est, sample, cols, names, ftype)
    specs, data = [], {}
    for c in names:
        v = cols[c]
        specs.append(TensorSpec(c, "str" if v.dtype == object else ftype, (None, 1)))
        data[c] = v.reshape(-1, 1)
    return specs, data


def _takes_columns(est) -> bool:
    """A ColumnTransformer (alone or first in a pipeline) takes one input per column;
    any other estimator one matrix of numbers."""
    from sklearn.compose import ColumnTransformer

    head = est.steps[0][1] if hasattr(est, "steps") and est.steps else est
    return isinstance(head, ColumnTransformer)


def _csv_matrix(est, sample, cols: Mapping[str, Any], names: list, ftype: str) -> tuple[list[TensorSpec], dict]:
    """The CSV's columns as one matrix X, refused here (naming the column and line) when
    it holds what the estimator cannot take: text, or empty cells where NaN is not allowed.
    skl2onnx and scikit-learn failed on them later with their own words (exit 4)."""
    import numpy as np
    from sklearn.utils import get_tags

    text = [c for c in names if cols[c].dtype == object]
    if text:
        raise BadInputError(f"{sample}: column {text[0]!r} is text; {type(est).__name__} takes a matrix of numbers",
                            hint="give numeric columns only, or a pipeline whose ColumnTransformer encodes the text")
    X = np.column_stack([np.asarray(cols[c], dtype=np.float64) for c in names])
    if np.isnan(X).any() and not get_tags(est).input_tags.allow_nan:
        row, col = (int(i) for i in np.argwhere(np.isnan(X))[0])
        raise BadInputError(f"{sample}: column {names[col]!r} line {row + 2} is empty (a missing value); "
                            f"{type(est).__name__} does not take missing values",
                            hint="fill the empty cells, or put an imputer (SimpleImputer) first in the pipeline")
    return [TensorSpec("X", ftype, (None, len(names)))], {"X": X}


def _skl2onnx_options(est, o: ConvertSklearnOptions) -> tuple[dict, Any]:
    """(per-type options: no ZipMap for every classifier, then the user's for the final
    step; target_opset as skl2onnx takes it)."""
    from sklearn.base import is_classifier

    opts: dict = {}
    for e in _all_estimators(est):
        if is_classifier(e) and not type(e).__name__.endswith(("Pipeline", "Search", "CV")):
            opts.setdefault(type(e), {})["zipmap"] = o.zipmap
    if o.options:
        opts.setdefault(type(final_estimator(est)), {}).update(o.options)
    from skl2onnx import get_latest_tested_opset_version

    opset: Any = o.target_opset
    if isinstance(opset, dict):
        opset = {("" if k in ("ai.onnx", "") else k): v for k, v in opset.items()}
        # skl2onnx's converters need the main opset as soon as any domain is given
        # ("op_version must be specified"): --opset ai.onnx.ml=3 alone means skl2onnx's default main one
        opset.setdefault("", get_latest_tested_opset_version())
    if _register_boosting(est):
        # onnxmltools' tree converters emit ai.onnx.ml 3 nodes; skl2onnx must be told
        main = opset.get("") if isinstance(opset, dict) else opset
        opset = {"": main or get_latest_tested_opset_version(), "ai.onnx.ml": 3}
    return opts, opset


def convert_sklearn(source: Any, output: str | Path, options: ConvertSklearnOptions | None = None, /,
                    **kwargs) -> StepResult:
    """Convert a fitted estimator or pipeline and check it against predict /
    predict_proba / transform. Options: ConvertSklearnOptions (object or keywords)."""
    from onnxforge.core.fileio import check_output_path, scratch_dir
    from onnxforge.data.generate import generate_inputs

    o = resolve(ConvertSklearnOptions, options, {k: v for k, v in kwargs.items() if k != "sample"})
    sample = kwargs.get("sample", o.sample)  # a live array is allowed from Python
    o = replace(o, sample=sample) if sample is not o.sample else o
    target = check_output_path(output, force=o.force,
                               inputs=(source if isinstance(source, (str, Path)) else None,
                                       sample if isinstance(sample, (str, Path)) else None))
    est = load_sklearn(source, trust=o.trust, trust_pickle=o.trust_pickle)
    notes: list[str] = []
    specs, data = _specs_and_data(est, o, notes)
    width = getattr(est, "n_features_in_", None)
    if len(specs) == 1 and width is not None and isinstance(specs[0].shape[-1], int) and specs[0].shape[-1] != width:
        raise BadInputError(f"input {specs[0].name} has {specs[0].shape[-1]} features, the model was fitted on {width}",
                            hint="give a sample with the training columns")
    if data is None:
        data = generate_inputs(specs, seed=o.seed, dims={}, default_dim=200, val_ranges={"": (-3.0, 3.0)})
    require("skl2onnx", "sklearn")  # after the cheap refusals (a bad path, sample or file): 2 s of imports
    onx = _convert(est, specs, o, notes)
    opsets = _used_opsets(onx)
    if not o.zipmap and any(out.type.HasField("sequence_type") for out in onx.graph.output):
        notes.append("an output is still a ZipMap sequence (the estimator's converter ignores zipmap=False)")
    from onnxforge.steps.artifacts import finish, save_scratch

    with scratch_dir(target) as tmp:
        save_scratch(onx, tmp / target.name)
        checks = [_parity(est, tmp / target.name, data, specs, o)] if o.check else []
        if not o.check:
            notes.append("parity check skipped (--no-check)")
        return finish(tmp / target.name, target, step="convert:sklearn", passed=all(c.passed for c in checks),
                      options=o, lineage=("convert:sklearn",), checks=checks, notes=notes,
                      metadata={"onnxforge.target_opset": ",".join(f"{k}={v}" for k, v in opsets.items())},
                      details={"estimator": type(est).__name__, "inputs": [str(s) for s in specs],
                               "outputs": [out.name for out in onx.graph.output], "zipmap": o.zipmap,
                               "double": o.double, "opsets": opsets, "rows_checked": int(len(next(iter(data.values()))))})


def _convert(est, specs, o: ConvertSklearnOptions, notes: list):
    """skl2onnx's model, with the opsets it was written for. When the user named no
    ai.onnx.ml opset and skl2onnx's default one is past what it can write for the
    estimator (IsolationForest's LabelEncoder: ai.onnx.ml 4 > 3), convert again with the
    highest it names; an ai.onnx.ml opset the user gave stays theirs (the error names the
    pair that works)."""
    opts, opset = _skl2onnx_options(est, o)
    try:
        onx = _skl2onnx(est, specs, o, opts, opset)
    except Exception as exc:
        ml = _ml_opset_wanted(exc)
        if ml is None:
            raise _conversion_error(est, exc) from None
        pair = {"": _main_opset(opset), "ai.onnx.ml": ml}
        user_ml = isinstance(o.target_opset, dict) and "ai.onnx.ml" in o.target_opset
        try:
            onx = _skl2onnx(est, specs, o, opts, pair)
        except Exception:
            raise _conversion_error(est, exc) from None
        if user_ml:
            raise _conversion_error(est, exc, works=pair) from None
        notes.append(f"opsets ai.onnx {pair['']} + ai.onnx.ml {ml}: skl2onnx cannot write {type(est).__name__} "
                     f"for its default ai.onnx.ml opset, {ml} is the highest it can")
    onx.doc_string = ""
    onx.graph.name = type(est).__name__  # skl2onnx names the graph with a random uuid: reruns must match
    return onx


def _skl2onnx(est, specs, o: ConvertSklearnOptions, opts: dict, opset):
    from skl2onnx import convert_sklearn as _skl_convert

    with _numpy_scalar_attributes():
        return _skl_convert(est, initial_types=_initial_types(specs, o.double), options=opts or None,
                            target_opset=opset)


def _ml_opset_wanted(exc: Exception) -> int | None:
    """The ai.onnx.ml opset skl2onnx asks for when a converter wrote a newer one than it
    supports (skl2onnx's _update_domain_version: "You need to specify
    target_opset={'ai.onnx.ml': 3}")."""
    m = re.search(r"target_opset=\{'ai\.onnx\.ml': (\d+)\}", str(exc))
    return int(m.group(1)) if m else None


def _main_opset(opset) -> int:
    from skl2onnx import get_latest_tested_opset_version

    main = opset.get("") if isinstance(opset, dict) else opset
    return main or get_latest_tested_opset_version()


def _used_opsets(onx) -> dict[str, int]:
    return {(op.domain or "ai.onnx"): op.version for op in onx.opset_import}


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


def _conversion_error(est, exc: Exception, works: Mapping[str, int] | None = None) -> ConversionError:
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
    m = re.search(r"target_opset=\{'([\w.]+)': (\d+)\}", text)
    if works:
        hint = f"it converts with --opset {works['']} --opset ai.onnx.ml={works['ai.onnx.ml']} (or drop --opset ai.onnx.ml)"
    elif m:
        hint = f"pass --opset {'' if m.group(1) == '' else m.group(1) + '='}{m.group(2)}"
    else:
        hint = "try --opset, --double, or --option KEY=VALUE for the estimator"
    return ConversionError(f"skl2onnx failed on {type(est).__name__}: {first_line(exc)}", hint=hint)


def _has_trees(est) -> bool:
    return any(hasattr(e, "estimators_") or hasattr(e, "tree_") or hasattr(e, "_predictors")
               or type(e).__module__.split(".")[0] in _BOOSTING for e in _all_estimators(est))


def _parity(est, model_path: Path, data: Mapping[str, Any], specs, o: ConvertSklearnOptions) -> ParityReport:
    """Every output of the ONNX model against the estimator on the same rows."""
    from onnxforge.backends.onnx.runner import onnx_runner
    from onnxforge.checks.compare import make_tolerance
    from onnxforge.checks.parity import validate

    try:
        cand = onnx_runner(model_path, "cpu", label="onnx")
    except OnnxforgeError as exc:
        hint = ("onnxruntime has no double-precision kernel for this estimator's outputs; drop --double"
                if o.double else "the converter produced a model this onnxruntime cannot run; try --target-opset")
        raise ConversionError(f"the converted model does not load in onnxruntime ({exc.message.split('(', 1)[-1].rstrip(')')})",
                              hint=hint) from None
    ref = sklearn_runner(est, [s.name for s in specs], cand.outputs)
    made = {"source": "generated", "how": f"generated (uniform [-3,3) rows, seed {o.seed})"} if o.sample is None else \
        {"source": "given", "how": f"the sample {o.sample if isinstance(o.sample, (str, Path)) else 'given'}"}
    rep = validate(ref, cand, input_samples=[dict(data)], tolerance=make_tolerance(o.atol, o.rtol), data=made)
    if rep.passed:
        return rep
    why = _neighbour_ties(est, cand, data, rep) or _tree_jumps(est, specs, data, rep, o)
    return replace(rep, problems=rep.problems + (why,)) if why else rep


def _neighbour_ties(est, cand, data: Mapping[str, Any], rep: ParityReport) -> str:
    """A nearest-neighbours model whose labels differ on rows where the k-th and (k+1)-th
    training points are equidistant (integer features make such ties common): which of
    them counts is arbitrary, and ONNX's TopK picks another than scikit-learn."""
    import numpy as np

    final = final_estimator(est)
    k = getattr(final, "n_neighbors", None)
    if not hasattr(final, "kneighbors") or not isinstance(k, int) or len(data) != 1:
        return ""
    X = next(iter(data.values()))
    Xt = est[:-1].transform(X) if hasattr(est, "steps") and len(est.steps) > 1 else X
    dist, _ = final.kneighbors(np.asarray(Xt, dtype=np.float64), n_neighbors=min(k + 1, final.n_samples_fit_))
    if dist.shape[1] <= k:
        return ""
    tied = np.isclose(dist[:, k - 1], dist[:, k], rtol=1e-12, atol=0)
    label = next((d for d in rep.outputs if d.mismatches), None)
    if label is None:
        return ""
    ref = np.asarray(est.predict(X)).reshape(-1)
    from onnxforge.checks.compare import labels_equal
    from onnxforge.checks.parity import cast_floats

    got = np.asarray(cand(cast_floats(data, cand.inputs))[label.name]).reshape(-1)
    differ = ~labels_equal(ref, got)
    on_ties = int((differ & tied).sum())
    if not on_ties or on_ties < differ.sum():
        return ""
    return (f"{on_ties} of {ref.size} labels differ on rows where the source's scores tie (the {k}th and {k + 1}th "
            f"nearest training points are equidistant on {int(tied.sum())} rows, so which one votes is arbitrary; "
            "the probabilities differ on those rows too): this is expected, not a wrong model. Check on rows "
            "without exact distance ties (continuous features), where both pick the same neighbours")


def _tree_jumps(est, specs, data: Mapping[str, Any], rep: ParityReport, o: ConvertSklearnOptions) -> str:
    """A tree model whose float outputs are off on few rows by a jump (the rest agree):
    a value near a split threshold lands on the other side once the ONNX model reads it
    as float32 (thresholds are float32 there too)."""
    if o.double or not _has_trees(est):
        return ""
    bad = [d for d in rep.outputs if not d.passed]
    if not bad:
        return ""
    floats = [d for d in bad if d.mismatches is None]
    if any(d.mismatch_fraction > 0.1 for d in floats):
        return ""  # drift on many rows: not threshold rounding
    worst = max((d.max_abs for d in floats), default=0.0)
    f64 = any(getattr(v, "dtype", None) is not None and v.dtype == "float64" for v in data.values())
    fix = ("convert with --double (this estimator converts and runs in double precision)" if _double_runs(est, specs, o)
           else "fit the model on float32 data (X.astype('float32')): every threshold is then a float32 value "
           "(--double does not help: onnxruntime has no double kernel for this estimator's outputs)")
    return (f"{', '.join(d.name for d in bad)} differ on few rows by a jump"
            + (f" (max error {worst:.3g})" if floats else "") + ": float32 threshold rounding in tree splits "
            "— the ONNX model reads float32, so a value near a split threshold falls on the other side"
            + (" (the sample holds float64 values; check with the float32 data the model will get)" if f64 else "")
            + f"; {fix}")


def _double_runs(est, specs, o: ConvertSklearnOptions) -> bool:
    """Whether --double would help: skl2onnx converts the estimator for double inputs and
    onnxruntime loads the result (it has no double kernel for most tree ensembles)."""
    import onnxruntime as ort

    try:
        onx = _convert(est, specs, replace(o, double=True), [])
        ort.InferenceSession(onx.SerializeToString(), providers=["CPUExecutionProvider"])
        return True
    except Exception:
        return False
