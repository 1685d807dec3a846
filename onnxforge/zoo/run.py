"""`onnxforge zoo`: many releases, one verdict.

Each (config, target) pair is one `onnxforge.pipeline.run.release` into OUT/FOLDER/,
run by ``run_one`` in a worker process (local) or a Ray task (ray_exec.py); a
release that fails never stops the others. When all are done — or the zoo is
interrupted — every release is read back from its folder (merge.py) and the combined
verdict is written (report.py): on every exit, like a release's own reports.

Timing is exclusive: workers name a lock file in ONNXFORGE_BENCH_LOCK, and every
benchmark's timing phase holds it (checks/benchmark.py), so on one machine only
one timing runs at a time while other releases convert and quantize.

Infrastructure failures — the process running a release died (killed, out of memory,
a crash in native code) — are retried up to zoo.max_retries; a failed gate or a bad
config is a verdict, never retried.
"""

from __future__ import annotations

import os
import shutil
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Mapping, Sequence

from onnxforge.core.errors import BadInputError, OnnxforgeError, Terminated, UsageError
from onnxforge.zoo.config import REPORT_FILES, Entry, ZooConfig, load_zoo, select
from onnxforge.zoo.merge import ENTRY_FILE, NOT_RUN, ZooReport, ZooRelease, combine, phases_of, release_record
from onnxforge.zoo.worker import WORK, Job
import dataclasses
import json
import uuid
from onnxforge.core.fileio import folder_lock, make_dirs
from onnxforge.core.system import cpu_quota
from onnxforge.pipeline.config import load_config
from onnxforge.pipeline.publish import check_out_dir, is_onnxforge_json, planned_files
from onnxforge.pipeline.run import release_inputs
from onnxforge.zoo.local import run_local
from onnxforge.zoo.ray_exec import run_ray
from onnxforge.zoo.report import write_all

EXECUTORS = ("local", "ray", "matrix")


# ----------------------------------------------------------------------------- the zoo


def check_out(out: Path, force: bool) -> None:
    """Before anything (under OUT's lock): OUT is a folder (or does not exist) holding no
    zoo verdict unless --force, and no file of the verdict's names that another
    program wrote (a user's junit.xml): that one is never replaced, --force or not."""
    if out.exists() and not out.is_dir():
        raise BadInputError(f"zoo output {out} is a file, not a folder", hint="give a folder path with -o")
    held = [name for name in REPORT_FILES if (out / name).exists() or (out / name).is_symlink()]
    if not held:
        return
    if not is_onnxforge_json(out / "zoo-report.json", "zoo"):
        raise BadInputError(f"{out} holds {held[0]}, which is not from an onnxforge zoo: the zoo's verdict would "
                            "overwrite it", hint="pick another folder with -o (a missing or empty one, or one "
                            "that holds a zoo), or move that file away")
    if not force and not _ran_nothing(out):
        raise BadInputError(f"{out} already holds a zoo verdict ({held[0]})", hint="pass --force to replace it")


def _ran_nothing(out: Path) -> bool:
    """The verdict of a zoo that never started a release (its file did not load): replacing
    it loses nothing, so the corrected command needs no --force."""
    try:
        report = json.loads((out / "zoo-report.json").read_text())
    except (OSError, ValueError):
        return False
    report = report.get("result", report) if isinstance(report, dict) else None
    return isinstance(report, dict) and report.get("status") == "error" and report.get("releases") == []


def zoo_inputs(zoo_file: str | os.PathLike) -> list[Path]:
    """Every file a zoo reads: the zoo file, each release's config and what that config
    names (source, weights, data). A file that does not load yet is left to the run,
    which makes it a verdict."""
    found = [Path(zoo_file)]
    try:
        configs = dict.fromkeys(e.config for e in load_zoo(zoo_file).entries)
    except OnnxforgeError:
        return found
    for config in configs:
        try:
            found += [Path(p) for p in release_inputs(load_config(config), config) if p]
        except OnnxforgeError:
            found.append(Path(config))
    return found


