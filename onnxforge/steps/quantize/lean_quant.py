"""Dynamic int8 quantization of MatMul/Gemm (and Gather) weights one initializer at a
time, for models too large for ORT's quantizer to hold.

ORT's ``quantize_dynamic`` loads the whole fp32 model, reloads it once more through
shape inference after turning Gemm into MatMul, and builds the int8 initializers
beside both: a GPT-2-large export (3.1 GB of weights) peaked at 13.6 GB. Here the
graph is read without its weights, each weight is read from its file (the data file,
or the model file where it is inline: fileio's weights_by_reference),
quantized and written out before the next one is read, and weights that stay fp32
are copied in chunks; the peak is about one weight tensor.

The output is meant to be what ``quantize_dynamic`` writes for the same options, for
the graphs this path accepts (``eligible`` says why it does not accept one, and the
caller then uses ORT's quantizer):

- Gemm with alpha = beta = 1 and transA = 0 becomes MatMul (+ Add for C), a transB
  weight transposed into ``NAME_Transposed``, as ORT's ``replace_gemm_with_matmul``;
- MatMul with an initializer B: ``DynamicQuantizeLinear`` on A (uint8, once per
  tensor), ``MatMulInteger``, ``Cast``, and two ``Mul`` by the scales, with ORT's
  node and tensor names; the weight is quantized by ORT's own ``quantize_data``
  (int8 symmetric or uint8 asymmetric, reduce_range as asked), per tensor;
- Gather of an initializer (embeddings): the table quantized as an activation
  (uint8, asymmetric), the Gather run on it, ``DequantizeLinear`` before its float
  consumers; Direct8Bit ops (Transpose ...) in the op types pass the uint8 through;
- com.microsoft Attention with an initializer weight (the fused recipe's graph): the
  input as a MatMul's, the packed QKV weight per tensor, into QAttention.

Not accepted (ORT's quantizer is used): per-channel weights, subgraphs, opset < 11,
non-float32 weights, an Attention whose weight is computed, or any other op type ORT
would quantize in dynamic mode (Conv, LSTM, EmbedLayerNormalization) present in the
model and the op types. ``tests`` compare this output with ``quantize_dynamic``'s: the same nodes,
byte-identical initializers and bit-identical outputs.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

from onnxforge.core.fileio import has_subgraphs, initializer_value

# Weights from which quantize() takes this path (ORT's quantizer below it). On BERT-base
# (418 MiB) ORT's pre-processing and quantizer peaked at 3.6x the weights, this path at
# 1.6x; pre-processing had failed there anyway (incomplete symbolic shape inference of
# the dynamo export). Below this size the copies cost less than the process itself, and
# pre-processing's folding may still leave more to quantize.
LEAN_MIN_BYTES = 256 << 20
ALIGN = 4096  # page-aligned offsets let ORT map external initializers instead of copying them
INLINE_MAX = 1024  # tensors under this stay in the model proto (as onnx and ORT write them)
INTEGER_OPS = ("Conv", "MatMul", "Attention", "LSTM", "Gather", "Transpose", "EmbedLayerNormalization")
DIRECT_8BIT = ("Transpose",)
NOT_HANDLED = ("Conv", "LSTM", "EmbedLayerNormalization")


@dataclass(frozen=True)
class LeanResult:
    quantized_matmuls: int
    quantized_gathers: int
    gemms_rewritten: int
    int8_bytes: int
    fp32_bytes_copied: int
    largest_tensor_bytes: int
    quantized_attentions: int = 0


def eligible(model, *, op_types: Sequence[str] | None, per_channel: bool, weight_type: str) -> str | None:
    """None when this path can quantize ``model`` (a proto loaded without its weights)
    exactly as ORT would; else why not."""
    from onnx import TensorProto

    if per_channel:
        return "per-channel weights"
    if weight_type not in ("int8", "uint8"):
        return f"weight type {weight_type}"
    opset = next((o.version for o in model.opset_import if o.domain in ("", "ai.onnx")), 0)
    if opset < 11:
        return f"opset {opset} < 11"
    if has_subgraphs(model.graph):
        return "the graph has subgraphs"
    types = set(op_types or INTEGER_OPS)
    present = {n.op_type for n in model.graph.node if n.domain in ("", "ai.onnx", "com.microsoft")}
    other = sorted((present & types) & set(NOT_HANDLED))
    if other:
        return f"op types this path does not quantize: {', '.join(other)}"
    inits = {t.name: t for t in model.graph.initializer}
    for n in model.graph.node:
        if n.op_type in ("MatMul", "Gemm", "Attention") and len(n.input) > 1 and n.input[1] in inits \
                and inits[n.input[1]].data_type != TensorProto.FLOAT:
            return f"a {TensorProto.DataType.Name(inits[n.input[1]].data_type)} weight ({n.input[1]})"
        if n.op_type == "Attention" and "Attention" in types and (len(n.input) < 2 or n.input[1] not in inits):
            return f"an Attention whose weight is computed ({n.name or n.output[0]})"
    return None


def decide(src, op_types, per_channel: bool, weight_type: str, notes: list) -> bool:
    """Whether ``quantize()`` takes this path: models of LEAN_MIN_BYTES of weights or more
    that it quantizes as ORT would. The reason goes to ``notes`` either way."""
    from onnxforge.core.fileio import load_onnx
    from onnxforge.backends.onnx.inspection import inspect_model

    if inspect_model(src, runtime=False).parameter_bytes < LEAN_MIN_BYTES:
        return False
    why = eligible(load_onnx(src, graph_only=True), op_types=op_types, per_channel=per_channel,
                   weight_type=weight_type)
    if why:
        notes.append(f"large model quantized by ORT's quantizer, which holds it in memory several times ({why})")
        return False
    notes.append("large model: weights quantized one initializer at a time (the same output as ORT's "
                 "quantize_dynamic, without holding the model); ORT's pre-processing skipped")
    return True


class _DataWriter:
    """Appends tensor bytes to one external data file at page-aligned offsets."""

    def __init__(self, path: Path):
        self.path = path
        self.f = open(path, "wb")
        self.offset = 0

    def put(self, tensor, data: bytes | None = None, copy_from: tuple[Path, int, int] | None = None) -> None:
        from onnx import TensorProto

        from onnxforge.core.fileio import copy_range

        pad = (-self.offset) % ALIGN
        if pad:
            self.f.write(b"\0" * pad)
            self.offset += pad
        start = self.offset
        if data is not None:
            self.f.write(data)
            length = len(data)
        else:
            src, off, length = copy_from
            copy_range(src, off, length, self.f)
        self.offset += length
        tensor.ClearField("raw_data")
        del tensor.external_data[:]
        tensor.data_location = TensorProto.EXTERNAL
        for k, v in (("location", self.path.name), ("offset", str(start)), ("length", str(length))):
            e = tensor.external_data.add()
            e.key, e.value = k, v

    def close(self):
        self.f.close()


def _external(t) -> dict | None:
    from onnx.external_data_helper import uses_external_data

    return {e.key: e.value for e in t.external_data} if uses_external_data(t) else None


def quantize_dynamic_lean(
    src: str | Path,
    dst: str | Path,
    *,
    weight_type: str = "int8",
    reduce_range: bool = False,
    op_types: Sequence[str] | None = None,
    nodes_to_exclude: Sequence[str] = (),
) -> LeanResult:
    """Write ``src`` dynamically quantized to ``dst`` (weights in ``dst.name + '.data'``),
    reading one weight at a time. Raise ValueError when ``eligible`` refuses the model."""
    import onnx
    from onnx import TensorProto

    from onnxforge.core.fileio import load_onnx

    src, dst = Path(src), Path(dst)
    base = src.parent
    model = load_onnx(src, weights_by_reference=True)  # inline weights too are read one at a time
    why = eligible(model, op_types=op_types, per_channel=False, weight_type=weight_type)
    if why:
        raise ValueError(f"not for the lean path: {why}")
    g = model.graph
    inits = {t.name: t for t in g.initializer}
    # transposed Gemm weights are computed when they are quantized, not before
    gemms, lazy = _gemm_to_matmul(model, inits, base)
    w_qtype = TensorProto.INT8 if weight_type == "int8" else TensorProto.UINT8
    rw = _Rewrite(g, inits, lazy, base, w_qtype, reduce_range)
    rw.run(set(op_types or INTEGER_OPS), set(nodes_to_exclude))
    # an initializer survives when a node still reads it and no node now computes it
    # (a DequantizeLinear replaces a weight that an excluded node reads)
    used = ({i for n in rw.new_nodes for i in n.input} | {o.name for o in g.output}) - \
        {o for n in rw.new_nodes for o in n.output}
    data_path = dst.parent / (dst.name + ".data")
    kept, int8_bytes, copied, written = _write_initializers(rw, used, data_path)
    del g.initializer[:]
    g.initializer.extend(kept)
    del g.node[:]
    g.node.extend(rw.new_nodes)
    for gi in [i for i in g.input if i.name in inits and i.name not in used]:
        g.input.remove(gi)
    from onnxruntime.quantization.onnx_quantizer import __producer__, __version__

    model.producer_name = __producer__
    model.producer_version = __version__
    tmp = dst.with_name(dst.name + ".tmp")
    onnx.save_model(model, str(tmp))
    os.replace(tmp, dst)
    if not written:
        data_path.unlink(missing_ok=True)
    return LeanResult(rw.n_matmul, rw.n_gather, gemms, int8_bytes, copied, rw.largest, rw.n_attention)


class _Rewrite:
    """The node-by-node rewrite, tracking what ORT's quantizer tracks: quantized_value_map
    (``qvalues``: initializers, and outputs of ops that now produce uint8), the values
    whose float producer is gone (``replaced``: they need a DequantizeLinear before float
    consumers), and the DynamicQuantizeLinear per activation (``dql``)."""

    def __init__(self, g, inits, lazy, base: Path, w_qtype, reduce_range: bool):
        from onnx import TensorProto

        self.g, self.inits, self.lazy, self.base = g, inits, lazy, base
        self.w_qtype, self.reduce_range = w_qtype, reduce_range
        self.w_symmetric = w_qtype == TensorProto.INT8  # ORT's default: signed weights are symmetric
        self.a_qtype = TensorProto.UINT8  # dynamic activations are always uint8
        self.float_type = {vi.name: vi.type.tensor_type.elem_type for vi in [*g.value_info, *g.output, *g.input]}
        self.float_type.update({t.name: t.data_type for t in g.initializer})
        self.qvalues: dict[str, tuple[str, str, str]] = {}
        self.replaced: set[str] = set()
        self.produced: set[str] = {i.name for i in g.input if i.name not in inits}
        self.dql: dict[str, tuple[str, str, str]] = {}
        self.new_inits: dict[str, object] = {}
        self.new_nodes: list = []
        self.emitted_dq: set[str] = set()
        self.emitted_scales: set[str] = set()
        self.n_matmul = self.n_gather = self.n_attention = self.largest = 0

    def run(self, types: set[str], excluded: set[str]) -> None:
        from onnx import TensorProto

        weights = self.inits.keys() | self.lazy.keys()
        for node in list(self.g.node):
            kind = node.op_type
            ok = kind in types and node.name not in excluded and node.domain in ("", "ai.onnx")
            if ok and kind == "MatMul" and node.input[1] in weights:
                self.matmul(node)
            elif ok and kind == "Gather" and node.input[0] in self.inits and self.inits[node.input[0]].data_type in (
                    TensorProto.FLOAT, TensorProto.FLOAT16):
                self.quantize_initializer(node.input[0], self.a_qtype, False, False)
                self.passthrough(node)
                self.n_gather += 1
            elif ok and kind in DIRECT_8BIT and node.input[0] in self.replaced:
                self.passthrough(node)
            elif kind == "Attention" and kind in types and node.name not in excluded \
                    and node.domain == "com.microsoft" and not any(a.name == "qkv_hidden_sizes" for a in node.attribute):
                self.attention(node)  # ORT leaves one with qkv_hidden_sizes in fp32
            else:
                for i in node.input:
                    self.dequantize(i)
                self.emit(node)
        for o in self.g.output:
            self.dequantize(o.name)

    def value_of(self, name):
        arr = self.lazy[name]() if name in self.lazy else initializer_value(self.inits[name], self.base)
        self.largest = max(self.largest, arr.nbytes)
        return arr

    def quantize_initializer(self, name, qtype, symmetric, rr):
        import numpy as np
        from onnx import TensorProto, helper
        from onnxruntime.quantization.quant_utils import quantize_data

        if name in self.qvalues:
            return self.qvalues[name]
        data = self.value_of(name)
        zp, scale, q = quantize_data(data.flatten(), qtype, symmetric, reduce_range=rr, min_real_range=None)
        qn, sn, zn = name + "_quantized", name + "_scale", name + "_zero_point"
        dims = list(self.inits[name].dims) if name in self.inits else list(data.shape)
        self.new_inits[sn] = helper.make_tensor(sn, TensorProto.FLOAT, [], scale.reshape((-1,)).tolist())
        self.new_inits[zn] = helper.make_tensor(zn, qtype, [], zp.reshape((-1,)).tolist())
        qt = TensorProto(name=qn, data_type=qtype, dims=dims)
        self.new_inits[qn] = (qt, np.asarray(q).reshape(dims).astype(helper.tensor_dtype_to_np_dtype(qtype)).tobytes())
        self.qvalues[name] = (qn, sn, zn)
        return self.qvalues[name]

    def dequantize(self, value) -> None:
        # as ORT's _dequantize_value: a quantized value (an initializer, or a uint8 op output)
        # read by a float consumer, unless some new node produces its float version
        from onnx import helper

        if value in self.qvalues and value not in self.produced and value + "_DequantizeLinear" not in self.emitted_dq:
            self.emitted_dq.add(value + "_DequantizeLinear")
            qn, sn, zn = self.qvalues[value]
            self.emit(helper.make_node("DequantizeLinear", [qn, sn, zn], [value], value + "_DequantizeLinear"))

    def emit(self, *nodes) -> None:
        self.new_nodes.extend(nodes)
        for n in nodes:
            self.produced.update(n.output)

    def passthrough(self, node) -> None:
        """A Gather of a quantized table, or an op that moves uint8 as it is: its output is
        the quantized value, under the quantized input's scale and zero point."""
        _, s, z = self.qvalues[node.input[0]]
        out = node.output[0]
        self.qvalues[out] = (out + "_quantized", s, z)
        self.replaced.add(out)
        node.input[0] = self.qvalues[node.input[0]][0]
        node.output[0] = out + "_quantized"
        self.emit(node)

    def activation(self, a) -> tuple[list, tuple[str, str, str]]:
        from onnx import helper

        if a in self.qvalues:
            return [], self.qvalues[a]
        if a in self.inits:
            return [], self.quantize_initializer(a, self.a_qtype, False, False)
        if a in self.dql:
            return [], self.dql[a]
        self.dql[a] = (a + "_quantized", a + "_scale", a + "_zero_point")
        return [helper.make_node("DynamicQuantizeLinear", [a], list(self.dql[a]), a + "_QuantizeLinear")], self.dql[a]

    def attention(self, node) -> None:
        """As ORT's AttentionQuant: QAttention(input, weight, bias, input scale, weight scale,
        mask_index, input zero point, weight zero point, past), inputs past the fifth
        dropped (the recipe's rewrite leaves none), attributes kept."""
        from onnx import helper

        pre, (qa, sa, za) = self.activation(node.input[0])
        qw, sw, zw = self.quantize_initializer(node.input[1], self.w_qtype, self.w_symmetric, self.reduce_range)
        opt = lambda i: node.input[i] if len(node.input) > i else ""  # noqa: E731
        q = helper.make_node("QAttention", [qa, qw, node.input[2], sa, sw, opt(3), za, zw, opt(4)], list(node.output),
                             node.name + "_quant" if node.name else "", domain="com.microsoft")
        q.attribute.extend(sorted(node.attribute, key=lambda a: a.name))  # make_node's order, as ORT's
        self.emit(*pre, q)
        self.n_attention += 1

    def matmul(self, node) -> None:
        from onnx import TensorProto, helper

        pre, (qa, sa, za) = self.activation(node.input[0])
        qb, sb, zb = self.quantize_initializer(node.input[1], self.w_qtype, self.w_symmetric, self.reduce_range)
        mi_name = node.name + "_quant" if node.name else ""
        out = node.output[0]
        mi_out = out + "_output_quantized"
        cast_out = mi_out + "_cast_output"
        otype = self.float_type.get(out) or TensorProto.FLOAT
        scales_name = mi_name + "_scales_mul" if mi_name else sa + "_" + sb + "_mul"
        nodes = pre + [
            helper.make_node("MatMulInteger", [qa, qb, za, zb], [mi_out], mi_name),
            helper.make_node("Cast", [mi_out], [cast_out], mi_out + "_cast", to=otype),
        ]
        if scales_name not in self.emitted_scales:
            self.emitted_scales.add(scales_name)
            nodes.append(helper.make_node("Mul", [sa, sb], [scales_name + ":0"], scales_name))
        nodes.append(helper.make_node("Mul", [cast_out, scales_name + ":0"], [out],
                                      mi_name + "_output_scale_mul" if mi_name else ""))
        self.emit(*nodes)
        self.n_matmul += 1


