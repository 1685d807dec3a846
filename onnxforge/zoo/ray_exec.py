"""The Ray executor: each release is one Ray task running ``worker.run_one``.

- Placement: a target's ``resources`` become the task's resource request (CPU and
  GPU as num_cpus and num_gpus, the rest as custom resources such as
  ``avx512_vnni``) and its ``labels`` the task's label selector. A request no node of
  the cluster can meet is an error for those releases (exit 5), not a task that
  waits forever.
- Files: release configs, sources and OUT must be at the same paths on every node (a
  shared file system or the same checkout); each task writes its release into OUT,
  which the driver then reads. Nothing large goes through Ray's object store.
- Benchmark exclusivity is per node: each task's timing phases take a lock file in
  the node's temp folder (worker.node_lock), see docs/scale.md for why not a custom
  resource.
- A task whose worker process died is retried (``zoo.max_retries``); a failed gate or
  an error is the release's verdict (the task returns normally) and never retried.
- Ctrl-C: every task is cancelled — queued ones never start, running ones get a
  KeyboardInterrupt and write their interrupted verdict — and the zoo waits for them.

Ray is imported only here, and only when this executor runs.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Callable, Sequence

from onnxforge.core.errors import MissingDependencyError, first_line, require
from onnxforge.zoo.config import Target, ZooSection
from onnxforge.zoo.merge import NOT_RUN
from onnxforge.zoo.worker import STOP_GRACE, Job, run_one
import socket
from onnxforge.core.system import cpu_quota
import onnxforge

log = logging.getLogger("onnxforge")


def _task(job: Job) -> dict:
    """The Ray task (a plain function: its module is imported on the worker)."""
    return run_one(job)


def task_options(target: Target | None, zoo: ZooSection) -> dict:
    res = dict(target.resources) if target else {}
    opts = {"num_cpus": res.pop("CPU", zoo.cpus_per_release), "max_retries": zoo.max_retries,
            "retry_exceptions": False}
    if "GPU" in res:
        opts["num_gpus"] = res.pop("GPU")
    if res:
        opts["resources"] = res
    if target and target.labels:
        opts["label_selector"] = dict(target.labels)
    return opts


def _fits(node: dict, opts: dict) -> bool:
    have = node.get("Resources", {})
    need = {"CPU": opts["num_cpus"], "GPU": opts.get("num_gpus", 0), **opts.get("resources", {})}
    labels = node.get("Labels", {})
    return (node.get("Alive", False) and all(have.get(k, 0) >= v for k, v in need.items() if v)
            and all(labels.get(k) == v for k, v in opts.get("label_selector", {}).items()
                    if not v.startswith(("!", "in(", "!in("))))  # operators: left to Ray


def _probe(address: str) -> bool:
    """A HOST:PORT nobody answers on fails in seconds here; Ray itself keeps retrying
    for many minutes (measured: 14 on 127.0.0.1:1) before it gives up. True: something
    answered there."""
    host, sep, port = address.removeprefix("ray://").rpartition(":")
    if not sep or not port.isdigit():
        return False  # "auto" and other forms: Ray's own lookup answers quickly
    try:
        socket.create_connection((host or "127.0.0.1", int(port)), timeout=10).close()
    except OSError as exc:
        raise ConnectionError(f"nothing answers on {host}:{port} ({exc.strerror or exc})") from None
    return True


def _init(ray, address: str | None, cpus: int | None) -> None:
    """A local instance (``cpus`` CPUs, the CPU quota by default) when no address is
    given; its workers import onnxforge from where this process does."""
    kw = dict(include_dashboard=False, logging_level=logging.WARNING, configure_logging=True)
    answered = False
    try:
        if address is None:
            root = str(Path(onnxforge.__file__).resolve().parents[1])
            path = os.pathsep.join(p for p in (root, os.environ.get("PYTHONPATH")) if p)
            ray.init(address="local", num_cpus=cpus or cpu_quota(), runtime_env={"env_vars": {"PYTHONPATH": path}},
                     **kw)
        else:
            answered = _probe(address)
            ray.init(address=address, **kw)
    except Exception as exc:  # ConnectionError, RuntimeError, ValueError: Ray's own words, one line
        hint = ("start a cluster with `ray start --head`, pass --ray-address auto or ray://HOST:10001, "
                "or leave --ray-address out for a local instance")
        if answered and not address.startswith("ray://") and os.environ.get("RAY_AUTH_MODE", "").lower() != "token":
            # Ray only logs InvalidAuthToken; what reaches us is "Failed to connect" after ~20 s of retries
            hint = ("something answers there: a cluster that `ray start` made uses token authentication, which "
                    "a client naming HOST:PORT sends only with RAY_AUTH_MODE=token set (the token: "
                    "~/.ray/auth_token or RAY_AUTH_TOKEN); --ray-address auto on the head node finds it by itself")
        raise MissingDependencyError(f"cannot start or reach Ray at {address or 'a local instance'} "
                                     f"({type(exc).__name__}: {first_line(exc)})", hint=hint) from None


def _outcome(ray, ref) -> dict:
    try:
        return ray.get(ref)
    except ray.exceptions.TaskCancelledError:
        return {"status": NOT_RUN, "exit_code": 130, "failure": "not run: the zoo was interrupted"}
    except ray.exceptions.WorkerCrashedError as exc:
        return {"status": "error", "exit_code": 70,
                "failure": f"the worker process died on every attempt ({exc})"[:300],
                "hint": "run this release alone (onnxforge release) to see why it crashes; zoo.max_retries retries it"}
    except ray.exceptions.RayError as exc:  # the node was lost, an error outside the release
        return {"status": "error", "exit_code": 70, "failure": f"{type(exc).__name__}: {exc}"[:300],
                "hint": "see the Ray logs (ray logs) for the task"}


def _submit(ray, jobs: Sequence[Job], zoo: ZooSection, outcomes: dict) -> dict:
    nodes = ray.nodes()
    task = ray.remote(_task)
    refs = {}
    for job in jobs:
        opts = task_options(job.entry.target, zoo)
        if not any(_fits(n, opts) for n in nodes):
            want = {k: v for k, v in opts.items() if k in ("num_cpus", "num_gpus", "resources", "label_selector")}
            outcomes[job.entry.folder] = {
                "status": "error", "exit_code": 5, "failure": f"no node of the Ray cluster offers {want}",
                "hint": "start a node with those resources or labels (ray start --resources/--labels), "
                        "or change the zoo's [[targets]]"}
            continue
        refs[task.options(name=f"onnxforge-release:{job.entry.folder}", **opts).remote(job)] = job
    return refs


def run_ray(jobs: Sequence[Job], *, address: str | None, cpus: int | None, zoo: ZooSection, outcomes: dict,
            on_done: Callable[[str], None] | None = None) -> None:
    """Run the jobs as Ray tasks; fills ``outcomes`` as they finish (see the module docstring)."""
    ray = require("ray", "scale")
    _init(ray, address, cpus)
    try:
        refs = _submit(ray, jobs, zoo, outcomes)
        pending = list(refs)
        try:
            while pending:
                ready, pending = ray.wait(pending, num_returns=1, timeout=1.0)  # wakes for Ctrl-C
                for ref in ready:
                    outcomes[refs[ref].entry.folder] = _outcome(ray, ref)
                    if on_done:
                        on_done(refs[ref].entry.folder)
        except KeyboardInterrupt:
            _cancel(ray, refs, pending, outcomes)
            raise
    finally:
        ray.shutdown()


def _cancel(ray, refs: dict, pending: list, outcomes: dict) -> None:
    for ref in pending:
        ray.cancel(ref)  # queued: never starts; running: KeyboardInterrupt in the task
    ready, left = ray.wait(pending, num_returns=len(pending), timeout=STOP_GRACE) if pending else ([], [])
    for ref in ready:
        outcomes[refs[ref].entry.folder] = _outcome(ray, ref)
    for ref in left:
        ray.cancel(ref, force=True)  # did not stop in time: its worker is killed
        outcomes[refs[ref].entry.folder] = {"status": "interrupted", "exit_code": 130,
                                            "failure": f"interrupted: did not stop within {STOP_GRACE:g} s"}
