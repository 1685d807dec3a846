"""The step registry: every model-producing step declared once — its function (by
name, imported on first use) and its options as a frozen dataclass (options.py).

The CLI commands, ``--print-step``, the release config schema, ``--dry-run``,
docs/cli-reference.md and docs/release-toml.md come from these declarations. To add an
option to a step, add one field here (see docs/architecture.md); to add a step, add a dataclass
and a ``StepDef``.
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass
from typing import Any, Callable, Literal, Optional

from onnxforge.core.errors import UsageError
from onnxforge.core.options import (Batch, Bytes, CalibrationSamples, Concurrency, Fraction, Heads, HiddenSize, LoadSeconds,
                               MaxBatch, Names, NonNegFloat, Percent, PosFloat, PosInt, Samples, Seconds, Seed, Threads,
                               Tolerance, Trials, option)
from onnxforge.data.specs import (
    check_specs, check_val_ranges, is_per_output_value, is_shape_value, parse_bytes, parse_comma_list, parse_dims,
    parse_dynamic, parse_input_norms, parse_literals, parse_opsets, parse_per_output, parse_shapes, parse_val_ranges,
    check_input_norms,
)


def _tol(what: str, default_text: str):
    return option(None, f"{'Absolute' if what == 'atol' else 'Relative'} tolerance, with per-output overrides: "
                        f"--{what} 1e-4 logits:1e-3 (default: {default_text}).",
                  metavar="[NAME:]VALUE", parse=lambda v: parse_per_output(v, f"--{what}"),
                  several=is_per_output_value, example=(f"--{what}", "0.002", f"--{what}", "logits:0.01"))


def _check_dynamic(items) -> None:
    parse_dynamic(items)


def _input_norms(why: str):
    return option({}, "Image normalisation of a float input: NAME:imagenet (or clip, half) or "
                      f"NAME:MEAN1,MEAN2,MEAN3/STD1,STD2,STD3 (no NAME: every float input). {why}",
                  flag="--input-norm", metavar="NAME:NORM", toml="model.input_norms", parse=parse_input_norms,
                  check=check_input_norms, example=("--input-norm", "x:imagenet"))


def _check_task(v: str) -> None:
    from onnxforge.backends.torch.hf import TASKS as HF_TASKS

    if v not in HF_TASKS:
        raise UsageError(f"unknown task {v!r}", hint="use one of: " + ", ".join(HF_TASKS))


def _check_opset(v: int) -> None:
    import onnx

    newest = onnx.defs.onnx_opset_version()
    if not 7 <= v <= newest:
        raise UsageError(f"opset {v} does not exist here (ai.onnx opsets run from 7 to {newest} in onnx "
                         f"{onnx.__version__})", hint="the dynamo exporter writes opset 18 or newer; the TorchScript "
                                                     "exporter 7 to 20")


def _check_opsets(v) -> None:
    """The ai.onnx opset of --opset 17 / {"ai.onnx": 17, "ai.onnx.ml": 3}: one that does not
    exist is a usage error here, not skl2onnx's failure (exit 4)."""
    main = v if isinstance(v, int) else v.get("ai.onnx", v.get(""))
    try:
        if main is not None:
            _check_opset(main)
    except UsageError as exc:
        raise UsageError(exc.message, hint="drop --opset for skl2onnx's default") from None


# ----------------------------------------------------------------------------- shared groups


@dataclass(frozen=True)
class OutputOptions:
    """How a step writes its model (every model-producing step has these)."""

    external_data: Optional[bool] = option(None, "Weights in a separate NAME.data file (default: only past 2 GB).",
                                           flag="--external-data/--no-external-data", example=("--external-data",))
    keep_failed: bool = option(False, "Write the model even when its check fails, as NAME.failed.onnx.", toml=None,
                               example=("--keep-failed",))
    force: bool = option(False, "Overwrite an existing output (never an input).", toml=None, example=("--force",))


