import json

import numpy as np
import onnx
import pytest

from conftest import light_dir

DATA = light_dir().parent


def test_same_model_passes(cli, fx, tmp_path):
    r = cli("validate", fx / "tiny.onnx", fx / "tiny.onnx", "--samples", "3", "--dim", "batch=4", "--json")
    assert r.code == 0, r.err
    res = json.loads(r.out)["result"]
    assert res["passed"] and res["samples"] == 3
    assert [o["shape"] for o in res["outputs"]] == [[4, 3], [4, 3]]


def test_divergent_model_fails_exit_1_and_report_written(cli, fx, tmp_path):
    rep = tmp_path / "parity.json"
    r = cli("validate", fx / "chain.onnx", fx / "chain_bad5.onnx", "--report", rep)
    assert r.code == 1
    assert "FAIL" in r.out
    env = json.loads(rep.read_text())
    assert env["kind"] == "parity" and env["result"]["passed"] is False


def test_localize_finds_first_diverging_node(cli, fx):
    r = cli("validate", fx / "chain.onnx", fx / "chain_bad5.onnx", "--localize", "--json")
    assert r.code == 1
    loc = json.loads(r.out)["result"]["localized"]
    assert loc["node"] == "mm_5" and loc["op_type"] == "MatMul" and loc["output"] == "h5"
    assert loc["max_abs"] > 1e-3


def test_localize_reports_when_nothing_shared_diverges(fx):
    from onnxforge.core.types import Tolerance
    from onnxforge.checks.localize import localize_divergence

    x = {"x": np.ones((1, 16), np.float32)}
    loc = localize_divergence(fx / "chain.onnx", fx / "chain.onnx", x, Tolerance())
    assert loc.node is None and loc.compared == 16


def test_tolerance_flags_and_per_output(cli, fx):
    loose = cli("validate", fx / "chain.onnx", fx / "chain_bad5.onnx", "--atol", "10", "--json")
    assert loose.code == 0
    per = cli("validate", fx / "chain.onnx", fx / "chain_bad5.onnx", "--atol", "y:10", "--json")
    assert per.code == 0 and json.loads(per.out)["result"]["outputs"][0]["atol"] == 10
    stat = cli("validate", fx / "chain.onnx", fx / "chain_bad5.onnx", "--check-stat", "mean", "--atol", "1", "--json")
    assert stat.code == 0


def test_golden_outputs_round_trip(cli, fx, tmp_path):
    ins, outs = tmp_path / "in.npz", tmp_path / "golden.npz"
    r = cli("validate", fx / "tiny.onnx", fx / "tiny.onnx", "--samples", "2", "--save-inputs", ins, "--save-outputs", outs)
    assert r.code == 0 and ins.exists() and outs.exists()
    assert sorted(np.load(outs).files) == ["0/logits", "0/probs", "1/logits", "1/probs"]
    ok = cli("validate", outs, fx / "tiny.onnx", "--inputs", ins, "--json")
    assert ok.code == 0, ok.err
    bad = cli("validate", outs, fx / "tiny_fixed.onnx", "--inputs", ins)
    assert bad.code == 3  # the fixed-batch model does not take batch-1 inputs
    no_inputs = cli("validate", outs, fx / "tiny.onnx")
    assert no_inputs.code == 2 and "--inputs" in no_inputs.err


def test_golden_npz_written_by_hand(cli, fx, tmp_path):
    x = np.random.default_rng(0).random((3, 4), dtype=np.float32)
    np.savez(tmp_path / "x.npz", x=x)
    np.savez(tmp_path / "golden.npz", logits=np.full((3, 3), 7.0, np.float32))  # wrong values
    r = cli("validate", tmp_path / "golden.npz", fx / "tiny.onnx", "--inputs", tmp_path / "x.npz", "--json")
    assert r.code == 1
    outs = json.loads(r.out)["result"]["outputs"]
    assert [o["name"] for o in outs] == ["logits"]  # only what the golden file holds


def test_missing_output_in_npz_fails(cli, fx, tmp_path):
    np.savez(tmp_path / "x.npz", x=np.ones((1, 4), np.float32))
    np.savez(tmp_path / "golden.npz", nope=np.zeros((1, 3), np.float32))
    r = cli("validate", tmp_path / "golden.npz", fx / "tiny.onnx", "--inputs", tmp_path / "x.npz", "--json")
    assert r.code == 1
    assert "'nope' missing from the candidate" in json.loads(r.out)["result"]["problems"][0]


@pytest.mark.parametrize("case", ["test_Conv2d", "test_Embedding", "test_LogSoftmax", "test_MaxPool2d"])
def test_onnx_test_data_layout(cli, case):
    d = DATA / "pytorch-converted" / case
    r = cli("validate", d, d / "model.onnx", "--json")
    assert r.code == 0, r.err + r.out
    r2 = cli("validate", d / "test_data_set_0", d / "model.onnx", "--json")
    assert r2.code == 0


