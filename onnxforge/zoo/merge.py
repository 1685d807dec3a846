"""Release folders -> one combined verdict.

Every executor ends here, and so does `onnxforge zoo merge`: each release is read
back from its folder (report.json, and zoo-entry.json, which the zoo writes beside
it with the release's name, target, node, attempts and timing phases), never from
memory, so a zoo run locally, on Ray, or as a CI matrix merged afterwards gives the
same verdict from the same files. A folder without a readable report.json is a
release that never finished: an error, not a pass.
"""

from __future__ import annotations

import json
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping, Sequence

from onnxforge.core.errors import BadInputError, UsageError
from onnxforge.core.fileio import same_file, sha256_file
from onnxforge.core.types import ReleaseReport
from onnxforge.pipeline.publish import versions
from onnxforge.report import read_report

ENTRY_FILE = "zoo-entry.json"
NOT_RUN = "not run"
STATUSES = ("passed", "failed", "inconclusive", "error", "interrupted", NOT_RUN)
# what a release's report.json may pair with each status (pipeline.run sets them together)
EXIT_CODES = {"passed": (0,), "failed": (1,), "inconclusive": (6,), "error": (2, 3, 4, 5, 70), "interrupted": (130, 143)}


@dataclass(frozen=True)
class EntryPhase:
    what: str
    start: float  # epoch seconds
    end: float
    waited: float


@dataclass(frozen=True)
class ZooEntry:
    """zoo-entry.json: what the zoo knows of one release it ran. worker.run_one writes
    it through this class and `zoo merge` reads it back through it (report.read_report)."""

    run: str  # the zoo run's id
    name: str
    target: str | None
    folder: str
    config: str
    node: str
    pid: int
    attempts: int
    reported: bool = False  # this run wrote the folder's report.json
    timeline: tuple[EntryPhase, ...] = ()
    status: str | None = None  # set when the release could not begin (no report.json of this run)
    exit_code: int | None = None
    failure: str | None = None
    hint: str | None = None


@dataclass(frozen=True)
class ZooGate:
    name: str
    kind: str
    passed: bool
    value: float
    limit: float
    message: str = ""


@dataclass(frozen=True)
class ZooRelease:
    """One release's line in the combined verdict."""

    name: str
    target: str | None
    folder: str  # relative to the zoo's OUT when inside it
    status: str  # passed | failed | error | interrupted | not run
    exit_code: int
    failure: str | None = None
    hint: str | None = None
    config: str | None = None
    provider: str | None = None
    gates: tuple[ZooGate, ...] = ()
    planned_gates: tuple[str, ...] = ()
    size_bytes: int | None = None
    p50_ms: float | None = None
    speedup: float | None = None
    seconds: float | None = None
    attempts: int = 0
    node: str | None = None
    reported: bool = False  # read from the release's own report.json (else it never wrote one)

    @property
    def passed(self) -> bool:
        return self.status == "passed"


@dataclass(frozen=True)
class TimedPhase:
    """A benchmark's timing phase (warm-up and timed rounds), seconds since the zoo began."""

    release: str
    node: str
    what: str
    start: float
    end: float
    waited: float  # seconds it waited for the node's benchmark lock


@dataclass(frozen=True)
class ZooReport:
    executor: str  # local | ray | matrix
    passed: bool
    status: str  # passed | failed | interrupted
    exit_code: int  # 0 all passed, 1 any did not, 130/143 interrupted
    counts: Mapping[str, int]
    releases: tuple[ZooRelease, ...]
    timeline: tuple[TimedPhase, ...] = ()
    overlaps: int = 0  # timing phases that overlapped another on the same node: 0 when exclusivity held
    zoo: str | None = None
    jobs: int | None = None
    started: float = 0.0  # epoch seconds; the timeline counts from here
    seconds: float = 0.0
    versions: Mapping[str, str] = field(default_factory=dict)
    error: str | None = None  # the zoo itself could not run (a bad zoo file, no Ray): why
    hint: str | None = None


# ----------------------------------------------------------------------------- one release


def _read_json(path: Path, kind: str | None = None) -> dict | None:
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError, RecursionError):
        return None
    if not isinstance(data, dict) or kind is not None and data.get("kind") != kind:
        return None
    return data


def _final_numbers(r: Mapping[str, Any]) -> tuple[int | None, float | None, float | None]:
    """(size of the final model, its p50 in ms, its speed-up over the first ONNX model)."""
    steps = r.get("steps") or []
    last = steps[-1] if steps else {}
    size = (last.get("after") or {}).get("file_bytes") if last.get("written") else None
    bench = r.get("benchmark") or {}
    final = last.get("output")
    p50 = next((b["latency"]["p50"] for b in bench.get("results", []) if b.get("model") == final), None)
    speedup = next((c["speedup"] for c in bench.get("comparisons", []) if c.get("model") == final), None)
    return size, p50, speedup


def _gates(r: Mapping[str, Any]) -> tuple[ZooGate, ...]:
    return tuple(ZooGate(g["name"], g.get("kind") or "", bool(g["passed"]), g.get("value", 0.0), g.get("limit", 0.0),
                         g.get("message", "")) for g in r.get("gates", []))