@dataclass(frozen=True)
class CheckOptions(OutputOptions):
    """How a step checks its model against the one before it."""

    inputs: Optional[str] = option(None, "Input data for the checks: .npz, .npy, a folder of NAME.npy, or numbered "
                                         "sample folders.", metavar="PATH", toml=None, path=True)
    seed: Seed = option(0, "Seed for generated inputs.", toml=None, example=("--seed", "3"))
    dims: dict[str, PosInt] = option({}, "Pin a symbolic dim: NAME=VALUE (repeatable).", flag="--dim",
                                     metavar="NAME=VALUE", parse=parse_dims, example=("--dim", "batch=4"))
    atol: Optional[Tolerance] = _tol("atol", "1e-4")
    rtol: Optional[Tolerance] = _tol("rtol", "1e-3")


# ----------------------------------------------------------------------------- convert


@dataclass(frozen=True)
class ConvertTorchOptions(OutputOptions):
    inputs: Names = option((), "Input spec NAME:DTYPE:SHAPE, e.g. x:float32:batchx3x224x224 (repeatable; symbolic "
                               "dims become dynamic axes).", flag="--input", metavar="SPEC", toml="model.inputs",
                           check=check_specs, example=("--input", "x:float32:batchx8"))
    example_inputs: Optional[str] = option(None, "Example inputs from a file (.npz keyed by input name), instead of "
                                                 "--input.", flag="--inputs", metavar="PATH", toml="model.sample",
                                           path=True)
    dynamic: Names = option((), "Dynamic axis NAME:AXIS=LABEL, e.g. x:0=batch (repeatable).", metavar="NAME:AXIS=LABEL",
                            toml="model.dynamic", check=_check_dynamic, example=("--dynamic", "x:0=batch"))
    weights: Optional[str] = option(None, "state_dict for a factory, loaded with weights_only=True.", metavar="PATH",
                                    toml="model.weights", path=True)
    trust_pickle: bool = option(False, "Allow unpickling a whole model (runs arbitrary code from the file).",
                                toml="model.trust_pickle", example=("--trust-pickle",))
    val_ranges: dict[str, tuple[float, float]] = option(
        {}, "Random input range NAME:[LO,HI] (or [LO,HI] for all inputs).", flag="--val-range",
        metavar="NAME:[LO,HI]", toml="model.val_ranges", parse=parse_val_ranges, check=check_val_ranges,
        example=("--val-range", "x:[0,2]"))
    input_norms: dict[str, str] = _input_norms("Recorded in the model: later checks (validate, quantize) "
                                               "generate that input as normalised images (default: a Hugging Face "
                                               "folder's preprocessor_config.json).")
    task: Optional[str] = option(None, "For a Hugging Face source: the task (Optimum's names: feature-extraction, "
                                       "text-classification, fill-mask, image-classification ...; default: from "
                                       "the config's architecture).", toml="model.task",
                                 check=lambda v: _check_task(v), example=("--task", "feature-extraction"))
    allow_download: bool = option(False, "For hf:ORG/NAME: download from the Hugging Face hub when the model is not "
                                         "in the local cache (default: never).", toml="model.allow_download",
                                  example=("--allow-download",))
    opset: Optional[int] = option(None, "ai.onnx opset (default: the exporter's).", check=lambda v: _check_opset(v),
                                  aliases=("--target-opset",), example=("--opset", "17"))
    exporter: Literal["auto", "dynamo", "torchscript"] = option(
        "auto", "auto (dynamo, then TorchScript on failure), dynamo, torchscript.", example=("--exporter", "dynamo"))
    input_names: Names = option((), "ONNX input names, in forward() order (repeatable).", flag="--input-name",
                                example=("--input-name", "x"))
    output_names: Names = option((), "ONNX output names, in flattened order (repeatable).", flag="--output-name",
                                 example=("--output-name", "y"))
    check: bool = option(True, "Check the ONNX model against the module (--no-check turns it off; the report says "
                               "so).", flag="--check/--no-check", example=("--no-check",))
    atol: Optional[Tolerance] = _tol("atol", "1e-4")
    rtol: Optional[Tolerance] = _tol("rtol", "1e-3")
    seed: Seed = option(0, "Seed for generated example inputs.", toml=None, example=("--seed", "3"))


