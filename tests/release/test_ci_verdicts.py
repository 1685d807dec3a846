"""A failed release is never green in CI: for each kind of failure the exit code, the
status in report.json, a schema-valid junit.xml with at least one failure or error,
the step summary and the error line on stderr (and a ::error annotation under GitHub
Actions) are all there."""

import json
import os
import re
import signal
import subprocess
import sys
import time
import xml.etree.ElementTree as ET
from pathlib import Path

import numpy as np
import pytest

from conftest import ROOT, default_sigint

# slow: runs whole releases; the error paths that run no such work stay in the fast lane

SCHEMA = ROOT / "tests" / "data" / "junit.xsd"


def _toml(cfg: dict) -> str:
    from onnxforge.core.options import toml_value

    lines = []
    for sec, table in cfg.items():
        for t in table if isinstance(table, list) else [table]:
            lines.append(f"[[{sec}]]" if isinstance(table, list) else f"[{sec}]")
            lines += [f"{k} = {toml_value(v)}" for k, v in t.items()]
    return "\n".join(lines) + "\n"


@pytest.fixture(scope="module")
def project(tmp_path_factory):
    """A chain model, validation data labelled by it, good and bad calibration data."""
    from fixtures import make_fixtures as mf

    from onnxforge.backends.onnx.runner import onnx_runner

    d = tmp_path_factory.mktemp("proj")
    mf.onnx_chain(d / "chain.onnx")
    x = np.random.default_rng(0).random((64, 16), dtype=np.float32)
    labels = onnx_runner(d / "chain.onnx")({"x": x})["y"].argmax(-1)
    np.savez(d / "val.npz", x=x, labels=labels)
    np.savez(d / "calib.npz", x=x[:16])
    np.savez(d / "narrow.npz", x=0.001 * x[:16])  # ranges far too narrow: int8 saturates
    np.savez(d / "badcalib.npz", wrong=x[:16])
    return d


def _base(**over) -> dict:
    cfg = {"model": {"source": "chain.onnx", "framework": "onnx"},
           "data": {"calibration": "calib.npz", "validation": "val.npz"},
           "steps": [{"run": "simplify"}, {"run": "quantize.static", "bench_seconds": 0.2}],
           "gates": {"parity": {"atol": 1e-4, "rtol": 1e-3}, "accuracy": {"max_drop": 0.5},
                     "latency": {"provider": "cpu", "seconds": 0.2}}}
    for key, value in over.items():
        *path, last = key.split(".")
        t = cfg
        for p in path:
            t = t[int(p)] if isinstance(t, list) else t.setdefault(p, {})
        t[last] = value
    return cfg


FAILURES = {
    "parity": (_base(**{"steps.1.parity": {"atol": 0.0, "rtol": 0.0}}), 1, "failed"),
    "accuracy": (_base(**{"data.calibration": "narrow.npz", "steps.1.min_cosine": 0.0,
                          "steps.1.parity": {"min_cosine": 0.0}, "gates.accuracy.max_drop": 0.0}), 1, "failed"),
    "latency": (_base(**{"gates.latency.max_p50_ms": 1e-6}), 1, "failed"),
    "speed-up": (_base(**{"gates.latency.min_speedup": 1000.0}), 1, "failed"),
    "bad calibration": (_base(**{"data.calibration": "badcalib.npz"}), 3, "error"),
    "bad config": (_base(**{"steps.1.methd": "minmax"}), 2, "error"),
    "missing provider": (_base(**{"gates.latency.provider": "cuda"}), 5, "error"),
}


def _check_verdict(out: Path, code: int, status: str, summary: Path, err: str) -> None:
    import xmlschema

    rep = json.loads((out / "report.json").read_text())["result"]
    assert rep["status"] == status and rep["exit_code"] == code and rep["passed"] is False
    xmlschema.XMLSchema(str(SCHEMA)).validate(str(out / "junit.xml"))
    suite = ET.parse(out / "junit.xml").getroot()
    assert int(suite.get("failures")) + int(suite.get("errors")) >= 1
    assert int(suite.get("tests")) == len(suite.findall("testcase"))
    assert (out / "report.md").read_text().startswith("# onnxforge release: " + status.upper())
    assert f'id="verdict-badge">{status.upper()}<' in (out / "report.html").read_text()
    assert f"# onnxforge release: {status.upper()}" in summary.read_text()
    assert re.search(r"^error: ", err, re.M) and "::error title=" in err
    assert not (out / "model.onnx").exists()