def _entry_info(folder: Path) -> dict:
    info = _read_json(folder / ENTRY_FILE, "zoo-entry") or {}
    return info.get("result", {}) if isinstance(info.get("result"), dict) else {}


def release_record(folder: Path, out: Path, entry: Mapping[str, Any] | None = None,
                   run: str | None = None) -> ZooRelease:
    """A release folder as a line of the verdict. With ``run`` (the zoo run's id) only
    what that run wrote counts: a folder still holding an older release (--force) whose
    new one never finished is an error, not the old verdict. ``entry`` (the zoo's own
    knowledge of the release) fills in what the folder lacks."""
    info = _entry_info(folder)
    if run is not None and info.get("run") != run:
        info = {}
    info = {**(entry or {}), **info}
    name, target = info.get("name") or folder.name, info.get("target")
    env = _read_json(folder / "report.json", "release") if run is None or info.get("reported") else None
    common = dict(name=name, target=target, folder=_rel(folder, out), config=info.get("config"),
                  attempts=int(info.get("attempts", 0)), node=info.get("node"))
    if env is None or not isinstance(env.get("result"), dict):
        why = info.get("failure") or f"no report.json from this run in {folder}: the release never finished"
        return ZooRelease(status=info.get("status", "error"), exit_code=int(info.get("exit_code", 70)),
                          failure=why, hint=info.get("hint") or "see the zoo's log for what stopped it", **common)
    r = env["result"]
    size, p50, speedup = _final_numbers(r)
    if size is None and r.get("passed") and (folder / "model.onnx").is_file():  # a convert step reports no size
        size = sum(p.stat().st_size for p in (folder / "model.onnx", folder / "model.onnx.data") if p.is_file())
    lat = ((r.get("config") or {}).get("gates") or {}).get("latency")
    return ZooRelease(status=r.get("status", "error"), exit_code=int(r.get("exit_code", 70)), failure=r.get("failure"),
                      hint=r.get("hint"), provider=lat.get("provider", "cpu") if isinstance(lat, dict) else None,
                      gates=_gates(r), planned_gates=tuple(r.get("planned_gates", ())), size_bytes=size, p50_ms=p50,
                      speedup=speedup, seconds=r.get("seconds"), reported=True, **common)


def _rel(folder: Path, out: Path) -> str:
    try:
        return str(folder.resolve().relative_to(out.resolve()))
    except ValueError:
        return str(folder.resolve())


def phases_of(folder: Path, run: str | None = None) -> list[dict]:
    info = _entry_info(folder)
    if run is not None and info.get("run") != run:
        return []
    return [{**p, "release": folder.name, "node": info.get("node") or "?"} for p in info.get("timeline", [])]


# ----------------------------------------------------------------------------- the verdict


def _timeline(phases: Sequence[Mapping[str, Any]], t0: float) -> tuple[tuple[TimedPhase, ...], int]:
    rows = sorted((TimedPhase(p["release"], p["node"], p.get("what", ""), round(p["start"] - t0, 3),
                              round(p["end"] - t0, 3), p.get("waited", 0.0)) for p in phases),
                  key=lambda p: (p.start, p.release))
    overlaps, last_end = 0, {}
    raw = sorted(phases, key=lambda p: p["start"])
    for p in raw:  # on the epoch clock, not the rounded one: exclusivity is checked exactly
        if p["start"] < last_end.get(p["node"], float("-inf")):
            overlaps += 1
        last_end[p["node"]] = max(last_end.get(p["node"], float("-inf")), p["end"])
    return rows, overlaps


def combine(releases: Sequence[ZooRelease], phases: Sequence[Mapping[str, Any]], *, executor: str,
            interrupted: int | None = None, zoo: str | None = None, jobs: int | None = None,
            started: float | None = None) -> ZooReport:
    """The combined verdict: passed only when every release passed; ``interrupted``
    (130 or 143) when the zoo itself was stopped."""
    t0 = started if started is not None else min((p["start"] for p in phases), default=time.time())
    timeline, overlaps = _timeline(phases, t0)
    counts = {s: sum(1 for r in releases if r.status == s) for s in STATUSES}
    passed = bool(releases) and all(r.passed for r in releases) and not interrupted
    status = "interrupted" if interrupted else "passed" if passed else "failed"
    code = interrupted or (0 if passed else 1)
    ordered = tuple(sorted(releases, key=lambda r: r.folder))  # the same order whatever finished first
    return ZooReport(executor=executor, passed=passed, status=status, exit_code=code, counts=counts,
                     releases=ordered, timeline=timeline, overlaps=overlaps, zoo=zoo, jobs=jobs,
                     started=round(t0, 3), seconds=round(time.time() - t0, 2) if started is not None else 0.0,
                     versions=versions())


