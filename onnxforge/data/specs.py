"""Tensor specs: the NAME:DTYPE:SHAPE grammar, the option values with a grammar of their
own (dims, ranges, norms, per-output tolerances, shapes, opsets, sizes), pinning
symbolic dims, and the specs of an ONNX model's inputs and outputs. Inputs made up
from specs: generate.py; inputs loaded from files: samples.py.

Grammar
-------
``x:float32:1x3x224x224``  fixed shape; ``ids:int64:batchx128`` a symbolic dim;
``flag:bool:`` or ``t:float32:scalar`` a scalar. The name may contain ':' (ONNX names
such as ``gpu_0/data_0`` or ``input:0`` are common): the last two fields are dtype
and shape. Dtypes are numpy names (float32, float16, float64, int8, uint8, int32,
int64, bool, str).
"""

from __future__ import annotations

import re
from typing import Iterable, Mapping, Sequence

from onnxforge.core.errors import UsageError
from onnxforge.core.types import Dim, TensorSpec
import ast
import math

DTYPES = (
    "float16", "float32", "float64", "bfloat16",
    "int8", "int16", "int32", "int64", "uint8", "uint16", "uint32", "uint64",
    "bool", "str",
)
_ALIASES = {"float": "float32", "double": "float64", "half": "float16", "int": "int64",
            "long": "int64", "string": "str", "fp32": "float32", "fp16": "float16"}
_DIM_RE = re.compile(r"^[A-Za-z_][A-Za-z0-9_.\-]*$")


def normalize_dtype(dtype: str) -> str:
    d = _ALIASES.get(dtype.strip().lower(), dtype.strip().lower())
    if d not in DTYPES:
        raise UsageError(f"unknown dtype {dtype!r}", hint=f"use one of: {', '.join(DTYPES)}")
    return d


def parse_shape(text: str) -> tuple[Dim, ...]:
    """The comma form: ``[1,seq,4]`` or ``1,seq,4``."""
    text = text.strip()
    if text in ("", "scalar", "[]"):
        return ()
    dims: list[Dim] = []
    for part in text.strip("[]()").split(","):
        part = part.strip()
        if part.isdigit():
            dims.append(int(part))
        elif part in ("?", "-1"):
            dims.append(None)
        elif _DIM_RE.match(part):
            dims.append(part)
        else:
            raise UsageError(f"bad dimension {part!r} in shape {text!r}", hint="write dims as 1x3x224x224 or batchx128")
    return tuple(dims)


def parse_spec(text: str) -> TensorSpec:
    parts = text.rsplit(":", 2)
    if len(parts) != 3 or not parts[0]:
        raise UsageError(
            f"bad tensor spec {text!r}", hint="write NAME:DTYPE:SHAPE, e.g. x:float32:1x3x224x224"
        )
    name, dtype, shape = parts
    return TensorSpec(name, normalize_dtype(dtype), parse_shape_text(shape))


def parse_shape_text(text: str) -> tuple[Dim, ...]:
    """Dims are separated by 'x' (``1x3x224x224``, ``batchx128``). A symbolic name
    may hold an 'x' next to an underscore (``max_len``, ``x_len``); any other name
    with an 'x' needs the comma form: ``[maxlen,8]``."""
    text = text.strip()
    if text in ("", "scalar", "[]"):
        return ()
    if "," in text or text.startswith("["):
        return parse_shape(text)
    pieces: list[str] = []
    for tok in text.split("x"):
        if pieces and (tok.startswith("_") or pieces[-1].endswith("_")):
            pieces[-1] = pieces[-1] + "x" + tok
        else:
            pieces.append(tok)
    if any(p == "" for p in pieces):
        raise UsageError(f"bad shape {text!r}: an empty dimension", hint="write dims as 1x3x224x224 or batchx128")
    return parse_shape(",".join(pieces))


