"""The convert step's options, one class per framework (its code: torch.py, sklearn.py)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal, Optional

from onnxforge.core.errors import UsageError
from onnxforge.core.options import Names, Seed, Tokens, Tolerance, option
from onnxforge.data.specs import (check_specs, check_val_ranges, parse_dynamic, parse_literals, parse_opsets,
                                  parse_val_ranges)
from onnxforge.steps.base import OutputOptions, input_norms_option, tol_option
from onnxforge.backends.torch.hf import TASKS as HF_TASKS


def _check_dynamic(items) -> None:
    parse_dynamic(items)


def _check_task(v: str) -> None:
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
    input_norms: dict[str, str] = input_norms_option("Recorded in the model: later checks (validate, quantize) "
                                               "generate that input as normalised images (default: a Hugging Face "
                                               "folder's preprocessor_config.json).")
    task: Optional[str] = option(None, "For a Hugging Face source: the task (Optimum's names: feature-extraction, "
                                       "text-classification, fill-mask, image-classification ...; default: from "
                                       "the config's architecture). text-generation-with-past exports a decoder with "
                                       "its key/value cache (past_key_values.* in, present.* out) and writes the "
                                       "folder's config and tokenizer files beside the model; text2text-generation-with-past "
                                       "exports an encoder-decoder (T5, BART) as encoder_model.onnx beside the "
                                       "decoder with its cache (-o).", toml="model.task",
                                 check=lambda v: _check_task(v), example=("--task", "feature-extraction"))
    generate_tokens: Tokens = option(8, "With --task text-generation-with-past (or text2text-...): greedy-decode this many new tokens "
                                        "with the folder's model and with the ONNX model (feeding its cache back) "
                                        "and require the same token ids.", toml="model.generate_tokens",
                                     example=("--generate-tokens", "4"))
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
    atol: Optional[Tolerance] = tol_option("atol", "1e-4")
    rtol: Optional[Tolerance] = tol_option("rtol", "1e-3")
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
    atol: Optional[Tolerance] = tol_option("atol", "1e-4")
    rtol: Optional[Tolerance] = tol_option("rtol", "1e-3")
    seed: Seed = option(0, "Seed for generated rows.", toml=None, example=("--seed", "3"))
