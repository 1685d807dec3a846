"""Typed options: every step declares its options once, as a frozen dataclass whose
fields carry their type, default, help, CLI flag and TOML key (``option(...)``).

From that one declaration come the CLI parameters (cli/stepcmd.py), ``--print-step``,
the release config schema and its validation, and the generated docs (docs/release-toml.md). Values
from the CLI, a release TOML or Python keyword arguments all pass through
``validate_options``: strict types (a string is never a boolean, a bool never a number),
no NaN or infinity, bounds and allowed values, unknown keys refused with the closest
valid one. Every failure is a UsageError (exit 2) naming the key and the value.

pydantic does the type checking; it is imported on first validation, not when the CLI
is built, so ``onnxforge --help`` stays fast.
"""

from __future__ import annotations

import dataclasses
import functools
import json
import typing
from dataclasses import dataclass, field
from typing import Annotated, Any, Callable, Mapping

from annotated_types import Ge, Gt, Le

from onnxforge.core.errors import UsageError, did_you_mean
import re

# Types used in declarations. Bounds live in the type so pydantic checks them.
PosInt = Annotated[int, Ge(1)]
NonNegInt = Annotated[int, Ge(0)]
PosFloat = Annotated[float, Gt(0)]
NonNegFloat = Annotated[float, Ge(0)]
Fraction = Annotated[float, Ge(0), Le(1)]
Percent = Annotated[float, Gt(0), Le(100)]
Tolerance = typing.Union[NonNegFloat, dict[str, NonNegFloat]]  # a number, or {"*": default, output: value}
Names = tuple[str, ...]

# The largest value of every count and duration, whichever command, flag or TOML key
# sets it: far past real use, short of what hangs a CI runner (`--iterations 1e20`) or
# fills its memory (`--samples 1e9` holds every sample and its outputs at once). Above
# one: exit 2 naming the flag or key and the maximum. Hand-written commands pass them to
# click (`max=`), declared options carry them in their type; --help shows both.
LIMITS = {
    "samples": 1000,  # random samples of a check, held in memory together
    "calibration_samples": 100_000,  # streamed to ORT one at a time
    "warmup": 10_000,
    "iterations": 1_000_000,
    "seconds": 3600.0,  # every duration and timeout
    "threads": 1024,
    "concurrency": 256,  # clients of serve-check's load
    "batch": 65_536,  # rows of a request, a --batch sweep, Triton's max_batch_size
    "top_k": 1000,
    "jobs": 256,  # zoo releases at once
    "trials": 64,  # quantize --fallback
    "retries": 100,  # zoo max_retries
    "seed": 2**32 - 1,  # what every generator (numpy, torch, Python's) takes
    "heads": 4096,
    "hidden_size": 1 << 20,
    "bytes": 1 << 40,  # a size in bytes (--max-constant-size)
    "tokens": 4096,  # new tokens a generation check decodes
}
Samples = Annotated[int, Ge(1), Le(LIMITS["samples"])]
CalibrationSamples = Annotated[int, Ge(1), Le(LIMITS["calibration_samples"])]
Seconds = Annotated[float, Gt(0), Le(LIMITS["seconds"])]
Threads = Annotated[int, Ge(1), Le(LIMITS["threads"])]
Concurrency = Annotated[int, Ge(1), Le(LIMITS["concurrency"])]
Batch = Annotated[int, Ge(1), Le(LIMITS["batch"])]
Trials = Annotated[int, Ge(1), Le(LIMITS["trials"])]
Retries = Annotated[int, Ge(0), Le(LIMITS["retries"])]
Seed = Annotated[int, Ge(0), Le(LIMITS["seed"])]
Tokens = Annotated[int, Ge(1), Le(LIMITS["tokens"])]
LoadSeconds = Annotated[float, Ge(0), Le(LIMITS["seconds"])]  # 0: none
MaxBatch = Annotated[int, Ge(0), Le(LIMITS["batch"])]  # 0: no batching
Heads = Annotated[int, Ge(0), Le(LIMITS["heads"])]  # 0: detect
HiddenSize = Annotated[int, Ge(0), Le(LIMITS["hidden_size"])]  # 0: detect
Bytes = Annotated[int, Ge(0), Le(LIMITS["bytes"])]