def parse_key_values(items: Iterable[str], what: str, sep: str = "=") -> dict[str, str]:
    out: dict[str, str] = {}
    for item in items:
        key, s, value = item.rpartition(sep)
        if not s or not key or not value:
            raise UsageError(f"bad {what} {item!r}", hint=f"write NAME{sep}VALUE")
        out[key] = value
    return out


def parse_dims(items: Iterable[str]) -> dict[str, int]:
    """``--dim batch=8`` -> {"batch": 8}. A dynamic dim with no name (skl2onnx writes
    them) is named by position: ``--dim 0=64`` (axis 0 of every input whose axis 0 is
    dynamic and unnamed) or ``--dim X:0=64`` (axis 0 of input X)."""
    out = {}
    for k, v in parse_key_values(items, "--dim").items():
        if not v.isdigit() or int(v) < 1:
            raise UsageError(f"bad --dim {k}={v}", hint="the value must be a positive integer, e.g. --dim batch=8")
        out[k] = int(v)
    return out


def parse_val_ranges(items: Iterable[str]) -> dict[str, tuple[float, float]]:
    """``--val-range x:[0,1]`` or ``x:0,1``; a bare ``[0,1]`` applies to every input (key "")."""
    out = {}
    for item in items:
        name, _, rng = item.rpartition(":")
        m = re.match(r"^\[?\s*([^,\[\]]+?)\s*,\s*([^,\[\]]+?)\s*\]?$", rng.strip())
        try:
            lo, hi = float(m.group(1)), float(m.group(2))
        except (AttributeError, ValueError):
            lo = hi = math.nan
        if not (math.isfinite(lo) and math.isfinite(hi)):
            raise UsageError(f"bad --val-range {item!r}", hint="write NAME:[LO,HI] with finite numbers, e.g. ids:[0,30522]")
        out[name] = (lo, hi)
    check_val_ranges(out)
    return out


def check_val_ranges(ranges: Mapping[str, Sequence[float]]) -> None:
    for name, (lo, hi) in ranges.items():
        if hi < lo:
            raise UsageError(f"range of {name or 'every input'} is [{lo}, {hi}]: high < low")


# normalisation constants of the common image pipelines (torchvision's and Hugging Face's
# ImageNet defaults; OpenAI CLIP's; the "[-1, 1]" of many ViT checkpoints)
NORM_PRESETS = {
    "imagenet": ((0.485, 0.456, 0.406), (0.229, 0.224, 0.225)),
    "clip": ((0.48145466, 0.4578275, 0.40821073), (0.26862954, 0.26130258, 0.27577711)),
    "half": ((0.5, 0.5, 0.5), (0.5, 0.5, 0.5)),
}
_NORM_NAMES = {"imagenet": "ImageNet", "clip": "CLIP", "half": "[-1, 1]"}


def input_norm(spec, where: str = "--input-norm") -> dict:
    """One input's normalisation, {"mean": [...], "std": [...], "label": ...}, from a
    preset name (``imagenet``, ``clip``, ``half``), ``M1,M2,M3/S1,S2,S3`` or a dict of the
    same keys (recorded metadata). Generated values are (U[0, 1) - mean) / std per channel."""
    hint = ("write NAME:imagenet (or clip, half) or NAME:MEAN1,MEAN2,MEAN3/STD1,STD2,STD3, "
            "e.g. pixel_values:0.5,0.5,0.5/0.25,0.25,0.25")
    if isinstance(spec, Mapping):
        mean, std, label = spec.get("mean"), spec.get("std"), str(spec.get("label") or "")
    elif str(spec).strip().lower() in NORM_PRESETS:
        key = str(spec).strip().lower()
        (mean, std), label = NORM_PRESETS[key], _NORM_NAMES[key]
    else:
        m_text, slash, s_text = str(spec).partition("/")
        try:
            mean, std = [float(v) for v in m_text.split(",")], [float(v) for v in s_text.split(",")]
        except ValueError:
            mean = std = None
        if not slash:
            mean = None
        label = ""
    try:
        mean, std = tuple(float(v) for v in mean), tuple(float(v) for v in std)
    except (TypeError, ValueError):
        raise UsageError(f"bad {where} {spec!r}", hint=hint) from None
    if not mean or len(mean) != len(std) or not all(map(math.isfinite, mean + std)) or min(std) <= 0:
        raise UsageError(f"bad {where} {spec!r}: {len(mean)} mean(s), {len(std)} std(s)" if len(mean) != len(std)
                         else f"bad {where} {spec!r}: finite means and positive stds are needed", hint=hint)
    label = label or next((_NORM_NAMES[k] for k, (m, sd) in NORM_PRESETS.items()
                           if all(abs(a - b) < 1e-3 for a, b in zip(mean + std, m + sd)) and len(mean) == len(m)), "")
    return {"mean": list(mean), "std": list(std), "label": label}