def report_folders(paths: Sequence[os.PathLike | str]) -> list[Path]:
    """The release folders `zoo merge` was given: report.json files or their folders."""
    if not paths:
        raise UsageError("no release report given", hint="onnxforge zoo merge OUT/*/report.json -o OUT")
    folders: dict[Path, None] = {}
    for p in map(Path, paths):
        folder = p if p.is_dir() else p.parent
        report = folder / "report.json"
        if p.is_file() and p.name != "report.json" or not report.is_file():
            raise BadInputError(f"{p}: not a release's report.json (or a folder holding one)",
                                hint="pass the report.json of each release folder: OUT/*/report.json")
        check_release(folder)
        folders[folder.resolve()] = None
    return list(folders)


def check_release(folder: Path) -> None:
    """`zoo merge` believes no file on its word: report.json (and zoo-entry.json, when
    the folder has one) must read back through the classes that wrote them, and the
    verdict must agree with the report's own gates, exit code and the folder's files."""
    hint = "merge the folder as the release (or the zoo job) wrote it; rerun that release if it was changed since"
    r = read_report(folder / "report.json", ReleaseReport, "release", hint)
    if (folder / ENTRY_FILE).exists():
        read_report(folder / ENTRY_FILE, ZooEntry, "zoo-entry", hint)
    why = verdict_disagreement(folder, r)
    if why:
        raise BadInputError(f"{folder}: report.json says {r.status!r} (exit_code {r.exit_code}) but {why}", hint=hint)


def verdict_disagreement(folder: Path, r) -> str | None:
    """What contradicts a release's status (a ReleaseReport), or None. A release passed
    only when it ran every planned step and gate and passed them, and its folder holds
    the model and manifest it published, with the hashes its report lists."""
    if r.exit_code not in EXIT_CODES.get(r.status, ()):
        return (f"a {r.status} release exits {' or '.join(map(str, EXIT_CODES[r.status]))}"
                if r.status in EXIT_CODES else f"{r.status!r} is no release status")
    if r.passed != (r.status == "passed"):
        return f"passed is {r.passed}"
    if not r.passed:
        return None  # a failure claims nothing that could be false in its favour
    failed = [g.name for g in r.gates if not g.passed]
    unrun = sorted(set(r.planned_gates) - {g.name for g in r.gates})
    if r.failure is not None or failed or unrun:
        return f"gate {failed[0]} failed" if failed else f"gate {unrun[0]} never ran" if unrun else \
            f"it records the failure {r.failure!r}"
    if len(r.steps) != len(r.planned_steps) or not all(s.passed and s.written for s in r.steps):
        return "not every planned step ran and passed"
    return _files_disagree(folder, r.outputs)


def _files_disagree(folder: Path, outputs: Mapping[str, str]) -> str | None:
    for name in ("model.onnx", "manifest.json"):
        if not (folder / name).is_file():
            return f"its {name} is missing"
        if sha256_file(folder / name) != outputs.get(name):
            return f"its {name} is not the file the release wrote (sha256 differs from report.json's outputs)"
    try:
        manifest = json.loads((folder / "manifest.json").read_text())
    except (OSError, ValueError, RecursionError):
        manifest = None
    if not isinstance(manifest, dict) or manifest.get("sha256") != outputs["model.onnx"]:
        return "manifest.json's sha256 is not model.onnx's"
    return None


def check_merge_out(folders: Sequence[Path], out: Path) -> None:
    """The verdict goes into OUT: OUT must not be one of the release folders merged
    (``report_folders``), whose junit.xml and report.html it would replace (--force or not)."""
    for folder in folders:
        if same_file(Path(out), folder):
            raise BadInputError(f"-o {out} is the release folder {folder.name} being merged: the verdict would "
                                f"replace its junit.xml and report.html",
                                hint="give -o the folder above the releases: onnxforge zoo merge OUT/*/report.json -o OUT")


def merge(paths: Sequence[os.PathLike | str], out: os.PathLike | str, expected=None) -> ZooReport:
    """`onnxforge zoo merge`: the combined verdict of release folders made elsewhere
    (a CI matrix's jobs), from their report.json and zoo-entry.json. With
    ``expected`` (the zoo's entries), a release whose folder is missing — its job died
    before uploading anything — is an error rather than silently absent. Writes
    nothing: report.write_all does."""
    folders = report_folders(paths)
    releases = [release_record(f, Path(out)) for f in folders]
    seen: dict[str, Path] = {}
    for f in folders:  # a release is known by its folder's name (NAME or NAME-TARGET)
        if f.name in seen:
            raise BadInputError(f"two release folders are both {f.name!r}: {seen[f.name]} and {f}",
                                hint="merge each release once (one folder per matrix job)")
        seen[f.name] = f
    have = {r.folder for r in releases} | {f.name for f in folders}
    for e in expected or ():
        if e.folder not in have:
            releases.append(ZooRelease(
                e.name, e.target.name if e.target else None, e.folder, "error", 70, config=e.config,
                failure=f"no report.json for {e.folder}: its job did not finish or did not upload its folder",
                hint="see that matrix job's log"))
    phases = [p for f in folders for p in phases_of(f)]
    return combine(releases, phases, executor="matrix")
