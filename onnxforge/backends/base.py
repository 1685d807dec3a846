"""What every backend shares: the Runner (what maps input arrays to output arrays), and
sources named by a factory (``module:function`` or ``path/file.py:function``), which run
the user's own code by design (docs/security.md).

Backend modules import this module, never ``onnxforge.backends`` itself: that package
imports every backend to dispatch to it.
"""

from __future__ import annotations

import contextlib
import hashlib
import importlib
import importlib.util
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Mapping

from onnxforge.core.errors import BadInputError, UsageError, first_line
from onnxforge.core.types import TensorSpec


@dataclass(frozen=True)
class Runner:
    label: str
    kind: str  # onnx | openvino | torch | sklearn | saved
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
    # lets go of what the runner holds (an ONNX session and its copy of the weights) once its
    # outputs are in; a later call loads it again. validate() calls it on each side in turn.
    release: Callable[[], None] | None = None

    def __call__(self, feeds: Mapping[str, Any]) -> dict:
        if self.fn is None:
            raise UsageError(f"{self.label} holds saved outputs; it cannot run on new inputs")
        return self.fn(feeds)


def is_factory(spec: str) -> bool:
    """'pkg.mod:fn' or 'path/file.py:fn' (a ':' after the last path separator)."""
    head, sep, fn = spec.rpartition(":")
    return bool(sep and head and fn.isidentifier() and not Path(spec).exists())


@contextlib.contextmanager
def cwd_importable():
    """The current directory on sys.path while a user's module or a trusted pickle's
    classes are imported: `python -m onnxforge` has it there, the `onnxforge` console
    script does not, and the same command must work under both."""
    cwd = str(Path.cwd())
    with _on_path(None if "" in sys.path or cwd in sys.path else cwd):
        yield


@contextlib.contextmanager
def _no_bytecode():
    """A factory file and what it imports from its folder are the user's inputs: Python,
    importing them, writes __pycache__/*.pyc beside them (unless PYTHONDONTWRITEBYTECODE
    is set), which left a folder in the user's model directory."""
    before, sys.dont_write_bytecode = sys.dont_write_bytecode, True
    try:
        yield
    finally:
        sys.dont_write_bytecode = before


@contextlib.contextmanager
def _on_path(folder: str | None):
    """``folder`` first on sys.path for the block (None: nothing changes); a factory file's
    folder stays there while the factory is imported and called (build() may import then)."""
    if folder is not None:
        sys.path.insert(0, folder)
    try:
        yield
    finally:
        if folder in sys.path:
            sys.path.remove(folder)


def _import_factory(head: str, spec: str, is_file: bool):
    try:
        if is_file:
            path = Path(head)
            # a stable name: it ends up in the exported nodes' metadata, and reruns must match
            name = "_onnxforge_factory_" + hashlib.sha256(str(path.resolve()).encode()).hexdigest()[:16]
            spec_ = importlib.util.spec_from_file_location(name, path)
            mod = importlib.util.module_from_spec(spec_)
            sys.modules[name] = mod
            spec_.loader.exec_module(mod)
            return mod
        if "" not in sys.path and str(Path.cwd()) not in sys.path:
            sys.path.insert(0, str(Path.cwd()))  # kept: the factory may import more when called
        return importlib.import_module(head)
    except Exception as exc:
        raise BadInputError(f"cannot import {head!r} for factory {spec} ({type(exc).__name__}: {first_line(exc)})",
                            hint="check the module path; it is imported from the current directory") from None


@_no_bytecode()
def call_factory(spec: str, what: str):
    head, _, fn_name = spec.rpartition(":")
    is_file = head.endswith(".py") or "/" in head or "\\" in head
    if is_file and not Path(head).is_file():
        raise BadInputError(f"factory file not found: {head}", hint="write it as path/to/file.py:function")
    with _on_path(str(Path(head).parent.resolve()) if is_file else None):
        fn = getattr(_import_factory(head, spec, is_file), fn_name, None)
        if fn is None or not callable(fn):
            raise BadInputError(f"{head} has no callable {fn_name!r}", hint=f"define def {fn_name}(): returning {what}")
        try:
            return fn()
        except Exception as exc:
            raise BadInputError(f"factory {spec} raised {type(exc).__name__}: {first_line(exc)}",
                                hint="run the factory by hand to debug it (or pass --debug)") from exc


def source_name(spec: Any) -> str:
    return spec if isinstance(spec, str) else type(spec).__name__