def _write_initializers(rw: _Rewrite, used: set[str], data_path: Path) -> tuple[list, int, int, int]:
    """The initializers the new graph reads: fp32 tensors copied in chunks (never decoded),
    the quantized ones written from their bytes. Returns (tensors, int8 bytes, fp32 bytes
    copied, bytes in the data file)."""
    from onnx import numpy_helper

    writer = _DataWriter(data_path)
    int8_bytes = copied = 0
    kept = []
    try:
        for t in rw.g.initializer:
            if t.name not in used:
                continue
            info = _external(t)
            if info is not None:
                loc = rw.base / info["location"]
                length = int(info.get("length") or 0) or loc.stat().st_size
                writer.put(t, copy_from=(loc, int(info.get("offset", 0) or 0), length))
                copied += length
            kept.append(t)
        for name, fn in rw.lazy.items():  # unquantized transposed weights (an excluded Gemm)
            if name in used and name not in rw.qvalues:
                arr = fn()
                t = numpy_helper.from_array(arr, name)
                if arr.nbytes >= INLINE_MAX:
                    writer.put(t, data=t.raw_data)
                kept.append(t)
                copied += arr.nbytes
        for name, item in rw.new_inits.items():
            if name not in used:
                continue
            if isinstance(item, tuple):  # (quantized tensor without data, its bytes)
                t, raw = item
                if len(raw) >= INLINE_MAX:
                    writer.put(t, data=raw)
                else:
                    t.raw_data = raw
                int8_bytes += len(raw)
            else:
                t = item
            kept.append(t)
    finally:
        writer.close()
    return kept, int8_bytes, copied, writer.offset