def test_input_name_mismatch_and_map(cli, fx, tmp_path):
    m = onnx.load(str(fx / "tiny.onnx"))
    for n in m.graph.node:
        n.input[:] = ["data" if i == "x" else i for i in n.input]
    m.graph.input[0].name = "data"
    onnx.save(m, str(tmp_path / "renamed.onnx"))
    r = cli("validate", fx / "tiny.onnx", tmp_path / "renamed.onnx")
    assert r.code == 3 and "input names differ" in r.err and "--map" in r.err
    r = cli("validate", fx / "tiny.onnx", tmp_path / "renamed.onnx", "--map", "x=data", "--samples", "2")
    assert r.code == 0, r.err
    r = cli("validate", fx / "tiny.onnx", tmp_path / "renamed.onnx", "--map", "x=nope")
    assert r.code == 3 and "no input 'nope'" in r.err


def test_inputs_that_do_not_fit(cli, fx, tmp_path):
    np.savez(tmp_path / "bad.npz", x=np.ones((1, 5), np.float32))
    r = cli("validate", fx / "tiny.onnx", fx / "tiny.onnx", "--inputs", tmp_path / "bad.npz")
    assert r.code == 3 and "fixes it to 4" in r.err and "Traceback" not in r.err
    (tmp_path / "empty").mkdir()
    r = cli("validate", fx / "tiny.onnx", fx / "tiny.onnx", "--inputs", tmp_path / "empty")
    assert r.code == 3 and "no samples" in r.err


def test_missing_provider_exit_5(cli, fx):
    import onnxruntime as ort

    if "CUDAExecutionProvider" in ort.get_available_providers():
        pytest.skip("CUDA provider is active; this checks the not-available path")
    r = cli("validate", fx / "tiny.onnx", fx / "tiny.onnx", "--provider", "cuda")
    assert r.code == 5 and "CPUExecutionProvider" in r.err
    r = cli("validate", fx / "tiny.onnx", fx / "tiny.onnx", "--provider", "warp-drive")
    assert r.code == 2 and "unknown execution provider" in r.err


def test_shape_mismatch_between_models(cli, fx, tmp_path):
    m = onnx.load(str(fx / "tiny.onnx"))
    # candidate with a Flatten-free reshape of logits to a different shape
    from onnx import helper

    m.graph.node.append(helper.make_node("Transpose", ["logits"], ["logits_t"], perm=[1, 0]))
    m.graph.output[0].name = "logits_t"
    m.graph.output[0].type.tensor_type.shape.dim[0].dim_value = 3
    m.graph.output[0].type.tensor_type.shape.dim[1].dim_param = "batch"
    onnx.save(m, str(tmp_path / "t.onnx"))
    np.savez(tmp_path / "x.npz", x=np.ones((2, 4), np.float32))
    np.savez(tmp_path / "g.npz", logits_t=np.ones((2, 3), np.float32))
    r = cli("validate", tmp_path / "g.npz", tmp_path / "t.onnx", "--inputs", tmp_path / "x.npz", "--json")
    assert r.code == 1 and "shape mismatch" in json.loads(r.out)["result"]["outputs"][0]["message"]


def test_library_api(fx):
    import onnxforge

    rep = onnxforge.validate(str(fx / "chain.onnx"), str(fx / "chain_bad5.onnx"), samples=2)
    assert not rep.passed and rep.outputs[0].max_abs > 1e-3


def _renamed(src, dst, names):
    import onnx

    m = onnx.load(str(src))
    rename = dict(zip([o.name for o in m.graph.output], names))
    for n in m.graph.node:
        n.output[:] = [rename.get(o, o) for o in n.output]
        n.input[:] = [rename.get(i, i) for i in n.input]
    for o in m.graph.output:
        o.name = rename[o.name]
    onnx.save(m, str(dst))
    return dst


def test_outputs_named_differently_pair_by_position_or_map(cli, fx, tmp_path):
    """Two exports of one model often name their outputs differently: with no common
    name and the same count they pair by position (the report says so); --map pairs them."""
    other = _renamed(fx / "tiny.onnx", tmp_path / "other.onnx", ["scores", "p"])
    r = cli("validate", fx / "tiny.onnx", other, "--json")
    assert r.code == 0, r.err
    rep = json.loads(r.out)["result"]
    assert [o["name"] for o in rep["outputs"]] == ["logits", "probs"]
    assert any("paired by position" in n and "logits=scores" in n for n in rep["notes"])
    swapped = _renamed(fx / "tiny.onnx", tmp_path / "swapped.onnx", ["p", "scores"])
    r = cli("validate", fx / "tiny.onnx", swapped, "--map", "logits=p", "--map", "probs=scores", "--json")
    assert r.code == 0, r.err
    r = cli("validate", fx / "tiny.onnx", swapped, "--map", "logits=scores", "--map", "probs=p", "--json")
    assert r.code == 1  # paired wrongly on purpose: the values differ


