"""quantize int4 (#27): MatMulNBits weights on real torch exports (a Gemm MLP, a tiny
GPT-2), the Gemm rewrite, the runtime probe, and bf16's refusal on ORT's CPU provider."""

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from conftest import ROOT
from conftest import json_result as result

M = f"{ROOT / 'tests' / 'models.py'}"


pytestmark = pytest.mark.xdist_group("int4")  # exports: built once, on one worker (the GPT-2 is the run's)


@pytest.fixture(scope="module")
def exports(tmp_path_factory):
    import onnxforge

    d = tmp_path_factory.mktemp("int4")
    assert onnxforge.convert_torch(f"{M}:wide_mlp", d / "mlp.onnx", inputs=["x:float32:batchx64"]).passed
    return d


def _int4(cli, src, out, *extra):
    r = cli("quantize", "int4", src, "-o", out, "--allow-generated-data", "--speed-budget", "0", "--bench-seconds",
            "0.3", "--json", *extra)
    assert r.code == 0, r.err + r.out
    return result(r)


@pytest.mark.slow
def test_int4_mlp_size_and_parity(cli, exports, tmp_path):
    res = _int4(cli, exports / "mlp.onnx", tmp_path / "q.onnx")
    ops = res["after"]["ops"]
    assert ops.get("com.microsoft.MatMulNBits") == 3 and "Gemm" not in ops and "MatMul" not in ops  # Gemms rewritten
    assert res["details"]["int4_weights"] == 3 and res["details"]["block_size"] == 32
    ratio = res["after"]["file_bytes"] / res["before"]["file_bytes"]
    assert ratio <= 0.3, ratio  # 0.18 measured: 4-bit weights, a scale and zero point per 32
    assert min(o["cosine"] for c in res["checks"] for o in c["outputs"]) >= 0.99


@pytest.mark.slow
def test_int4_options_reach_the_nodes(cli, exports, tmp_path):
    out = tmp_path / "q.onnx"
    _int4(cli, exports / "mlp.onnx", out, "--block-size", "64", "--accuracy-level", "4", "--symmetric")
    nodes = [n for n in onnx.load(out).graph.node if n.op_type == "MatMulNBits"]
    attrs = [{a.name: helper.get_attribute_value(a) for a in n.attribute} for n in nodes]
    assert attrs and all(a["block_size"] == 64 and a["accuracy_level"] == 4 for a in attrs)
    assert all(len(n.input) < 4 or not n.input[3] for n in nodes)  # symmetric: no zero points


@pytest.mark.slow
def test_int4_gpt2_quantizes_its_gemm_weights(cli, gpt2_onnx, tmp_path):
    res = _int4(cli, gpt2_onnx, tmp_path / "q.onnx")
    assert res["before"]["ops"]["Gemm"] == 8 and res["after"]["ops"]["com.microsoft.MatMulNBits"] == 8
    assert res["after"]["initializer_bytes"] < 0.35 * res["before"]["initializer_bytes"]  # embeddings stay fp32
    assert res["checks"][0]["outputs"][0]["cosine"] >= 0.99


@pytest.mark.slow
def test_int4_gather_quantizes_the_embeddings(cli, gpt2_onnx, tmp_path):
    res = _int4(cli, gpt2_onnx, tmp_path / "q.onnx", "--gather")
    assert res["after"]["ops"]["com.microsoft.GatherBlockQuantized"] == 2  # token and position tables
    assert res["details"]["int4_weights"] == 10
    assert res["after"]["initializer_bytes"] < 0.2 * res["before"]["initializer_bytes"]  # 0.19 measured
    assert res["checks"][0]["outputs"][0]["cosine"] >= 0.99