def gemm_as_matmul(model, base: Path) -> int:
    """Rewrite plain Gemms (alpha = beta = 1, no transA) as MatMul (+ Add) in place, the
    transposed weights computed now; weights no node uses any more are dropped. For
    rewriters that mishandle Gemm (onnxscript's fusions, see simplify.py)."""
    from onnx import numpy_helper

    def used() -> set:
        return {i for n in model.graph.node for i in n.input}

    before = used()
    count, lazy = _gemm_to_matmul(model, {t.name: t for t in model.graph.initializer}, base)
    for name, load in lazy.items():
        model.graph.initializer.append(numpy_helper.from_array(load(), name))
    gone = before - used()
    keep = [t for t in model.graph.initializer if t.name not in gone]
    del model.graph.initializer[:]
    model.graph.initializer.extend(keep)
    return count


def _gemm_to_matmul(model, inits, base: Path) -> tuple[int, dict]:
    """ORT's ``replace_gemm_with_matmul``, without reading weights: a transB weight's
    transposed value is computed only when it is quantized. Returns the number of
    Gemms rewritten and the loaders of the transposed weights by their new names."""
    from onnx import helper

    g = model.graph
    names = {t.name for t in g.initializer} | {v.name for v in (*g.input, *g.output, *g.value_info)}
    for n in g.node:
        names.update(n.input)
        names.update(n.output)
    lazy: dict = {}
    transposed: dict[str, str] = {}
    out = []
    count = 0
    for node in g.node:
        if node.op_type != "Gemm":
            out.append(node)
            continue
        attrs = {a.name: helper.get_attribute_value(a) for a in node.attribute}
        if attrs.get("alpha", 1.0) != 1.0 or attrs.get("beta", 1.0) != 1.0 or attrs.get("transA", 0) != 0:
            out.append(node)
            continue
        b = node.input[1]
        if attrs.get("transB", 0) == 1:
            if b in inits:
                if b not in transposed:
                    tn = b + "_Transposed"
                    k = 0
                    while any(tn + s in names for s in ("", "_quantized", "_scale", "_zero_point")):
                        k += 1
                        tn = f"{b}_Transposed_{k}"
                    names.update(tn + s for s in ("", "_quantized", "_scale", "_zero_point"))
                    transposed[b] = tn
                    lazy[tn] = _transposer(inits[b], base)
                b = transposed[b]
            else:
                t_out = b + "_Transposed"
                out.append(helper.make_node("Transpose", [node.input[1]], [t_out],
                                            name=node.name + "_Transpose" if node.name else ""))
                b = t_out
        mm_out = node.output[0] + ("_MatMul" if len(node.input) > 2 else "")
        out.append(helper.make_node("MatMul", [node.input[0], b], [mm_out],
                                    name=node.name + "_MatMul" if node.name else ""))
        if len(node.input) > 2:
            out.append(helper.make_node("Add", [mm_out, node.input[2]], list(node.output),
                                        name=node.name + "_Add" if node.name else ""))
        count += 1
    del g.node[:]
    g.node.extend(out)
    return count, lazy


def _transposer(tensor, base: Path):
    return lambda: initializer_value(tensor, base).T.copy()
