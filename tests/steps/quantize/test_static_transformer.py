"""quantize static on a transformer (#27): every MatMul in int8, the attention products
included, calibrated activations, per-channel weights, the attention-mask path exact,
checked on padded inputs."""

import collections

import numpy as np
import onnx
import pytest

from conftest import ROOT
from conftest import json_result as result

pytestmark = pytest.mark.slow

M = f"{ROOT / 'tests' / 'models.py'}"


def tokens(n, seq, seed):
    """Token ids and attention masks as a tokenizer pads them: every other row shorter,
    zeros (pad ids and mask) after its length."""
    rng = np.random.default_rng(seed)
    ids = rng.integers(1, 100, (n, seq)).astype(np.int64)
    mask = np.ones((n, seq), np.int64)
    for i in range(0, n, 2):
        mask[i, rng.integers(2, seq):] = 0
    return ids * mask, mask


@pytest.fixture(scope="module")
def peaked(tmp_path_factory):
    import onnxforge

    d = tmp_path_factory.mktemp("peaked")
    res = onnxforge.convert_torch(f"{M}:tiny_bert_peaked", d / "bert.onnx",
                                  inputs=["input_ids:int64:batchxseq", "attention_mask:int64:batchxseq"],
                                  val_ranges={"input_ids": (0, 99), "attention_mask": (1, 1)})
    assert res.passed
    ids, mask = tokens(32, 16, 0)
    np.savez(d / "calib.npz", input_ids=ids, attention_mask=mask)
    return d


def _cosines(ref, cand, feeds):
    import onnxruntime as ort

    a = ort.InferenceSession(str(ref), providers=["CPUExecutionProvider"]).run(None, feeds)
    b = ort.InferenceSession(str(cand), providers=["CPUExecutionProvider"]).run(None, feeds)
    return [float(x.ravel() @ y.ravel() / np.linalg.norm(x) / np.linalg.norm(y)) for x, y in zip(a, b)]


def test_static_int8_bert_keeps_parity_on_padded_inputs(cli, peaked, tmp_path):
    out = tmp_path / "q.onnx"
    r = cli("quantize", "static", peaked / "bert.onnx", "--calibration", peaked / "calib.npz", "-o", out,
            "--min-cosine", "0.999", "--speed-budget", "0", "--bench-seconds", "0.3", "--json")
    assert r.code == 0, r.err + r.out
    res = result(r)
    d = res["details"]
    assert d["recipe"] == "transformer" and d["per_channel"] is True and d["op_types"] == ["MatMul", "Gemm"]
    assert d["mask_inputs"] == ["attention_mask"]
    padded = [c for c in res["checks"] if "attention_mask" in c["data"]["how"]]
    assert len(padded) == 1 and padded[0]["passed"]
    # held-out batches of 4, padded rows among them, one row of a single token
    for seed in range(3):
        ids, mask = tokens(4, 16, 100 + seed)
        mask[3, 1:] = 0
        cos = _cosines(peaked / "bert.onnx", out, {"input_ids": ids * mask, "attention_mask": mask})
        assert min(cos) >= 0.999, cos

    m = onnx.load(out)
    producer = {o: n for n in m.graph.node for o in n.output}
    matmuls = [n for n in m.graph.node if n.op_type == "MatMul"]
    assert len(matmuls) == 16  # 6 weight MatMuls and 2 attention products per layer, 2 layers
    for n in matmuls:  # the attention products too: both inputs come through DequantizeLinear
        assert [producer[i].op_type for i in n.input] == ["DequantizeLinear"] * 2, n.name
    weights = {t.name: t for t in m.graph.initializer}
    dq_scales = [weights[producer[n.input[1]].input[1]] for n in matmuls if producer[n.input[1]].input[0] in weights]
    assert dq_scales and all(len(s.dims) == 1 and s.dims[0] > 1 for s in dq_scales)  # per-channel weight scales
    consumers = collections.defaultdict(list)
    for n in m.graph.node:
        for i in n.input:
            consumers[i].append(n.op_type)
    # the mask path is exact: no Q/DQ on what the Softmax reads
    for n in m.graph.node:
        if n.op_type == "Softmax":
            assert producer[n.input[0]].op_type == "Add"
            assert "QuantizeLinear" not in consumers[n.input[0]]


def test_plain_recipe_quantizes_every_op_but_the_mask_path(cli, peaked, tmp_path):
    out = tmp_path / "q.onnx"
    r = cli("quantize", "static", peaked / "bert.onnx", "--calibration", peaked / "calib.npz", "-o", out,
            "--recipe", "plain", "--min-cosine", "0.995", "--speed-budget", "0", "--bench-seconds", "0.3", "--json")
    assert r.code == 0, r.err + r.out
    d = result(r)["details"]
    assert d["recipe"] == "plain" and d["per_channel"] is False and len(d["mask_path_fp32"]) == 5
    ops = collections.Counter(n.op_type for n in onnx.load(out).graph.node)
    assert ops["QuantizeLinear"] > 40  # Add, LayerNormalization, Gelu, ... quantized too
