"""Portable clean-ups onnxsim leaves (each measured on a model in the benchmark):

- Identity, and Dropout with an unused mask outside training mode (SqueezeNet and
  Inception from the onnx package keep an opset-9 Dropout);
- Add of an all-zero constant that does not change the other input's shape (a
  freshly initialized attention in_proj_bias);
- Shape -> Slice on axis 0 with constant bounds, folded into Shape(start, end)
  (opset 15+; the TransformerEncoder export slices its own shape vector).
Consumers are rewired; nodes whose output is a graph output are kept; models with
subgraphs are left as they are (their bodies may read the removed names).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class _Facts:
    consts: dict  # name -> TensorProto (initializers and Constant nodes)
    shapes: dict  # name -> dims
    graph_outputs: set
    used: set  # every name some node or the graph reads

    def const(self, name):
        from onnx import numpy_helper

        t = self.consts.get(name)
        return None if t is None else numpy_helper.to_array(t)


def _facts(g) -> _Facts:
    consts = {t.name: t for t in g.initializer}
    for n in g.node:
        if n.op_type == "Constant" and n.attribute and n.attribute[0].name == "value":
            consts[n.output[0]] = n.attribute[0].t
    shapes = {v.name: [d.dim_value if d.HasField("dim_value") else (d.dim_param or None)
                       for d in v.type.tensor_type.shape.dim]
              for v in list(g.value_info) + list(g.input) + list(g.output) if v.type.tensor_type.HasField("shape")}
    outputs = {o.name for o in g.output}
    return _Facts(consts, shapes, outputs, {i for n in g.node for i in n.input} | outputs)


def _zero_add(f: _Facts, n) -> str | None:
    if n.op_type != "Add" or len(n.input) != 2:
        return None
    for z, other in ((n.input[1], n.input[0]), (n.input[0], n.input[1])):
        c = f.const(z)
        if c is not None and c.size and not c.any() and f.shapes.get(other) is not None \
                and f.shapes.get(other) == f.shapes.get(n.output[0]) and len(c.shape) <= len(f.shapes[other]):
            return other
    return None


def _slice_bounds(f: _Facts, n):
    """(start, end) of a Slice on axis 0 with step 1 and constant bounds, else None."""
    import numpy as np

    if n.op_type != "Slice" or len(n.input) < 3:
        return None
    starts, ends = f.const(n.input[1]), f.const(n.input[2])
    axes = f.const(n.input[3]) if len(n.input) > 3 and n.input[3] else np.array([0])
    steps = f.const(n.input[4]) if len(n.input) > 4 and n.input[4] else np.array([1])
    if not all(x is not None and x.size == 1 for x in (starts, ends, axes, steps)):
        return None
    if int(axes[0]) != 0 or int(steps[0]) != 1:
        return None
    return int(starts[0]), int(ends[0])


def _foldable_shapes(f: _Facts, g, opset: int) -> set[str]:
    """Outputs of Shape nodes whose every consumer is a foldable Slice."""
    if opset < 15:
        return set()
    by_input: dict[str, list] = {}
    for n in g.node:
        for i in n.input:
            by_input.setdefault(i, []).append(n)
    out = set()
    for n in g.node:
        attrs = {a.name: a.i for a in n.attribute}
        if n.op_type == "Shape" and attrs.get("start", 0) == 0 and "end" not in attrs \
                and n.output[0] not in f.graph_outputs and by_input.get(n.output[0]) \
                and all(_slice_bounds(f, c) is not None and c.input[0] == n.output[0] for c in by_input[n.output[0]]):
            out.add(n.output[0])
    return out


def _passthrough(f: _Facts, n) -> str | None:
    """The input a removable node passes through unchanged, else None."""
    if n.domain not in ("", "ai.onnx") or not n.input or n.output[0] in f.graph_outputs:
        return None
    if n.op_type == "Identity":
        return n.input[0]
    if n.op_type == "Dropout" and (len(n.output) < 2 or not n.output[1] or n.output[1] not in f.used) \
            and (len(n.input) < 3 or not n.input[2]):
        return n.input[0]
    return _zero_add(f, n)


def run_cleanup(src: Path, dst: Path) -> dict:
    from onnx import helper

    from onnxforge.steps.artifacts import save_scratch
    from onnxforge.core.fileio import has_subgraphs, load_onnx

    m = load_onnx(src)
    g = m.graph
    if has_subgraphs(g):
        save_scratch(m, dst)
        return {"removed": 0, "note": "graph has subgraphs: left as is"}
    f = _facts(g)
    foldable = _foldable_shapes(f, g, next((o.version for o in m.opset_import if o.domain in ("", "ai.onnx")), 0))
    shape_src = {n.output[0]: n.input[0] for n in g.node if n.op_type == "Shape" and n.output[0] in foldable}
    rename: dict[str, str] = {}
    keep, removed, folded = [], 0, 0
    for n in g.node:
        n.input[:] = [rename.get(i, i) for i in n.input]
        if n.op_type == "Shape" and n.output[0] in foldable:
            removed += 1
        elif n.op_type == "Slice" and n.input and n.input[0] in foldable:
            start, end = _slice_bounds(f, n)
            attrs = {"start": start, **({"end": end} if end < 2**62 else {})}
            keep.append(helper.make_node("Shape", [shape_src[n.input[0]]], [n.output[0]], name=n.name, **attrs))
            folded += 1
        elif (through := _passthrough(f, n)) is not None:
            rename[n.output[0]] = through
            removed += 1
        else:
            keep.append(n)
    del g.node[:]
    g.node.extend(keep)
    save_scratch(m, dst)
    return {"removed": removed, "folded": folded}
