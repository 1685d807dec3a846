"""The error tree. Every error a user can cause carries an exit code and a hint.

A failed *check* is not an error: checks return reports with ``passed`` and the CLI
turns ``passed == False`` into exit code 1 (6 when the report's status is
``inconclusive``: a timing gate taken on a loaded machine). Exceptions mean the work
could not be done.
"""

from __future__ import annotations

from enum import IntEnum
import importlib
import importlib.machinery
import importlib.util
import re
import sys


class ExitCode(IntEnum):
    OK = 0
    CHECK_FAILED = 1
    USAGE = 2
    BAD_INPUT = 3
    CONVERSION_FAILED = 4
    MISSING_DEPENDENCY = 5
    INCONCLUSIVE = 6  # a timing gate the machine's load left undecided: neither a pass nor a fail
    INTERNAL = 70
    INTERRUPTED = 130
    TERMINATED = 143  # SIGTERM, as shells report it (128 + 15)


def interrupt_of(exc: BaseException) -> KeyboardInterrupt | None:
    """The Ctrl-C (or Terminated) behind ``exc``, itself or along its causes: one that
    lands in a module import (a dataclass's field set-up, say) comes out as RuntimeError."""
    seen: set[int] = set()
    e: BaseException | None = exc
    while e is not None and id(e) not in seen:
        if isinstance(e, KeyboardInterrupt):
            return e
        seen.add(id(e))
        e = e.__cause__ or e.__context__
    return None


class Terminated(KeyboardInterrupt):
    """SIGTERM, raised where the process is (the CLI's handler), so the same clean-up
    as Ctrl-C runs; here, below the library, so a release can record which it was."""


class OnnxforgeError(Exception):
    exit_code: ExitCode = ExitCode.INTERNAL
    default_hint: str | None = None  # what to do next, when the raising site names nothing better

    def __init__(self, message: str, hint: str | None = None):
        super().__init__(message)
        self.message = message
        self.hint = hint or self.default_hint

    def __str__(self) -> str:
        return self.message


class UsageError(OnnxforgeError):
    """A bad flag value or a combination of flags that makes no sense."""

    exit_code = ExitCode.USAGE
    default_hint = "see the command's --help (and docs/commands.md)"


class BadInputError(OnnxforgeError):
    """A missing or unreadable file, not an ONNX model, wrong shapes or dtypes, bad data."""

    exit_code = ExitCode.BAD_INPUT
    default_hint = "fix or replace the input the message names (`onnxforge inspect MODEL` shows what a model takes)"


class ConversionError(OnnxforgeError):
    """The exporter, simplifier or quantizer failed; the message wraps its error."""

    exit_code = ExitCode.CONVERSION_FAILED
    default_hint = "rerun with --debug for the tool's traceback"


class MissingDependencyError(OnnxforgeError):
    """An optional package or an execution provider is not available."""

    exit_code = ExitCode.MISSING_DEPENDENCY
    default_hint = "`onnxforge doctor` shows what is installed and which providers initialise"


def require(module: str, extra: str):
    """Import an optional dependency or raise MissingDependencyError naming the extra."""
    try:
        return importlib.import_module(module)
    except ImportError as exc:
        raise MissingDependencyError(
            f"{module} is not installed ({exc})",
            hint=f"pip install 'onnxforge[{extra}]'",
        ) from exc


def require_submodule(package: str, name: str, extra: str):
    """``package.name`` without running ``package/__init__.py`` first, where that
    ``__init__`` imports far more than the submodule needs: onnxsim 0.8's imports some
    300 modules, torch among them (3.8 s against 0.7 s for its simplifier), and
    ``onnxruntime.tools``' imports torch for a helper (2.6 s of every quantize). The
    package is registered with its ``__init__`` deferred to the first attribute anything
    else asks of it (a user's ``onnxsim.simplify``), so it stays whole; where it is
    imported already, or looks unusual, this is a plain import."""
    if package not in sys.modules:
        parent, _, last = package.rpartition(".")
        try:
            spec = importlib.util.find_spec(package)
        except ImportError:
            spec = None
        if spec is None or spec.loader is None or not spec.submodule_search_locations:
            return require(f"{package}.{name}", extra)
        pkg = importlib.util.module_from_spec(spec)
        places, ran = list(spec.submodule_search_locations), []

        def _complete(attr: str):
            # a submodule (``from . import backend`` asks first) or a probe is no reason to run it
            if ran or attr.startswith("__") or importlib.machinery.PathFinder.find_spec(attr, places) is not None:
                raise AttributeError(f"module {package!r} has no attribute {attr!r}")
            ran.append(True)
            spec.loader.exec_module(pkg)
            return getattr(pkg, attr)

        pkg.__getattr__ = _complete
        sys.modules[package] = pkg
        if parent:
            setattr(sys.modules[parent], last, pkg)
    return require(f"{package}.{name}", extra)


def first_line(exc: BaseException, limit: int = 300) -> str:
    """The first line of an exception's message (ORT's '[ONNXRuntimeError] : N : X :'
    prefix dropped), or its type name: what a one-line error shows of a wrapped error."""
    text = str(exc).strip()
    line = text.splitlines()[0] if text else type(exc).__name__
    return re.sub(r"^\[ONNXRuntimeError\] : \d+ : \w+ : ", "", line)[:limit]


class StepNotApplicable(Exception):
    """A simplify engine that cannot run on this model by design (not a failure):
    skipped with a note. Not an OnnxforgeError: it never reaches the user as one."""


def did_you_mean(value: str, choices) -> str:
    """"did you mean 'x'?" for the closest of ``choices``, or "" when none is close."""
    import difflib

    close = difflib.get_close_matches(str(value), sorted(map(str, choices)), n=1)
    return f"did you mean {close[0]!r}?" if close else ""
