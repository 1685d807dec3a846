"""quantize dynamic's recipe candidates on a real tiny BERT (transformers config, dynamo
export), and the lean path inside quantize()."""

import numpy as np
import onnx
import pytest

from conftest import ROOT
from conftest import json_result as result

M = f"{ROOT / 'tests' / 'models.py'}"


@pytest.fixture
def bert(bert_onnx):
    return bert_onnx  # models.py's tiny BERT (dynamo export), exported once for the run


def _padded(batch=3, seq=8, seed=5):
    rng = np.random.default_rng(seed)
    mask = np.ones((batch, seq), np.int64)
    for i in range(1, batch):
        mask[i, seq - 2 * i:] = 0
    return {"input_ids": rng.integers(0, 99, (batch, seq)), "attention_mask": mask}


def _cos_to(ref_path, path, feeds):
    import onnxruntime as ort

    a = ort.InferenceSession(str(ref_path), providers=["CPUExecutionProvider"]).run(None, feeds)
    b = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"]).run(None, feeds)
    return min(float(x.ravel() @ y.ravel() / np.linalg.norm(x) / np.linalg.norm(y)) for x, y in zip(a, b))


@pytest.mark.slow
def test_auto_recipe_times_both_candidates_and_keeps_the_faster(cli, bert, tmp_path):
    out = tmp_path / "q.onnx"
    r = cli("quantize", "dynamic", "--allow-generated-data", bert, "-o", out, "--bench-seconds", "0.5", "--speed-budget", "0", "--json")
    assert r.code == 0, r.err + r.out
    rec = result(r)["details"]["recipe"]
    cands = {c["name"]: c for c in rec["candidates"]}
    assert set(cands) == {"plain", "fused"}
    assert all(c["passed"] and c["p50_ms"] > 0 and c["ci95"][0] <= c["speedup"] <= c["ci95"][1] for c in cands.values())
    fused = cands["fused"]
    assert fused["details"]["quantizable_attention"] == 2 and fused["details"]["mask_inputs"] == ["attention_mask"]
    assert fused["details"]["fp32_check_max_abs"] < 1e-4
    vs = cands["fused"]["vs_plain"]
    assert vs[1] <= vs[0] <= vs[2]
    busy = any("timed on a busy machine" in n for n in result(r)["notes"])  # then no choice is made on loaded rounds
    assert rec["chosen"] == ("fused" if vs[1] > 1.0 and not busy else "plain")  # kept only when faster beyond the noise
    ops = {n.op_type for n in onnx.load(str(out)).graph.node}
    assert ("QAttention" in ops) == (rec["chosen"] == "fused")
    assert _cos_to(bert, out, _padded()) > 0.99  # padded masks survive whichever was kept


@pytest.mark.slow
def test_fused_recipe_keeps_padding_and_plain_recipe_skips_candidates(cli, bert, tmp_path):
    r = cli("quantize", "dynamic", "--allow-generated-data", bert, "-o", tmp_path / "f.onnx", "--recipe", "fused", "--bench-seconds", "0.3",
            "--speed-budget", "0",
            "--json")
    assert r.code == 0, r.err + r.out
    rec = result(r)["details"]["recipe"]
    assert rec["chosen"] == "fused"
    m = onnx.load(str(tmp_path / "f.onnx"))
    qatt = [n for n in m.graph.node if n.op_type == "QAttention"]
    assert len(qatt) == 2 and all(n.input[5] for n in qatt)  # mask_index attached to each
    # the fused ops ORT's CPU runs slower are written back (simplify/unfuse.py) before quantizing
    fused = next(c for c in rec["candidates"] if c["name"] == "fused")
    assert fused["details"]["unfused"]["SkipLayerNormalization"] == 4
    assert not {n.op_type for n in m.graph.node} & {"SkipLayerNormalization", "BiasGelu"}
    feeds = _padded()
    assert _cos_to(bert, tmp_path / "f.onnx", feeds) > 0.99
    r = cli("quantize", "dynamic", "--allow-generated-data", bert, "-o", tmp_path / "p.onnx", "--recipe", "plain", "--bench-seconds", "0.3",
            "--speed-budget", "0",
            "--json")
    rec = result(r)["details"]["recipe"]
    assert rec["chosen"] == "plain" and [c["name"] for c in rec["candidates"]] == ["plain"]
    assert "QAttention" not in {n.op_type for n in onnx.load(str(tmp_path / "p.onnx")).graph.node}
    assert cli("quantize", "dynamic", "--allow-generated-data", bert, "-o", tmp_path / "x.onnx", "--recipe", "nope").code == 2


@pytest.mark.slow
def test_fused_recipe_on_a_model_large_enough_for_the_lean_path(cli, bert, tmp_path, monkeypatch):
    """The fused candidate (com.microsoft Attention) takes the lean path too, and it
    writes what ORT's quantizer writes for it: QAttention with the same weights."""
    from onnx import numpy_helper

    from onnxforge.steps.quantize import lean_quant

    def fused(out):
        r = cli("quantize", "dynamic", "--allow-generated-data", bert, "-o", out, "--recipe", "fused",
                "--bench-seconds", "0.3", "--speed-budget", "0", "--json")
        assert r.code == 0, r.err + r.out
        res = result(r)
        assert res["details"]["recipe"]["chosen"] == "fused"
        return res, onnx.load(str(out))

    _, ort_model = fused(tmp_path / "ort.onnx")
    monkeypatch.setattr(lean_quant, "LEAN_MIN_BYTES", 0)  # this tiny BERT stands in for a BERT-base
    res, lean_model = fused(tmp_path / "f.onnx")
    assert any("one initializer at a time" in n for n in res["notes"])
    assert not any("quantized by ORT's quantizer" in n for n in res["notes"])
    assert "QAttention" in {n.op_type for n in lean_model.graph.node}
    assert sorted((n.op_type, n.name) for n in ort_model.graph.node) == \
        sorted((n.op_type, n.name) for n in lean_model.graph.node)
    a = {t.name: numpy_helper.to_array(t) for t in ort_model.graph.initializer}
    b = {t.name: numpy_helper.to_array(t) for t in lean_model.graph.initializer}
    assert sorted(a) == sorted(b) and all(np.array_equal(a[k], b[k]) for k in a)
    assert _cos_to(bert, tmp_path / "f.onnx", _padded()) > 0.99


