import shutil

import onnx
import pytest
from onnx import helper

from conftest import ROOT
from conftest import json_result as result

# slow: exports and simplifies torch models; the error paths that run no such work stay in the fast lane

M = f"{ROOT / 'tests' / 'models.py'}"
pytestmark = pytest.mark.xdist_group("simplify_fp16")  # torch_models: exported once, on one worker




@pytest.fixture(scope="module")
def torch_models(tmp_path_factory):
    pytest.importorskip("torch")
    import onnxforge

    d = tmp_path_factory.mktemp("tm")
    onnxforge.convert_torch(f"{M}:cnn", d / "cnn.onnx", inputs=["x:float32:batchx3x16x16"])
    return d


@pytest.mark.slow
def test_simplify_cnn_keeps_dynamic_batch(cli, torch_models, tmp_path):
    out = tmp_path / "s.onnx"
    r = cli("simplify", torch_models / "cnn.onnx", "-o", out, "--json")
    assert r.code == 0, r.err
    res = result(r)
    assert res["passed"] and res["after"]["nodes"] <= res["before"]["nodes"]
    # a check at the second batch size proves the dim stayed dynamic
    assert any("batch=3" in c["candidate"] for c in res["checks"])
    m = onnx.load(str(out))
    assert m.graph.input[0].type.tensor_type.shape.dim[0].dim_param == "batch"
    assert res["artifact"]["lineage"] == ["convert:torch", "simplify:onnxsim+cleanup"]
    assert {p.key: p.value for p in m.metadata_props}["onnxforge.lineage"] == "convert:torch,simplify:onnxsim+cleanup"


@pytest.mark.slow
def test_pinned_shape(cli, torch_models, tmp_path):
    r = cli("simplify", torch_models / "cnn.onnx", "-o", tmp_path / "p.onnx", "--dim", "batch=4", "--json")
    assert r.code == 0, r.err
    m = onnx.load(str(tmp_path / "p.onnx"))
    assert m.graph.input[0].type.tensor_type.shape.dim[0].dim_value == 4
    r = cli("simplify", torch_models / "cnn.onnx", "-o", tmp_path / "q.onnx", "--shape", "x:4x3x9")
    assert r.code == 3 and "rank 3" in r.err


@pytest.mark.slow
def test_transformer_fusion_puts_attention_in(cli, bert_onnx, tmp_path):
    r = cli("simplify", bert_onnx, "-o", tmp_path / "b.onnx", "--transformer", "bert", "--json")
    assert r.code == 0, r.err
    res = result(r)
    ops = res["after"]["ops"]
    assert ops.get("com.microsoft.Attention", 0) == 2
    assert res["fusions"]["Attention"] == [0, 2]
    assert res["after"]["nodes"] < res["before"]["nodes"] / 2


@pytest.mark.slow
@pytest.mark.parametrize("level,ort_only", [("basic", False), ("all", True)])
def test_ort_offline(cli, torch_models, tmp_path, level, ort_only):
    r = cli("simplify", torch_models / "cnn.onnx", "-o", tmp_path / "o.onnx", "--ort", level, "--json")
    assert r.code == 0, r.err
    meta = {p.key: p.value for p in onnx.load(str(tmp_path / "o.onnx")).metadata_props}
    assert (meta.get("onnxforge.ort_only") == "true") is ort_only
    assert any("ORT-only" in n for n in result(r)["notes"]) is ort_only


@pytest.mark.slow
@pytest.mark.parametrize("name", ["light_resnet50.onnx", "light_squeezenet.onnx", "light_inception_v1.onnx"])
def test_old_models(cli, light, tmp_path, name):
    r = cli("simplify", light / name, "-o", tmp_path / name, "--json")
    assert r.code == 0, r.err + r.out
    res = result(r)
    assert res["after"]["nodes"] <= res["before"]["nodes"]


def _onnxsim_breaker(src, dst):
    """A com.microsoft node without its domain declared: ORT runs it, onnxsim refuses."""
    m = onnx.load(str(src))
    m.graph.node.append(helper.make_node("Gelu", ["probs"], ["probs_gelu"], domain="com.microsoft", name="gelu"))
    m.graph.output.append(helper.make_tensor_value_info("probs_gelu", onnx.TensorProto.FLOAT, ["batch", 3]))
    onnx.save(m, str(dst))
    return dst


@pytest.mark.slow
def test_failed_engine_falls_back(cli, fx, tmp_path):
    bad = _onnxsim_breaker(fx / "tiny.onnx", tmp_path / "bad.onnx")
    r = cli("simplify", bad, "-o", tmp_path / "s.onnx", "--json")
    assert r.code == 1
    res = result(r)
    assert res["engines"][0]["status"] == "failed" and not (tmp_path / "s.onnx").exists()
    r = cli("simplify", bad, "-o", tmp_path / "s.onnx", "--allow-skip", "--json")
    assert r.code == 0
    res = result(r)
    assert res["engines"][0]["status"] == "skipped" and (tmp_path / "s.onnx").exists()
    r = cli("simplify", bad, "-o", tmp_path / "k.onnx", "--keep-failed")
    assert r.code == 1 and (tmp_path / "k.failed.onnx").exists()


def test_bad_arguments(cli, fx, tmp_path):
    r = cli("simplify", fx / "tiny.onnx", "-o", tmp_path / "x.onnx", "--transformer", "nope")
    assert r.code == 2 and "bert" in r.err and "gpt2" in r.err
    r = cli("simplify", fx / "tiny.onnx", "-o", tmp_path / "x.onnx", "--ort", "max")
    assert r.code == 2
    copy = tmp_path / "same.onnx"
    shutil.copy(fx / "tiny.onnx", copy)
    before = copy.read_bytes()
    r = cli("simplify", copy, "-o", copy)
    assert r.code == 3 and "inputs are never modified" in r.err and copy.read_bytes() == before
    r = cli("simplify", fx / "tiny.onnx", "-o", tmp_path / "new" / "dir" / "x.onnx")
    assert r.code == 0 and (tmp_path / "new" / "dir" / "x.onnx").exists()


