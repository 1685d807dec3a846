"""Data loss with real processes: one run at a time per output folder (a lock taken
before any work, which a killed run does not leave blocking), and a release stopped by
SIGTERM records what its exit says (143, terminated)."""

import json
import os
import signal
import subprocess
import sys
import time

import pytest

from conftest import ROOT, default_sigint
from cases import build_workspace, release_config
from test_processes import _wait_for

pytestmark = pytest.mark.slow  # runs releases and zoos in real processes


@pytest.fixture(scope="module")
def ws(tmp_path_factory):
    return build_workspace(tmp_path_factory.mktemp("dataloss"), torch_inputs=False)


STARTED = []


@pytest.fixture(autouse=True)
def _no_orphans():
    """A test that fails midway leaves no release running into the next one."""
    yield
    while STARTED:
        p = STARTED.pop()
        if p.poll() is None:
            p.kill()
            p.communicate()


def _start(args, cwd):
    p = subprocess.Popen([sys.executable, "-m", "onnxforge", *map(str, args)], cwd=cwd, stdout=subprocess.PIPE,
                         stderr=subprocess.PIPE, text=True, env={**os.environ, "PYTHONPATH": str(ROOT)},
                         preexec_fn=default_sigint)  # a parent may ignore SIGINT
    STARTED.append(p)
    return p


def _run(args, cwd):
    p = _start(args, cwd)
    out, err = p.communicate(timeout=300)
    return p.returncode, err


def _slow_release(ws, tmp_path, seconds=60.0):
    """A release into tmp_path/rel, started and now timing its quantize step for ``seconds``."""
    out = tmp_path / "rel"
    p = _start(["release", release_config(ws, f"slow{int(seconds)}", **{"steps.1.bench_seconds": seconds,
                                                                          "steps.1.speed_budget": 0.01}),
                "-o", out], ws / "cwd")
    assert _wait_for(lambda: any(tmp_path.glob(".onnxforge-*/steps/00-*")) or p.poll() is not None, timeout=90)
    assert p.poll() is None, p.communicate()[1]
    return p, out


def test_second_release_into_one_out_fails_at_once_and_sigterm_says_143(ws, tmp_path):
    a, out = _slow_release(ws, tmp_path)
    t0 = time.time()
    code, err = _run(["release", release_config(ws, "fast"), "-o", out, "--force"], ws / "cwd")
    waited = time.time() - t0
    assert code == 3, err
    assert f"is being written by another onnxforge run (pid {a.pid})" in err and "hint:" in err
    assert waited < 30  # at once, not after the first one's work
    assert not out.exists()  # the refused run wrote nothing (the first has not moved in yet)
    a.send_signal(signal.SIGTERM)
    _, err = a.communicate(timeout=120)
    assert a.returncode == 143, err
    rep = json.loads((out / "report.json").read_text())["result"]
    assert rep["exit_code"] == 143 and rep["failure"] == "terminated" and rep["error"] == "terminated", rep
    assert rep["passed"] is False and not (out / "model.onnx").exists()
    assert not list(tmp_path.glob(".onnxforge-*"))  # no scratch folder, no lock file


def test_ctrl_c_still_says_130(ws, tmp_path):
    a, out = _slow_release(ws, tmp_path)
    a.send_signal(signal.SIGINT)
    _, err = a.communicate(timeout=120)
    assert a.returncode == 130, err
    rep = json.loads((out / "report.json").read_text())["result"]
    assert rep["exit_code"] == 130 and rep["failure"] == "interrupted"
    assert not list(tmp_path.glob(".onnxforge-*"))


def test_a_killed_release_does_not_block_the_next(ws, tmp_path):
    """SIGKILL leaves the lock file behind; the kernel dropped its lock with the process."""
    a, out = _slow_release(ws, tmp_path)
    lock = tmp_path / ".onnxforge-lock-rel"
    assert lock.read_text().strip() == str(a.pid)
    a.kill()
    a.communicate(timeout=60)
    assert lock.exists()
    code, err = _run(["release", release_config(ws, "fast"), "-o", out], ws / "cwd")
    assert code == 0, err
    assert (out / "model.onnx").is_file() and not lock.exists()


def test_second_zoo_into_one_out_fails_at_once(ws, tmp_path):
    cfg = release_config(ws, "zooslow", **{"steps.1.bench_seconds": 1.0, "steps.1.speed_budget": 0.01})
    zoo = ws / "in" / "dl-zoo.toml"
    zoo.write_text(f'[zoo]\nreleases = ["{os.path.basename(cfg)}"]\n')
    out = tmp_path / "zoo"
    a = _start(["zoo", zoo, "-o", out, "--jobs", "1"], ws / "cwd")
    assert _wait_for(lambda: any(out.glob(".onnxforge-*/steps/00-*")) or a.poll() is not None, timeout=90)
    # held (not killed) while the second zoo starts, however long that takes on a busy
    # machine: the first still holds its folder's lock, then finishes as if nothing happened
    os.kill(a.pid, signal.SIGSTOP)
    try:
        assert a.poll() is None, a.communicate()[1]
        code, err = _run(["zoo", zoo, "-o", out, "--jobs", "1", "--force"], ws / "cwd")
    finally:
        os.kill(a.pid, signal.SIGCONT)
    assert code == 3, err
    assert f"is being written by another onnxforge zoo (pid {a.pid})" in err
    _, err = a.communicate(timeout=300)
    assert a.returncode == 0, err
    rep = json.loads((out / "zoo-report.json").read_text())["result"]
    assert rep["status"] == "passed" and (out / "zooslow" / "model.onnx").is_file()
    assert not list(tmp_path.glob(".onnxforge-*")) and not list(out.glob(".onnxforge-*"))


def test_force_removes_only_what_the_previous_release_listed(ws, tmp_path):
    """A listing is a file in the folder anyone could have written: names that leave the
    folder (absolute, .., through a link) are never removed; a file it does not list stays."""
    out, outside = tmp_path / "rel", tmp_path / "outside"
    (out / "steps").mkdir(parents=True)
    outside.mkdir()
    victims = [outside / "abs.txt", tmp_path / "dotdot.txt", outside / "linked.txt"]
    for v in victims:
        v.write_text("keep me\n")
    (out / "via").symlink_to(outside)
    (out / "notes.txt").write_text("mine\n")
    (out / "steps" / "07-old.onnx").write_text("an old step\n")
    listing = {"files": [str(victims[0]), "../dotdot.txt", "via/linked.txt", "steps/07-old.onnx", "report.md"]}
    (out / ".onnxforge-release.json").write_text(json.dumps(listing))
    (out / "report.md").write_text("# the old release\n")
    code, err = _run(["release", release_config(ws, "fast"), "-o", out, "--force"], ws / "cwd")
    assert code == 0, err
    assert all(v.read_text() == "keep me\n" for v in victims)
    assert (out / "notes.txt").read_text() == "mine\n"  # not listed: not the release's to remove
    assert not (out / "steps" / "07-old.onnx").exists() and (out / "model.onnx").is_file()
    assert "old release" not in (out / "report.md").read_text()
    assert json.loads((out / ".onnxforge-release.json").read_text())["files"][-1] == "report.json"
