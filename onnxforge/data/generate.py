"""Inputs made up where no data is given: one function, ``generate_inputs``, from what
the model tells (its specs, the value ranges and image normalisations its converter
recorded), seeded; ``describe_generated`` says how, for every report."""

from __future__ import annotations

from typing import Mapping, Sequence

from onnxforge.core.errors import BadInputError, UsageError
from onnxforge.core.types import TensorSpec
from onnxforge.data.specs import input_norm, numpy_dtype, resolve_shape
import math
import numpy as np
from onnxforge.core.system import available_memory


def check_allocatable(shapes: Mapping[str, tuple], dtypes: Mapping[str, str]) -> None:
    """Refuse inputs larger than the memory that is free, before allocating them."""

    total = 0
    for name, shape in shapes.items():
        itemsize = 8 if dtypes.get(name) == "str" else numpy_dtype(dtypes.get(name, "float32")).itemsize
        total += math.prod(shape) * itemsize
    free = available_memory()
    if total > free // 2:
        big = max(shapes, key=lambda n: math.prod(shapes[n]))
        raise BadInputError(f"the inputs would take {total / 2**30:.1f} GiB (input {big} has shape "
                            f"{list(shapes[big])}); {free / 2**30:.1f} GiB is available",
                            hint="use smaller dims (--dim NAME=VALUE, --shape, --input)")


def looks_like_mask(name: str, shape, dtype) -> bool:
    """A 2-D integer or bool input named ``attention_mask`` / ``*_mask``: generated as a
    padding mask wherever inputs are made up (a random one masks whole rows)."""
    return len(shape) == 2 and name.lower().endswith("mask") and np.dtype(dtype).kind in "iub"


def padding_mask(shape: tuple[int, int], *, start: int = 0):
    """A [batch, seq] padding mask of ones and trailing zeros: row i keeps
    ``seq - start - i * max(1, seq // 4)`` tokens, at least one."""
    b, n = shape
    m = np.zeros(shape)
    for i in range(b):
        m[i, : max(1, n - start - i * max(1, n // 4))] = 1
    return m


def generate_inputs(
    specs: Sequence[TensorSpec],
    *,
    seed: int = 0,
    dims: Mapping[str, int] | None = None,
    val_ranges: Mapping[str, tuple[float, float]] | None = None,
    norms: Mapping[str, object] | None = None,
    default_dim: int = 1,
) -> dict:
    """Seeded random inputs. Floats ~ U(lo, hi) (default [0, 1)), ints in [lo, hi]
    (default [0, 10]: safe as indices into small embeddings), bools fair coins. A 2-D
    integer or bool input named like a padding mask (``attention_mask``, ``*_mask``)
    with no range of its own is one: ones, later rows padded with trailing zeros, never
    an all-zero row (random 0..10 "masks" masked whole rows, where frameworks differ).
    A float input with a norm (``norms``: input_norm() specs by name, "" for all) is a
    normalised image: (U(lo, hi) - mean) / std along its channel axis (1, else the last)."""
    rng = np.random.default_rng(seed)
    val_ranges = val_ranges or {}
    norms = norms or {}
    shapes = {s.name: resolve_shape(s, dims, default_dim) for s in specs}
    check_allocatable(shapes, {s.name: s.dtype for s in specs})
    out = {}
    for s in specs:
        shape = shapes[s.name]
        lo_hi = val_ranges.get(s.name, val_ranges.get(""))
        dt = numpy_dtype(s.dtype)
        if lo_hi is None and looks_like_mask(s.name, shape, dt):
            arr = padding_mask(shape, start=0).astype(dt)
        elif s.dtype == "bool":
            arr = rng.random(shape) < 0.5
        elif s.dtype == "str":
            arr = np.array([f"s{v}" for v in rng.integers(0, 10, size=int(np.prod(shape)))], dtype=object).reshape(shape)
        elif dt.kind in "iu":
            lo, hi = lo_hi or (0, 10)
            arr = rng.integers(int(lo), int(hi), size=shape, endpoint=True).astype(dt)
        else:
            lo, hi = lo_hi or (0.0, 1.0)
            arr = lo + (hi - lo) * rng.random(shape, dtype=np.float64)
            norm = norms.get(s.name, norms.get(""))
            arr = (_normalise(arr, input_norm(norm), s.name) if norm is not None else arr).astype(dt)
        out[s.name] = arr
    return out


def _normalise(arr, norm: Mapping, name: str):
    mean, std = np.asarray(norm["mean"]), np.asarray(norm["std"])
    if mean.size == 1:
        return (arr - mean[0]) / std[0]
    axes = [a for a in (1, arr.ndim - 1) if 0 <= a < arr.ndim and arr.shape[a] == mean.size]  # NCHW, else NHWC
    if not axes:
        raise UsageError(f"input {name} {list(arr.shape)} has no axis of {mean.size} channels for its "
                         f"{mean.size} normalisation means", hint="give as many means and stds as the input has "
                                                                   "channels (axis 1, or the last axis)")
    where = [1] * arr.ndim
    where[axes[0]] = mean.size
    return (arr - mean.reshape(where)) / std.reshape(where)


def describe_generated(specs: Sequence[TensorSpec], *, seed: int = 0, val_ranges: Mapping | None = None,
                       norms: Mapping | None = None) -> str:
    """How generate_inputs made its float inputs, in words: what a verdict on them says."""
    val_ranges, norms = val_ranges or {}, norms or {}
    parts = []
    for s in specs:
        if s.dtype not in ("float16", "float32", "float64", "bfloat16"):
            continue
        norm = norms.get(s.name, norms.get(""))
        lo, hi = val_ranges.get(s.name, val_ranges.get("", (0.0, 1.0)))
        noise = f"uniform [{lo:g},{hi:g}) noise"
        if norm is not None:
            n = input_norm(norm)
            noise = (f"{n['label']}-normalised images" if n["label"] else "images normalised with mean " +
                     ",".join(f"{v:g}" for v in n["mean"]) + ", std " + ",".join(f"{v:g}" for v in n["std"]))
            noise += f" from [{lo:g},{hi:g})" if (lo, hi) != (0.0, 1.0) else ""
        parts.append((s.name, noise))
    kinds = {p[1] for p in parts}
    if not parts:
        body = "within the model's input ranges" if val_ranges else "random values"
    elif len(kinds) == 1:
        body = parts[0][1]
    else:
        body = "; ".join(f"{n}: {k}" for n, k in parts)
    return f"generated ({body}, seed {seed})"
