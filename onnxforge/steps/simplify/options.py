"""The simplify step's options."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal, Optional

from onnxforge.core.errors import UsageError
from onnxforge.core.options import Bytes, Heads, HiddenSize, Names, PosInt, Samples, option
from onnxforge.data.specs import is_shape_value, parse_shapes
from onnxforge.steps.base import CheckOptions


def _check_transformer(name: str) -> None:
    from onnxruntime.transformers.optimizer import MODEL_TYPES

    if name not in MODEL_TYPES:
        raise UsageError(f"unknown transformer type {name!r}", hint="valid: " + ", ".join(sorted(MODEL_TYPES)))


def _check_onnxsim_passes(names) -> None:
    """A pass name onnxsim does not know would skip nothing, silently: refuse it."""
    if not names:
        return
    from onnxforge.core.errors import MissingDependencyError, require_submodule

    try:
        c = require_submodule("onnxsim", "onnxsim_cpp2py_export", "all")
        known = set(c._list_optimizers()) | set(c._list_other_optimizers())
    except (ImportError, AttributeError, MissingDependencyError):  # another onnxsim build, or none: no check
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