def parse_input_norms(items: Iterable[str]) -> dict[str, str]:
    """``--input-norm pixel_values:imagenet`` or ``x:0.5,0.5,0.5/0.25,0.25,0.25``; a bare
    value applies to every float input (key ""), as ``--val-range`` does. The spec text is
    kept (it is what a TOML says); input_norm() reads it."""
    out = {}
    for item in items:
        name, _, spec = item.rpartition(":")
        input_norm(spec, "--input-norm" + (f" for {name}" if name else ""))
        out[name] = spec
    return out


def check_input_norms(norms: Mapping[str, object]) -> None:
    for name, spec in norms.items():
        input_norm(spec, f"input norm of {name or 'every input'}")


def parse_per_output(items: Iterable[str], what: str = "--atol"):
    """``--atol 1e-4 --atol logits:1e-3`` -> 1e-4, or {"*": 1e-4, "logits": 1e-3}
    when a value names an output ("*" is every other output)."""
    glob, per = None, {}
    for item in items:
        name, sep, val = item.rpartition(":")
        try:
            v = float(val)
        except ValueError:
            raise UsageError(f"bad {what} {item!r}", hint=f"write {what} 1e-4 or {what} NAME:1e-3") from None
        if sep:
            per[name] = v
        else:
            glob = v
    if not per:
        return glob
    return {**({"*": glob} if glob is not None else {}), **per}


def is_per_output_value(text: str) -> bool:
    """``1e-4`` or ``NAME:1e-4``: one more value after ``--atol`` (Polygraphy writes
    ``--atol 1e-5 out0:1e-4``); a file name or a flag is not."""
    try:
        float(text.rpartition(":")[2])
    except ValueError:
        return False
    return not text.startswith("-")


def is_shape_value(text: str) -> bool:
    """``NAME:DIMS`` with numeric dims (``x:1x3x224x224``, Polygraphy's ``x:[1,3,224,224]``,
    onnxsim's ``x:1,3,224,224``): one more value after ``--shape``; a model path or a
    factory (``model.py:build``) is not."""
    name, sep, dims = text.rpartition(":")
    if not sep or not name or text.startswith("-"):
        return False
    try:
        parsed = parse_shape_text(dims)
    except UsageError:
        return False
    return bool(parsed) and all(isinstance(d, int) for d in parsed)


def parse_shapes(items: Iterable[str]) -> dict[str, list[int]]:
    """``--shape x:1x3x224x224`` (repeatable) -> {"x": [1, 3, 224, 224]}."""
    out = {}
    for item in items:
        name, sep, dims = item.rpartition(":")
        if not sep or not name:
            raise UsageError(f"bad --shape {item!r}", hint="write NAME:DIMS, e.g. x:1x3x224x224")
        parsed = parse_shape_text(dims)
        if not all(isinstance(d, int) for d in parsed):
            raise UsageError(f"bad --shape {item!r}: the dims must be numbers", hint="pin symbolic dims with --dim")
        out[name] = list(parsed)
    return out


