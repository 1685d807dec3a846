"""Progress of long work, reported through a callback that the caller installs.

The library never draws anything: long work opens a task
(``with task("calibration", total=n) as t: ... t.advance()``) and the installed
reporter shows it — the CLI draws a live status line on a terminal and plain
start/done lines in CI logs (cli/progress.py). With no reporter installed a task
costs nothing.

Tasks nest (a release opens one per step; a step's calibration opens its own inside),
and each knows its ``depth``. A ``detail`` task is a part of a larger one that is
worth a bar on a terminal but not two lines in a CI log (running one side of a
parity check, the timing loop of a benchmark): reporters may show it only when it
took long.
"""

from __future__ import annotations

import contextlib
import time
from typing import Iterator, Protocol


class Task:
    """One piece of work in progress: ``name``, ``total`` (None: unknown), ``completed``."""

    __slots__ = ("name", "total", "completed", "detail", "depth", "started", "_reporter", "_last")

    def __init__(self, name: str, total: float | None, reporter: Reporter | None, *, detail: bool = False,
                 depth: int = 0):
        self.name, self.total, self.completed, self.detail, self.depth = name, total, 0.0, detail, depth
        self.started = time.perf_counter()
        self._reporter, self._last = reporter, 0.0

    def advance(self, n: float = 1) -> None:
        self.update(self.completed + n)

    def update(self, completed: float, total: float | None = None) -> None:
        """``completed`` so far; ``total`` when it becomes known after the task began."""
        self.completed = completed
        forced = total is not None and total != self.total
        if forced:
            self.total = total
        if self._reporter is None:
            return
        now = time.perf_counter()
        done = self.total is not None and completed >= self.total
        if forced or done or now - self._last >= 0.1:
            self._last = now  # drawing is throttled: callers may sit in a timed loop
            self._reporter.update(self)


class Reporter(Protocol):
    def start(self, task: Task) -> None: ...

    def update(self, task: Task) -> None: ...

    def finish(self, task: Task, seconds: float, ok: bool) -> None: ...


_REPORTER: Reporter | None = None
_OPEN: list[Task] = []  # the tasks open now, outermost first (work is opened on one thread)


def set_reporter(reporter: Reporter | None) -> Reporter | None:
    """Install a reporter; returns the one it replaces."""
    global _REPORTER
    previous, _REPORTER = _REPORTER, reporter
    return previous


@contextlib.contextmanager
def task(name: str, total: float | None = None, *, detail: bool = False) -> Iterator[Task]:
    """A task for the block; ``ok`` is False for the reporter when the block raised."""
    reporter = _REPORTER
    t = Task(name, total, reporter, detail=detail, depth=len(_OPEN))
    _OPEN.append(t)
    if reporter is not None:
        reporter.start(t)
    ok = False
    try:
        yield t
        ok = True
    finally:
        _OPEN.remove(t)
        if reporter is not None:
            reporter.finish(t, time.perf_counter() - t.started, ok)
