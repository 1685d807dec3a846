"""The lean dynamic quantizer against ORT's quantize_dynamic on the same model: the
same nodes, byte-identical initializers, bit-identical outputs."""

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper


def _model(path, *, external: bool):
    """Embedding Gather, a MatMul, Gemm with transB and bias, Gemm without bias, a
    weight shared by two MatMuls, a MatMul with a computed B, a Transpose of the
    embedding, and a tensor big enough to go to the data file."""
    rng = np.random.default_rng(0)
    V, H = 50, 64
    w = lambda *s: rng.standard_normal(s).astype(np.float32) * 0.1  # noqa: E731
    inits = [
        numpy_helper.from_array(w(V, H), "emb"), numpy_helper.from_array(w(H, H), "w1"),
        numpy_helper.from_array(w(H, H), "w2t"), numpy_helper.from_array(w(H), "b2"),
        numpy_helper.from_array(w(H, 32), "w3"), numpy_helper.from_array(w(32, 32), "shared"),
        numpy_helper.from_array(np.array([-1, H], np.int64), "flat"),
    ]
    nodes = [
        helper.make_node("Gather", ["emb", "ids"], ["e"], name="gather"),
        helper.make_node("Transpose", ["e"], ["et"], name="tr", perm=[0, 2, 1]),
        helper.make_node("MatMul", ["e", "w1"], ["h1"], name="mm1"),
        helper.make_node("Reshape", ["h1", "flat"], ["h1f"], name="flatten"),
        helper.make_node("Gemm", ["h1f", "w2t", "b2"], ["h2"], name="gemm_t", transB=1),
        helper.make_node("Relu", ["h2"], ["h2r"], name="relu"),
        helper.make_node("Gemm", ["h2r", "w3"], ["h3"], name="gemm_plain"),
        helper.make_node("MatMul", ["h3", "shared"], ["h4"], name="mm_shared_a"),
        helper.make_node("MatMul", ["h4", "shared"], ["h5"], name="mm_shared_b"),
        helper.make_node("Transpose", ["h5"], ["h5t"], name="t5"),
        helper.make_node("MatMul", ["h5", "h5t"], ["gram"], name="mm_dynamic_b"),
        helper.make_node("MatMul", ["h5", "shared"], ["h6"], name="mm_excluded"),
    ]
    g = helper.make_graph(nodes, "lean", [helper.make_tensor_value_info("ids", TensorProto.INT64, ["b", "s"])],
                          [helper.make_tensor_value_info(n, TensorProto.FLOAT, None) for n in ("et", "gram", "h6")],
                          initializer=inits)
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)])
    m.ir_version = 8
    m = onnx.shape_inference.infer_shapes(m)
    if external:
        onnx.save_model(m, str(path), save_as_external_data=True, all_tensors_to_one_file=True,
                        location=path.name + ".data", size_threshold=1024)
    else:
        onnx.save_model(m, str(path))
    return path


def _nodes(m):
    return sorted((n.op_type, n.name, tuple(n.input), tuple(n.output),
                   tuple(sorted((a.name, str(helper.get_attribute_value(a))) for a in n.attribute)))
                  for n in m.graph.node)


def _inits(path):
    m = onnx.load(str(path))
    return {t.name: numpy_helper.to_array(t) for t in m.graph.initializer}, m


@pytest.mark.parametrize("weight_type,reduce_range,op_types,external", [
    ("int8", False, None, True), ("int8", True, None, True), ("uint8", False, None, True),
    ("int8", False, ["MatMul"], True),
    ("int8", False, None, False),  # inline weights: read from the model file one at a time
])
def test_same_as_ort_quantize_dynamic(tmp_path, weight_type, reduce_range, op_types, external):
    import onnxruntime as ort
    from onnxruntime.quantization import QuantType, quantize_dynamic

    from onnxforge.steps.quantize.lean_quant import quantize_dynamic_lean

    src = _model(tmp_path / "m.onnx", external=external)
    ref, out = tmp_path / "ort.onnx", tmp_path / "lean.onnx"
    quantize_dynamic(str(src), str(ref), weight_type=QuantType.QInt8 if weight_type == "int8" else QuantType.QUInt8,
                     reduce_range=reduce_range, op_types_to_quantize=op_types, nodes_to_exclude=["mm_excluded"])
    res = quantize_dynamic_lean(src, out, weight_type=weight_type, reduce_range=reduce_range, op_types=op_types,
                                nodes_to_exclude=["mm_excluded"])
    a, ma = _inits(ref)
    b, mb = _inits(out)
    assert _nodes(ma) == _nodes(mb)
    assert sorted(a) == sorted(b)
    for k in a:
        assert a[k].dtype == b[k].dtype and np.array_equal(a[k], b[k]), k
    assert res.quantized_matmuls == 5 and res.gemms_rewritten == 2
    assert res.quantized_gathers == (0 if op_types == ["MatMul"] else 1)
    assert (tmp_path / "lean.onnx.data").exists()  # big weights external, as the input's
    feeds = {"ids": np.random.default_rng(1).integers(0, 50, (2, 7))}
    ya = ort.InferenceSession(str(ref), providers=["CPUExecutionProvider"]).run(None, feeds)
    yb = ort.InferenceSession(str(out), providers=["CPUExecutionProvider"]).run(None, feeds)
    for x, y in zip(ya, yb):
        assert np.array_equal(x, y)