def upper_bound(cls, name: str):
    """The maximum a field's type allows (its ``Le``), or None: what --help shows."""
    t = _hints(cls)[name]
    for arg in (t, *typing.get_args(t)):
        for m in getattr(arg, "__metadata__", ()):
            if isinstance(m, Le):
                return m.le
    return None


@dataclass(frozen=True)
class Opt:
    """What a field needs beyond its type and default."""

    help: str
    flag: str | None = None  # CLI declaration: "--per-channel", "--keep-io-types/--fp16-io"; None: --field-name
    metavar: str | None = None
    toml: str | None = ""  # "": key of the step's own table; "model.x": another table; None: CLI only
    parse: Callable[[Any], Any] | None = None  # CLI string(s) -> the TOML-shaped value
    normalize: Callable[[Any], Any] | None = None  # validated value -> the value the step uses
    check: Callable[[Any], None] | None = None  # raises UsageError on a bad value (after types)
    path: bool = False  # a file path: resolved against the config file's folder in a TOML
    example: tuple[str, ...] = ()  # CLI arguments that set a non-default value (tests, docs)
    # Other spellings users bring from Polygraphy, onnxsim, skl2onnx, Optimum: more CLI
    # flags for the same field ("--input-shapes"); "--target-opset" is also the key
    # target_opset in a TOML table and a keyword in Python.
    aliases: tuple[str, ...] = ()
    # Several values after one flag, as Polygraphy and onnxsim write them
    # (--atol 1e-5 out0:1e-4): a token after the flag's value that passes this test is
    # taken as one more value (cli/app.py repeats the flag before it for Click).
    several: Callable[[str], bool] | None = None
    # Former flags of a renamed field ("--min-speedup" of quantize, now --speed-budget):
    # still accepted on the CLI (hidden), as a TOML key and a Python keyword, each use
    # warned about on stderr; not in --help or the generated docs.
    deprecated: tuple[str, ...] = ()


def option(default: Any, help: str, **meta) -> Any:
    """A dataclass field with its Opt metadata."""
    md = {"opt": Opt(help, **meta)}
    if isinstance(default, (dict, list, set)):
        return field(default_factory=lambda d=default: type(d)(d), metadata=md)
    return field(default=default, metadata=md)


def fields_of(cls) -> list[tuple[dataclasses.Field, Opt]]:
    return [(f, f.metadata["opt"]) for f in dataclasses.fields(cls) if "opt" in f.metadata]


def flag_of(f: dataclasses.Field, o: Opt) -> str:
    return o.flag or "--" + f.name.replace("_", "-")


def alias_keys(f: dataclasses.Field, o: Opt) -> tuple[str, ...]:
    """Other TOML keys and Python keywords for a field, from its flags: the field
    target_opset (flag --opset) also answers to ``opset``, and opset (alias
    --target-opset) to ``target_opset``; deprecated ones last. Only for fields in the
    step's own table."""
    if o.toml != "" or not (o.aliases or o.deprecated):
        return ()
    flags = [flag_of(f, o).split("/")[0], *o.aliases, *o.deprecated]
    keys = (a[2:].replace("-", "_") for a in flags if a.startswith("--"))
    return tuple(dict.fromkeys(k for k in keys if k != f.name))


def deprecated_keys(o: Opt) -> tuple[str, ...]:
    return tuple(a[2:].replace("-", "_") for a in o.deprecated)


def rename_aliases(cls, values: Mapping[str, Any], name=lambda k: k) -> dict[str, Any]:
    """``values`` with alias keys renamed to their field; a field given under two names
    is refused (which one would win is not something to guess)."""
    out = dict(values)
    for f, o in fields_of(cls):
        for key in alias_keys(f, o):
            if key in out:
                if f.name in out:
                    raise UsageError(f"{name(f.name)} and {name(key)} set the same option; give one")
                out[f.name] = out.pop(key)
                if key in deprecated_keys(o):
                    _warn_deprecated(name(key), f, o)
    return out


