"""Attention rewrites for ORT's quantizer, on hand-built graphs of the shape onnxscript's
fusions emit (fast, no torch): packed weights as Concat, qkv_hidden_sizes, and the padding
mask as attention_bias = Where(mask[b, k], 0, -FLT_MAX) of shape [B, 1, S, S]."""

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

H, HEADS, NEG = 16, 2, np.finfo(np.float32).min


def _attention_model(path, *, bias: str = "padding", qkv_equal: bool = True):
    rng = np.random.default_rng(0)
    q = H if qkv_equal else H // 2
    inits = [numpy_helper.from_array(rng.standard_normal((H, n)).astype(np.float32) * 0.3, f"w{c}")
             for c, n in (("q", q), ("k", q), ("v", H))]
    inits += [numpy_helper.from_array(rng.standard_normal(2 * q + H).astype(np.float32) * 0.1, "b"),
              numpy_helper.from_array(np.array(0, np.int64), "zero"), numpy_helper.from_array(np.array(1, np.int64), "one"),
              numpy_helper.from_array(np.array([0, 1], np.int64), "ax01"), numpy_helper.from_array(np.array([3], np.int64), "ax3"),
              numpy_helper.from_array(np.array([1, 2], np.int64), "ax12"), numpy_helper.from_array(np.array([2], np.int64), "ax2"),
              numpy_helper.from_array(np.array(0.0, np.float32), "f0"), numpy_helper.from_array(np.array(NEG, np.float32), "fneg")]
    nodes = [
        helper.make_node("Concat", ["wq", "wk", "wv"], ["w"], axis=1),  # onnxscript leaves this unfolded
        # key validity from the mask: [B, 1, 1, S]
        helper.make_node("Cast", ["attention_mask"], ["mb"], to=TensorProto.BOOL),
        helper.make_node("Unsqueeze", ["mb", "ax12"], ["m4"]),
        # query positions: [1, 1, S, 1], all >= 0 (what the exporter ANDs in)
        helper.make_node("Shape", ["attention_mask"], ["sh"], start=1, end=2),
        helper.make_node("Squeeze", ["sh"], ["s"]),
        helper.make_node("Range", ["zero", "s", "one"], ["pos"]),
        helper.make_node("Unsqueeze", ["pos", "ax01"], ["p3"]),
        helper.make_node("Unsqueeze", ["p3", "ax3"], ["q4"]),
        helper.make_node("GreaterOrEqual", ["q4", "zero"], ["qok"]),
    ]
    if bias == "padding":
        nodes.append(helper.make_node("And", ["m4", "qok"], ["cond"]))
    elif bias == "causal":  # key k <= query q as well: not a padding mask
        nodes += [helper.make_node("Unsqueeze", ["p3", "ax2"], ["k4"]),
                  helper.make_node("LessOrEqual", ["k4", "q4"], ["causal"]),
                  helper.make_node("And", ["m4", "causal"], ["cond"])]
    elif bias == "positive":  # mask > 0 instead of != 0: differs on negative mask values
        nodes += [helper.make_node("Greater", ["attention_mask", "zero"], ["mpos"]),
                  helper.make_node("Unsqueeze", ["mpos", "ax12"], ["mp4"]),
                  helper.make_node("And", ["mp4", "qok"], ["cond"])]
    nodes.append(helper.make_node("Where", ["cond", "f0", "fneg"], ["attn_bias"]))
    attrs = {"num_heads": HEADS, "qkv_hidden_sizes": [q, q, H]}
    nodes.append(helper.make_node("Attention", ["x", "w", "b", "", "", "attn_bias"], ["y"], name="attn",
                                  domain="com.microsoft", **attrs))
    g = helper.make_graph(nodes, "attn", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["B", "S", H]),
                                          helper.make_tensor_value_info("attention_mask", TensorProto.INT64, ["B", "S"])],
                          [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["B", "S", H])], initializer=inits)
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", 17), helper.make_opsetid("com.microsoft", 1)])
    m.ir_version = 8
    onnx.save_model(m, str(path))
    return path


