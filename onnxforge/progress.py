"""Progress of long work, reported through a callback that the caller installs.

The library never draws anything: long work opens a task
(``with task("calibration", total=n) as t: ... t.advance()``) and the installed
reporter shows it — the CLI draws a live status line on a terminal and plain
start/done lines in CI logs. With no reporter installed a task costs nothing.
"""

from __future__ import annotations

import contextlib
import time
from typing import Iterator, Protocol


class Reporter(Protocol):
    def start(self, name: str, total: float | None) -> None: ...

    def update(self, name: str, completed: float) -> None: ...

    def finish(self, name: str, seconds: float, ok: bool) -> None: ...


class Task:
    __slots__ = ("name", "total", "completed", "_reporter", "_last")

    def __init__(self, name: str, total: float | None, reporter: Reporter | None):
        self.name, self.total, self.completed, self._reporter, self._last = name, total, 0.0, reporter, 0.0

    def advance(self, n: float = 1) -> None:
        self.update(self.completed + n)

    def update(self, completed: float) -> None:
        self.completed = completed
        if self._reporter is None:
            return
        now = time.perf_counter()
        if now - self._last >= 0.1 or (self.total is not None and completed >= self.total):
            self._last = now  # drawing is throttled: callers may sit in a timed loop
            self._reporter.update(self.name, completed)


_REPORTER: Reporter | None = None


def set_reporter(reporter: Reporter | None) -> Reporter | None:
    """Install a reporter; returns the one it replaces."""
    global _REPORTER
    previous, _REPORTER = _REPORTER, reporter
    return previous


@contextlib.contextmanager
def task(name: str, total: float | None = None) -> Iterator[Task]:
    reporter = _REPORTER
    t = Task(name, total, reporter)
    t0 = time.perf_counter()
    if reporter is not None:
        reporter.start(name, total)
    ok = False
    try:
        yield t
        ok = True
    finally:
        if reporter is not None:
            reporter.finish(name, time.perf_counter() - t0, ok)
