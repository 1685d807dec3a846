import json
import shutil
import xml.etree.ElementTree as ET

import numpy as np
import pytest

from conftest import json_result as result
from release_helpers import EXAMPLE, SK_EXAMPLE, _config
from shared import UNTIMED

# slow: runs whole releases; the error paths that run no such work stay in the fast lane


@pytest.fixture
def example_run(digits_release):
    """The README's main job, released once for the run (conftest.digits_release)."""
    return int((digits_release / "exit_code").read_text()), digits_release, digits_release / "cfg" / "release.toml"


@pytest.mark.slow
def test_example_release_passes_and_writes_everything(example_run):
    code, out, _ = example_run
    a = out / "a"
    assert code == 0, (a / "report.md").read_text()
    for name in ("model.onnx", "manifest.json", "report.json", "report.md", "junit.xml"):
        assert (a / name).is_file(), name
    if (a / "mlserver").exists():  # the README's release ends with deployable folders
        assert (a / "mlserver" / "model-settings.json").is_file() and (a / "mlflow" / "MLmodel").is_file()
        assert list((a / "triton").glob("*/config.pbtxt"))
    assert sorted(p.name for p in (a / "steps").iterdir()) == ["00-convert.onnx", "01-simplify.onnx", "02-quantize-static.onnx"]
    env = json.loads((a / "report.json").read_text())
    assert env["kind"] == "release" and env["schema_version"] == 1
    rep = env["result"]
    assert rep["passed"] and rep["failure"] is None
    assert [row["step"] for row in rep["ledger"]] == ["convert", "simplify", "quantize.static"]
    assert all(row["against"] == "source" for row in rep["ledger"])
    assert {g["name"] for g in rep["gates"]} >= {"parity:convert", "accuracy", "max_p50_ms", "min_speedup"}
    assert rep["config"]["model"]["framework"] == "torch"
    assert "onnxruntime" in rep["versions"] and "cpu" in rep["environment"]
    assert set(rep["inputs"]) >= {"config:release.toml", "weights:weights.pt", "calibration:calib.npz"}
    man = json.loads((a / "manifest.json").read_text())
    from onnxforge.core.fileio import sha256_file

    assert man["sha256"] == sha256_file(a / "model.onnx") == rep["outputs"]["model.onnx"]
    assert man["lineage"] == ["convert:torch", "simplify:onnxsim+cleanup", "quantize:static"]
    assert man["inputs"][0]["name"] == "x" and man["opset"] >= 17
    suite = ET.parse(a / "junit.xml").getroot()
    assert suite.get("failures") == "0" and int(suite.get("tests")) == len(suite.findall("testcase")) >= 8
    assert "# onnxforge release: PASSED" in (out / "summary.md").read_text()


@pytest.mark.slow
def test_release_is_deterministic_and_refuses_to_overwrite(example_run, cli, tmp_path):
    _, out, cfg = example_run
    first = (out / "a" / "model.onnx").read_bytes()
    r = cli("release", cfg, "-o", out / "a")
    assert r.code == 3 and "--force" in r.err
    r = cli("release", cfg, "-o", tmp_path / "b", "--no-keep", "--json")
    assert r.code == 0, r.err
    assert (tmp_path / "b" / "model.onnx").read_bytes() == first
    assert not (tmp_path / "b" / "steps").exists()


@pytest.mark.slow
def test_sklearn_example(sklearn_release):
    rep = json.loads((sklearn_release / "release" / "report.json").read_text())["result"]
    assert rep["passed"], rep["failure"]
    assert rep["ledger"][0]["parity"]["outputs"][0]["name"] == "label"
    assert rep["ledger"][0]["accuracy"] > 0.9


@pytest.mark.slow
def test_failing_gate_exit_1_no_model(cli, tmp_path):
    cfg = _config(tmp_path, lambda c: c["gates"].update(latency={"provider": "cpu", "max_p50_ms": 1e-6, "seconds": 0.5}))
    r = cli("release", cfg, "-o", tmp_path / "out", "--json")
    assert r.code == 1
    rep = result(r)
    assert not rep["passed"] and "max_p50_ms" in rep["failure"]
    assert not (tmp_path / "out" / "model.onnx").exists() and (tmp_path / "out" / "report.json").exists()
    suite = ET.parse(tmp_path / "out" / "junit.xml").getroot()
    assert int(suite.get("failures")) >= 1


