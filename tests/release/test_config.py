"""The release config is checked completely before any work: wrong types, unknown keys,
missing files and NaN thresholds are refused naming the key, and the verdict of the
refusal is still written (fast: nothing is converted)."""

import json
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest

from release_helpers import EXAMPLE, _config


def test_dry_run_plans_without_work(cli, tmp_path):
    r = cli("release", EXAMPLE / "release.toml", "-o", tmp_path / "d", "--dry-run", "--json")
    assert r.code == 0, r.err
    plan = json.loads(r.out)
    assert plan["kind"] == "release-plan"
    assert [s["run"] for s in plan["result"]["steps"]] == ["convert", "simplify", "quantize.static"]
    assert not (tmp_path / "d").exists()


@pytest.mark.parametrize("mutate,code,needle", [
    (lambda c: c["data"].update(calibraton="calib.npz"), 2, "did you mean 'calibration'"),
    (lambda c: c["model"].update(weights="missing.pt"), 3, "missing.pt"),
    (lambda c: c["steps"].append({"run": "quantise.static"}), 2, "did you mean 'quantize.static'"),
    (lambda c: c["data"].update(validation="calib.npz"), 2, "needs labels"),
    (lambda c: c["gates"].update(latency={"provider": "tpu"}), 2, "unknown execution provider"),
    (lambda c: c["gates"]["accuracy"].update(max_drop="a lot"), 2, "must be a number"),
    (lambda c: c.update(steps=[{"run": "simplify"}]), 2, "steps[0] must be convert"),
    (lambda c: c["data"].update(calibration=3), 2, "data.calibration must be a path"),
    (lambda c: c["model"].update(inputs="x:float32:1x1x8x8"), 2, "model.inputs: must be a list"),
    # values of the wrong type never change what ships: each is refused, naming the key
    (lambda c: c["steps"][2].update(per_channel="false"), 2, "steps[2].per_channel: must be true or false"),
    (lambda c: c["model"].update(trust_pickle="no"), 2, "model.trust_pickle: must be true or false"),
    (lambda c: c["steps"][2].update(method="minmaxx"), 2, "steps[2].method: must be 'minmax', 'entropy'"),
    (lambda c: c["gates"]["latency"].update(threads="four"), 2, "gates.latency.threads: must be an integer"),
    (lambda c: c["gates"]["latency"].update(threads=0), 2, "gates.latency.threads: must be greater than or equal to 1"),
    (lambda c: c["steps"][2]["parity"].update(min_cosine=float("nan")), 2, "steps[2].parity.min_cosine: must be a finite"),
    (lambda c: c["gates"]["latency"].update(dims={"batch": True}), 2, "gates.latency.dims.batch: must be an integer"),
    (lambda c: c["steps"][1].update(onnxsimm=False), 2, "unknown key steps[1].onnxsimm (step simplify)"),
    (lambda c: c["steps"][1].update(force=True), 2, "unknown key steps[1].force"),
    (lambda c: c["steps"][2].update(samples="ten"), 2, "steps[2].samples: must be an integer"),
    (lambda c: c["steps"][2].update(percentile=150.0), 2, "steps[2].percentile: must be less than or equal to 100"),
    (lambda c: c.update(extra={"a": 1}), 2, "unknown section [extra]"),
    # #24: an int8 step that would be checked on generated data alone must say it accepts that
    (lambda c: (c["data"].pop("validation"), c["gates"].pop("accuracy"), c["steps"][2].clear(),
                c["steps"][2].update(run="quantize.dynamic")), 2, "steps[2].allow_generated_data = true"),
])
def test_bad_configs_refused_before_work(cli, tmp_path, mutate, code, needle):
    cfg = _config(tmp_path, mutate)
    r = cli("release", cfg, "-o", tmp_path / "out")
    assert r.code == code and needle in r.err, r.err
    # no work was done, but the verdict is written: CI shows the error, never a green run
    out = tmp_path / "out"
    assert sorted(p.name for p in out.iterdir()) == [".onnxforge-release.json", "junit.xml", "report.html",
                                                     "report.json", "report.md"]
    assert 'id="verdict-badge">ERROR<' in (out / "report.html").read_text()
    rep = json.loads((out / "report.json").read_text())["result"]
    assert rep["status"] == "error" and rep["exit_code"] == code and needle in rep["error"] + str(rep["hint"])
    suite = ET.parse(out / "junit.xml").getroot()
    assert int(suite.get("errors")) >= 1




