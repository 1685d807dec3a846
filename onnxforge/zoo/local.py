"""The local executor: ``jobs`` worker processes on this machine, each running one
release at a time (worker.run_one). Processes, not threads: a release holds the GIL
in Python steps and ORT sessions would share one process's thread pools. Each worker
is a fresh interpreter (spawn), reused for several releases so the heavy imports
(onnxsim pulls torch) are paid once per worker, not per release. A worker that dies
(killed, out of memory, a crash in native code) is replaced and its release run
again, up to zoo.max_retries times."""

from __future__ import annotations

import logging
import os
import signal
import time
from collections import deque
from dataclasses import dataclass, field
from typing import Callable, Sequence

from onnxforge.core.errors import Terminated
from onnxforge.zoo.merge import NOT_RUN
from onnxforge.zoo.worker import STOP_GRACE, Job, run_one
from multiprocessing.connection import wait
import multiprocessing as mp
from onnxforge.core.logs import set_verbosity

log = logging.getLogger("onnxforge")


def _interrupt_once(signum, frame):
    """Ctrl-C reaches a worker twice (the terminal's signal and the zoo's): the second
    must not cut the release's own clean-up short."""
    # a no-op handler, not SIG_IGN: a signal already pending when the handler changes would
    # find SIG_IGN and make Python print "Signal 15 ignored due to race condition" with a traceback
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, _ignore)
    raise Terminated() if signum == signal.SIGTERM else KeyboardInterrupt  # the release's verdict says which


def _ignore(signum, frame) -> None:
    pass


def _worker(conn, level: int) -> None:
    """A worker process: runs the releases it is sent, one at a time, until told to stop."""
    signal.signal(signal.SIGINT, _interrupt_once)
    signal.signal(signal.SIGTERM, _interrupt_once)
    os.dup2(2, 1)  # whatever a library prints goes to stderr: stdout is the zoo's (--json)

    set_verbosity(1 if level <= logging.INFO else 0)  # a new process: torch's FutureWarnings only with -v, as in one
    handler = logging.StreamHandler()
    logger = logging.getLogger("onnxforge")
    logger.handlers[:], logger.propagate = [handler], False
    logger.setLevel(level)
    try:
        while (job := conn.recv()) is not None:
            handler.setFormatter(logging.Formatter(f"{job.entry.folder}: %(message)s"))
            try:
                conn.send(run_one(job))
            except KeyboardInterrupt:
                conn.send({"folder": job.entry.folder, "interrupted": True})
                return
    except (KeyboardInterrupt, EOFError, BrokenPipeError):
        return


@dataclass
class _Slot:
    proc: object
    conn: object
    job: Job | None = None
    attempt: int = 0