@dataclass(frozen=True)
class ConvertSklearnOptions(OutputOptions):
    sample: Optional[str] = option(None, "Sample data: X.npy / .npz (one input X) or a headed CSV (one input per "
                                         "column).", metavar="PATH", toml="model.sample", path=True)
    inputs: Names = option((), "Input spec NAME:DTYPE:SHAPE (repeatable), instead of --sample.", flag="--input",
                           metavar="SPEC", toml="model.inputs", check=check_specs,
                           example=("--input", "X:float32:?x4"))
    trust: Names = option((), "A type a .skops file may load (repeatable).", metavar="TYPE", toml="model.trust",
                          example=("--trust", "sklearn.linear_model.LogisticRegression"))
    trust_pickle: bool = option(False, "Allow loading .joblib/.pkl pickles (runs arbitrary code from the file).",
                                toml="model.trust_pickle", example=("--trust-pickle",))
    zipmap: bool = option(False, "Classifier probabilities as ZipMap (list of dicts) or a plain tensor (default).",
                          flag="--zipmap/--no-zipmap", example=("--zipmap",))
    options: dict[str, Any] = option({}, "skl2onnx option for the final estimator: KEY=VALUE (repeatable).",
                                     flag="--option", metavar="KEY=VALUE", parse=parse_literals,
                                     example=("--option", "raw_scores=True"))
    target_opset: Optional[int | dict[str, int]] = option(
        None, "Opsets for skl2onnx: 17, and DOMAIN=VERSION for others (ai.onnx.ml=3).", flag="--opset",
        aliases=("--target-opset",), metavar="[DOMAIN=]N", parse=parse_opsets, check=_check_opsets,
        example=("--opset", "17", "--opset", "ai.onnx.ml=3"))
    double: bool = option(False, "Double-precision inputs (fixes float32 threshold flips in trees).",
                          example=("--double",))
    check: bool = option(True, "Check the ONNX model against the estimator.", flag="--check/--no-check",
                         example=("--no-check",))
    atol: Optional[Tolerance] = _tol("atol", "1e-4")
    rtol: Optional[Tolerance] = _tol("rtol", "1e-3")
    seed: Seed = option(0, "Seed for generated rows.", toml=None, example=("--seed", "3"))


# ----------------------------------------------------------------------------- graph steps


def _check_transformer(name: str) -> None:
    from onnxruntime.transformers.optimizer import MODEL_TYPES

    if name not in MODEL_TYPES:
        raise UsageError(f"unknown transformer type {name!r}", hint="valid: " + ", ".join(sorted(MODEL_TYPES)))


def _check_onnxsim_passes(names) -> None:
    """A pass name onnxsim does not know would skip nothing, silently: refuse it."""
    if not names:  # nothing to check; importing onnxsim 0.8 imports torch (about 3 s)
        return
    try:
        from onnxsim import onnxsim_cpp2py_export as c

        known = set(c._list_optimizers()) | set(c._list_other_optimizers())
    except (ImportError, AttributeError):  # another onnxsim build: it cannot tell us, so we cannot check
        return
    unknown = [n for n in names if n not in known]
    if unknown:
        raise UsageError(f"onnxsim has no pass {unknown[0]!r}",
                         hint="its passes: " + ", ".join(sorted(known)[:12]) + ", ... (onnxsim --list-default-optimizers)")


