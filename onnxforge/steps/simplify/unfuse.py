"""Fusions whose onnxruntime CPU kernel is slower than the ops it replaced, written back.

The transformer fusions (ORT's optimizer, onnxscript's) write com.microsoft ops that
onnxruntime 1.32 runs slower on CPU than the standard ops they replace. Measured with
ORT's profiler on BERT-base (seq 128, 2 threads, the dynamic int8 model):

- SkipLayerNormalization: a scalar loop, 260 us a call against 42 us for
  LayerNormalization plus 46 us for the residual Sum (25 calls a run: 6.5 of 45.6 ms).
  ORT fuses a residual *Add* of two equal static 3-D shapes back into it when it loads
  the model, so the residual is written as Sum, which its fusion does not match. The
  bias the fusion had absorbed goes back onto the operand a MatMul produced, where ORT
  folds it into the (int8) GEMM again.
- BiasGelu: 2.3-2.9 ms a run against 1.3-2.0 ms for the opset-20 Gelu (its bias Add
  folds into the GEMM before it); equal outputs to 2e-6. Only where the model's opset
  has Gelu (>= 20). Where no MatMul precedes it, ORT fuses Add + Gelu back into BiasGelu
  at load: the same outputs and speed as before.

Whole model, interleaved against plain `quantize_dynamic` (seq 128, 2 threads): the
fused int8 recipe went from 1.08x to 1.21x; fp32 `simplify --transformer bert` from
1.03x to 1.07x the raw export. On CUDA these are a few more kernel launches a layer.

A node is left fused when its mean or inverse-std output is read, when its weights
are not float32 initializers, or when the opset lacks the standard op. Models with
subgraphs (If, Loop, Scan) are left as they are, as cleanup.py leaves them: a body may
read an output of the node or define a name the rewrite would take.
"""

from __future__ import annotations

from pathlib import Path

from onnxforge.core.fileio import has_subgraphs

_SUFFIXES = ("bias", "biased", "residual", "layernorm", "gelu")
_GEMM_OUTPUTS = ("MatMul", "Gemm", "MatMulInteger", "Mul", "Cast", "DynamicQuantizeMatMul", "MatMulIntegerToFloat",
                 "FusedMatMul")


def unfuse_slow_kernels(model) -> dict[str, int]:
    """Rewrite ``model``'s graph in place; returns how many nodes of each op type."""
    from onnx import TensorProto

    g = model.graph
    counts = {"SkipLayerNormalization": 0, "BiasGelu": 0}
    if has_subgraphs(g):
        return counts
    opset = next((o.version for o in model.opset_import if o.domain in ("", "ai.onnx")), 0)
    floats = {t.name for t in g.initializer if t.data_type == TensorProto.FLOAT}
    made_by = {o: n.op_type for n in g.node for o in n.output}
    read = {i for n in g.node for i in n.input} | {o.name for o in g.output}
    taken = ({n.name for n in g.node} | read | set(made_by) | {t.name for t in g.initializer}
             | {v.name for v in list(g.input) + list(g.value_info)})
    nodes = []
    for n in g.node:
        new = None
        if n.domain == "com.microsoft" and n.op_type == "SkipLayerNormalization" and opset >= 17:
            new = _skip_layernorm(n, floats, made_by, read, taken)
        elif n.domain == "com.microsoft" and n.op_type == "BiasGelu" and opset >= 20 and n.input[1] in floats:
            from onnx import helper

            base = _fresh(n.name or n.output[0], taken)
            new = [helper.make_node("Add", list(n.input), [f"{base}/biased"], name=f"{base}/bias"),
                   helper.make_node("Gelu", [f"{base}/biased"], list(n.output), name=f"{base}/gelu")]
        if new is None:
            nodes.append(n)
        else:
            nodes.extend(new)
            counts[n.op_type] += 1
    if any(counts.values()):
        del g.node[:]
        g.node.extend(nodes)
    return counts


def _skip_layernorm(n, floats: set, made_by: dict, read: set, taken: set) -> list | None:
    from onnx import helper

    x, skip, gamma, beta, bias = (list(n.input) + [""] * 5)[:5]
    outs = list(n.output) + [""] * (4 - len(n.output))
    if gamma not in floats or any(o and o in read for o in outs[1:3]):
        return None
    base = _fresh(n.name or outs[0], taken)
    total, nodes = outs[3] or f"{base}/residual", []
    if bias:
        first = made_by.get(x) in _GEMM_OUTPUTS or made_by.get(skip) not in _GEMM_OUTPUTS
        nodes.append(helper.make_node("Add", [x if first else skip, bias], [f"{base}/biased"], name=f"{base}/bias"))
        x, skip = (f"{base}/biased", skip) if first else (x, f"{base}/biased")
    nodes.append(helper.make_node("Sum", [x, skip], [total], name=f"{base}/residual"))
    # SkipLayerNormalization's default epsilon is 1e-12, LayerNormalization's 1e-5
    eps = next((a.f for a in n.attribute if a.name == "epsilon"), 1e-12)
    nodes.append(helper.make_node("LayerNormalization", [total, gamma] + ([beta] if beta else []), [outs[0]],
                                  name=f"{base}/layernorm", axis=-1, epsilon=eps))
    return nodes


def _fresh(name: str, taken: set) -> str:
    out, i = name, 0
    while any(f"{out}/{s}" in taken for s in _SUFFIXES):
        i += 1
        out = f"{name}_{i}"
    taken.update(f"{out}/{s}" for s in _SUFFIXES)
    return out


def unfuse_in_file(path: Path) -> dict[str, int]:
    """The rewrite on a scratch model, in place: only the graph is read and written, its
    weights stay where they are (same folder, same data file). Returns the non-zero counts."""
    import onnx

    model = onnx.load(str(path), load_external_data=False)
    counts = {k: v for k, v in unfuse_slow_kernels(model).items() if v}
    if counts:
        onnx.save(model, str(path))
    return counts