@pytest.mark.slow
def test_step_failing_midway(cli, tmp_path):
    def bad_calibration(c):
        np.savez(tmp_path / "bad_calib.npz", wrong=np.zeros((4, 1, 1, 8, 8), np.float32))
        c["data"]["calibration"] = "bad_calib.npz"

    cfg = _config(tmp_path, bad_calibration)
    r = cli("release", cfg, "-o", tmp_path / "out", "--json")
    assert r.code == 3
    rep = result(r)
    assert "missing input(s) x" in rep["failure"]
    assert [s["step"] for s in rep["steps"]] == ["convert:torch", "simplify"]  # what was done is reported
    assert not (tmp_path / "out" / "model.onnx").exists() and (tmp_path / "out" / "report.json").exists()


@pytest.mark.slow
def test_onnx_source_release(cli, tmp_path, torch_exports):
    """framework = "onnx": no convert step; the ledger compares against the input model."""
    shutil.copy(torch_exports / "digits.onnx", tmp_path / "digits.onnx")
    shutil.copy(EXAMPLE / "val.npz", tmp_path / "val.npz")
    (tmp_path / "release.toml").write_text(
        '[model]\nsource = "digits.onnx"\nframework = "onnx"\n\n[data]\nvalidation = "val.npz"\n\n'
        '[[steps]]\nrun = "simplify"\n\n[[steps]]\nrun = "quantize.dynamic"\nparity = { max_mismatch = 0.02 }\n\n'
        '[gates]\nparity = { atol = 1e-4, rtol = 1e-3 }\naccuracy = { max_drop = 0.02 }\n')
    r = cli("release", tmp_path / "release.toml", "-o", tmp_path / "out", "--json")
    assert r.code == 0, r.err + r.out
    rep = result(r)
    assert [row["parity"]["reference"] for row in rep["ledger"]] == ["digits.onnx", "digits.onnx"]
    assert rep["ledger"][0]["parity"]["outputs"][0]["max_abs"] < 1e-4
    assert (tmp_path / "out" / "model.onnx").exists()


def test_release_never_writes_over_its_input(cli, fx, tmp_path):
    """OUT may hold the release's inputs, but a source named like a release output is
    refused before any work, with --force too (it used to be replaced by the model)."""
    name = "model.onnx"
    shutil.copy(fx / "tiny.onnx", tmp_path / name)
    (tmp_path / "release.toml").write_text(f'[model]\nsource = "{name}"\nframework = "onnx"\n\n'
                                           '[[steps]]\nrun = "simplify"\n')
    before = (tmp_path / name).read_bytes()
    r = cli("release", tmp_path / "release.toml", "-o", tmp_path, "--force")
    assert r.code == 3, r.err
    assert "is an input of this release" in r.err and "hint:" in r.err
    assert (tmp_path / name).read_bytes() == before


@pytest.mark.slow
def test_validation_dtypes_widen_safely_or_are_refused_before_work(cli, tmp_path):
    """int32 token ids for an int64 input are widened (as serving code does); float64
    ids are refused before any step runs, naming data.validation and the input."""
    import onnx
    from onnx import TensorProto, helper

    g = helper.make_graph([helper.make_node("Cast", ["ids"], ["c"], to=TensorProto.FLOAT),
                           helper.make_node("Mul", ["c", "two"], ["y"])], "ids",
                          [helper.make_tensor_value_info("ids", TensorProto.INT64, ["batch", 4])],
                          [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["batch", 4])],
                          [helper.make_tensor("two", TensorProto.FLOAT, [], [2.0])])
    onnx.save(helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)]), tmp_path / "ids.onnx")
    (tmp_path / "release.toml").write_text('[model]\nsource = "ids.onnx"\nframework = "onnx"\n\n'
                                           '[data]\nvalidation = "val.npz"\n\n[[steps]]\nrun = "simplify"\n')
    ids = np.arange(12).reshape(3, 4)
    np.savez(tmp_path / "val.npz", ids=ids.astype(np.int32))
    r = cli("release", tmp_path / "release.toml", "-o", tmp_path / "a", "--json")
    assert r.code == 0, r.err + r.out
    np.savez(tmp_path / "val.npz", ids=ids.astype(np.float64))
    r = cli("release", tmp_path / "release.toml", "-o", tmp_path / "b", "--json")
    assert r.code == 3, r.err
    assert "data.validation: ids is float64, the model declares int64" in r.err and "astype('int64')" in r.err
    assert result(r)["steps"] == []  # nothing ran


@pytest.mark.slow
def test_float64_validation_data(cli, tmp_path):
    """numpy and scikit-learn make float64: the ledger feeds each model its declared types."""
    cfg = _config(tmp_path, lambda c: (c["gates"].update(latency=dict(UNTIMED)), c["steps"].pop()))
    with np.load(EXAMPLE / "val.npz") as z:
        np.savez(tmp_path / "val.npz", x=z["x"].astype(np.float64), labels=z["labels"])
    r = cli("release", cfg, "-o", tmp_path / "out", "--json")
    assert r.code == 0, r.err + r.out
    assert all(row["passed"] for row in result(r)["ledger"])