def _image_model(path, norms=None):
    """y = Relu(x) on [batch, 3, 8, 8], with onnxforge.input_norms recorded as a converter would."""
    from onnx import TensorProto, helper

    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", 3, 8, 8])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, ["batch", 3, 8, 8])
    m = helper.make_model(helper.make_graph([helper.make_node("Relu", ["x"], ["y"])], "g", [x], [y]),
                          opset_imports=[helper.make_opsetid("", 17)])
    if norms is not None:
        helper.set_model_props(m, {"onnxforge.input_norms": json.dumps(norms)})
    onnx.save(m, path)
    return path


def test_generated_inputs_follow_the_recorded_norm_and_say_so(cli, tmp_path):
    """#24: a model that recorded its input normalisation is checked on normalised images,
    not [0, 1) noise, and the verdict says its data was generated, and how."""
    mean, std = [0.5, 0.4, 0.3], [0.2, 0.25, 0.3]
    m = _image_model(tmp_path / "m.onnx", {"x": {"mean": mean, "std": std, "label": ""}})
    r = cli("validate", m, m, "--samples", "1", "--dim", "batch=64", "--save-inputs", tmp_path / "in.npz", "--json")
    assert r.code == 0, r.err
    x = np.load(tmp_path / "in.npz")["x"]
    np.testing.assert_allclose(x.mean(axis=(0, 2, 3)), (0.5 - np.array(mean)) / std, atol=0.02)
    np.testing.assert_allclose(x.std(axis=(0, 2, 3)), np.sqrt(1 / 12) / np.array(std), rtol=0.02)
    data = json.loads(r.out)["result"]["data"]
    assert data["source"] == "generated" and "images normalised with mean 0.5,0.4,0.3, std 0.2,0.25,0.3" in data["how"]
    # --input-norm says it for a model that recorded nothing; the human output names it
    plain = _image_model(tmp_path / "plain.onnx")
    r = cli("validate", plain, plain, "--input-norm", "x:imagenet", "--save-inputs", tmp_path / "in2.npz", "--seed", "2")
    assert r.code == 0, r.err
    assert "data: generated (ImageNet-normalised images, seed 2)" in r.out
    assert np.load(tmp_path / "in2.npz")["x"].min() < -1.5  # (0 - 0.485) / 0.229 = -2.1 at the low end


def test_the_verdict_says_where_its_data_came_from(cli, fx, tmp_path):
    """#24: every verdict says whether it ran on generated data (and how) or the user's."""
    r = cli("validate", fx / "tiny.onnx", fx / "tiny.onnx")
    assert r.code == 0 and "data: generated (uniform [0,1) noise, seed 0)" in r.out
    np.savez(tmp_path / "in.npz", x=np.ones((2, 4), np.float32))
    r = cli("validate", fx / "tiny.onnx", fx / "tiny.onnx", "--inputs", tmp_path / "in.npz", "--json")
    assert r.code == 0, r.err
    data = json.loads(r.out)["result"]["data"]
    assert data["source"] == "given" and data["how"].endswith("in.npz (1 sample(s))")


def _live_sessions() -> int:
    import gc

    import onnxruntime as ort

    gc.collect()
    # an instance of a Python class refers to its class: asking who refers to the class
    # walks the heap in C; isinstance over gc.get_objects() took 0.5 s a call in a worker
    cls = ort.InferenceSession
    return sum(isinstance(o, cls) for o in gc.get_referrers(cls, *cls.__subclasses__()))


@pytest.fixture
def young_heap():
    """What lives before the test is frozen (gc.freeze): the test's collections and
    referrer walks then see only what it made (a full collection in a worker holding torch
    took 0.4 s, four a test). A session that outlives the test is counted the same way
    before and after, so frozen ones change nothing."""
    import gc

    gc.collect()
    gc.freeze()
    try:
        yield
    finally:
        gc.unfreeze()


def test_check_sessions_run_one_after_the_other(fx, young_heap):
    """Each ORT session holds its own copy of the weights: a step's check against the
    model before it (check_against) held both at once, 2x the weights on top of the
    step's own. Runners made with hold=False load at their first call and are let go
    as soon as their outputs are in, so the candidate runs with the reference gone."""
    from onnxforge.backends.base import Runner
    from onnxforge.backends.onnx.runner import onnx_runner
    from onnxforge.checks.parity import validate

    base = _live_sessions()
    ref = onnx_runner(fx / "chain.onnx", "cpu", hold=False)
    assert _live_sessions() == base  # nothing loaded before the first call
    x = {s.name: np.ones([d if isinstance(d, int) else 2 for d in s.shape], np.float32) for s in ref.inputs}
    want = ref(x)
    ref.release()
    seen = []

    def probe(feeds):
        seen.append(_live_sessions() - base)
        return want

    cand = Runner(label="probe", kind="onnx", inputs=ref.inputs, outputs=ref.outputs, fn=probe)
    rep = validate(ref, cand, input_samples=[x])
    assert rep.passed and seen == [0]
    assert _live_sessions() == base
