"""simplify --transformer bert on a Hugging Face folder's dynamo export (issue #27): the
padding bias, built from attention_mask and token_type_ids' shape, becomes mask_index
and its sub-graph goes, so the fused graph is small and quantizes with its mask."""

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper

from conftest import json_result as result

MASK_OPS = {"Range", "Expand", "GatherND", "Where", "And", "GreaterOrEqual", "Max"}


pytestmark = pytest.mark.xdist_group("bert_masks")  # hf_bert: converted once, on one worker


@pytest.fixture(scope="module")
def hf_bert(tmp_path_factory):
    """models.py's tiny BERT saved as a Hugging Face folder and converted: inputs
    input_ids, attention_mask, token_type_ids (what BertTokenizer makes)."""
    pytest.importorskip("transformers")
    import models

    import onnxforge

    d = tmp_path_factory.mktemp("hf_bert")
    models.tiny_bert().save_pretrained(d / "hf")
    assert onnxforge.convert_torch(str(d / "hf"), d / "bert.onnx", exporter="dynamo").passed
    return d / "bert.onnx"


def _padded_feeds(batch=3, seq=16, seed=0):
    rng = np.random.default_rng(seed)
    right = np.ones((batch, seq), np.int64)
    right[1, seq // 2:] = 0
    right[2, 2:] = 0
    holes = (rng.random((batch, seq)) < 0.6).astype(np.int64)
    holes[:, 0] = 1
    ids = rng.integers(0, 99, (batch, seq))
    tt = np.zeros((batch, seq), np.int64)
    tt[:, seq // 2:] = 1
    return [{"input_ids": ids, "attention_mask": m, "token_type_ids": tt} for m in (right, holes)]


def _run(path, feeds):
    import onnxruntime as ort

    return ort.InferenceSession(str(path), providers=["CPUExecutionProvider"]).run(None, feeds)


@pytest.mark.slow  # a BERT export, simplify and a quantization
def test_hf_bert_fuses_its_mask_into_the_attention(cli, hf_bert, tmp_path):
    out = tmp_path / "s.onnx"
    r = cli("simplify", hf_bert, "-o", out, "--transformer", "bert", "--json")
    assert r.code == 0, r.err + r.out
    res = result(r)
    ops = res["after"]["ops"]
    # 45 before the mask sub-graph went (its 20 nodes stayed beside an attention_bias); 27
    # before SkipLayerNormalization and BiasGelu were written back as Sum + LayerNormalization
    # (+ the bias Add) and Add + Gelu (unfuse.py: ORT's CPU kernels for them are slower)
    assert res["after"]["nodes"] <= 37, ops
    assert ops.get("com.microsoft.Attention") == 2 and "com.microsoft.SkipLayerNormalization" not in ops
    assert ops.get("Sum") == 4 and ops.get("LayerNormalization") == 5  # + the embeddings' LayerNorm
    assert ops.get("Gelu", 0) + ops.get("com.microsoft.FastGelu", 0) == 2
    fused = next(e for e in res["engines"] if e["step"] == "transformer:bert")
    assert fused["info"]["unfused"] == {"SkipLayerNormalization": 4, "BiasGelu": 2}
    assert not MASK_OPS & {k.split(".")[-1] for k in ops}, ops
    step = next(e for e in res["engines"] if e["step"] == "attention")
    assert step["status"] == "ok" and step["info"]["mask_shapes"]
    assert step["info"]["attention"]["quantizable"] == 2
    for feeds in _padded_feeds():
        for a, b in zip(_run(hf_bert, feeds), _run(out, feeds)):
            cos = float(a.ravel() @ b.ravel() / np.linalg.norm(a) / np.linalg.norm(b))
            assert cos >= 0.9999 and np.abs(a - b).max() < 1e-4
    # ORT's quantizer keeps the mask: QAttention gets mask_index (an attention_bias it drops)
    from onnxruntime.quantization import quantize_dynamic

    quantize_dynamic(str(out), str(tmp_path / "q.onnx"))
    qatt = [n for n in onnx.load(str(tmp_path / "q.onnx")).graph.node if n.op_type == "QAttention"]
    assert len(qatt) == 2 and all(len(n.input) > 5 and n.input[5] for n in qatt)
    for feeds in _padded_feeds(seed=1):
        for a, b in zip(_run(hf_bert, feeds), _run(tmp_path / "q.onnx", feeds)):
            assert float(a.ravel() @ b.ravel() / np.linalg.norm(a) / np.linalg.norm(b)) > 0.999


@pytest.mark.slow  # a quantization with its candidates and checks
def test_quantize_fused_recipe_keeps_the_mask_of_a_hf_bert(cli, hf_bert, tmp_path):
    """quantize's fused recipe rewrites the same padding bias (it fell back to plain on
    this export before: 'none of the Attention nodes can take the form ORT quantizes')."""
    out = tmp_path / "f.onnx"
    r = cli("quantize", "dynamic", "--allow-generated-data", hf_bert, "-o", out, "--recipe", "fused",
            "--bench-seconds", "0.3", "--speed-budget", "0", "--json")
    assert r.code == 0, r.err + r.out
    rec = result(r)["details"]["recipe"]
    assert rec["chosen"] == "fused", rec
    qatt = [n for n in onnx.load(str(out)).graph.node if n.op_type == "QAttention"]
    assert len(qatt) == 2 and all(len(n.input) > 5 and n.input[5] for n in qatt)
    for feeds in _padded_feeds(seed=2):
        for a, b in zip(_run(hf_bert, feeds), _run(out, feeds)):
            assert float(a.ravel() @ b.ravel() / np.linalg.norm(a) / np.linalg.norm(b)) > 0.999


def _bias_model(tt_dims=("batch", "seq")):
    """An Attention whose padding bias reads attention_mask's values and the batch and
    sequence sizes from token_type_ids' shape, the way the dynamo export builds it."""
    i64 = TensorProto.INT64
    nodes = [
        helper.make_node("Shape", ["token_type_ids"], ["shape"], name="shape_of_tt"),
        helper.make_node("Cast", ["attention_mask"], ["valid"], to=TensorProto.BOOL),
        helper.make_node("Unsqueeze", ["valid", "axes"], ["valid4"]),
        helper.make_node("Where", ["valid4", "zero", "neg"], ["bias0"]),
        helper.make_node("Concat", ["shape", "one"], ["shape3"], axis=0),
        helper.make_node("Reshape", ["bias0", "b1s"], ["bias1"]),
        helper.make_node("Expand", ["bias1", "shape3"], ["bias"]),
        helper.make_node("Attention", ["x", "w", "b", "", "", "bias"], ["y"], domain="com.microsoft", num_heads=1),
        helper.make_node("Shape", ["token_type_ids"], ["tt_shape"], name="other_use"),
    ]
    g = helper.make_graph(nodes, "g", [
        helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", "seq", 4]),
        helper.make_tensor_value_info("attention_mask", i64, ["batch", "seq"]),
        helper.make_tensor_value_info("token_type_ids", i64, list(tt_dims))],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, None),
         helper.make_tensor_value_info("tt_shape", i64, None)],
        initializer=[helper.make_tensor("axes", i64, [2], [1, 2]), helper.make_tensor("zero", TensorProto.FLOAT, [], [0]),
                     helper.make_tensor("neg", TensorProto.FLOAT, [], [-1e4]), helper.make_tensor("one", i64, [1], [1]),
                     helper.make_tensor("b1s", i64, [4], [0, 1, 1, -1]),
                     helper.make_tensor("w", TensorProto.FLOAT, [4, 12], [0.0] * 48),
                     helper.make_tensor("b", TensorProto.FLOAT, [12], [0.0] * 12)])
    return helper.make_model(g, opset_imports=[helper.make_opsetid("", 17), helper.make_opsetid("com.microsoft", 1)])


@pytest.mark.parametrize("tt_dims,changed", [(("batch", "seq"), ["shape_of_tt"]),
                                            (("batch", "other"), []),  # not declared equal: not provable
                                            (("batch", None), [])])  # an unnamed dim proves nothing
def test_bias_reads_the_mask_shape_only_when_the_model_declares_them_equal(tt_dims, changed):
    from onnxforge.steps.quantize.attention import unify_bias_shapes

    m = _bias_model(tt_dims)
    assert unify_bias_shapes(m) == changed
    shape_node = next(n for n in m.graph.node if n.name == "shape_of_tt")
    assert shape_node.input[0] == ("attention_mask" if changed else "token_type_ids")
    other = next(n for n in m.graph.node if n.name == "other_use")
    assert other.input[0] == "token_type_ids"  # outside the bias sub-graph: untouched
