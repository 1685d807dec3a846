"""Runners: what maps input arrays to output arrays — an ONNX model on a provider, a
torch module, a scikit-learn estimator, or saved (golden) outputs. Parity compares
two runners (validators/parity.py); every check in onnxforge goes through it.

Kinds are registered by name -> "module:function" and imported on first use, so
opening an ONNX runner never imports torch or sklearn.
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Mapping

from onnxforge.core.errors import BadInputError, UsageError
from onnxforge.core.types import TensorSpec


@dataclass(frozen=True)
class Runner:
    label: str
    kind: str  # onnx | torch | sklearn | saved
    inputs: tuple[TensorSpec, ...] = ()  # empty: the runner takes its inputs by position
    outputs: tuple[str, ...] = ()  # empty: positional outputs, named by the other side
    fn: Callable[[Mapping[str, Any]], dict] | None = None
    saved_inputs: tuple = ()  # saved runners: the inputs the outputs came from, when known
    saved_outputs: tuple = ()
    path: str | None = None
    provider: str | None = None
    val_ranges: Mapping[str, tuple[float, float]] | None = None  # valid input values (an ONNX model's metadata)
    # a label output -> the score output it is the argmax of (a classifier's probabilities): a
    # label that differs where those scores tie is a tie, not a failure (compare.py)
    label_scores: Mapping[str, str] | None = None
    input_norms: Mapping[str, Any] | None = None  # image normalisations (specs.input_norm; an ONNX model's metadata)

    def __call__(self, feeds: Mapping[str, Any]) -> dict:
        if self.fn is None:
            raise UsageError(f"{self.label} holds saved outputs; it cannot run on new inputs")
        return self.fn(feeds)


def _registry(**kinds: str) -> dict[str, str]:
    return dict(kinds)


RUNNERS = _registry(
    onnx="onnxforge.runners.onnx:onnx_runner",
    saved="onnxforge.runners.saved:saved_runner",
    torch="onnxforge.runners.torch:torch_source_runner",
    sklearn="onnxforge.runners.sklearn:sklearn_source_runner",
    hf="onnxforge.runners.hf:hf_runner",
)

_SOURCE_SUFFIXES = (".npz", ".npy", ".pt", ".pt2", ".pth", ".ts", ".jit", ".bin", ".skops", ".joblib", ".pkl",
                    ".pickle", ".py")


def kind_of(spec: str) -> str:
    """onnx, saved, torch, sklearn or factory, from the argument's form."""
    from onnxforge.runners.sources import SKLEARN_SUFFIXES, TORCH_SUFFIXES, is_factory

    p = Path(spec)
    if str(spec).startswith("hf:") or (p.is_dir() and (p / "config.json").is_file()):
        return "hf"
    if p.suffix == ".onnx" or (p.is_file() and p.suffix not in _SOURCE_SUFFIXES):
        return "onnx"
    if p.suffix == ".npz" or p.is_dir():
        return "saved"
    if is_factory(spec):
        return "factory"
    if p.suffix in SKLEARN_SUFFIXES:
        return "sklearn"
    if p.suffix in TORCH_SUFFIXES:
        return "torch"
    if not p.exists():
        raise BadInputError(f"not found: {p}", hint="check the path")
    raise BadInputError(f"cannot tell what {spec} is: not an ONNX model, saved outputs, or a torch or sklearn source",
                        hint="give a .onnx, .npz, .pt2, TorchScript, .skops, or a factory module:function")


def open_runner(spec: Any, provider: str = "cpu", *, kind: str | None = None, threads: int | None = None,
                label: str | None = None, **source_options) -> Runner:
    """A runner from a command-line argument (or a live model object).

    ``source_options`` go to torch and sklearn sources (weights, trust_pickle, trust)."""
    if kind is None:
        kind = kind_of(spec) if isinstance(spec, (str, Path)) else _object_kind(spec)
    if kind == "factory":
        from onnxforge.runners.sources import call_factory

        spec = call_factory(str(spec), "a model")  # called once; its object is the source
        kind = _object_kind(spec)
    if kind not in RUNNERS:
        raise UsageError(f"unknown runner kind {kind!r}", hint="use one of: " + ", ".join(RUNNERS))
    module, _, attr = RUNNERS[kind].partition(":")
    make = getattr(importlib.import_module(module), attr)
    if kind == "onnx":
        return make(spec, provider, threads=threads, label=label)
    if kind == "saved":
        return make(spec)
    return make(spec, label=label, **source_options)


def _object_kind(obj) -> str:
    names = {c.__module__.split(".")[0] for c in type(obj).__mro__}
    return "torch" if "torch" in names else "sklearn"