@dataclass(frozen=True)
class SimplifyOptions(CheckOptions):
    onnxsim: bool = option(True, "Run onnxsim (constant folding, shape inference, dead nodes, fusions).",
                           flag="--onnxsim/--no-onnxsim", example=("--no-onnxsim", "--ort", "basic"))
    skip: Names = option((), "An onnxsim optimization pass to skip (repeatable).", metavar="PASS",
                         check=lambda v: _check_onnxsim_passes(v), example=("--skip", "fuse_bn_into_conv"))
    shapes: dict[str, list[PosInt]] = option({}, "Pin an input shape NAME:DIMS (dims stay dynamic otherwise); "
                                                 "several may follow one flag.", flag="--shape",
                                             aliases=("--input-shapes", "--overwrite-input-shape"),
                                             metavar="NAME:DIMS", parse=parse_shapes, several=is_shape_value,
                                             example=("--shape", "x:2x8"))
    max_constant_size: Optional[Bytes] = option(None, "Do not fold constants larger than this many bytes.",
                                                    example=("--max-constant-size", "1024"))
    ort_level: Optional[Literal["basic", "extended", "all"]] = option(
        None, "ONNX Runtime offline optimization: basic (portable), extended or all (ORT-only ops).", flag="--ort",
        metavar="LEVEL", example=("--ort", "extended"))
    transformer: Optional[str] = option(None, "Transformer fusions for this model type (bert, gpt2, vit, ...).",
                                        metavar="TYPE", check=_check_transformer, example=("--transformer", "bert"))
    num_heads: Heads = option(0, "Attention heads (0: detect).", example=("--num-heads", "2"))
    hidden_size: HiddenSize = option(0, "Hidden size (0: detect).", example=("--hidden-size", "32"))
    allow_skip: bool = option(False, "A failed engine is skipped (exit 0, marked in the report) instead of failing.",
                              example=("--allow-skip",))
    samples: Samples = option(1, "Random input samples for each check.", example=("--samples", "2"))


@dataclass(frozen=True)
class Fp16Options(CheckOptions):
    keep_io_types: bool = option(True, "Keep fp32 inputs and outputs (default) or make them fp16.",
                                 flag="--keep-io-types/--fp16-io", example=("--fp16-io",))
    block_ops: Names = option((), "An op type to keep in fp32 (repeatable; added to ORT's default list).",
                              flag="--block-op", metavar="OP", example=("--block-op", "Softmax"))
    block_nodes: Names = option((), "A node name to keep in fp32 (repeatable).", flag="--block-node", metavar="NAME",
                                example=("--block-node", "node_0"))
    samples: Samples = option(1, "Random input samples for the check.", example=("--samples", "2"))
    atol: Optional[Tolerance] = _tol("atol", "1e-2: fp16 keeps about 3 digits")
    rtol: Optional[Tolerance] = _tol("rtol", "1e-2")


IntType = Optional[Literal["int8", "uint8"]]


