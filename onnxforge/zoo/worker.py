"""One release, run where a worker is: a local worker process (local.py) or a Ray
task (ray_exec.py). ``run_one`` runs the release into OUT/FOLDER and writes
zoo-entry.json beside its reports: the name, target, node, attempts, the zoo run's
id and the timing phases, which merge.py reads back."""

from __future__ import annotations

import logging
import os
import socket
from dataclasses import dataclass
from pathlib import Path

from onnxforge.core.errors import OnnxforgeError
from onnxforge.zoo.config import Entry
from onnxforge.zoo.merge import ENTRY_FILE, EntryPhase, ZooEntry
import importlib
import tempfile
from onnxforge.checks import benchmark as bench
from onnxforge.core.fileio import atomic_write_text, make_dirs
from onnxforge.core.progress import set_reporter
from onnxforge.pipeline.run import release
from onnxforge.report import dumps

log = logging.getLogger("onnxforge")

WORK = ".onnxforge-zoo"  # in OUT: the zoo's own scratch (lock, attempt counts), removed at the end
STOP_GRACE = 60.0  # seconds an interrupted release gets to write its verdict before its process is killed


@dataclass(frozen=True)
class Job:
    """What a worker needs to run one release."""

    entry: Entry
    out: str  # the zoo's OUT (absolute)
    run: str  # this zoo run's id: folders written by an earlier run are told apart
    lock: str | None  # the benchmark lock file; None: the node's own (Ray)
    keep_steps: bool = True
    progress: str | None = None  # ZooRun.progress


def node_lock() -> str:
    """A node-local lock path: a file on a shared output folder would make timing
    exclusive across the whole cluster (or not at all: flock over NFS varies)."""
    return os.path.join(tempfile.gettempdir(), f"onnxforge-bench-{os.getuid()}.lock")


def _count_attempt(job: Job) -> int:
    """Each start of a release appends a line; a retry after a dead worker sees the earlier one."""
    path = Path(job.out) / WORK / "attempts" / job.entry.folder
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a") as f:
        f.write(f"{socket.gethostname()} {os.getpid()}\n")
    return len(path.read_text().splitlines())


def _stamp(path: Path):
    try:
        st = path.stat()
        return st.st_ino, st.st_mtime_ns
    except OSError:
        return None


def _write_entry(folder: Path, info: dict) -> None:
    make_dirs(folder)
    entry = ZooEntry(**{**info, "timeline": tuple(EntryPhase(**p) for p in info.get("timeline", ()))})
    atomic_write_text(folder / ENTRY_FILE, dumps(entry, "zoo-entry") + "\n")


def _progress(job: Job) -> None:
    """This release's step lines (``alpha: convert:torch: done in 3.1 s``), from the
    reporter the caller named: the library itself never imports the CLI."""

    if job.progress is None:
        set_reporter(None)
        return
    module, _, attr = job.progress.partition(":")
    set_reporter(getattr(importlib.import_module(module), attr)(f"{job.entry.folder}: "))


def run_one(job: Job) -> dict:
    """Run one release into OUT/FOLDER and write zoo-entry.json beside its reports
    (name, target, node, attempts, this run's id, the timing phases). The release's
    own verdict is in its report.json; this returns where it ran."""
    e = job.entry
    folder = Path(job.out) / e.folder
    info = {"run": job.run, "name": e.name, "target": e.target.name if e.target else None, "folder": e.folder,
            "config": e.config, "node": socket.gethostname(), "pid": os.getpid(), "attempts": _count_attempt(job)}
    os.environ[bench.BENCH_LOCK_ENV] = job.lock or node_lock()
    os.environ.pop("GITHUB_STEP_SUMMARY", None)  # the zoo writes one summary for all its releases
    bench.TIMED.clear()
    _progress(job)
    before = _stamp(folder / "report.json")
    try:
        # the zoo checked every folder before starting (no release there without --force): what
        # is there now is this run's own earlier attempt, which a retry replaces
        release(e.config, folder, force=True, keep_steps=job.keep_steps,
                provider=e.target.provider if e.target else None)
    except OnnxforgeError as exc:  # before the release could begin (its folder unusable): no report of this run
        info.update(status="error", exit_code=int(exc.exit_code), failure=exc.message, hint=exc.hint)
    except Exception as exc:  # noqa: BLE001 - an internal error: the release wrote it as its verdict
        log.error("%s: internal error: %s: %s", e.folder, type(exc).__name__, exc)
    finally:
        info["reported"] = _stamp(folder / "report.json") not in (None, before)
        info["timeline"] = list(bench.TIMED)
        _write_entry(folder, info)
    return {"folder": e.folder, "node": info["node"], "pid": info["pid"]}