def _warn_deprecated(used: str, f: dataclasses.Field, o: Opt) -> None:
    import logging

    new = flag_of(f, o).split("/")[0] if used.startswith("--") else toml_place(f, o)[1]
    logging.getLogger("onnxforge").warning("warning: %s is deprecated here: use %s", used, new)


def default_of(f: dataclasses.Field):
    return f.default_factory() if f.default_factory is not dataclasses.MISSING else f.default


def suggest(key: str, allowed) -> str:
    return did_you_mean(key, allowed) or "valid keys: " + ", ".join(sorted(allowed))


def _adapter(cls):
    cache = _adapter.__dict__.setdefault("cache", {})
    if cls not in cache:
        from pydantic import ConfigDict, TypeAdapter

        cls.__pydantic_config__ = ConfigDict(strict=True, extra="forbid", allow_inf_nan=False)
        cache[cls] = TypeAdapter(cls)
    return cache[cls]


def _describe(value) -> str:
    kind = {bool: "a boolean", str: "a string", int: "an integer", float: "a number", list: "a list",
            dict: "a table"}.get(type(value), type(value).__name__)
    return f"{value!r} ({kind})"


def validate_options(cls, values: Mapping[str, Any], where: str = "", *, keys: Mapping[str, str] | None = None):
    """``values`` -> an instance of ``cls``, or a UsageError naming the first bad key.

    ``keys`` maps a field name to the name the user wrote (``--per-channel``,
    ``steps[2].per_channel``) for the messages; by default ``where.field``."""
    from pydantic import ValidationError

    allowed = [f.name for f, _ in fields_of(cls)]

    def name(k: str) -> str:
        if keys and k in keys:
            return keys[k]
        return f"{where}.{k}" if where else k

    values = rename_aliases(cls, values, name)
    for k in values:
        if k not in allowed:
            raise UsageError(f"unknown option {name(k)}", hint=suggest(k, allowed))
    try:
        text = json.dumps(dict(values), default=str)
    except (TypeError, ValueError) as exc:
        raise UsageError(f"{where or cls.__name__}: values are not plain data ({exc})") from None
    try:
        obj = _adapter(cls).validate_json(text)
    except ValidationError as exc:
        err = exc.errors()[0]
        loc = [str(x) for x in err["loc"] if not str(x).isdigit() or len(err["loc"]) == 1]
        top = loc[0] if loc else ""
        key = name(top) + "".join(f".{x}" for x in loc[1:])
        got = values.get(top, err.get("input"))
        msg = err["msg"].replace("Input should be", "must be")
        for a, b in (("a valid array", "a list"), ("a valid number", "a number"), ("a valid boolean", "true or false"),
                     ("a valid integer", "an integer"), ("a valid string", "a string"),
                     ("a valid dictionary", "a table"), ("a finite number", "a finite number (not NaN)")):
            msg = msg.replace(a, b)
        hint = _type_hint(cls, top)
        choices = choices_of(cls, top) if top in allowed else None
        if choices and isinstance(got, str) and did_you_mean(got, choices):
            hint = f"{did_you_mean(got, choices)} {hint}"
        raise UsageError(f"{key}: {msg}, got {_describe(got)}", hint=hint) from None
    changes = {}
    for f, o in fields_of(cls):
        v = getattr(obj, f.name)
        if v is None:
            continue
        try:
            if o.check is not None:
                o.check(v)
            if o.normalize is not None:
                changes[f.name] = o.normalize(v)
        except UsageError as exc:
            raise UsageError(f"{name(f.name)}: {exc.message}", hint=exc.hint) from None
    return dataclasses.replace(obj, **changes) if changes else obj


def _type_hint(cls, key: str) -> str | None:
    for f, o in fields_of(cls):
        if f.name == key:
            return f"{o.help} (type: {type_text(cls, f.name)})"
    return None