@dataclass(frozen=True)
class QuantOptions(CheckOptions):
    """What dynamic and static int8 quantization share."""

    weight_type: IntType = option(None, "int8 or uint8 (default: chosen for this CPU).", example=("--weight-type", "uint8"))
    per_channel: bool = option(False, "Per-channel weight scales.", flag="--per-channel/--no-per-channel",
                               example=("--per-channel",))
    reduce_range: Optional[bool] = option(None, "7-bit weights (default: on for x86 without VNNI).",
                                          flag="--reduce-range/--no-reduce-range", example=("--reduce-range",))
    op_types: Names = option((), "Only quantize these op types: MatMul,Gemm,...", metavar="A,B",
                             parse=parse_comma_list, example=("--op-types", "MatMul,Gemm"))
    exclude_nodes: Names = option((), "A node to leave in fp32 (repeatable).", flag="--exclude-node", metavar="NAME",
                                  example=("--exclude-node", "node_0"))
    exclude_ops: Names = option((), "An op type to leave in fp32 (repeatable).", flag="--exclude-op", metavar="TYPE",
                                example=("--exclude-op", "Conv"))
    preprocess: bool = option(True, "Run ORT's quant_pre_process (shape inference and optimization) first.",
                              flag="--preprocess/--no-preprocess", example=("--no-preprocess",))
    check_samples: Samples = option(4, "Random samples for the parity check (when no --inputs).",
                                   example=("--check-samples", "8"))
    input_norms: dict[str, str] = _input_norms("Generated check inputs of that input are normalised images "
                                               "(default: what the converter recorded).")
    allow_generated_data: bool = option(
        False, "Sign an int8 verdict taken on generated inputs (without it, int8 needs --inputs, or real "
               "--calibration data for static).", example=("--allow-generated-data",))
    min_cosine: Optional[Fraction] = option(0.99, "Budget: cosine similarity of every output to fp32 (0 turns it "
                                                  "off).", example=("--min-cosine", "0.995"))
    max_mismatch: Optional[Fraction] = option(None, "Budget: fraction of top-1 labels allowed to change (e.g. 0.01).",
                                              example=("--max-mismatch", "0.02"))
    min_speedup: Optional[NonNegFloat] = option(
        None, "Budget: int8 at least this fast against fp32, timed side by side (default 1.0: never slower; 0 "
              "turns it off; in a release no budget unless set: its latency gate decides).",
        example=("--min-speedup", "1.1"))
    fallback: bool = option(False, "On a failed parity budget, leave the most sensitive nodes in fp32, a few more "
                                   "each trial.", flag="--fallback/--no-fallback", example=("--fallback",))
    max_trials: Trials = option(4, "Trials for --fallback.", example=("--max-trials", "6"))
    bench_seconds: Seconds = option(2.0, "Seconds of interleaved fp32/int8 timing.",
                                     example=("--bench-seconds", "0.5"))
    atol: Optional[Tolerance] = _tol("atol", "off: int8 is judged on cosine; one bound given leaves the other at 0")
    rtol: Optional[Tolerance] = _tol("rtol", "off")


@dataclass(frozen=True)
class DynamicOptions(QuantOptions):
    recipe: Literal["auto", "plain", "fused"] = option(
        "auto", "On a transformer, auto times plain int8 against fused attention that quantizes to QAttention and "
                "keeps the fastest that passes the budget; plain quantizes the graph as given; fused the fused "
                "graph.", example=("--recipe", "plain"))


def _check_calibration(v: str) -> None:
    if not v:
        raise UsageError("empty calibration path", hint="give a .npz, a folder of samples, or 'random'")


@dataclass(frozen=True)
class StaticOptions(QuantOptions):
    calibration: Optional[str] = option(None, "Calibration data: .npz with a sample axis, a folder of samples, or "
                                              "'random' (a smoke test).", metavar="DATA", toml="data.calibration",
                                        path=True, check=_check_calibration, example=("--calibration", "random"))
    method: Literal["minmax", "entropy", "percentile", "distribution"] = option(
        "minmax", "Calibration method: minmax, entropy, percentile, distribution.", example=("--method", "entropy"))
    percentile: Percent = option(99.999, "For --method percentile: the percentile kept (0-100].",
                                 example=("--percentile", "99.9"))
    quant_format: Literal["qdq", "qoperator"] = option(
        "qdq", "qdq (default) or qoperator. (--format is the output format, as everywhere.)", toml="format",
        example=("--quant-format", "qoperator"))
    samples: Optional[CalibrationSamples] = option(None, "Calibration samples to use (default: all).",
                                       example=("--samples", "16"))
    activation_type: IntType = option(None, "int8 or uint8 (default: chosen for this CPU).",
                                      example=("--activation-type", "int8"))
    max_memory: Optional[int | str] = option(None, "Refuse histogram calibration estimated above this (e.g. 4GiB; "
                                                   "default: half the available memory).", metavar="SIZE",
                                             normalize=parse_bytes, example=("--max-memory", "1GiB"))


# ----------------------------------------------------------------------------- packaging and serving