def _run(path, feeds):
    import onnxruntime as ort

    return ort.InferenceSession(str(path), providers=["CPUExecutionProvider"]).run(None, feeds)[0]


def _padded_feeds():
    rng = np.random.default_rng(1)
    x = rng.standard_normal((3, 6, H)).astype(np.float32)
    mask = np.array([[1, 1, 1, 1, 1, 1], [1, 1, 1, 1, 0, 0], [1, 0, 1, 1, 0, 1]], np.int64)
    return {"x": x, "attention_mask": mask}


def _cos(a, b):
    a, b = a.ravel().astype(np.float64), b.ravel().astype(np.float64)
    return float(a @ b / np.linalg.norm(a) / np.linalg.norm(b))


def test_padding_bias_becomes_mask_index_exactly(tmp_path):
    from onnxforge.steps.quantize.attention import attention_nodes, rewrite_for_quantization

    src = _attention_model(tmp_path / "a.onnx")
    rep = rewrite_for_quantization(src, tmp_path / "r.onnx")
    (node,) = rep.nodes
    assert node.dropped_qkv_hidden_sizes and node.mask == "mask_index" and node.quantizable
    assert rep.mask_inputs == ("attention_mask",) and rep.removed_nodes >= 8  # the bias sub-graph is gone
    m = onnx.load(str(tmp_path / "r.onnx"))
    (att,) = attention_nodes(m)
    assert len(att.input) == 4 and att.input[3] == "attention_mask__onnxforge_mask_index"
    assert {a.name: a for a in att.attribute}["mask_filter_value"].f == NEG
    assert not any(a.name == "qkv_hidden_sizes" for a in att.attribute)
    assert att.input[1] in {t.name for t in m.graph.initializer}  # the Concat of weights is folded
    feeds = _padded_feeds()
    assert np.array_equal(_run(src, feeds), _run(tmp_path / "r.onnx", feeds))  # bit for bit, padding included


def test_quantized_rewrite_keeps_the_mask_and_the_trap_without_it(tmp_path):
    """ORT's AttentionQuant copies inputs 0-4 into QAttention: an Attention that still has
    its attention_bias loses the mask silently. Only padded masks show it."""
    from onnxruntime.quantization import quantize_dynamic

    from onnxforge.steps.quantize.attention import rewrite_for_quantization

    src = _attention_model(tmp_path / "a.onnx")
    rewrite_for_quantization(src, tmp_path / "r.onnx")
    quantize_dynamic(str(tmp_path / "r.onnx"), str(tmp_path / "rq.onnx"))
    ops = [n.op_type for n in onnx.load(str(tmp_path / "rq.onnx")).graph.node]
    assert "QAttention" in ops and "Attention" not in ops
    # the trap: drop only qkv_hidden_sizes, leave the bias, quantize
    m = onnx.load(str(src))
    att = next(n for n in m.graph.node if n.op_type == "Attention")
    att.attribute.remove(next(a for a in att.attribute if a.name == "qkv_hidden_sizes"))
    onnx.save_model(m, str(tmp_path / "trap.onnx"))
    quantize_dynamic(str(tmp_path / "trap.onnx"), str(tmp_path / "trapq.onnx"))
    trap = onnx.load(str(tmp_path / "trapq.onnx"))
    (qa,) = [n for n in trap.graph.node if n.op_type == "QAttention"]
    assert len(qa.input) < 6 or not qa.input[5]  # no mask_index: the bias was dropped
    padded, full = _padded_feeds(), dict(_padded_feeds(), attention_mask=np.ones((3, 6), np.int64))
    ref_p, ref_f = _run(src, padded), _run(src, full)
    assert _cos(ref_p, _run(tmp_path / "rq.onnx", padded)) > 0.999
    assert _cos(ref_f, _run(tmp_path / "trapq.onnx", full)) > 0.999  # unpadded, the trap looks fine
    padded_rows = ref_p[1:]  # rows 1 and 2 have padding
    assert _cos(padded_rows, _run(tmp_path / "trapq.onnx", padded)[1:]) < 0.99  # padded, it is wrong


