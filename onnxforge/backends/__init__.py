"""Backends: one folder per framework (onnx/, torch/, sklearn/) holding what loads and
runs its models. A runner maps input arrays to output arrays — an ONNX model on a
provider, a torch module, a scikit-learn estimator, or saved (golden) outputs; parity
compares two runners (checks/parity.py), and every check in onnxforge goes through it.

A framework registers itself by its package: backends/<framework>/__init__.py declares
``RUNNERS`` (kind -> the function that opens it) and ``SUFFIXES`` (kind -> the file
types that kind opens), and ``frameworks()`` below imports it. Nothing heavy loads
then: torch and sklearn are imported inside the functions that need them. The
conversion to ONNX of each framework is a step (steps/convert/<framework>.py): it checks
its result through checks/, a layer above this one.
"""

from __future__ import annotations

from pathlib import Path
from types import ModuleType
from typing import Any

from onnxforge.backends.base import Runner, is_factory
from onnxforge.core.errors import BadInputError, UsageError
from dataclasses import replace

__all__ = ["RUNTIMES", "Runner", "frameworks", "kind_of", "open_runner"]

RUNTIMES = ("ort", "openvino")  # what runs an ONNX model: ONNX Runtime (on --provider) or OpenVINO's CPU device


def frameworks() -> dict[str, ModuleType]:
    """Every framework package, by name (each declares RUNNERS and SUFFIXES)."""
    from onnxforge.backends import onnx, openvino, sklearn, torch

    return {"onnx": onnx, "torch": torch, "sklearn": sklearn, "openvino": openvino}


def _runners() -> dict[str, Any]:
    return {kind: make for fw in frameworks().values() for kind, make in fw.RUNNERS.items()}


def _suffixes() -> dict[str, str]:
    """File suffix -> the kind that opens it, for the sources frameworks declare."""
    return {s: kind for fw in frameworks().values() for kind, ss in fw.SUFFIXES.items() for s in ss}


def kind_of(spec: str) -> str:
    """onnx, saved, hf, factory, or a framework's kind (torch, sklearn), from the argument's form."""
    suffixes = _suffixes()
    p = Path(spec)
    if str(spec).startswith("hf:") or (p.is_dir() and (p / "config.json").is_file()):
        return "hf"
    if p.suffix == ".onnx" or (p.is_file() and p.suffix not in (".npz", ".npy", ".py", *suffixes)):
        return "onnx"
    if p.suffix == ".npz" or p.is_dir():
        return "saved"
    if is_factory(spec):
        return "factory"
    if p.suffix in suffixes:
        return suffixes[p.suffix]
    if not p.exists():
        raise BadInputError(f"not found: {p}", hint="check the path")
    raise BadInputError(f"cannot tell what {spec} is: not an ONNX model, saved outputs, or a torch or sklearn source",
                        hint="give a .onnx, .npz, .pt2, TorchScript, .skops, or a factory module:function")


def open_runner(spec: Any, provider: str = "cpu", *, kind: str | None = None, threads: int | None = None,
                label: str | None = None, runtime: str = "ort", ov_precision: str = "auto",
                **source_options) -> Runner:
    """A runner from a command-line argument (or a live model object).

    ``runtime`` openvino runs an ONNX model on OpenVINO (at ``ov_precision``) instead of
    ONNX Runtime. ``source_options`` go to torch and sklearn sources (weights,
    trust_pickle, trust)."""
    if runtime == "openvino":
        if provider != "cpu":
            raise UsageError(f"--provider {provider} picks ONNX Runtime's execution provider; OpenVINO runs on its CPU "
                             "device", hint="drop the provider for the OpenVINO side, or run it on ONNX Runtime")
        return _openvino_runner(spec, kind, threads=threads, label=label, precision=ov_precision)
    if runtime != "ort":
        raise UsageError(f"unknown runtime {runtime!r}", hint="use one of: " + ", ".join(RUNTIMES))
    if kind is None:
        kind = kind_of(spec) if isinstance(spec, (str, Path)) else _object_kind(spec)
    if kind == "factory":
        from onnxforge.backends.base import call_factory

        spec = call_factory(str(spec), "a model")  # called once; its object is the source
        kind = _object_kind(spec)
    runners = _runners()
    if kind not in runners:
        raise UsageError(f"unknown runner kind {kind!r}", hint="use one of: " + ", ".join(runners))
    make = runners[kind]
    if kind == "onnx":
        return make(spec, provider, threads=threads, label=label)
    if kind == "saved":
        return make(spec)
    return make(spec, label=label, **source_options)


def _openvino_runner(spec: Any, kind: str | None, **options) -> Runner:
    """OpenVINO runs ONNX files only; the val ranges and input norms the converter recorded
    come from the file as for ORT (read by the onnx backend: the frameworks stand apart)."""
    from onnxforge.backends.onnx.runner import input_norms_of, inputs_and_ranges
    from onnxforge.backends.openvino.runner import openvino_runner

    if not isinstance(spec, (str, Path)) or (kind or kind_of(str(spec))) != "onnx":
        raise UsageError(f"--runtime openvino runs ONNX models; {spec if isinstance(spec, (str, Path)) else type(spec).__name__} is not one",
                         hint="convert it first (onnxforge convert), or run this side on ONNX Runtime")
    runner = openvino_runner(spec, **options)
    return replace(runner, val_ranges=inputs_and_ranges(spec)[1], input_norms=input_norms_of(spec))


def _object_kind(obj) -> str:
    names = {c.__module__.split(".")[0] for c in type(obj).__mro__}
    return "torch" if "torch" in names else "sklearn"
