from __future__ import annotations

import contextlib
import gc
import os
import re
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
# The suite runs as Python does by default, writing bytecode (__pycache__ is git-ignored), even
# where the image sets PYTHONDONTWRITEBYTECODE=1 (this machine's does): under it every process
# of a run compiled onnxforge again (a CLI run, a zoo or Ray worker: 0.1-0.4 s each), every
# worker rewrote the test modules' asserts again (2 s of each collection), and the tests never
# saw what users' machines do (a factory's import wrote __pycache__ into the user's folder).
# The run's children inherit the setting.
if os.environ.pop("PYTHONDONTWRITEBYTECODE", None) is not None:
    sys.dont_write_bytecode = False
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


@pytest.hookimpl(tryfirst=True)  # before xdist names the groups (it appends @group to each test id)
def pytest_collection_modifyitems(config, items):
    """Every ``timing`` test goes into one xdist group, "timing": one worker runs them
    back to back under one exclusive lock (pytest_runtest_protocol), so the other worker's test in
    progress is waited out once, not once per module that has one (46 s of idle workers).

    Then whole modules in a new order, each kept in one piece (module fixtures are built
    once): those with an xdist_group first (a chain one worker runs alone: Ray, the zoo,
    the KV-cache exports), then those with a ``long`` test, then those with a slow test,
    then the rest, which fill in around them. In file order, tests/zoo/ came last and
    left one worker running its minute of Ray tests while the other had finished; the
    README tour and the wheel install (14 and 7 s, a CPU mostly idle) ran last, and the
    other worker idled beside them."""
    for item in items:
        if _timing(item):
            item.add_marker(pytest.mark.xdist_group("timing"))

    def rank(item) -> int:
        marks = ("xdist_group", "long", "slow")
        return next((i for i, m in enumerate(marks) if item.get_closest_marker(m)), len(marks))

    by_module: dict[str, list] = {}
    for item in items:
        by_module.setdefault(item.nodeid.split("::")[0], []).append(item)
    order = sorted(by_module.values(), key=lambda group: min(map(rank, group)))
    items[:] = [item for group in order for item in group]


@pytest.hookimpl(trylast=True)
def pytest_sessionfinish(session):
    """On its way out pytest collects the garbage five times over, to report exceptions
    raised in __del__: 0.4-0.6 s each in a worker that loaded torch and transformers, paid
    by both workers at the end of every run. One collection here finds the same garbage
    while pytest's hook still records it; frozen, the heap costs the next five nothing."""
    gc.collect()
    gc.freeze()


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


# ----------------------------------------------------------------------------- xdist: shared builds, timing alone
# The suite runs on pytest-xdist workers (pyproject's addopts). Two things need the workers
# to agree: an artefact many modules read (a release, an export) is built once for the
# whole run, and a test that times something runs while no other test does.

WORKER = os.environ.get("PYTEST_XDIST_WORKER")  # "gw0", ...; None in a plain run
_run = {"dir": None, "fd": None, "turnstile": None, "mode": None}


def run_dir(tmp_path_factory) -> Path:
    """A folder every worker of this run sees: xdist gives each worker a basetemp inside
    the run's own; a plain run has one process and uses its basetemp."""
    if _run["dir"] is None:
        base = tmp_path_factory.getbasetemp()
        _run["dir"] = base.parent if WORKER else base
    return _run["dir"]


@contextlib.contextmanager
def _flocked(path: Path):
    import fcntl

    with open(path, "a") as f:
        fcntl.flock(f, fcntl.LOCK_EX)
        yield


def _digest(folder: Path) -> dict[str, str]:
    import hashlib

    return {p.relative_to(folder).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(folder.rglob("*")) if p.is_file() and not p.is_symlink()}


_SHARED: dict[str, Path] = {}  # fixture name -> its folder, for _shared_builds_untouched


def shared_build(tmp_path_factory, name: str, build) -> Path:
    """The folder ``name``, made once for the run by ``build(folder)`` in whichever worker
    asks first (the others wait on a file lock, then read it). Tests read it and never
    write into it: one that wants to change it copies it first. _shared_builds_untouched
    fails the test that changed a file in it. A build that raised leaves no done-marker:
    the next asker starts over."""
    root = run_dir(tmp_path_factory) / "shared"
    root.mkdir(exist_ok=True)
    folder, done = root / name, root / f"{name}.sha256.json"
    with _flocked(root / f"{name}.lock"):
        if not done.exists():
            import json
            import shutil

            shutil.rmtree(folder, ignore_errors=True)
            folder.mkdir()
            build(folder)
            done.write_text(json.dumps(_digest(folder)))
    _SHARED[name] = folder
    return folder


@pytest.fixture(autouse=True)
def _shared_builds_untouched(request):
    yield
    import json

    for name in set(request.fixturenames) & set(_SHARED):
        folder = _SHARED[name]
        want = json.loads((folder.parent / f"{name}.sha256.json").read_text())
        now = _digest(folder)
        changed = sorted(k for k in want.keys() | now.keys() if want.get(k) != now.get(k))
        assert not changed, f"the test changed the shared build {name} (copy it first): {changed[:5]}"