def check_report(out: Path, report: Path | None) -> None:
    """--report beside the zoo's verdict is fine; inside a release folder or over one of
    the verdict's files the zoo would overwrite it, or it a release's own report."""
    if report is None:
        return
    r, o = Path(report).resolve(), out.resolve()
    if o in r.parents and (r.parent != o or r.name in REPORT_FILES):
        raise UsageError(f"--report {report} is inside the zoo's output {out}, where the zoo writes its own files",
                         hint=f"write it outside {out}, or directly in it under another name")


def check_folders(out: Path, entries: Sequence[Entry], force: bool, keep_steps: bool) -> None:
    """Each release's folder follows a release's own rule (publish.check_out_dir), checked
    for all before the first starts; the zoo's zoo-entry.json there is one of ours too."""
    for e in entries:
        f = out / e.folder
        if f.exists() and not f.is_dir():
            raise BadInputError(f"release folder {f} is a file", hint="remove it, or rename the release")
        try:
            cfg = load_config(e.config)
        except OnnxforgeError:  # the release records it as its verdict
            cfg = None
        check_out_dir(f, force, planned_files(cfg, keep_steps))
        if (f / ENTRY_FILE).exists() and not is_onnxforge_json(f / ENTRY_FILE, "zoo-entry"):
            raise BadInputError(f"{f} holds {ENTRY_FILE}, which is not from an onnxforge zoo: the zoo would "
                                "overwrite it", hint="pick another folder with -o, or move that file away")


def _scratch(out: Path) -> set[Path]:
    return set(out.glob(".onnxforge-*")) if out.is_dir() else set()


def _clean(out: Path, before: set[Path]) -> None:
    """Scratch folders of releases whose process was killed (a retried crash, a forced
    stop), and the zoo's own: nothing else in OUT is touched."""
    for p in _scratch(out) - before:
        shutil.rmtree(p, ignore_errors=True) if p.is_dir() else p.unlink(missing_ok=True)


def _info(e: Entry, outcome: Mapping | None, missing: Mapping) -> dict:
    """What the zoo knows of a release besides its folder; ``missing`` stands in for
    a release no worker reported on."""
    base = {"name": e.name, "target": e.target.name if e.target else None, "config": e.config}
    keep = ("status", "exit_code", "failure", "hint")
    return {**base, **{k: v for k, v in (outcome or missing).items() if k in keep}}


def _missing(interrupted: bool, error: BaseException | None) -> dict:
    if interrupted:
        return {"status": NOT_RUN, "exit_code": 130, "failure": "not run: the zoo was interrupted"}
    if error is not None:
        return {"status": NOT_RUN, "exit_code": int(getattr(error, "exit_code", 70)),
                "failure": f"not run: {getattr(error, 'message', error)}"}
    return {"status": "error", "exit_code": 70, "failure": "no worker reported on this release"}


@dataclass(frozen=True)
class ZooRun:
    """One `onnxforge zoo` invocation."""

    out: Path
    executor: str = "local"
    jobs: int | None = None
    ray_address: str | None = None
    only: tuple[str, ...] = ()
    force: bool = False
    on_done: Callable[[ZooRelease, int, int], None] | None = None
    # "module:callable" making each release's progress reporter in its worker, called with
    # the line prefix (the release's folder); the CLI names its plain-lines reporter
    progress: str | None = None


def _execute(zr: ZooRun, cfg: ZooConfig, entries, run_id: str, outcomes: dict) -> None:
    out = zr.out.resolve()
    total, done = len(entries), []

    def finished(folder: str) -> None:
        done.append(folder)
        if zr.on_done:
            e = next(x for x in entries if x.folder == folder)
            info = _info(e, outcomes.get(folder), _missing(False, None))
            zr.on_done(release_record(out / folder, out, info, run_id), len(done), total)

    env_lock = os.environ.get("ONNXFORGE_BENCH_LOCK")
    if zr.executor == "ray":
        jobs = [Job(e, str(out), run_id, env_lock, cfg.zoo.keep_steps, zr.progress) for e in entries]
        run_ray(jobs, address=zr.ray_address, cpus=zr.jobs, zoo=cfg.zoo, outcomes=outcomes, on_done=finished)
        return
    lock = env_lock or str(out / WORK / "bench.lock")

    make_dirs(out / WORK)
    jobs = [Job(e, str(out), run_id, lock, cfg.zoo.keep_steps, zr.progress) for e in entries]
    run_local(jobs, workers=zr.jobs, max_retries=cfg.zoo.max_retries, outcomes=outcomes,
              on_done=finished)