def test_inline_model_and_refusals(tmp_path):
    from onnxforge.steps.quantize.lean_quant import eligible, quantize_dynamic_lean

    src = _model(tmp_path / "m.onnx", external=False)  # weights inside the proto work too
    res = quantize_dynamic_lean(src, tmp_path / "q.onnx")
    assert res.quantized_matmuls == 6 and res.int8_bytes > 0
    m = onnx.load(str(src), load_external_data=False)
    assert eligible(m, op_types=None, per_channel=True, weight_type="int8") == "per-channel weights"
    m.graph.node.append(helper.make_node("Conv", ["x", "w"], ["y"]))
    assert "Conv" in eligible(m, op_types=None, per_channel=False, weight_type="int8")
    assert eligible(m, op_types=["MatMul"], per_channel=False, weight_type="int8") is None  # Conv not asked for
    with pytest.raises(ValueError, match="Conv"):
        onnx.save_model(m, str(tmp_path / "conv.onnx"))
        quantize_dynamic_lean(tmp_path / "conv.onnx", tmp_path / "q2.onnx")


def _attention_model(path, *, qkv_sizes: bool = False):
    """Embedding Gather -> com.microsoft Attention (packed QKV weight and bias, a 1-D
    mask_index) -> MatMul, the form the fused recipe hands the quantizer; a second
    Attention shares the first's input. Weights inline, as a dynamo export's."""
    rng = np.random.default_rng(3)
    V, H, heads = 40, 32, 4
    w = lambda *s: rng.standard_normal(s).astype(np.float32) * 0.2  # noqa: E731
    inits = [numpy_helper.from_array(w(V, H), "emb"), numpy_helper.from_array(w(H, 3 * H), "qkv_w"),
             numpy_helper.from_array(w(3 * H), "qkv_b"), numpy_helper.from_array(w(H, 3 * H), "qkv_w2"),
             numpy_helper.from_array(w(3 * H), "qkv_b2"), numpy_helper.from_array(w(H, H), "out_w")]
    extra = {"qkv_hidden_sizes": [H, H, H]} if qkv_sizes else {}
    nodes = [
        helper.make_node("Gather", ["emb", "ids"], ["e"], name="gather"),
        helper.make_node("Attention", ["e", "qkv_w", "qkv_b", "lengths"], ["a"], name="attn", domain="com.microsoft",
                         num_heads=heads, unidirectional=0, **extra),
        helper.make_node("Attention", ["e", "qkv_w2", "qkv_b2"], ["a2"], name="attn2", domain="com.microsoft",
                         num_heads=heads),
        helper.make_node("Add", ["a", "a2"], ["s"], name="add"),
        helper.make_node("MatMul", ["s", "out_w"], ["y"], name="out"),
    ]
    g = helper.make_graph(nodes, "attn", [helper.make_tensor_value_info("ids", TensorProto.INT64, [2, 6]),
                                          helper.make_tensor_value_info("lengths", TensorProto.INT32, [2])],
                          [helper.make_tensor_value_info("y", TensorProto.FLOAT, [2, 6, H])], initializer=inits)
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", 17), helper.make_opsetid("com.microsoft", 1)])
    m.ir_version = 8
    onnx.save_model(onnx.shape_inference.infer_shapes(m), str(path))
    return path


@pytest.mark.parametrize("weight_type,reduce_range", [("int8", False), ("uint8", True)])
def test_attention_becomes_qattention_as_ort_writes_it(tmp_path, weight_type, reduce_range):
    """The fused recipe's graph (com.microsoft Attention) took ORT's quantizer, which holds
    the model several times over: BERT-base peaked at 3.7x its weights."""
    import onnxruntime as ort
    from onnxruntime.quantization import QuantType, quantize_dynamic

    from onnxforge.steps.quantize.lean_quant import eligible, quantize_dynamic_lean

    src = _attention_model(tmp_path / "m.onnx")
    assert eligible(onnx.load(src), op_types=None, per_channel=False, weight_type=weight_type) is None
    ref, out = tmp_path / "ort.onnx", tmp_path / "lean.onnx"
    quantize_dynamic(str(src), str(ref), weight_type=QuantType.QInt8 if weight_type == "int8" else QuantType.QUInt8,
                     reduce_range=reduce_range)
    res = quantize_dynamic_lean(src, out, weight_type=weight_type, reduce_range=reduce_range)
    a, ma = _inits(ref)
    b, mb = _inits(out)
    assert _nodes(ma) == _nodes(mb)
    assert [n.op_type for n in mb.graph.node].count("QAttention") == 2 and res.quantized_attentions == 2
    assert sorted(a) == sorted(b)
    for k in a:
        assert a[k].dtype == b[k].dtype and np.array_equal(a[k], b[k]), k
    feeds = {"ids": np.random.default_rng(1).integers(0, 40, (2, 6)), "lengths": np.array([6, 3], np.int32)}
    ya = ort.InferenceSession(str(ref), providers=["CPUExecutionProvider"]).run(None, feeds)
    yb = ort.InferenceSession(str(out), providers=["CPUExecutionProvider"]).run(None, feeds)
    for x, y in zip(ya, yb):
        assert np.array_equal(x, y)


def test_attention_with_qkv_hidden_sizes_or_a_computed_weight_is_left_as_ort_leaves_it(tmp_path):
    import onnxruntime as ort  # noqa: F401  (quantize_dynamic needs it)
    from onnxruntime.quantization import quantize_dynamic

    from onnxforge.steps.quantize.lean_quant import eligible, quantize_dynamic_lean

    src = _attention_model(tmp_path / "m.onnx", qkv_sizes=True)
    quantize_dynamic(str(src), str(tmp_path / "ort.onnx"))
    quantize_dynamic_lean(src, tmp_path / "lean.onnx")
    assert _nodes(onnx.load(tmp_path / "ort.onnx")) == _nodes(onnx.load(tmp_path / "lean.onnx"))
    m = onnx.load(src)
    m.graph.node[1].input[1] = "e"  # a weight no initializer holds
    assert "computed" in eligible(m, op_types=None, per_channel=False, weight_type="int8")