@pytest.mark.slow
def test_input_never_modified(cli, fx, tmp_path):
    src = tmp_path / "in.onnx"
    shutil.copy(fx / "chain.onnx", src)
    before = src.read_bytes()
    assert cli("simplify", src, "-o", tmp_path / "out.onnx", "--ort", "all").code == 0
    assert src.read_bytes() == before


@pytest.mark.slow
def test_fp16(cli, torch_models, tmp_path):
    out = tmp_path / "h.onnx"
    r = cli("quantize", "fp16", torch_models / "cnn.onnx", "-o", out, "--json")
    assert r.code == 0, r.err
    res = result(r)
    assert res["checks"][0]["outputs"][0]["atol"] == 1e-2
    m = onnx.load(str(out))
    assert m.graph.input[0].type.tensor_type.elem_type == onnx.TensorProto.FLOAT  # keep-io-types
    assert any(t.data_type == onnx.TensorProto.FLOAT16 for t in m.graph.initializer)
    assert res["after"]["initializer_bytes"] < res["before"]["initializer_bytes"]
    r = cli("quantize", "fp16", torch_models / "cnn.onnx", "-o", tmp_path / "io.onnx", "--fp16-io", "--json")
    assert r.code == 0, r.err
    assert onnx.load(str(tmp_path / "io.onnx")).graph.input[0].type.tensor_type.elem_type == onnx.TensorProto.FLOAT16
    r = cli("quantize", "fp16", tmp_path / "io.onnx", "-o", tmp_path / "again.onnx")
    assert r.code == 3 and "already fp16" in r.err


@pytest.mark.slow
def test_fp16_tight_tolerance_fails(cli, torch_models, tmp_path):
    r = cli("quantize", "fp16", torch_models / "cnn.onnx", "-o", tmp_path / "t.onnx", "--atol", "1e-9", "--rtol", "0")
    assert r.code == 1 and not (tmp_path / "t.onnx").exists()


@pytest.mark.slow
def test_simplify_never_adds_nodes(cli, tmp_path, torch_exports):
    r = cli("simplify", torch_exports / "encoder.onnx", "-o", tmp_path / "s.onnx", "--json")
    assert r.code == 0, r.err
    res = result(r)
    steps = {s["step"]: s for s in res["engines"]}
    assert steps["onnxsim"]["status"] == "reverted"  # it made 103 nodes into 115
    assert steps["cleanup"]["info"]["folded"] > 0  # Shape -> Slice pairs became Shape(start, end)
    assert res["after"]["nodes"] < res["before"]["nodes"]


@pytest.mark.slow
def test_cleanup_removes_inference_dropout_and_folds_shape_slices(cli, light, tmp_path):
    r = cli("simplify", light / "light_squeezenet.onnx", "-o", tmp_path / "sq.onnx", "--json")
    assert r.code == 0, r.err
    steps = {s["step"]: s for s in result(r)["engines"]}
    assert steps["cleanup"]["info"]["removed"] == 1
    assert "Dropout" not in {n.op_type for n in onnx.load(str(tmp_path / "sq.onnx")).graph.node}


@pytest.mark.slow
def test_onnxsim_options(cli, light, tmp_path):
    # folding limit: with a tiny limit the ConstantOfShape weights of the light model stay unfolded
    r = cli("simplify", light / "light_squeezenet.onnx", "-o", tmp_path / "a.onnx", "--max-constant-size", "16", "--json")
    assert r.code == 0, r.err
    small = result(r)["after"]["nodes"]
    r = cli("simplify", light / "light_squeezenet.onnx", "-o", tmp_path / "b.onnx", "--json")
    assert small > result(r)["after"]["nodes"]
    r = cli("simplify", light / "light_squeezenet.onnx", "-o", tmp_path / "c.onnx", "--skip", "eliminate_deadend", "--json")
    assert r.code == 0, r.err


@pytest.mark.slow
def test_constant_folding_does_not_blow_up_a_model(cli, light, tmp_path):
    """ONNX's light AlexNet generates its weights (RandomNormal): folding them all makes
    4 KB into about 240 MB (vgg19 is the same at 9.3 KB -> 513 MB, and three times the work).
    By default the model may grow by its own size + 1 MB, and a note says what was left
    unfolded."""
    src = light / "light_bvlc_alexnet.onnx"
    r = cli("simplify", src, "-o", tmp_path / "v.onnx", "--json")
    assert r.code == 0, r.err
    assert (tmp_path / "v.onnx").stat().st_size < 2 * src.stat().st_size + (1 << 20) + 200_000
    assert any("left unfolded" in n and "--max-constant-size" in n for n in result(r)["notes"])


@pytest.mark.slow
def test_a_failed_engine_shows_its_traceback_only_with_debug(cli, fx, tmp_path):
    bad = _onnxsim_breaker(fx / "tiny.onnx", tmp_path / "bad.onnx")
    quiet = cli("simplify", bad, "-o", tmp_path / "a.onnx", "--allow-skip")
    debug = cli("simplify", bad, "-o", tmp_path / "b.onnx", "--allow-skip", "--debug")
    assert quiet.code == debug.code == 0
    assert "Traceback" not in quiet.err
    assert "onnxsim failed (recovered):" in debug.err and "Traceback" in debug.err
