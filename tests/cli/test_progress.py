"""Progress on stderr: plain start/done lines when stderr is not a terminal (CI logs), a
live status when it is (captured through a pseudo-terminal), nothing with -q."""

import os
import re
import select
import subprocess
import sys

import pytest

from conftest import ROOT
from onnxforge.cli import progress as cli_progress
from onnxforge.core.progress import set_reporter, task

DONE = re.compile(r"^(\s*)(.+): done in (\d+\.\d) s$")


@pytest.fixture
def plain(capsys):
    previous = set_reporter(cli_progress.PlainReporter())
    capsys.readouterr()
    yield lambda: capsys.readouterr().err
    set_reporter(previous)


def test_plain_lines_nest_and_time(plain, monkeypatch):
    with task("release") as rel:
        rel.update(0, total=2)
        with task("step 1/2 convert"):
            with task("run model.onnx", total=3, detail=True) as t:  # a detail under a second: no line
                t.advance(3)
        rel.advance()
    assert plain().splitlines() == [
        "release: start", "  step 1/2 convert: start", "  step 1/2 convert: done in 0.0 s", "release: done in 0.0 s"]
    monkeypatch.setattr(cli_progress, "DETAIL_MIN_S", 0.0)
    monkeypatch.setattr(cli_progress, "PLAIN_HEARTBEAT_S", 0.0)
    with task("calibration", total=200) as t:
        t.update(120)
        with task("timing 2 row(s)", total=2.0, detail=True):
            pass
    lines = plain().splitlines()
    assert lines[0] == "calibration: start"
    assert re.fullmatch(r"calibration: 120/200 after \d+ s", lines[1])  # the heartbeat of long work
    assert DONE.match(lines[2]).group(1) == "  " and lines[3].startswith("calibration: done in ")


def test_a_failed_block_says_it_stopped(plain):
    with pytest.raises(RuntimeError):
        with task("simplify"):
            raise RuntimeError("boom")
    assert plain().splitlines() == ["simplify: start", "simplify: stopped after 0.0 s"]


@pytest.mark.slow  # runs every command for real (onnxsim imports torch)
def test_every_command_reports_in_a_ci_log(cli, fx, tmp_path):
    m = fx / "tiny.onnx"
    for argv, name in ((["validate", m, m], "validate"),
                       (["benchmark", m, "--iterations", "5", "--warmup", "1"], "benchmark"),
                       (["simplify", m, "-o", tmp_path / "s.onnx"], "simplify"),
                       (["quantize", "dynamic", "--allow-generated-data", m, "-o", tmp_path / "q.onnx", "--bench-seconds", "0.1", "--speed-budget", "0"],
                        "quantize dynamic")):
        r = cli(*argv)
        assert r.code == 0, r.err
        lines = r.err.splitlines()
        assert lines[0] == f"{name}: start" and DONE.match(lines[-1]).group(2) == name, r.err


def test_quiet_and_json(cli, fx):
    m = fx / "tiny.onnx"
    r = cli("validate", m, m, "-q")
    assert r.code == 0 and r.err == ""
    r = cli("validate", m, m, "--json")  # stdout stays JSON only; progress is on stderr
    assert r.out.lstrip().startswith("{") and "validate: done in" in r.err


def test_an_error_keeps_its_one_line(cli, fx, tmp_path):
    """A step that fails prints its progress lines, then exactly one error: and one hint: line."""
    r = cli("simplify", fx / "tiny.onnx", "-o", tmp_path / "s.onnx", "--shape", "nope:1x4")
    lines = r.err.splitlines()
    assert r.code in (2, 3) and sum(ln.startswith("error: ") for ln in lines) == 1
    assert any(ln.startswith("hint: ") for ln in lines) and "Traceback" not in r.err


def _pty_run(args: list[str], cols: int = 100, timeout: float = 120) -> tuple[bytes, str, int]:
    """Run the CLI with stderr on a pseudo-terminal (stdout on a pipe, as `... > out.txt`)."""
    import fcntl
    import pty
    import struct
    import termios

    master, slave = pty.openpty()
    fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", 30, cols, 0, 0))
    env = {**os.environ, "TERM": "xterm-256color", "PYTHONPATH": str(ROOT)}
    env.pop("NO_COLOR", None)
    p = subprocess.Popen([sys.executable, "-m", "onnxforge", *args], stdin=slave, stdout=subprocess.PIPE,
                         stderr=slave, env=env)
    os.close(slave)
    chunks = []
    try:
        while True:
            ready, _, _ = select.select([master], [], [], 0.2)
            if master in ready:
                try:
                    data = os.read(master, 65536)
                except OSError:  # EIO: the child closed its end
                    break
                if not data:
                    break
                chunks.append(data)
            elif p.poll() is not None:
                break
        out = p.stdout.read().decode()
        return b"".join(chunks), out, p.wait(timeout)
    finally:
        os.close(master)
        if p.poll() is None:
            p.kill()


@pytest.mark.slow  # a command in a pseudo-terminal
def test_live_status_on_a_terminal(fx):
    raw, out, code = _pty_run(["benchmark", str(fx / "tiny.onnx"), "--duration", "1.5", "--warmup", "1"])
    text = raw.decode(errors="replace")
    assert code == 0, text
    assert "\x1b[?25l" in text and "\x1b[2K" in text  # a live display: cursor hidden, lines redrawn
    frames = re.findall(r"timing 1 row\(s\)[^\r\n]*?(\d\.\d)/1\.5 s", re.sub(r"\x1b\[[0-9;]*m", "", text))
    assert len(set(frames)) >= 3, frames  # the bar moved through the benchmark's seconds
    assert "━" in text and re.search(r"0:00:0\d", text)  # a bar and the elapsed time
    assert re.search(r"✓\S* benchmark\s+\S*\d+\.\d s", re.sub(r"\x1b\[[0-9;]*m", "", text))  # what finished stays
    assert "latency" in out and "\x1b" not in out  # stdout (a pipe) has the plain table, no control codes


@pytest.mark.slow  # the README's release: torch export, simplify, int8, benchmark (about 6 s)
def test_ci_log_of_the_readme_release(cli, tmp_path):
    """The README's main job in a CI log (stderr not a terminal): a line per step with its
    time. In this process (the CLI's own main(), stderr captured): a child would spend 4 s
    importing what this worker has loaded."""
    from shared import untimed_example

    # the transcript is under test, not this shared machine's speed: the latency gates cannot
    # fail; [package] is left out (no mlflow)
    untimed_example(tmp_path)
    r = cli("release", tmp_path / "release.toml", "-o", tmp_path / "out")
    assert r.code == 0, r.err
    done = {m.group(2).strip(): float(m.group(3)) for m in map(DONE.match, r.err.splitlines()) if m}
    for step in ("step 1/3 convert", "step 2/3 simplify", "step 3/3 quantize.static", "latency gate", "release"):
        assert step in done, r.err
        assert f"{step}: start" in r.err
    assert done["release"] >= done["step 1/3 convert"]
    assert "\x1b" not in r.err  # no control codes in a log
