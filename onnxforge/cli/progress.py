"""The CLI's progress reporters (onnxforge.core.progress), on stderr:

- a terminal gets a live status (rich): one line per open task with its name, a bar
  where the total is known (calibration samples, benchmark seconds, release steps i/n)
  and the elapsed time; a finished step leaves a ``✓ name  3.2 s`` line;
- anything else (CI logs, pipes) gets plain lines: ``name: start`` and
  ``name: done in 3.2 s`` for each step, a line every 30 s for long work with a known
  total, and detail tasks (one side of a parity check, a timing loop) only when they
  took a second or more;
- ``-q``: nothing.
"""

from __future__ import annotations

import os
import sys
import time
from onnxforge.cli.common import console
from onnxforge.core.progress import set_reporter

PLAIN_HEARTBEAT_S = 30.0  # a CI log shows life this often during long work with a known total
DETAIL_MIN_S = 1.0  # a detail task shorter than this leaves no line in a CI log


def _amount(done: float, total: float) -> str:
    if float(total).is_integer():
        return f"{done:.0f}/{total:.0f}"
    return f"{done:.1f}/{total:.1f} s"  # fractional totals are seconds (a benchmark's duration)


class PlainReporter:
    """Lines a CI log can be read (and grepped) by."""

    def __init__(self, verbosity: int = 0, prefix: str = ""):
        self.verbose = verbosity >= 1
        self.prefix = prefix
        self._said: dict[int, float] = {}

    def _say(self, t, text: str) -> None:
        sys.stderr.write(f"{self.prefix}{'  ' * t.depth}{t.name}: {text}\n")
        sys.stderr.flush()

    def start(self, t) -> None:
        self._said[id(t)] = time.perf_counter()
        if not t.detail or self.verbose:
            self._say(t, "start")

    def update(self, t) -> None:
        now = time.perf_counter()
        if t.total and now - self._said.get(id(t), now) >= PLAIN_HEARTBEAT_S:
            self._said[id(t)] = now
            self._say(t, f"{_amount(t.completed, t.total)} after {now - t.started:.0f} s")

    def finish(self, t, seconds: float, ok: bool) -> None:
        self._said.pop(id(t), None)
        if t.detail and ok and seconds < DETAIL_MIN_S and not self.verbose:
            return
        self._say(t, f"done in {seconds:.1f} s" if ok else f"stopped after {seconds:.1f} s")


def _columns():
    from rich.progress import BarColumn, ProgressColumn, SpinnerColumn, TextColumn, TimeElapsedColumn
    from rich.text import Text

    class KnownBar(BarColumn):
        """A bar only where the total is known; a spinner says the rest is alive."""

        def render(self, task):
            return super().render(task) if task.total is not None else Text("")

    class Amount(ProgressColumn):
        def render(self, task):
            return Text(_amount(task.completed, task.total) if task.total is not None else "", style="dim")

    return (SpinnerColumn(), TextColumn("{task.description}"), KnownBar(bar_width=24), Amount(),
            TimeElapsedColumn())


class RichReporter:
    """A live status on a terminal (stderr); finished steps stay as one line each."""

    def __init__(self, verbosity: int = 0):
        self.verbose = verbosity >= 1
        self._progress = None
        self._ids: dict[int, int] = {}

    def start(self, t) -> None:
        from rich.progress import Progress


        if self._progress is None:
            # stdout stays ours (the table, --json); stderr writes (logs) print above the status
            self._progress = Progress(*_columns(), console=console(stderr=True), transient=True,
                                      redirect_stdout=False, redirect_stderr=True, refresh_per_second=8)
            self._progress.start()
        self._ids[id(t)] = self._progress.add_task("  " * t.depth + t.name, total=t.total)

    def update(self, t) -> None:
        if self._progress is not None and id(t) in self._ids:
            self._progress.update(self._ids[id(t)], completed=t.completed, total=t.total)

    def finish(self, t, seconds: float, ok: bool) -> None:
        from rich.markup import escape

        if self._progress is None:
            return
        tid = self._ids.pop(id(t), None)
        if tid is not None:
            self._progress.remove_task(tid)
        if not t.detail or not ok or self.verbose:
            mark = "[green]✓[/]" if ok else "[red]✗[/]"
            self._progress.console.print(f"{'  ' * t.depth}{mark} {escape(t.name)}  [dim]{seconds:.1f} s[/]",
                                         highlight=False)
        if not self._ids:
            self._progress.stop()
            self._progress = None


def zoo_release_lines(prefix: str) -> PlainReporter:
    """A zoo worker's reporter (ZooRun.progress): plain lines, each led by its release's
    folder, since several releases write to one stderr at once."""
    return PlainReporter(0, prefix)


def install(verbosity: int) -> None:
    """The reporter for this run: live on a terminal, plain lines otherwise, none with -q."""
    if verbosity < 0:
        set_reporter(None)
    elif sys.stderr.isatty() and os.environ.get("TERM") != "dumb":
        set_reporter(RichReporter(verbosity))
    else:
        set_reporter(PlainReporter(verbosity))