def type_text(cls, name: str) -> str:
    """A field's type in words, for hints and docs/release-toml.md."""
    return _words(_hints(cls)[name])


@functools.lru_cache(maxsize=None)
def _hints(cls) -> dict:
    """A class's resolved field types, once per class: get_type_hints evaluates every
    string annotation again on each call, and building the CLI asks ~500 times
    (it was most of `onnxforge --help`'s start-up)."""
    return typing.get_type_hints(cls, include_extras=True)


def _words(t) -> str:
    origin = typing.get_origin(t)
    args = typing.get_args(t)
    if origin is Annotated:
        bounds = []
        for m in t.__metadata__:
            for attr, sym in (("ge", ">="), ("gt", ">"), ("le", "<="), ("lt", "<")):
                if hasattr(m, attr):
                    bounds.append(f"{sym} {getattr(m, attr)}")
        return _words(args[0]) + (f" ({', '.join(bounds)})" if bounds else "")
    if origin is typing.Union or str(origin) == "<class 'types.UnionType'>":
        parts = [_words(a) for a in args if a is not type(None)]
        return " or ".join(parts)
    if origin is typing.Literal:
        return " | ".join(str(a) for a in args)
    if origin in (tuple, list):
        return f"list of {_words(args[0])}" if args else "list"
    if origin is dict:
        return f"table of {_words(args[1])}"
    return {bool: "boolean", int: "integer", float: "number", str: "string"}.get(t, getattr(t, "__name__", str(t)))


def base_type(cls, name: str):
    """The field's type without Optional and bounds: what the CLI parses it as."""
    t = _hints(cls)[name]
    while True:
        origin = typing.get_origin(t)
        args = typing.get_args(t)
        if origin is Annotated:
            t = args[0]
        elif (origin is typing.Union or str(origin) == "<class 'types.UnionType'>") and type(None) in args:
            rest = [a for a in args if a is not type(None)]
            t = rest[0] if len(rest) == 1 else typing.Union[tuple(rest)]
        else:
            return t


def choices_of(cls, name: str) -> tuple | None:
    t = base_type(cls, name)
    return typing.get_args(t) if typing.get_origin(t) is typing.Literal else None


def non_defaults(obj, toml_only: bool = True) -> dict[str, Any]:
    """Fields whose value differs from the default: what --print-step writes."""
    out = {}
    for f, o in fields_of(type(obj)):
        if toml_only and o.toml is None:
            continue
        v = getattr(obj, f.name)
        if v != default_of(f):
            out[f.name] = v
    return out


def toml_value(v) -> str:
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, (int, float)):
        return repr(v)
    if isinstance(v, (list, tuple)):
        return "[" + ", ".join(toml_value(x) for x in v) + "]"
    if isinstance(v, Mapping):
        return "{ " + ", ".join(f"{toml_key(k)} = {toml_value(x)}" for k, x in v.items()) + " }"
    return json.dumps(str(v))


def toml_key(k: str) -> str:
    return k if re.fullmatch(r"[A-Za-z0-9_-]+", k) else json.dumps(k)


def resolve(cls, options=None, kwargs: Mapping[str, Any] | None = None):
    """A step's options from an options object and/or keyword arguments (the library
    API: ``simplify("a.onnx", "b.onnx", ort_level="basic")``), validated."""
    if options is not None and not isinstance(options, cls):
        raise UsageError(f"options must be a {cls.__name__}, got {type(options).__name__}")
    base = non_defaults(options, toml_only=False) if options is not None else {}
    return validate_options(cls, {**base, **dict(kwargs or {})})


def toml_place(f: dataclasses.Field, o: Opt) -> tuple[str, str] | None:
    """(table, key) of a field in a release TOML: ("", key) for the step's own table,
    ("model", "inputs") for another; None for a CLI-only option."""
    if o.toml is None:
        return None
    if "." in o.toml:
        table, _, key = o.toml.partition(".")
        return table, key
    return "", o.toml or f.name
