"""Static int8 on a transformer: which nodes must stay fp32 so the attention mask
stays exact, and whether a graph is a transformer at all.

An attention mask reaches the scores as a bias of 0 or a fill value (-3.4e38 in
torch's dynamo exports, -1e4 or -inf in older ones), added before the Softmax. A
tensor holding such a value cannot be quantized: its calibrated scale covers the
fill value (1.3e36 on the tiny BERT), so every real score rounds to 0, attention
becomes uniform and the output drifts (cosine 0.961 on a tiny BERT whose attention
is peaked, 0.9994 with the mask path left in fp32). The rule is structural: a small
constant of magnitude >= ``HUGE`` taints every tensor computed from it, through every
op but those whose output is bounded (Softmax, comparisons, ...); a node that reads
or writes a tainted tensor is left out of quantization, so no Q/DQ pair lands on it.
"""

from __future__ import annotations

from pathlib import Path
import numpy as np
from onnxforge.core.fileio import initializer_value

HUGE = 1e4  # the smallest mask fill value exporters use (-10000 in older transformers)
SMALL = 4096  # elements: a mask constant is a scalar or a short vector, never a weight
# ops whose output does not carry their input's magnitude: the taint stops there
BOUNDED_OPS = {"Softmax", "LogSoftmax", "Sigmoid", "Tanh", "Equal", "Less", "LessOrEqual", "Greater", "GreaterOrEqual",
               "Not", "And", "Or", "Xor", "IsNaN", "IsInf", "Shape", "Size", "ArgMax", "ArgMin"}
MATMUL_OPS = ("MatMul", "Gemm")


def huge_constants(model, base_dir: Path) -> set[str]:
    """Names of small float constants (initializers, Constant nodes) holding a value of
    magnitude >= HUGE or an infinity."""
    from onnx import TensorProto, numpy_helper


    floats = (TensorProto.FLOAT, TensorProto.FLOAT16, TensorProto.DOUBLE, TensorProto.BFLOAT16)
    found = set()
    tensors = [(t.name, t) for t in model.graph.initializer]
    tensors += [(n.output[0], a.t) for n in model.graph.node if n.op_type == "Constant"
                for a in n.attribute if a.name == "value"]
    for name, t in tensors:
        if t.data_type not in floats or int(np.prod(t.dims)) > SMALL:
            continue
        v = np.asarray(initializer_value(t, base_dir) if t.name else numpy_helper.to_array(t), dtype=np.float64)
        if v.size and (np.abs(v) >= HUGE).any():
            found.add(name)
    return found


def mask_path(model, base_dir: Path) -> tuple[list[str], list[str], int]:
    """(names of the nodes that read or write a tensor that may hold a mask fill value,
    the graph inputs the fill value is selected by, count of such nodes without a name)."""
    huge = huge_constants(model, base_dir)
    if not huge:
        return [], [], 0
    tainted, nodes = set(huge), []
    for n in model.graph.node:  # graph order is topological
        if any(i in tainted for i in n.input):
            nodes.append(n)
            if n.op_type not in BOUNDED_OPS:
                tainted.update(o for o in n.output if o)
    # the mask inputs: what the nodes that apply a fill value read (a Where's condition)
    inputs = _ancestor_inputs(model, [i for n in nodes if set(n.input) & huge for i in n.input])
    return [n.name for n in nodes if n.name], inputs, sum(1 for n in nodes if not n.name)


def _ancestor_inputs(model, tensors: list[str]) -> list[str]:
    g = model.graph
    producer = {o: n for n in g.node for o in n.output}
    inits = {t.name for t in g.initializer}
    graph_inputs = [i.name for i in g.input if i.name not in inits]
    seen, found, need = set(), set(), list(tensors)
    while need:
        t = need.pop()
        if t in seen or not t:
            continue
        seen.add(t)
        if t in graph_inputs:
            found.add(t)
        elif t in producer:
            need.extend(producer[t].input)
    return [i for i in graph_inputs if i in found]


def is_transformer(model) -> bool:
    """A Softmax and a MatMul of two computed tensors (the attention products)."""
    g = model.graph
    consts = {t.name for t in g.initializer} | {o for n in g.node if n.op_type == "Constant" for o in n.output}
    ops = {n.op_type for n in g.node}
    return "Softmax" in ops and any(n.op_type == "MatMul" and not set(n.input) & consts for n in g.node)


PASS_OPS = {"Where", "Reshape", "Transpose", "Identity", "Dropout", "Squeeze", "Unsqueeze", "Cast", "Expand"}


def probability_tensors(model, base_dir: Path) -> list[str]:
    """MatMul inputs that are attention probabilities: a Softmax's output, maybe through
    ops that move them or a Where that replaces some by a constant in [0, 1] (zeroing
    fully masked rows). Their range is [0, 1] whatever the calibration saw: calibrated
    on sequences of 2 tokens or more, P·V's input range ended at 0.507, and a 1-token
    row (P = 1) came out halved (cosine 0.98 on that row)."""
    g = model.graph
    probs = set()
    for n in g.node:
        if n.op_type == "Softmax" or (n.op_type in PASS_OPS - {"Where"} and n.input and n.input[0] in probs):
            probs.update(n.output)
        elif n.op_type == "Where" and len(n.input) == 3 and {n.input[1], n.input[2]} & probs:
            other = n.input[2] if n.input[1] in probs else n.input[1]
            if other in probs or _within_unit(model, other, base_dir):
                probs.update(n.output)
    return sorted({i for n in g.node if n.op_type in MATMUL_OPS for i in n.input if i in probs})


def _within_unit(model, name: str, base_dir: Path) -> bool:
    from onnx import numpy_helper


    t = next((t for t in model.graph.initializer if t.name == name), None)
    if t is not None and int(np.prod(t.dims)) <= SMALL:
        v = initializer_value(t, base_dir)
    else:
        v = next((numpy_helper.to_array(a.t) for n in model.graph.node if n.op_type == "Constant" and
                  n.output[0] == name for a in n.attribute if a.name == "value"), None)
    return v is not None and v.dtype.kind == "f" and bool(((v >= 0) & (v <= 1)).all())
