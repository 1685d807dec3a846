"""A release that ends with deployable folders: [package] writes the MLflow model, the
MLServer folder and the Triton repository into the release, [serve_check] serves the
MLServer one for real and is a gate; the CLI's package and serve-check do the same."""

import json
import shutil
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest
from serve_models import SK_EXAMPLE, requires_serve

from conftest import json_result as result

pytestmark = requires_serve
# the error paths that run no heavy work stay in the fast lane; the rest is marked slow


def _config(tmp_path, extra: str) -> str:
    src = tmp_path / "digits"  # the release's name: its config's folder
    shutil.copytree(SK_EXAMPLE, src)
    text = (src / "release.toml").read_text().replace('latency = { provider = "cpu",',
                                                        'latency = { provider = "cpu", seconds = 0.3,')
    (src / "release.toml").write_text(text + extra)
    return src / "release.toml"


@pytest.mark.slow
@pytest.mark.long
def test_release_packages_and_serve_checks(cli, tmp_path):
    cfg = _config(tmp_path, '\n[package]\ntargets = ["mlflow", "mlserver", "triton"]\nthreads = 1\n\n'
                            '[serve_check]\ntarget = "mlserver"\nduration = 0.5\nconcurrency = 1\n')
    out = tmp_path / "rel"
    r = cli("release", cfg, "-o", out, "--json")
    assert r.code == 0, r.err + r.out
    rep = result(r)
    gates = {g["name"]: g for g in rep["gates"]}
    assert all(gates[f"package:{t}"]["passed"] for t in ("mlflow", "mlserver", "triton"))
    assert gates["serve_check"]["passed"] and rep["serve_check"]["parity"]["grpc"]["passed"]
    assert (out / "mlserver" / "model-settings.json").is_file() and (out / "mlflow" / "MLmodel").is_file()
    # named after the release (its config's folder), not the output folder "rel"
    assert [p.name for p in (out / "triton").iterdir()] == ["digits"]
    assert 'name: "digits"' in (out / "triton" / "digits" / "config.pbtxt").read_text()
    assert json.loads((out / "mlserver" / "model-settings.json").read_text())["name"] == "digits"
    assert rep["name"] == "digits"
    assert (out / "report.md").read_text().startswith("# onnxforge release: PASSED (digits)\n")
    assert "<title>digits: onnxforge release: PASSED</title>" in (out / "report.html").read_text()
    assert ET.parse(out / "junit.xml").getroot().get("name") == "onnxforge release digits"
    info = json.loads((out / "mlserver" / "onnxforge-package" / "package.json").read_text())
    assert info["source"] == ".."  # the release folder, wherever it is copied to
    for p in rep["packages"]:  # paths in the report point into OUT, not the deleted scratch folder
        assert p["model_name"] == "digits" and Path(p["out_dir"]).is_dir() and Path(p["model_dir"]).is_dir()
    assert all(Path(s["output"]).is_file() for s in rep["steps"])
    assert ".onnxforge-" not in (out / "report.json").read_text().replace(".onnxforge-release", "")
    cases = {c.get("name") for c in ET.parse(out / "junit.xml").getroot().iter("testcase")}
    assert {"package:mlflow", "package:mlserver", "package:triton", "serve_check"} <= cases
    # the folder a release wrote is served as the README says
    r = cli("serve-check", out / "mlserver", "--duration", "0.3", "--concurrency", "1", "--protocol", "rest", "--json")
    assert r.code == 0, r.err
    assert json.loads(r.out)["kind"] == "serve-check"
    # packaging the release folder again keeps the release's name
    r = cli("package", out, "-o", tmp_path / "again", "--target", "mlserver", "--json")
    assert r.code == 0, r.err
    assert result(r)["model_name"] == "digits"


def test_package_config_is_checked_before_work(cli, tmp_path):
    cfg = _config(tmp_path, '\n[package]\ntargets = ["docker"]\n')
    r = cli("release", cfg, "-o", tmp_path / "a")
    assert r.code == 2 and "package.targets" in r.err
    cfg = _config(tmp_path / "b", '\n[package]\ntargets = ["triton"]\n\n[serve_check]\ntarget = "mlserver"\n')
    r = cli("release", cfg, "-o", tmp_path / "b" / "out")
    assert r.code == 2 and "not packaged" in r.err
    cfg = _config(tmp_path / "c", '\n[package]\ntargets = ["mlserver"]\nforce = true\n')
    r = cli("release", cfg, "-o", tmp_path / "c" / "out")
    assert r.code == 2 and "unknown key package.force" in r.err


@pytest.mark.slow
def test_cli_package_three_targets(cli, tmp_path):
    import onnxforge

    res = onnxforge.convert_sklearn(SK_EXAMPLE / "model.skops", tmp_path / "m.onnx", sample=str(SK_EXAMPLE / "sample.npy"))
    assert res.passed
    for target in ("mlflow", "mlserver", "triton"):
        r = cli("package", tmp_path / "m.onnx", "-o", tmp_path / target, "--target", target, "--json")
        assert r.code == 0, r.err
        assert result(r)["target"] == target
    r = cli("package", tmp_path / "m.onnx", "-o", tmp_path / "mlserver", "--target", "mlserver")
    assert r.code == 3 and "--force" in r.err
