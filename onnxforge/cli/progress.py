"""The CLI's progress reporter (onnxforge.progress): a live bar on stderr when it is
a terminal, for work whose total is known (calibration samples, benchmark seconds)."""

from __future__ import annotations

import sys


class RichReporter:
    def __init__(self):
        self._progress = None
        self._tasks: dict[str, int] = {}

    def start(self, name: str, total: float | None) -> None:
        from rich.progress import Progress

        from onnxforge.cli.common import console

        if self._progress is None:
            self._progress = Progress(console=console(stderr=True), transient=True)
            self._progress.start()
        self._tasks[name] = self._progress.add_task(name, total=total)

    def update(self, name: str, completed: float) -> None:
        if self._progress is not None and name in self._tasks:
            self._progress.update(self._tasks[name], completed=completed)

    def finish(self, name: str, seconds: float, ok: bool) -> None:
        if self._progress is None:
            return
        task = self._tasks.pop(name, None)
        if task is not None:
            self._progress.remove_task(task)
        if not self._tasks:
            self._progress.stop()
            self._progress = None


def install(verbosity: int) -> None:
    from onnxforge.progress import set_reporter

    set_reporter(RichReporter() if sys.stderr.isatty() and verbosity >= 0 else None)
