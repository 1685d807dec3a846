"""Guarantees that need real processes or a second run: signals, concurrent writers,
file modes, byte-identical reruns, a release over a folder holding its source."""

import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from conftest import ROOT
from cases import build_workspace, release_config, snapshot

pytestmark = pytest.mark.slow  # runs releases and real processes

EXAMPLE = ROOT / "fixtures" / "example"


@pytest.fixture(scope="module")
def ws(tmp_path_factory):
    pytest.importorskip("torch")
    return build_workspace(tmp_path_factory.mktemp("proc"))


def _start(args, cwd):
    return subprocess.Popen([sys.executable, "-m", "onnxforge", *map(str, args)], cwd=cwd, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, env={**os.environ, "PYTHONPATH": str(ROOT)})


def _wait_for(pred, timeout=60.0):
    t0 = time.time()
    while time.time() - t0 < timeout:
        if pred():
            return True
        time.sleep(0.05)
    return False


def test_sigterm_cleans_up_and_exits_143(ws, tmp_path):
    """What CI runners and `timeout` send: scratch folders go, nothing is published."""
    out = tmp_path / "q"
    p = _start(["quantize", "dynamic", "--allow-generated-data", ws / "in" / "chain.onnx", "-o", out / "q.onnx", "--bench-seconds", "60"],
               ws / "cwd")
    assert _wait_for(lambda: any(out.glob(".onnxforge-*")))  # it is working in its scratch folder
    time.sleep(1.0)
    p.send_signal(signal.SIGTERM)
    _, err = p.communicate(timeout=60)
    assert p.returncode == 143, err
    assert "terminated" in err and "Traceback" not in err
    assert not out.exists() or not list(out.iterdir())  # no scratch, no model, no folder it made


def test_interrupted_release_never_leaves_a_stale_verdict(ws, tmp_path):
    out = tmp_path / "rel"
    # a speed budget makes the quantize step time itself (a release step without one times nothing)
    cfg = release_config(ws, "slow", **{"steps.1.bench_seconds": 30.0, "steps.1.speed_budget": 0.01})
    first = subprocess.run([sys.executable, "-m", "onnxforge", "release", release_config(ws, "fast"), "-o", out],
                           capture_output=True, text=True, cwd=ws / "cwd",
                           env={**os.environ, "PYTHONPATH": str(ROOT)})  # this checkout's onnxforge, as _start
    assert first.returncode == 0, first.stderr
    p = _start(["release", cfg, "-o", out, "--force"], ws / "cwd")
    # the simplify step is published; the quantize step is now in its 30 s timing
    assert _wait_for(lambda: any(tmp_path.glob(".onnxforge-*/steps/00-*")) or p.poll() is not None)
    time.sleep(3.0)
    p.send_signal(signal.SIGTERM)
    p.communicate(timeout=120)
    assert p.returncode == 143
    import json

    rep = json.loads((out / "report.json").read_text())["result"]
    assert rep["status"] == "interrupted" and rep["passed"] is False
    assert not (out / "model.onnx").exists() and not (out / ".onnxforge-incomplete").exists()
    assert not list(tmp_path.glob(".onnxforge-*"))


def test_second_concurrent_writer_fails(ws, tmp_path):
    out = tmp_path / "same.onnx"
    args = ["quantize", "dynamic", "--allow-generated-data", ws / "in" / "chain.onnx", "-o", out, "--bench-seconds", "1", "--speed-budget", "0"]
    a, b = _start(args, ws / "cwd"), _start(args, ws / "cwd")
    (_, ea), (_, eb) = a.communicate(timeout=120), b.communicate(timeout=120)
    assert sorted([a.returncode, b.returncode]) == [0, 3], (ea, eb)
    assert "exists" in (ea + eb)


def test_data_file_mode_matches_model(ws, tmp_path):
    from onnxforge.cli.app import main

    out = tmp_path / "m.onnx"
    assert main(["simplify", str(ws / "in" / "ext" / "ext.onnx"), "-o", str(out), "--external-data"]) == 0
    assert (out.stat().st_mode & 0o777) == (Path(str(out) + ".data").stat().st_mode & 0o777) != 0o600


def test_quantize_external_data_is_honoured(ws, tmp_path):
    from onnxforge.cli.app import main

    out = tmp_path / "q.onnx"
    assert main(["quantize", "dynamic", "--allow-generated-data", str(ws / "in" / "tiny.onnx"), "-o", str(out), "--external-data",
                 "--bench-seconds", "0.2", "--speed-budget", "0", "--json"]) == 0
    import onnx
    from onnx.external_data_helper import uses_external_data

    m = onnx.load(str(out), load_external_data=False)
    assert any(uses_external_data(t) for t in m.graph.initializer) or not any(
        t.ByteSize() > 1024 for t in m.graph.initializer)


def test_release_over_a_folder_holding_its_source(ws, tmp_path):
    from onnxforge.cli.app import main

    folder = tmp_path / "project"
    folder.mkdir()
    shutil.copy(ws / "in" / "tiny.onnx", folder / "tiny.onnx")
    (folder / "release.toml").write_text(Path(release_config(ws, "here")).read_text())
    before = snapshot(folder)
    assert main(["release", str(folder / "release.toml"), "-o", str(folder), "--force"]) == 0
    assert main(["release", str(folder / "release.toml"), "-o", str(folder), "--force"]) == 0
    after = snapshot(folder)
    assert all(after[k] == v for k, v in before.items())  # the source and the config are untouched
    assert (folder / "model.onnx").exists()


@pytest.mark.parametrize("which", ["torch", "sklearn"])
def test_reruns_are_byte_identical(which, tmp_path):
    """Every artifact: the released model, the step models and the manifest."""
    from onnxforge.cli.app import main

    from shared import SK_EXAMPLE, untimed_example

    src = tmp_path / "src"
    src.mkdir()
    # bytes, not speed, are under test; [package] is dropped (an MLmodel records its creation time)
    untimed_example(src, example=EXAMPLE if which == "torch" else SK_EXAMPLE)
    runs = []
    for run in ("a", "b"):
        assert main(["release", str(src / "release.toml"), "-o", str(tmp_path / run)]) == 0
        files = sorted(p for p in (tmp_path / run).rglob("*") if p.is_file() and p.suffix in (".onnx", ".data")
                       or p.name == "manifest.json")
        runs.append({str(p.relative_to(tmp_path / run)): p.read_bytes() for p in files})
    assert runs[0].keys() == runs[1].keys() and "model.onnx" in runs[0]
    assert [k for k in runs[0] if runs[0][k] != runs[1][k]] == []