def _check_model_name(name: str) -> None:
    """The name becomes a folder (Triton's repository) and a URL path (MLServer): an
    empty one, '..' or a slash would land the model somewhere else, or nowhere."""
    import re

    if not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9._-]*", name):
        raise UsageError(f"{name!r} is not a usable model name",
                         hint="letters, digits, '.', '_' and '-', starting with a letter or digit (it names a folder)")


def _check_provider(name: str) -> None:
    from onnxforge.backends.onnx.runtime import resolve_provider

    resolve_provider(name)


@dataclass(frozen=True)
class PackageOptions:
    """`onnxforge package` and the release's [package] section (whose ``targets`` list
    names the targets; the other keys are these)."""

    target: Literal["mlflow", "mlserver", "triton"] = option(
        "mlserver", "mlserver (Seldon's server), mlflow (an MLflow model), triton (a model repository).", toml=None,
        example=("--target", "triton"))
    name: Optional[str] = option(None, "Model name in the server (default: the release's name, else the model file's stem).",
                                 check=_check_model_name, example=("--name", "digits"))
    provider: str = option("cpu", "Execution provider the server runs on.", check=lambda v: _check_provider(v),
                           example=("--provider", "cuda"))
    threads: Optional[Threads] = option(None, "Intra-op threads of the served session.", example=("--threads", "2"))
    max_batch_size: MaxBatch = option(64, "Triton's max_batch_size when the model has a batch dim.",
                                       example=("--max-batch-size", "32"))
    mlflow_tracking_uri: Optional[str] = option(None, "mlflow target: log the model to this tracking store "
                                                      "(sqlite:///mlflow.db works offline).",
                                                example=("--mlflow-tracking-uri", "sqlite:///mlflow.db"))
    experiment: str = option("onnxforge", "mlflow target: the experiment of the run.",
                             example=("--experiment", "nightly"))
    register: Optional[str] = option(None, "mlflow target: register the logged model under this name.",
                                     example=("--register", "digits"))
    inputs: Optional[str] = option(None, "Golden inputs (default: the release's validation data, else generated).",
                                   metavar="PATH", toml=None, path=True)
    seed: Seed = option(0, "Seed for generated golden inputs.", toml=None, example=("--seed", "3"))
    dims: dict[str, PosInt] = option({}, "Symbolic dims of generated golden inputs: NAME=VALUE (repeatable).",
                                     flag="--dim", metavar="NAME=VALUE", parse=parse_dims, example=("--dim", "batch=2"))
    atol: Optional[Tolerance] = _tol("atol", "1e-4")
    rtol: Optional[Tolerance] = _tol("rtol", "1e-3")
    keep_failed: bool = option(False, "Write the folder even when its proof fails.", toml=None,
                               example=("--keep-failed",))
    force: bool = option(False, "Replace an existing output folder (never the source).", toml=None,
                         example=("--force",))


@dataclass(frozen=True)
class ServeCheckOptions:
    """`onnxforge serve-check` and the release's [serve_check] gate."""

    concurrency: Concurrency = option(4, "Concurrent clients of the bounded load.", example=("--concurrency", "2"))
    duration: LoadSeconds = option(5.0, "Seconds of load (0: no load).", example=("--duration", "1"))
    protocols: tuple[Literal["rest", "grpc"], ...] = option(("rest", "grpc"), "Protocols to check parity and "
                                                                              "malformed requests on (repeatable).",
                                                            flag="--protocol", metavar="rest|grpc",
                                                            example=("--protocol", "rest"))
    load_protocol: Literal["rest", "grpc"] = option("rest", "Protocol of the load.", example=("--load-protocol", "grpc"))
    batch: Optional[Batch] = option(1, "Rows per load request.", example=("--batch", "2"))
    timeout: Seconds = option(60.0, "Seconds to wait for the server to be ready.", example=("--timeout", "30"))
    max_p99_ms: Optional[PosFloat] = option(None, "Gate: the served p99 under load.", example=("--max-p99-ms", "50"))
    atol: Optional[Tolerance] = _tol("atol", "the package's")
    rtol: Optional[Tolerance] = _tol("rtol", "the package's")
    log_dir: Optional[str] = option(None, "Keep the server's log in this folder.", metavar="DIR", toml=None)
    trust_code: bool = option(False, "Serve a folder whose settings name code other than onnxforge's and MLServer's "
                                     "runtimes, or that holds Python modules (runs that code).", toml=None,
                              example=("--trust-code",))