@pytest.mark.slow
@pytest.mark.parametrize("kind", list(FAILURES))
def test_failing_release_is_red_everywhere(kind, project, tmp_path, monkeypatch, capsys):
    from onnxforge.cli.app import main

    cfg, code, status = FAILURES[kind]
    (project / f"{kind}.toml").write_text(_toml(cfg))
    summary = tmp_path / "summary.md"
    monkeypatch.setenv("GITHUB_STEP_SUMMARY", str(summary))
    monkeypatch.setenv("GITHUB_ACTIONS", "true")
    got = main(["release", str(project / f"{kind}.toml"), "-o", str(tmp_path / "out")])
    err = capsys.readouterr().err
    rep = json.loads((tmp_path / "out" / "report.json").read_text())["result"]
    if kind in ("latency", "speed-up") and all(g["status"] != "failed" for g in rep["gates"]):
        assert not rep["benchmark"]["contention"]["clean"]
        code, status = 6, "inconclusive"  # a loaded machine: the timing gate is undecided, never a pass
    assert got == code, err
    _check_verdict(tmp_path / "out", code, status, summary, err)


@pytest.mark.slow
@pytest.mark.timing  # its CPU burner must not land on another test
def test_timing_gate_on_a_loaded_machine_is_inconclusive(project, tmp_path):
    """A CPU burner pinned beside the release: its latency gate is neither passed nor
    failed but inconclusive (exit 6), JUnit says so with an error carrying the CPU share."""
    from conftest import cpu_burner

    from fixtures import make_fixtures as mf

    mf.onnx_chain(project / "wide.onnx", width=512)  # calls of milliseconds: the burner lands inside them
    # simplify changes nothing here: a speed-up of about 1, which loaded rounds cannot put above or below 1.0
    (project / "loaded.toml").write_text(_toml({"model": {"source": "wide.onnx", "framework": "onnx"},
                                                "steps": [{"run": "simplify"}],
                                                "gates": {"latency": {"provider": "cpu", "dims": {"batch": 256},
                                                                      "seconds": 0.3, "min_speedup": 1.0}}}))
    cpu = max(os.sched_getaffinity(0))
    with cpu_burner(cpu):
        r = subprocess.run([sys.executable, "-m", "onnxforge", "release", str(project / "loaded.toml"), "-o",
                            str(tmp_path / "out")], capture_output=True, text=True, timeout=600, cwd=ROOT,
                           env={**os.environ, "PYTHONPATH": str(ROOT), "GITHUB_ACTIONS": "true",
                                "GITHUB_STEP_SUMMARY": str(tmp_path / "summary.md")},
                           preexec_fn=lambda: os.sched_setaffinity(0, {cpu}))
    assert r.returncode == 6, r.stderr
    _check_verdict(tmp_path / "out", 6, "inconclusive", tmp_path / "summary.md", r.stderr)
    assert "error: release inconclusive: min_speedup not decided: the machine was busy (" in r.stderr
    suite = ET.parse(tmp_path / "out" / "junit.xml").getroot()
    case = suite.find("testcase[@name='min_speedup']")
    assert case.find("error") is not None and case.find("failure") is None
    assert "rounds discarded" in case.find("error").get("message")
    rep = json.loads((tmp_path / "out" / "report.json").read_text())["result"]
    [gate] = [g for g in rep["gates"] if g["name"] == "min_speedup"]
    assert gate["status"] == "inconclusive" and gate["passed"] is False