def test_no_attention_means_no_candidates(cli, fx, tmp_path):
    r = cli("quantize", "dynamic", "--allow-generated-data", fx / "chain.onnx", "-o", tmp_path / "q.onnx", "--bench-seconds", "0.2",
            "--speed-budget", "0", "--json")
    assert r.code == 0, r.err
    rec = result(r)["details"]["recipe"]
    assert rec["chosen"] == "plain" and len(rec["candidates"]) == 1


def test_lean_path_gives_the_same_model_as_ort(cli, fx, tmp_path, monkeypatch):
    from onnxforge.steps.quantize import lean_quant

    common = ["--no-preprocess", "--bench-seconds", "0.2", "--speed-budget", "0", "--json", "--recipe", "plain"]
    r = cli("quantize", "dynamic", "--allow-generated-data", fx / "ext" / "ext.onnx", "-o", tmp_path / "ort.onnx", *common)
    assert r.code == 0, r.err
    assert not any("one initializer at a time" in n for n in result(r)["notes"])
    monkeypatch.setattr(lean_quant, "LEAN_MIN_BYTES", 0)
    r = cli("quantize", "dynamic", "--allow-generated-data", fx / "ext" / "ext.onnx", "-o", tmp_path / "lean.onnx", *common)
    assert r.code == 0, r.err
    assert any("one initializer at a time" in n for n in result(r)["notes"])
    from onnx import numpy_helper

    a = {t.name: numpy_helper.to_array(t) for t in onnx.load(str(tmp_path / "ort.onnx")).graph.initializer}
    b = {t.name: numpy_helper.to_array(t) for t in onnx.load(str(tmp_path / "lean.onnx")).graph.initializer}
    assert sorted(a) == sorted(b) and all(np.array_equal(a[k], b[k]) for k in a)


def test_release_accepts_a_recipe(tmp_path):
    from onnxforge.pipeline.config import load_config

    from onnx import TensorProto, helper

    g = helper.make_graph([helper.make_node("Relu", ["x"], ["y"])], "g",
                          [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 4])],
                          [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 4])])
    onnx.save(helper.make_model(g), str(tmp_path / "m.onnx"))
    (tmp_path / "r.toml").write_text('[model]\nsource = "m.onnx"\nframework = "onnx"\n\n'
                                     '[[steps]]\nrun = "quantize.dynamic"\nrecipe = "plain"\n'
                                     'allow_generated_data = true\n')
    assert load_config(tmp_path / "r.toml").steps[0].options.recipe == "plain"


@pytest.mark.slow
def test_simplify_transformer_rewrites_attention(cli, bert, tmp_path):
    out = tmp_path / "s.onnx"
    r = cli("simplify", bert, "-o", out, "--transformer", "bert", "--json")
    assert r.code == 0, r.err + r.out
    steps = {s["step"]: s for s in result(r)["engines"]}
    assert steps["attention"]["status"] == "ok" and steps["attention"]["info"]["attention"]["quantizable"] == 2
    m = onnx.load(str(out))
    att = [n for n in m.graph.node if n.op_type == "Attention"]
    assert len(att) == 2 and all(len(n.input) == 4 and n.input[3] for n in att)
    assert not any(a.name == "qkv_hidden_sizes" for n in att for a in n.attribute)
    assert _cos_to(bert, out, _padded()) > 0.99999


@pytest.mark.slow
def test_pre_processing_that_would_fail_is_judged_on_the_graph_alone(bert, tmp_path):
    """ORT's quant_pre_process fails on the dynamo export of BERT (incomplete symbolic
    shape inference) after loading the weights three times over; the probe on the graph
    alone says so first, leaves the model's folder as it was, and says nothing where the
    inference completes."""
    from onnxruntime.quantization.shape_inference import quant_pre_process

    from onnxforge.core.fileio import working_dir
    from onnxforge.steps.quantize.quantize import INCOMPLETE, _symbolic_shapes_fail

    before = sorted(p.name for p in bert.parent.iterdir())
    assert _symbolic_shapes_fail(bert, tmp_path)
    assert sorted(p.name for p in bert.parent.iterdir()) == before  # its temporary model went to tmp_path
    with working_dir(tmp_path), pytest.raises(Exception, match=INCOMPLETE):
        quant_pre_process(str(bert), str(tmp_path / "pre.onnx"))
    mlp = tmp_path / "mlp.onnx"
    onnx.save(onnx.helper.make_model(onnx.helper.make_graph(
        [onnx.helper.make_node("MatMul", ["x", "w"], ["y"])], "g",
        [onnx.helper.make_tensor_value_info("x", onnx.TensorProto.FLOAT, ["n", 512])],
        [onnx.helper.make_tensor_value_info("y", onnx.TensorProto.FLOAT, ["n", 4])],
        [onnx.numpy_helper.from_array(np.ones((512, 4), np.float32), "w")]),
        opset_imports=[onnx.helper.make_opsetid("", 17)]), str(mlp))
    assert not _symbolic_shapes_fail(mlp, tmp_path)