def test_checking_an_onnx_release_never_imports_torch(fx, tmp_path):
    """onnxsim 0.8 imports torch (about 3 s); a config with no --skip pass to check must
    not import it, so a CI's --dry-run of an ONNX release stays quick."""
    import shutil
    import subprocess
    import sys

    shutil.copy(fx / "tiny.onnx", tmp_path / "model.onnx")
    cfg = tmp_path / "release.toml"
    cfg.write_text('[model]\nsource = "model.onnx"\nframework = "onnx"\n\n[[steps]]\nrun = "simplify"\n')
    code = ("import sys\nfrom onnxforge.cli.app import main\n"
            f"code = main(['release', {str(cfg)!r}, '-o', {str(tmp_path / 'out')!r}, '--dry-run'])\n"
            "print('EXIT', code, 'TORCH', 'torch' in sys.modules, 'ONNXSIM', 'onnxsim' in sys.modules)\n")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert "EXIT 0 TORCH False ONNXSIM False" in r.stdout, r.stdout + r.stderr


def test_min_speedup_with_one_onnx_model_is_refused(cli, tmp_path):
    """convert alone makes one ONNX model: min_speedup was left 'not evaluated' and the
    release passed."""
    cfg = _config(tmp_path, lambda c: (c.update(steps=[c["steps"][0]]), c["gates"].pop("accuracy", None)))
    r = cli("release", cfg, "-o", tmp_path / "out", "--dry-run")
    assert r.code == 2 and "gates.latency.min_speedup" in r.err and "hint:" in r.err, r.err


def test_latency_dims_of_a_sklearn_release_are_checked_before_work(cli, tmp_path):
    """skl2onnx names no dim; 'dims = { nosuch = 3 }' failed only after convert, naming --dim."""
    import shutil

    from release_helpers import SK_EXAMPLE

    for name in ("model.skops", "sample.npy", "val.npz"):
        shutil.copy(SK_EXAMPLE / name, tmp_path / name)
    text = (SK_EXAMPLE / "release.toml").read_text().replace('max_p50_ms = 2.0', 'max_p50_ms = 2.0, dims = { nosuch = 3 }')
    (tmp_path / "release.toml").write_text(text)
    r = cli("release", tmp_path / "release.toml", "-o", tmp_path / "out", "--dry-run")
    assert r.code == 2 and "gates.latency.dims: the model has no dim nosuch" in r.err, r.err
    assert '"0" is the unnamed batch axis' in r.err
    # the unnamed batch axis goes by position, as --dim 0=64 does on the command line
    (tmp_path / "release.toml").write_text(text.replace("nosuch = 3", '"0" = 64'))
    r = cli("release", tmp_path / "release.toml", "-o", tmp_path / "out", "--dry-run")
    assert r.code == 0, r.err


@pytest.mark.slow  # a real release (simplify runs onnxsim)
def test_release_takes_the_config_as_data(fx, tmp_path, monkeypatch):
    """release() takes the TOML's tables as a dict: relative paths resolve against
    base_dir (a Path is fine as a value), else the current directory; the report's
    inputs carry the data's hash in place of a file's."""
    import shutil

    import onnxforge
    from onnxforge.core.errors import BadInputError, UsageError

    models = tmp_path / "models"
    models.mkdir()
    shutil.copy(fx / "tiny.onnx", models / "model.onnx")
    tables = {"model": {"source": Path("model.onnx"), "framework": "onnx"}, "steps": [{"run": "simplify"}]}
    rep = onnxforge.release(tables, tmp_path / "out", base_dir=models)
    assert rep.passed and rep.exit_code == 0, rep.failure
    assert set(rep.inputs) == {"config:<dict>", "source:model.onnx"}
    assert json.loads((tmp_path / "out" / "report.json").read_text())["result"]["config"]["model"]["source"] == \
        str(models / "model.onnx")
    assert tables["model"]["source"] == Path("model.onnx")  # the caller's dict is left as it was

    monkeypatch.chdir(models)
    assert onnxforge.release(tables, tmp_path / "out2").passed
    with pytest.raises(UsageError, match="base_dir is for a config given as data"):
        onnxforge.release(tmp_path / "release.toml", tmp_path / "out3", base_dir=models)
    with pytest.raises(BadInputError, match="not a folder"):
        onnxforge.release(tables, tmp_path / "out3", base_dir=tmp_path / "missing")
    assert not (tmp_path / "out3").exists()