@pytest.mark.slow
def test_internal_error_still_writes_the_verdict(project, tmp_path, monkeypatch, capsys):
    import onnxforge.steps.simplify.simplify as simplify_mod
    from onnxforge.cli.app import main

    def broken(*a, **k):
        raise RuntimeError("a bug in a step")

    # inside the step: the release holds the step function itself (steps/simplify/step.py),
    # so patching the module's `simplify` would not reach it
    monkeypatch.setattr(simplify_mod, "_pins", broken)
    (project / "internal.toml").write_text(_toml(_base()))
    summary = tmp_path / "summary.md"
    monkeypatch.setenv("GITHUB_STEP_SUMMARY", str(summary))
    monkeypatch.setenv("GITHUB_ACTIONS", "true")
    got = main(["release", str(project / "internal.toml"), "-o", str(tmp_path / "out")])
    err = capsys.readouterr().err
    assert got == 70 and "internal error: RuntimeError: a bug in a step" in err
    _check_verdict(tmp_path / "out", 70, "error", summary, err.replace("internal error:", "error:"))
    suite = ET.parse(tmp_path / "out" / "junit.xml").getroot()
    assert suite.find("testcase[@name='0:simplify']/error") is not None  # the step that raised
    assert suite.find("testcase[@name='1:quantize.static']/skipped") is not None  # never ran


@pytest.mark.slow
def test_sigint_writes_an_interrupted_verdict(project, tmp_path):
    (project / "slow.toml").write_text(_toml(_base(**{"steps.1.bench_seconds": 30.0, "steps.1.speed_budget": 0.01})))
    summary = tmp_path / "summary.md"
    env = {**os.environ, "PYTHONPATH": str(ROOT), "GITHUB_STEP_SUMMARY": str(summary), "GITHUB_ACTIONS": "true"}
    p = subprocess.Popen([sys.executable, "-m", "onnxforge", "release", str(project / "slow.toml"), "-o",
                          str(tmp_path / "out")], env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                         preexec_fn=default_sigint)
    t0 = time.time()
    while not list(tmp_path.glob(".onnxforge-*/steps/00-*")) and time.time() - t0 < 120 and p.poll() is None:
        time.sleep(0.05)
    time.sleep(3.0)  # the quantize step is in its 30 s timing
    p.send_signal(signal.SIGINT)
    _, err = p.communicate(timeout=120)
    assert p.returncode == 130, err
    _check_verdict(tmp_path / "out", 130, "interrupted", summary, err + "\nerror: interrupted\n::error title=x::")


def test_single_command_report_on_every_exit(cli, tmp_path):
    """--report writes the error envelope when the command cannot finish (exit 3), and
    the command's own envelope when it ran (exit 1)."""
    r = cli("inspect", tmp_path / "missing.onnx", "--report", tmp_path / "r.json")
    assert r.code == 3
    env = json.loads((tmp_path / "r.json").read_text())
    assert env["kind"] == "error" and env["result"]["exit_code"] == 3 and "not found" in env["result"]["error"]
    assert env["result"]["hint"]


@pytest.mark.slow
def test_docs_ci_commands_run(cli, tmp_path, monkeypatch):
    """docs/ci.md's job runs the commands it shows; run the same lines here, each through
    the CLI's main() as the shell would split it (a child imported skl2onnx again)."""
    import shlex
    import shutil

    doc = (ROOT / "docs" / "ci.md").read_text()
    lines = sorted({m.strip() for m in re.findall(r"^\s*(onnxforge release [^\n#]+)$", doc, re.M)})
    assert lines, "docs/ci.md shows no onnxforge command"
    # a user's repository, as the CI job sees it: their release.toml (the sklearn example) at its root
    shutil.copytree(ROOT / "fixtures" / "example-sklearn", tmp_path, dirs_exist_ok=True)
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("GITHUB_STEP_SUMMARY", str(tmp_path / "s.md"))
    for line in lines:
        r = cli(*shlex.split(line)[1:])
        assert r.code == 0, r.err
    out = tmp_path / "release-out"
    assert (out / "junit.xml").exists() and (out / "report.json").exists() and (out / "model.onnx").exists()