@pytest.mark.slow
def test_int4_leaves_an_excluded_gemm_whole_and_the_source_untouched(cli, exports, tmp_path):
    """The source's weights are read from its file one at a time (load_onnx's
    weights_by_reference); the output must not point back at that file, and a weight
    left in fp32 must be the same bytes."""
    src = tmp_path / "mlp.onnx"
    src.write_bytes((exports / "mlp.onnx").read_bytes())
    before = src.read_bytes()
    m = onnx.load(src)
    gemm = next(n for n in m.graph.node if n.op_type == "Gemm")
    weights = {t.name: numpy_helper.to_array(t) for t in m.graph.initializer}
    res = _int4(cli, src, tmp_path / "q.onnx", "--exclude-node", gemm.name)
    assert res["details"]["int4_weights"] == 2 and src.read_bytes() == before
    src.unlink()  # the output stands alone
    q = onnx.load(tmp_path / "q.onnx")
    kept = {t.name: numpy_helper.to_array(t) for t in q.graph.initializer}
    w = weights[gemm.input[1]]
    assert any(a.shape == w.T.shape and np.array_equal(a, w.T) for a in kept.values()) or \
        np.array_equal(kept.get(gemm.input[1]), w)


@pytest.mark.slow
def test_int4_hqq(cli, exports, tmp_path):
    res = _int4(cli, exports / "mlp.onnx", tmp_path / "q.onnx", "--algorithm", "hqq")
    assert res["details"]["algorithm"] == "hqq" and res["after"]["ops"]["com.microsoft.MatMulNBits"] == 3


def test_gemm_as_matmul_computes_the_same(tmp_path):
    import onnxruntime as ort

    from onnxforge.steps.quantize.lean_quant import gemm_as_matmul

    rng = np.random.default_rng(0)
    w, b = rng.random((5, 4), dtype=np.float32), rng.random(5, dtype=np.float32)
    g = helper.make_graph([helper.make_node("Gemm", ["x", "w", "b"], ["y"], name="fc", transB=1)], "g",
                          [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["n", 4])],
                          [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["n", 5])],
                          initializer=[numpy_helper.from_array(w, "w"), numpy_helper.from_array(b, "b")])
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)])
    x = rng.random((3, 4), dtype=np.float32)
    want = ort.InferenceSession(m.SerializeToString(), providers=["CPUExecutionProvider"]).run(None, {"x": x})[0]
    assert gemm_as_matmul(m, tmp_path) == 1
    assert [n.op_type for n in m.graph.node] == ["MatMul", "Add"] and [t.name for t in m.graph.initializer] == \
        ["b", "w_Transposed"]
    got = ort.InferenceSession(m.SerializeToString(), providers=["CPUExecutionProvider"]).run(None, {"x": x})[0]
    np.testing.assert_allclose(got, want, rtol=1e-6)


def test_runtime_probes():
    from onnxforge.steps.quantize.bf16 import missing_kernels
    from onnxforge.steps.quantize.int4 import missing_kernel

    assert missing_kernel(32, None) is None and missing_kernel(128, 4) is None
    assert missing_kernels() == ["MatMul", "Add", "Mul"]  # ORT's CPU provider: no bf16 compute kernels (1.32)


@pytest.mark.slow
@pytest.mark.parametrize("mode", ["int4", "dynamic"])
def test_json_says_how_long_the_checks_took_apart_from_the_work(cli, exports, tmp_path, mode):
    r = cli("quantize", mode, exports / "mlp.onnx", "-o", tmp_path / "q.onnx", "--allow-generated-data",
            "--speed-budget", "0.01", "--bench-seconds", "0.5", "--json")  # a budget: timed
    assert r.code == 0, r.err
    res = result(r)
    t = res["timings"]
    assert t["checks_s"] >= 0.5  # the timing alone runs --bench-seconds
    assert 0 < t["work_s"] and t["work_s"] + t["checks_s"] <= t["total_s"] == res["seconds"]


@pytest.mark.slow
def test_release_runs_an_int4_step(exports, tmp_path):
    import onnxforge

    rel = onnxforge.release({"model": {"source": str(exports / "mlp.onnx"), "framework": "onnx"},
                             "steps": [{"run": "quantize.int4", "allow_generated_data": True, "block_size": 64,
                                        "parity": {"min_cosine": 0.99}}]}, tmp_path / "rel")
    assert rel.passed, rel.failure
    assert rel.steps[0].details["block_size"] == 64 and rel.steps[0].after.ops["com.microsoft.MatMulNBits"] == 3