@pytest.mark.slow
def test_generated_inputs_respect_val_ranges(cli, tmp_path):
    """Without [data], the ledger generates inputs within model.val_ranges: token ids of
    an embedding stay below its size (the default range, 0..10, would index past it)."""
    (tmp_path / "emb.py").write_text("import torch\n\ndef build():\n    torch.manual_seed(0)\n"
                                     "    return torch.nn.Sequential(torch.nn.Embedding(5, 4), torch.nn.Flatten(),"
                                     " torch.nn.Linear(12, 2))\n")
    (tmp_path / "release.toml").write_text(
        '[model]\nsource = "emb.py:build"\nframework = "torch"\ninputs = ["ids:int64:batchx3"]\n'
        'val_ranges = { ids = [0, 4] }\n\n[[steps]]\nrun = "convert"\n\n[[steps]]\nrun = "simplify"\n')
    r = cli("release", tmp_path / "release.toml", "-o", tmp_path / "out", "--json")
    assert r.code == 0, r.err + r.out


@pytest.mark.slow
def test_outlier_detector_release_compares_every_output(cli, tmp_path):
    from conftest import ROOT as root

    (tmp_path / "release.toml").write_text(
        f'[model]\nsource = "{root / "tests" / "models.py"}:isolation_forest"\nframework = "sklearn"\n'
        'inputs = ["X:float32:?x30"]\n\n[[steps]]\nrun = "convert"\ntarget_opset = { "ai.onnx" = 17, "ai.onnx.ml" = 3 }\n')
    r = cli("release", tmp_path / "release.toml", "-o", tmp_path / "out", "--json")
    assert r.code == 0, r.err + r.out
    assert [o["name"] for o in result(r)["ledger"][0]["parity"]["outputs"]] == ["label", "scores"]


def _sk_copy(tmp_path, validation=None, **gates):
    """The scikit-learn example in tmp_path, with its validation arrays and gates replaced."""
    import shutil

    import numpy as np

    for name in ("model.skops", "sample.npy", "val.npz"):
        shutil.copy(SK_EXAMPLE / name, tmp_path / name)
    if validation is not None:
        np.savez(tmp_path / "val.npz", **validation)
    table = {"parity": '{ atol = 1e-4, rtol = 1e-3, against = "source" }', "accuracy": "{ max_drop = 0.0 }", **gates}
    (tmp_path / "release.toml").write_text(
        '[model]\nsource = "model.skops"\nframework = "sklearn"\nsample = "sample.npy"\n\n[data]\nvalidation = "val.npz"\n\n'
        '[[steps]]\nrun = "convert"\n\n[gates]\n' + "".join(f"{k} = {v}\n" for k, v in table.items() if v))
    return tmp_path / "release.toml"


@pytest.mark.slow
def test_float64_validation_feeds_a_sklearn_release(cli, tmp_path):
    """numpy and scikit-learn make float64; the converted model takes float32. The release
    ended exit 3 ('Unexpected input data type') with a JUnit that showed no failure."""
    import numpy as np

    with np.load(SK_EXAMPLE / "val.npz") as z:
        val = {"X": z["X"].astype(np.float64), "labels": z["labels"]}
    r = cli("release", _sk_copy(tmp_path, val), "-o", tmp_path / "out", "--json")
    assert r.code == 0, r.err + r.out
    assert result(r)["ledger"][0]["accuracy"] > 0.9


@pytest.mark.slow
def test_accuracy_numbers_that_mean_nothing_are_refused(cli, tmp_path):
    import numpy as np

    with np.load(SK_EXAMPLE / "val.npz") as z:
        x, labels = z["X"], z["labels"]
    cases = [  # (validation, gates, exit code, clue)
        ({"X": x, "labels": labels}, {"accuracy": '{ max_drop = 0.01, output = "nosuch" }'}, 2,
         "gates.accuracy.output: the model has no output 'nosuch'"),
        ({"X": x, "labels": labels[:10]}, {}, 3, "10 labels for 171 predicted rows"),
        ({"X": x, "labels": np.linspace(0.5, 9.5, len(x))}, {}, 2, "not classes"),
    ]
    for i, (val, gates, code, clue) in enumerate(cases):
        d = tmp_path / str(i)
        d.mkdir()
        r = cli("release", _sk_copy(d, val, **gates), "-o", d / "out")
        assert r.code == code and clue in r.err and "hint:" in r.err and "Traceback" not in r.err, (i, r.err)
        assert not (d / "out" / "model.onnx").exists()
