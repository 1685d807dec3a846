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


# ----------------------------------------------------------------------------- schemas

SCHEMA_OF = {"report.json": "report", "zoo-report.json": "zoo-report"}
_schema_failures: list[str] = []


def schema_errors(name: str, doc) -> list[str]:
    """What in ``doc`` breaks the published schema ``name`` (onnxforge/schemas/)."""
    import json

    import jsonschema

    from onnxforge.jsonschemas import FOLDER, file_name

    cache = schema_errors.__dict__.setdefault("validators", {})
    if name not in cache:
        cache[name] = jsonschema.Draft202012Validator(json.loads((FOLDER / file_name(name)).read_text()))
    return [f"{'/'.join(map(str, e.absolute_path)) or '(top)'}: {e.message[:300]}"
            for e in cache[name].iter_errors(doc)]


@pytest.fixture(scope="session", autouse=True)
def _check_written_reports():
    """Every report.json and zoo-report.json onnxforge writes in the test process
    (releases and zoos run through the `cli` fixture or the library) is checked against
    its published JSON Schema as it is written; _reports_matched_their_schemas fails
    the test that wrote one that does not match. A check never stops the write: the
    code under test runs as it would."""
    import json

    import onnxforge.core.fileio as fileio

    write = fileio.atomic_write_text

    def checked(target, text: str) -> None:
        name = SCHEMA_OF.get(Path(target).name)
        if name is not None:
            errors = schema_errors(name, json.loads(text))
            _schema_failures.extend(f"{target}: {e}" for e in errors[:5])
        write(target, text)

    fileio.atomic_write_text = checked
    yield
    fileio.atomic_write_text = write


@pytest.fixture(autouse=True)
def _reports_matched_their_schemas(_check_written_reports):
    yield
    failures = list(_schema_failures)
    _schema_failures.clear()
    assert not failures, "a report breaks its JSON Schema (onnxforge/schemas/):\n" + "\n".join(failures)


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
