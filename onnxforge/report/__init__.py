"""Results -> the versioned JSON envelope (here), rich tables for people
(tables.py), the release's Markdown summary (markdown.py) and JUnit XML (junit.py).

JSON is strict: non-finite floats become the strings "NaN", "Infinity", "-Infinity"
so any JSON parser reads it.
"""

from __future__ import annotations

import dataclasses
import json
import math
from typing import Any

SCHEMA_VERSION = 1

KINDS = {
    "ModelInfo": "inspect",
    "ParityReport": "parity",
    "BenchmarkResult": "benchmark",
    "StepResult": "step",
    "BenchmarkReport": "benchmark",
    "ReleaseReport": "release",
    "ErrorResult": "error",
    "PackageResult": "package",
    "ServeCheckReport": "serve-check",
    "DoctorReport": "doctor",
}


def to_jsonable(obj: Any) -> Any:
    if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        return {f.name: to_jsonable(getattr(obj, f.name)) for f in dataclasses.fields(obj)}
    if isinstance(obj, dict) or hasattr(obj, "items") and callable(obj.items):
        return {str(k): to_jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple, set, frozenset)):
        return [to_jsonable(v) for v in obj]
    if isinstance(obj, bool) or obj is None or isinstance(obj, str):
        return obj
    if isinstance(obj, int):
        return obj
    if isinstance(obj, float):
        if math.isnan(obj):
            return "NaN"
        if math.isinf(obj):
            return "Infinity" if obj > 0 else "-Infinity"
        return obj
    # numpy scalars and arrays without importing numpy here
    if hasattr(obj, "tolist"):
        return to_jsonable(obj.tolist())
    if hasattr(obj, "__fspath__"):
        return str(obj)
    return str(obj)


def kind_of(result: Any) -> str:
    return KINDS.get(type(result).__name__, type(result).__name__.lower())


def envelope(result: Any, kind: str | None = None) -> dict:
    from onnxforge import __version__

    return {
        "schema_version": SCHEMA_VERSION,
        "kind": kind or kind_of(result),
        "onnxforge_version": __version__,
        "result": to_jsonable(result),
    }


def dumps(result: Any, kind: str | None = None) -> str:
    return json.dumps(envelope(result, kind), indent=2, allow_nan=False)


def write_report(path: str, result: Any, kind: str | None = None) -> None:
    from onnxforge.fileio import atomic_write_text

    atomic_write_text(path, dumps(result, kind) + "\n")