def parse_literals(items: Iterable[str]) -> dict:
    """``--option KEY=VALUE`` (repeatable): VALUE read as a Python literal when it is one."""
    out = {}
    for k, v in parse_key_values(items, "--option").items():
        try:
            out[k] = ast.literal_eval(v)
        except (ValueError, SyntaxError):
            out[k] = v
    return out


def parse_comma_list(items: Iterable[str]) -> list[str]:
    """``--op-types MatMul,Gemm`` (and repeated flags) -> ["MatMul", "Gemm"]."""
    return [t.strip() for item in items for t in item.split(",") if t.strip()]


def parse_opsets(items: Iterable[str]):
    """``--target-opset 17 --target-opset ai.onnx.ml=3`` -> 17, or {"ai.onnx": 17, "ai.onnx.ml": 3}."""
    per, glob = {}, None
    for item in items:
        dom, sep, v = item.rpartition("=")
        if not v.strip().isdigit():
            raise UsageError(f"bad opset {item!r}", hint="write 17 or DOMAIN=VERSION, e.g. ai.onnx.ml=3")
        if sep:
            per[dom.strip()] = int(v)
        else:
            glob = int(v)
    if not per:
        return glob
    return {**({"ai.onnx": glob} if glob is not None else {}), **per}


def parse_bytes(text) -> int:
    """``4GiB``, ``512MB``, ``1e9`` or an int -> bytes."""
    if isinstance(text, int):
        return text
    m = re.match(r"^\s*([\d.]+(?:e\d+)?)\s*([KMGT]?i?B?)?\s*$", str(text), re.I)
    if not m:
        raise UsageError(f"bad size {text!r}", hint="write a size such as 4GiB or 512MB")
    unit = (m.group(2) or "").upper().replace("I", "").replace("B", "")
    return int(float(m.group(1)) * {"": 1, "K": 2**10, "M": 2**20, "G": 2**30, "T": 2**40}[unit])


def parse_dynamic(items: Sequence[str]) -> dict[str, dict[int, str]]:
    """``x:0=batch`` -> {"x": {0: "batch"}}; ``ids:0=batch,1=seq`` names two axes at once."""
    out: dict[str, dict[int, str]] = {}
    for item in items:
        name, colon, axes = item[:item.find("=") + 1 or None].rpartition(":")
        pairs = [p.partition("=") for p in item[len(name) + 1:].split(",")] if colon and name else []
        if not pairs or any(not eq or not axis.lstrip("-").isdigit() or not label.isidentifier()
                            for axis, eq, label in pairs):
            raise UsageError(f"bad --dynamic {item!r}",
                             hint="write NAME:AXIS=LABEL, e.g. x:0=batch or ids:0=batch,1=seq")
        for axis, _, label in pairs:
            out.setdefault(name, {})[int(axis)] = label
    return out


def check_specs(items: Sequence[str]) -> None:
    for s in items:
        parse_spec(s)


def resolve_shape(spec: TensorSpec, dims: Mapping[str, int] | None = None, default: int = 1) -> tuple[int, ...]:
    """Concrete shape: symbolic dims from ``dims``, unknown ones from ``default``; a dim
    named as a sum (``past_sequence_length + sequence_length``) is the sum of its terms.

    A symbolic dim with no value is an error unless a default is given, because
    silently picking 1 hides the shape the user meant to test.
    """
    dims = dims or {}
    out = []
    for i, d in enumerate(spec.shape):
        terms = d.split(" + ") if isinstance(d, str) and " + " in d else []
        if isinstance(d, int):
            out.append(d)
        elif terms and all(t in dims or t.isdigit() or default is not None for t in terms):
            # a sum of dims (a decoder's mask: "past_sequence_length + sequence_length") follows its terms
            out.append(sum(int(t) if t.isdigit() else dims.get(t, default) for t in terms))
        elif d is not None and d in dims:
            out.append(dims[d])
        elif d is None and (f"{spec.name}:{i}" in dims or str(i) in dims):
            out.append(dims.get(f"{spec.name}:{i}", dims.get(str(i))))
        elif default is not None:
            out.append(default)
        else:
            raise UsageError(f"input {spec.name} has symbolic dim {d!r} and no value for it", hint=f"pass --dim {d}=VALUE")
    return tuple(out)