@pytest.mark.parametrize("kind,why", [("causal", "not a padding mask"), ("positive", "not a padding mask")])
def test_other_biases_are_kept(tmp_path, kind, why):
    from onnxforge.steps.quantize.attention import rewrite_for_quantization

    src = _attention_model(tmp_path / "a.onnx", bias=kind)
    rep = rewrite_for_quantization(src, tmp_path / "r.onnx")
    (node,) = rep.nodes
    assert node.mask == "kept attention_bias" and why in node.reason and not node.quantizable
    assert not rep.mask_inputs
    feeds = _padded_feeds()
    feeds["attention_mask"][2, 3] = -1  # the value on which "> 0" and "!= 0" differ
    assert np.array_equal(_run(src, feeds), _run(tmp_path / "r.onnx", feeds))


def test_unequal_qkv_sizes_are_kept(tmp_path):
    from onnxforge.steps.quantize.attention import rewrite_for_quantization

    rep = rewrite_for_quantization(_attention_model(tmp_path / "a.onnx", qkv_equal=False), tmp_path / "r.onnx")
    (node,) = rep.nodes
    assert not node.dropped_qkv_hidden_sizes and not node.quantizable and "differ" in node.reason
    assert node.mask == "mask_index"  # the mask rewrite does not depend on the sizes


def test_padded_mask_inputs():
    from onnxforge.steps.quantize.attention import padded_mask_inputs
    from onnxforge.core.types import TensorSpec

    specs = [TensorSpec("ids", "int64", ("batch", "seq")), TensorSpec("attention_mask", "int64", ("batch", "seq"))]
    right, holes = padded_mask_inputs(specs, ("attention_mask",), dims={"batch": 3, "seq": 8})
    assert right["attention_mask"].shape == (3, 8) and right["ids"].shape == (3, 8)
    assert right["attention_mask"][0].sum() < 8 and (right["attention_mask"][:, 0] == 1).all()
    assert (np.diff(right["attention_mask"], axis=1) <= 0).all()  # right padding
    assert 0 < holes["attention_mask"].mean() < 1 and set(np.unique(holes["attention_mask"])) <= {0, 1}


def test_check_padded_catches_a_lost_mask_and_writes_elsewhere(tmp_path):
    from onnxforge.steps.quantize.attention import check_padded, rewrite_for_quantization
    from onnxforge.core.types import Tolerance

    src = _attention_model(tmp_path / "a.onnx")
    onnx.save_model(onnx.load(str(src)), str(tmp_path / "ext.onnx"), save_as_external_data=True,
                    all_tensors_to_one_file=True, location="ext.onnx.data", size_threshold=256)
    (tmp_path / "other").mkdir()
    rep = rewrite_for_quantization(tmp_path / "ext.onnx", tmp_path / "other" / "r.onnx")  # data copied over
    assert rep.changed and (tmp_path / "other" / "ext.onnx.data").exists()
    tol = Tolerance(1e-5, 1e-5)
    assert check_padded(src, tmp_path / "other" / "r.onnx", rep.mask_inputs, tol) == ""
    m = onnx.load(str(tmp_path / "other" / "r.onnx"))
    att = next(n for n in m.graph.node if n.op_type == "Attention")
    del att.input[3:]  # what AttentionQuant does to a bias: the mask is gone
    onnx.save_model(m, str(tmp_path / "other" / "lost.onnx"))
    assert "y" in check_padded(src, tmp_path / "other" / "lost.onnx", rep.mask_inputs, tol)