def _timing_fd(tmp_path_factory) -> int | None:
    if not WORKER:  # one process: its tests already run one at a time
        return None
    if _run["fd"] is None:
        _run["fd"] = os.open(run_dir(tmp_path_factory) / "timing.lock", os.O_RDWR | os.O_CREAT, 0o644)
        _run["turnstile"] = os.open(run_dir(tmp_path_factory) / "timing.turnstile", os.O_RDWR | os.O_CREAT, 0o644)
    return _run["fd"]


def _lock(mode) -> None:
    """flock has no queue: a worker waiting for the exclusive lock waited while the other
    worker let go of its shared lock after each test and took it again for the next (13 s
    of five zoo tests, one CPU idle). Whoever takes the lock from nothing passes a
    turnstile first, and a worker waiting for the exclusive lock holds the turnstile: the
    other finishes the test it is in, then waits. A shared lock becoming exclusive inside
    a test (``alone``) skips the turnstile: a writer holding it waits for that very test."""
    import fcntl

    fd, turnstile = _run["fd"], _run["turnstile"]
    if fd is None or mode == _run["mode"]:
        return
    through = mode != fcntl.LOCK_UN and _run["mode"] in (None, fcntl.LOCK_UN)
    if through:
        fcntl.flock(turnstile, fcntl.LOCK_EX)
    try:
        fcntl.flock(fd, mode)  # a shared lock becomes exclusive (or back) on the same descriptor
    finally:
        if through:
            fcntl.flock(turnstile, fcntl.LOCK_UN)
    _run["mode"] = mode


def _timing(item) -> bool:
    return item is not None and item.get_closest_marker("timing") is not None


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_protocol(item, nextitem):
    """A readers-writer lock across the workers: every test holds a shared flock on one
    file, a test marked ``timing`` an exclusive one, so it times on an otherwise idle
    suite (the timings judge the CPU they got and would come out inconclusive beside a
    busy worker). Held from setup to teardown, so the other worker's module- and
    session-scoped fixtures are under it too: taken in a function-scoped fixture, it came
    after them, and a 16 s KV-cache export built beside test_contention made its idle
    thread wait 0.26 s of each second. A timing test followed by another on this worker
    (the "timing" group) keeps the exclusive lock: let go in between, the other worker
    started its next test, and each timing test then waited that test out."""
    import fcntl

    if _timing_fd(item.config._tmp_path_factory) is None:
        yield
        return
    _lock(fcntl.LOCK_EX if _timing(item) else fcntl.LOCK_SH)
    try:
        yield
    finally:
        if not (_timing(item) and _timing(nextitem)):
            _lock(fcntl.LOCK_UN)


@contextlib.contextmanager
def alone(tmp_path_factory):
    """The exclusive side of the lock for part of a test that times (the README tour's
    timed commands): the test's shared lock becomes exclusive, then shared again."""
    import fcntl

    if _timing_fd(tmp_path_factory) is None:
        yield
        return
    before = _run["mode"] or fcntl.LOCK_UN
    _lock(fcntl.LOCK_EX)
    try:
        yield
    finally:
        _lock(before)


# ----------------------------------------------------------------------------- built once per run (tests/shared.py)

@pytest.fixture(scope="session")
def digits_release(tmp_path_factory) -> Path:
    """The README's main job released once: cfg/release.toml, a/ (the release),
    summary.md, exit_code."""
    pytest.importorskip("torch")
    import shared

    return shared_build(tmp_path_factory, "digits_release", shared.digits_release)


@pytest.fixture(scope="session")
def sklearn_release(tmp_path_factory) -> Path:
    """The sklearn example released once: release.toml and release/."""
    pytest.importorskip("skl2onnx")
    import shared

    return shared_build(tmp_path_factory, "sklearn_release", shared.sklearn_release)


@pytest.fixture(scope="session")
def bert_onnx(tmp_path_factory) -> Path:
    """models.py's tiny BERT exported once: bert.onnx."""
    pytest.importorskip("torch")
    pytest.importorskip("transformers")
    import shared

    return shared_build(tmp_path_factory, "bert_onnx", shared.bert_onnx) / "bert.onnx"


@pytest.fixture(scope="session")
def gpt2_onnx(tmp_path_factory) -> Path:
    """models.py's tiny GPT-2 exported once: gpt2.onnx (input_ids, batch x seq)."""
    pytest.importorskip("torch")
    pytest.importorskip("transformers")
    import shared

    return shared_build(tmp_path_factory, "gpt2_onnx", shared.gpt2_onnx) / "gpt2.onnx"


@pytest.fixture(scope="session")
def torch_exports(tmp_path_factory) -> Path:
    """digits.onnx (the example's CNN), encoder.onnx and mlp.onnx (models.py), exported once."""
    pytest.importorskip("torch")
    import shared

    return shared_build(tmp_path_factory, "torch_exports", shared.torch_exports)