def check_dims(dims: Mapping[str, int] | None, specs: Sequence[TensorSpec], what: str = "--dim") -> None:
    """A value for a dim the model does not have is a mistake (the user believes they
    tested it): refuse it, naming the dims that exist."""
    known = sorted({d for s in specs for d in s.shape if isinstance(d, str)})
    unnamed = _unnamed_dims(specs)
    unknown = sorted(set(dims or {}) - set(known) - set(unnamed))
    if unknown:
        by_pos = sorted({k for k in unnamed if ":" not in k})
        pos = (f"; its unnamed dynamic dims go by position: {', '.join(f'{k}=N' for k in by_pos)} (that axis of "
               f"every input where it is unnamed) or {', '.join(f'{k}=N' for k in unnamed if ':' in k)}") if unnamed else ""
        raise UsageError(f"{what} {', '.join(unknown)}: the model has no such dim",
                         hint=f"its symbolic dims are: {', '.join(known) or 'none'}{pos}"
                         + ("" if known or unnamed else " (every dim is fixed)"))


def _unnamed_dims(specs: Sequence[TensorSpec]) -> list[str]:
    """The --dim keys of dynamic dims without a name: "INPUT:AXIS" and "AXIS"."""
    keys = [f"{s.name}:{i}" for s in specs for i, d in enumerate(s.shape) if d is None]
    return [*dict.fromkeys(k.rsplit(":", 1)[1] for k in keys), *keys]


def dim_keys(specs: Sequence[TensorSpec]) -> set[str]:
    """Every key --dim may name for these inputs: symbolic names and unnamed dims' positions."""
    return {d for s in specs for d in s.shape if isinstance(d, str)} | set(_unnamed_dims(specs))


def numpy_dtype(dtype: str):
    import numpy as np

    if dtype == "str":
        return np.dtype(object)
    if dtype == "bfloat16":
        import ml_dtypes

        return np.dtype(ml_dtypes.bfloat16)
    return np.dtype(dtype)


# ----------------------------------------------------------------------------- models

_ONNX_TO_NUMPY = {
    1: "float32", 2: "uint8", 3: "int8", 4: "uint16", 5: "int16", 6: "int32", 7: "int64",
    8: "str", 9: "bool", 10: "float16", 11: "float64", 12: "uint32", 13: "uint64",
    16: "bfloat16",
}


def onnx_dtype_name(elem_type: int) -> str:
    import onnx

    if elem_type in _ONNX_TO_NUMPY:
        return _ONNX_TO_NUMPY[elem_type]
    return onnx.TensorProto.DataType.Name(elem_type).lower()


def value_info_spec(vi) -> TensorSpec:
    t = vi.type
    if t.HasField("tensor_type"):
        tt = t.tensor_type
        if tt.HasField("shape"):
            shape = tuple(
                d.dim_value if d.HasField("dim_value") else (d.dim_param or None) for d in tt.shape.dim
            )
        else:
            shape = ()
        return TensorSpec(vi.name, onnx_dtype_name(tt.elem_type), shape)
    # sequences and maps (e.g. sklearn's ZipMap output): describe, no shape
    kind = t.WhichOneof("value")
    return TensorSpec(vi.name, kind or "unknown", ())


def model_io_specs(model) -> tuple[tuple[TensorSpec, ...], tuple[TensorSpec, ...]]:
    """Real graph inputs (initializers listed as inputs in old models excluded) and outputs."""
    inits = {i.name for i in model.graph.initializer}
    inputs = tuple(value_info_spec(v) for v in model.graph.input if v.name not in inits)
    outputs = tuple(value_info_spec(v) for v in model.graph.output)
    return inputs, outputs