def run_zoo(zoo_file: str | os.PathLike, zr: ZooRun) -> ZooReport:
    """Run every release of the zoo file (see the module docstring) and write the
    combined verdict into OUT: zoo-report.json, zoo-report.md, junit.xml, report.html."""

    if zr.executor not in ("local", "ray"):
        raise BadInputError(f"run_zoo runs local or ray, not {zr.executor!r}")
    if zr.jobs is None and (zr.executor == "local" or zr.ray_address is None):
        zr = dataclasses.replace(zr, jobs=cpu_quota())  # worker processes, or a local Ray instance's CPUs
    with folder_lock(zr.out, "onnxforge zoo"):  # before any check: a second zoo into OUT fails at once
        check_out(zr.out, zr.force)
        try:
            cfg = load_zoo(zoo_file)
            entries = select(cfg, zr.only)
        except OnnxforgeError as exc:  # a zoo file that does not load: the verdict says so
            return _run(zr, None, (), exc)
        check_folders(zr.out, entries, zr.force, cfg.zoo.keep_steps)  # refused: nothing written or recorded
        return _run(zr, cfg, entries)


def _run(zr: ZooRun, cfg: ZooConfig | None, entries, error: OnnxforgeError | None = None) -> ZooReport:
    out = zr.out
    shutil.rmtree(out / WORK, ignore_errors=True)  # ours, from a zoo that was killed: stale attempt counts
    started, run_id, before, outcomes = time.time(), uuid.uuid4().hex, _scratch(out), {}
    try:
        if error is not None:
            raise error
        _execute(zr, cfg, entries, run_id, outcomes)
    except OnnxforgeError as exc:
        return _verdict(zr, cfg, entries, run_id, outcomes, started, before, error=exc)
    except KeyboardInterrupt as exc:  # Ctrl-C, or SIGTERM (Terminated): the verdict's exit code is the process's
        _verdict(zr, cfg, entries, run_id, outcomes, started, before, interrupted=143 if isinstance(exc, Terminated)
                 else 130)
        raise
    except Exception as exc:  # an internal error: the verdict says so, then it propagates
        _verdict(zr, cfg, entries, run_id, outcomes, started, before, error=exc)
        raise
    return _verdict(zr, cfg, entries, run_id, outcomes, started, before)


def _verdict(zr: ZooRun, cfg, entries, run_id, outcomes, started, before, *, interrupted: int = 0,
             error: BaseException | None = None) -> ZooReport:

    out = zr.out.resolve() if zr.out.exists() else zr.out.absolute()
    missing = _missing(bool(interrupted), error)
    records = [release_record(out / e.folder, out, _info(e, outcomes.get(e.folder), missing), run_id)
               for e in entries]
    phases = [p for e in entries for p in phases_of(out / e.folder, run_id)]
    rep = combine(records, phases, executor=zr.executor, interrupted=interrupted or None,
                  zoo=cfg.path if cfg else None, jobs=zr.jobs, started=started)
    if error is not None:
        code = int(error.exit_code) if isinstance(error, OnnxforgeError) else 70
        msg = error.message if isinstance(error, OnnxforgeError) else f"{type(error).__name__}: {error}"
        rep = dataclasses.replace(rep, passed=False, status="error", exit_code=code, error=msg,
                                  hint=error.hint if isinstance(error, OnnxforgeError)
                                  else "rerun with --debug for the traceback, and report it")
    write_all(rep, zr.out)
    _clean(out, before)
    return rep
