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
from pathlib import Path
from onnxforge import __version__
from onnxforge.core.errors import BadInputError, first_line
from onnxforge.core.fileio import atomic_write_text

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
    return {
        "schema_version": SCHEMA_VERSION,
        "kind": kind or kind_of(result),
        "onnxforge_version": __version__,
        "result": to_jsonable(result),
    }


def dumps(result: Any, kind: str | None = None) -> str:
    return json.dumps(envelope(result, kind), indent=2, allow_nan=False)


def write_report(path: str, result: Any, kind: str | None = None) -> None:
    atomic_write_text(path, dumps(result, kind) + "\n")


_NON_FINITE = {"NaN": math.nan, "Infinity": math.inf, "-Infinity": -math.inf}


def _floats_back(obj: Any) -> Any:
    """to_jsonable wrote non-finite floats as these strings; read them back as floats
    (a string field holding exactly "NaN" would then fail its check: no writer writes one)."""
    if isinstance(obj, str):
        return _NON_FINITE.get(obj, obj)
    if isinstance(obj, dict):
        return {k: _floats_back(v) for k, v in obj.items()}
    if isinstance(obj, list):
        return [_floats_back(v) for v in obj]
    return obj


def read_report(path, cls: type, kind: str, hint: str) -> Any:
    """The inverse of write_report for files onnxforge reads back (a zoo merge): the
    envelope at ``path`` as a ``cls``, checked by pydantic against the dataclass that
    wrote it, strictly (a string is never a number or a boolean) and with every field
    present (the writer writes all of them). Anything else, JSON nested too deep
    included, is a BadInputError naming the file and the key."""
    from pydantic import TypeAdapter, ValidationError


    def bad(why: str) -> BadInputError:
        return BadInputError(f"{path}: {why}", hint=hint)

    try:
        env = json.loads(Path(path).read_text())
        if not isinstance(env, dict) or env.get("kind") != kind:
            raise bad(f"not a {kind} report (key kind: {env.get('kind') if isinstance(env, dict) else None!r})")
        if env.get("schema_version") != SCHEMA_VERSION:
            raise bad(f"key schema_version: {env.get('schema_version')!r}, this onnxforge reads {SCHEMA_VERSION}")
        result = env.get("result")
        if not isinstance(result, dict):
            raise bad(f"key result: must be an object, got {type(result).__name__}")
        missing = [f.name for f in dataclasses.fields(cls) if f.init and f.name not in result]
        if missing:
            raise bad(f"key result.{missing[0]} is missing")
        adapters = read_report.__dict__.setdefault("adapters", {})
        if cls not in adapters:
            adapters[cls] = TypeAdapter(cls)
        return adapters[cls].validate_json(json.dumps(_floats_back(result)), strict=True)
    except RecursionError:
        raise bad("JSON nested too deep to be a report") from None
    except ValidationError as exc:
        err = exc.errors()[0]
        key = ".".join(["result", *map(str, err["loc"])])
        got = err.get("input")
        got = "" if isinstance(got, (dict, list)) else f", got {got!r:.80}"
        raise bad(f"key {key}: {err['msg']}{got}") from None
    except (OSError, UnicodeDecodeError, ValueError) as exc:
        raise bad(f"not readable JSON ({first_line(exc)})") from None
