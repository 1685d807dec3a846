from __future__ import annotations

import contextlib
import os
import re
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from fixtures import make_fixtures  # noqa: E402

LIGHT = None
SLOW_MODULE = re.compile(r"^pytestmark = .*\bpytest\.mark\.slow\b", re.MULTILINE)


def pytest_ignore_collect(collection_path, config):
    """In the fast lane (``-m "not slow"``) a module marked slow as a whole is not even
    imported: it holds no test that would run, and importing torch, transformers,
    skl2onnx or ray at its top cost most of the lane's collection time."""
    if collection_path.suffix != ".py" or not collection_path.name.startswith("test_"):
        return None
    if config.getoption("markexpr", "").replace(" ", "") != "notslow":
        return None
    return True if SLOW_MODULE.search(collection_path.read_text(encoding="utf-8")) else None


def light_dir() -> Path:
    import onnx

    return Path(onnx.__file__).parent / "backend" / "test" / "data" / "light"


@pytest.fixture(scope="session")
def fx(tmp_path_factory) -> Path:
    """A folder of pure-ONNX fixtures (no torch needed)."""
    d = tmp_path_factory.mktemp("fx")
    make_fixtures.onnx_tiny(d / "tiny.onnx")
    make_fixtures.onnx_tiny(d / "tiny_fixed.onnx", batch=2)
    make_fixtures.onnx_with_external_data(d / "ext")
    make_fixtures.onnx_chain(d / "chain.onnx")
    make_fixtures.onnx_chain(d / "chain_bad5.onnx", perturb=5)
    return d


@pytest.fixture(scope="session")
def light() -> Path:
    return light_dir()


@dataclass
class CliResult:
    code: int
    out: str
    err: str


@pytest.fixture
def cli(capsys):
    """Run the CLI in-process and capture what it prints."""
    from onnxforge.cli.app import main

    def run(*args: str) -> CliResult:
        capsys.readouterr()
        code = main([str(a) for a in args])
        cap = capsys.readouterr()
        return CliResult(code, cap.out, cap.err)

    return run


def json_result(r: CliResult) -> dict:
    """The ``result`` of a command's JSON envelope (fails with its stderr when there is none)."""
    import json

    assert r.out.strip().startswith("{"), r.err
    return json.loads(r.out)["result"]


def run_subprocess(*args: str, env: dict | None = None, cwd: str | None = None) -> subprocess.CompletedProcess:
    e = dict(os.environ)
    e.update(env or {})
    return subprocess.run([sys.executable, "-m", "onnxforge", *args], capture_output=True, text=True, env=e, cwd=cwd)


def default_sigint() -> None:
    """``preexec_fn`` for a child a test interrupts with SIGINT. Under a parent that
    ignores SIGINT (a background job of a non-interactive shell) the child inherits
    SIG_IGN, Python then installs no KeyboardInterrupt handler, and the signal is lost."""
    import signal

    signal.signal(signal.SIGINT, signal.SIG_DFL)


@contextlib.contextmanager
def cpu_burner(cpu: int, count: int = 1):
    """``count`` busy-looping processes pinned to CPU ``cpu``: a process pinned there too
    gets a measurable part of that CPU only (the scheduler shares it out)."""
    def pin() -> None:
        os.sched_setaffinity(0, {cpu})

    procs = [subprocess.Popen([sys.executable, "-c", "while True: pass"], preexec_fn=pin) for _ in range(count)]
    try:
        time.sleep(0.2)  # running before the timed process starts
        yield procs
    finally:
        for p in procs:
            p.kill()
            p.wait()