@dataclass
class _Pool:
    """``jobs`` worker processes; a release whose worker dies is queued again."""

    size: int
    max_retries: int
    level: int
    outcomes: dict
    on_done: Callable[[str], None] | None = None
    slots: list = field(default_factory=list)
    queue: deque = field(default_factory=deque)

    def _start(self) -> _Slot:
        ctx = mp.get_context("spawn")  # a fresh interpreter: no threads or ORT state inherited
        parent, child = ctx.Pipe()
        # not a daemon: a release may start processes of its own (daemons may not); an orphaned
        # worker still ends, on EOF from the pipe
        proc = ctx.Process(target=_worker, args=(child, self.level), name="onnxforge-zoo-worker")
        proc.start()
        child.close()
        slot = _Slot(proc, parent)
        self.slots.append(slot)
        return slot

    def _assign(self) -> None:
        while self.queue:
            idle = next((s for s in self.slots if s.job is None), None)
            if idle is None and len(self.slots) >= self.size:
                return
            slot = idle or self._start()
            slot.job, slot.attempt = self.queue.popleft()
            try:
                slot.conn.send(slot.job)
            except OSError:  # the idle worker died (the OOM killer picks big idle processes too)
                slot.attempt -= 1  # not this release's fault: no attempt used
                self._died(slot)

    def _finished(self, slot: _Slot, msg) -> None:
        folder = slot.job.entry.folder
        self.outcomes[folder] = msg
        slot.job = None
        if self.on_done:
            self.on_done(folder)

    def _died(self, slot: _Slot) -> None:
        slot.proc.join(5)
        self.slots.remove(slot)
        code = slot.proc.exitcode
        how = f"signal {-code}" if code is not None and code < 0 else f"exit code {code}"
        if slot.attempt <= self.max_retries:
            log.warning("zoo: the worker running %s died (%s); running it again (attempt %d of %d)",
                        slot.job.entry.folder, how, slot.attempt + 1, self.max_retries + 1)
            self.queue.appendleft((slot.job, slot.attempt + 1))
            return
        self._finished(slot, {"status": "error", "exit_code": 70, "failure": f"the worker process died ({how}) on "
                              f"each of {slot.attempt} attempt(s)",
                              "hint": "run this release alone (onnxforge release) to see why it crashes"})

    def _poll(self, slot: _Slot) -> None:
        try:
            msg = slot.conn.recv() if slot.conn.poll() else None
        except (EOFError, OSError):
            msg = None
        if msg is not None:
            self._finished(slot, msg)
            if msg.get("interrupted"):  # someone stopped that worker alone: its release says so
                self._died_quietly(slot)
        elif not slot.proc.is_alive():
            self._died(slot)

    def _died_quietly(self, slot: _Slot) -> None:
        slot.proc.join(5)
        self.slots.remove(slot)

    def run(self, jobs: Sequence[Job]) -> None:
        self.queue.extend((j, 1) for j in jobs)
        while self.queue or any(s.job for s in self.slots):
            self._assign()
            busy = [s for s in self.slots if s.job is not None]
            wait([s.conn for s in busy] + [s.proc.sentinel for s in busy])
            for slot in busy:
                self._poll(slot)

    def stop(self, signum: int) -> None:
        """Interrupted: each running release gets ``signum`` and STOP_GRACE seconds to
        write its interrupted verdict; queued ones are not started."""
        for job, _ in self.queue:
            self.outcomes[job.entry.folder] = {"status": NOT_RUN, "exit_code": 130,
                                               "failure": "not run: the zoo was interrupted"}
        self.queue.clear()
        busy = [s for s in self.slots if s.job is not None]
        for s in busy:
            _signal(s.proc, signum)
        deadline = time.monotonic() + STOP_GRACE
        while busy and time.monotonic() < deadline:
            wait([s.conn for s in busy] + [s.proc.sentinel for s in busy], timeout=deadline - time.monotonic())
            for s in list(busy):
                if s.conn.poll() or not s.proc.is_alive():
                    self._poll_stopped(s)
                    busy.remove(s)
        for s in busy:
            s.proc.kill()

    def _poll_stopped(self, slot: _Slot) -> None:
        try:
            msg = slot.conn.recv() if slot.conn.poll() else None
        except (EOFError, OSError):
            msg = None
        self.outcomes[slot.job.entry.folder] = msg or {"status": "interrupted", "exit_code": 130,
                                                       "failure": "interrupted"}
        slot.job = None

    def close(self) -> None:
        for s in self.slots:
            try:
                if s.proc.is_alive():
                    s.conn.send(None)
            except (OSError, ValueError):
                pass
        for s in self.slots:
            s.proc.join(10)
            if s.proc.is_alive():
                s.proc.kill()
                s.proc.join(5)


def _signal(proc, signum: int) -> None:
    try:
        os.kill(proc.pid, signum)
    except (ProcessLookupError, TypeError):
        pass


def run_local(jobs: Sequence[Job], *, workers: int, max_retries: int, outcomes: dict,
              on_done: Callable[[str], None] | None = None) -> None:
    """Run the jobs in ``workers`` processes; fills ``outcomes`` (folder -> what the
    worker said) as they finish, so an interrupt still knows what was done."""
    pool = _Pool(max(1, min(workers, len(jobs))), max_retries, logging.getLogger("onnxforge").getEffectiveLevel(),
                 outcomes, on_done)
    try:
        pool.run(jobs)
    except KeyboardInterrupt as exc:  # Ctrl-C, or SIGTERM (Terminated): each release is stopped the same way
        pool.stop(signal.SIGTERM if isinstance(exc, Terminated) else signal.SIGINT)
        raise
    finally:
        pool.close()