# ----------------------------------------------------------------------------- the registry


@dataclass(frozen=True)
class StepDef:
    name: str  # "quantize.static"
    function: str  # "module:function", imported on first use
    options: type
    summary: str
    run: str  # the [[steps]] run = value ("" for a command that is not a step)
    source: str = "model"  # the positional argument: "model" (an ONNX file), "source", "package", "folder"
    output: bool = True  # takes -o


def _registry(*defs: StepDef) -> dict[str, StepDef]:
    out: dict[str, StepDef] = {}
    for d in defs:
        if d.name in out:
            raise ValueError(f"step {d.name!r} is declared twice")
        out[d.name] = d
    return out


STEPS = _registry(
    StepDef("convert.torch", "onnxforge.converters.torch:convert_torch", ConvertTorchOptions,
            "Export a torch model to ONNX, then check it against the module on the example inputs and at a second "
            "size of every dynamic axis.", run="convert", source="source"),
    StepDef("convert.sklearn", "onnxforge.converters.sklearn:convert_sklearn", ConvertSklearnOptions,
            "Convert a fitted scikit-learn estimator or pipeline to ONNX, then check it against predict / "
            "predict_proba / transform.", run="convert", source="source"),
    StepDef("simplify", "onnxforge.optimizers.simplify:simplify", SimplifyOptions,
            "Simplify a model (onnxsim, ORT offline optimization, transformer fusions), each step checked.",
            run="simplify"),
    StepDef("quantize.dynamic", "onnxforge.optimizers.quantize:quantize_dynamic", DynamicOptions,
            "int8 weights, activations quantized per call (ORT quantize_dynamic); parity, speed and size against "
            "the fp32 model.", run="quantize.dynamic"),
    StepDef("quantize.static", "onnxforge.optimizers.quantize:quantize_static", StaticOptions,
            "int8 weights and activations with ranges from calibration data (ORT quantize_static).",
            run="quantize.static"),
    StepDef("quantize.fp16", "onnxforge.optimizers.fp16:quantize_fp16", Fp16Options,
            "Convert fp32 weights and activations to fp16 (GPU targets), checked with fp16 tolerances.",
            run="quantize.fp16"),
)

RUN_NAMES = sorted({d.run for d in STEPS.values()})

# Commands with declared options that are not pipeline steps (no [[steps]] entry).
TOOLS = _registry(
    StepDef("package", "onnxforge.serving.package:package", PackageOptions,
            "Package a model or a release folder for a server: an MLflow model, an MLServer (Seldon) model folder, "
            "or a Triton model repository, with golden inputs and outputs, and prove it loads and answers.",
            run="", source="package"),
    StepDef("serve-check", "onnxforge.serving.check:serve_check", ServeCheckOptions,
            "Start a packaged model in a real MLServer on 127.0.0.1, check its answers over REST and gRPC against "
            "the golden outputs, send malformed requests, run a bounded load, and stop it.",
            run="", source="folder", output=False),
)


def step_for(run: str, framework: str | None = None) -> StepDef:
    """The step a ``[[steps]] run = ...`` names (convert depends on the framework)."""
    if run == "convert":
        return STEPS[f"convert.{framework}"]
    for d in STEPS.values():
        if d.run == run:
            return d
    raise KeyError(run)


def function_of(step: StepDef) -> Callable:
    module, _, attr = step.function.partition(":")
    return getattr(importlib.import_module(module), attr)
