"""Latency on ONNX Runtime providers, measured honestly.

- The requested provider must be the active one (runtime.create_session), never a
  silent CPU fallback.
- Several models / providers / batch sizes run interleaved, one call each per round
  (A B A B ...), so drift on a noisy machine hits every row alike.
- Threads default to the CPU quota of the container (cgroup cpu.max), not the
  host's core count. With several sessions alive, intra-op spinning is off so one
  session's spinning workers do not steal the others' cores.
- The timed region is the ``session.run`` call alone (``perf_counter_ns`` around it);
  with ``io_binding`` inputs and outputs stay on the device, so host<->device
  copies are outside it, and the report says when they are inside.
- The 95% interval of the median is a bootstrap (1000 resamples, seeded) up to 5000
  iterations, then the distribution-free order-statistic interval (same coverage,
  no resampling cost).
"""

from __future__ import annotations

import contextlib
import json
import logging
import math
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Mapping, Sequence

from onnxforge.core.errors import BadInputError, ConversionError, UsageError, first_line
from onnxforge.core.types import BenchmarkReport, BenchmarkResult, Comparison, Contention, Fastest, TensorSpec
from time import perf_counter_ns
import fcntl
import resource
import sys
import tempfile
import numpy as np
from onnxforge.backends import RUNTIMES
from onnxforge.backends.onnx.runner import inputs_and_ranges
from onnxforge.backends.onnx.runtime import create_session, environment, resolve_provider, run_session, session_options, short_provider
from onnxforge.backends.openvino.runner import DEVICE, compile_onnx, inference_precision, timed_call
from onnxforge.checks.gates import baseline_gates, latency_gates, load_baseline, settle, speedup_gates, verdict
from onnxforge.core.fileio import check_readable_file, sha256_file
from onnxforge.core.progress import task
from onnxforge.core.stats import EXTEND, WINDOW_S, contaminated, histogram_with_edges, latency_stats, speedup_ci
from onnxforge.core.system import busy_and_steal_seconds, cpu_quota, proc_kib, run_queue_seconds
from onnxforge.data.generate import generate_inputs
from onnxforge.data.samples import check_sample_fits, load_samples
from onnxforge.data.specs import check_dims

log = logging.getLogger("onnxforge")

HIGH_CV = 0.10


def _rss() -> int:
    return proc_kib("/proc/self/status", "VmRSS") or 0


def _peak_rss() -> int:
    r = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return r if sys.platform == "darwin" else r * 1024


@dataclass
class _Row:
    model: str
    provider: str
    batch: int
    sess: object
    feeds: dict
    shapes: dict
    once: object = None
    io_binding: bool = False
    copies_included: bool = False
    session_bytes: int = 0
    sha256: str = ""
    runtime: str = "ort"  # ort | openvino (then ``sess`` is OpenVINO's compiled model)
    precision: str = ""  # OpenVINO's inference precision

    @property
    def on_cpu(self) -> bool:
        return self.runtime == "openvino" or self.provider == "CPUExecutionProvider"

    def active(self) -> tuple[str, ...]:
        return (f"OpenVINO {self.provider} {self.precision}",) if self.runtime == "openvino" else \
            tuple(self.sess.get_providers())


def _feeds_for(specs, *, batch, dims, shapes, inputs, seed, val_ranges):
    check_dims(dims, specs)
    if inputs:
        sample = load_samples(inputs, names=[s.name for s in specs])[0]
        check_sample_fits(sample, specs, source=str(inputs))
        return sample
    specs = list(specs)
    if shapes:
        unknown = set(shapes) - {s.name for s in specs}
        if unknown:
            raise BadInputError(f"--shape names unknown input(s): {', '.join(sorted(unknown))}",
                                hint="inputs are: " + ", ".join(s.name for s in specs))
        specs = [TensorSpec(s.name, s.dtype, shapes[s.name]) if s.name in shapes else s for s in specs]
    if batch is not None:
        new = []
        for s in specs:
            if not s.shape:
                new.append(s)
                continue
            first = s.shape[0]
            if isinstance(first, int) and first != batch:
                raise BadInputError(
                    f"--batch {batch}: input {s.name} fixes its first dim to {first}",
                    hint=f"drop --batch (or use --batch {first}); re-export with a dynamic batch axis to sweep it")
            new.append(TensorSpec(s.name, s.dtype, (batch, *s.shape[1:])))
        specs = new
    return generate_inputs(specs, seed=seed, dims=dims, val_ranges=val_ranges)


def _binder(sess, feeds, provider: str, provider_options: Mapping[str, str]):
    import onnxruntime as ort

    device = {"CUDAExecutionProvider": "cuda", "TensorrtExecutionProvider": "cuda",
              "DmlExecutionProvider": "dml", "ROCMExecutionProvider": "cuda"}.get(provider, "cpu")
    device_id = int(provider_options.get("device_id", 0))
    binding = sess.io_binding()
    keep = []
    for name, arr in feeds.items():
        val = ort.OrtValue.ortvalue_from_numpy(arr, device, device_id)
        keep.append(val)
        binding.bind_ortvalue_input(name, val)
    for o in sess.get_outputs():
        binding.bind_output(o.name, device, device_id)
    run = sess.run_with_iobinding

    def once() -> int:
        t0 = perf_counter_ns()
        run(binding)
        binding.synchronize_outputs()
        return perf_counter_ns() - t0

    once.keep = keep  # the bound OrtValues must outlive the binding
    return once


def _plain(sess, feeds):
    run = sess.run
    f = dict(feeds)

    def once() -> int:
        t0 = perf_counter_ns()
        run(None, f)
        return perf_counter_ns() - t0

    return once


def _placement(model: str, provider: str, provider_options, threads) -> dict[str, int]:
    """Nodes per provider, from one profiled run in a separate session."""

    with tempfile.TemporaryDirectory() as tmp:
        so = session_options(threads=threads, profiling=True)
        so.profile_file_prefix = os.path.join(tmp, "profile")
        sess = create_session(model, provider, provider_options=provider_options, options=so)
        specs, ranges = inputs_and_ranges(model)
        run_session(sess, generate_inputs(specs, seed=0, val_ranges=ranges))
        path = sess.end_profiling()
        events = json.loads(Path(path).read_text())
    nodes: dict[str, str] = {}
    for e in events:
        args = e.get("args") or {}
        if e.get("cat") == "Node" and "provider" in args:
            nodes[args.get("op_name", "") + "/" + e.get("name", "").rsplit("_kernel_time", 1)[0]] = args["provider"]
    counts: dict[str, int] = {}
    for prov in nodes.values():
        counts[prov] = counts.get(prov, 0) + 1
    return counts


def _open_rows(models, fulls, popts, batches, *, threads, inter_threads, spinning, io_binding, feed_args,
               runtimes=("ort",), ov_precision="auto", notes=None) -> list[_Row]:
    """A row per model, runtime (or provider) and batch. Beside another runtime, a model
    OpenVINO cannot compile (an ORT contrib op such as QAttention) gets no OpenVINO row and
    a note: it is no candidate there, and the other rows still compare."""
    rows: list[_Row] = []
    for m in models:
        check_readable_file(m, "model")
        specs, ranges = inputs_and_ranges(m)
        # the ranges the converter recorded (a BERT's token_type_ids in [0, 1]) unless given
        args = {**feed_args, "val_ranges": feed_args.get("val_ranges") or ranges}
        digest = sha256_file(m)
        # rows in the order runtimes were given: the first row is the speed-ups' reference
        targets = [t for rt in runtimes for t in (fulls if rt == "ort" else [None])]
        for prov in targets:
            if prov is None:
                try:
                    rows += [_openvino_row(m, _feeds_for(specs, batch=b, **args), b, threads, ov_precision, digest)
                             for b in batches or [None]]
                except ConversionError as exc:
                    if notes is None or len(runtimes) == 1:
                        raise
                    notes.append(f"no OpenVINO row: {exc.message}")
                continue
            for b in batches or [None]:
                feeds = _feeds_for(specs, batch=b, **args)
                before = _rss()
                sess = create_session(m, prov, provider_options=popts.get(prov), threads=threads,
                                      inter_threads=inter_threads, spinning=spinning)
                row = _Row(m, prov, b if b is not None else _leading(feeds), sess, feeds,
                           {k: tuple(v.shape) for k, v in feeds.items()}, session_bytes=max(0, _rss() - before),
                           sha256=digest)
                if io_binding:
                    row.once, row.io_binding = _binder(sess, feeds, prov, popts.get(prov, {})), True
                else:
                    row.once, row.copies_included = _plain(sess, feeds), prov != "CPUExecutionProvider"
                _probe(row)
                rows.append(row)
    return rows


def _openvino_row(model: str, feeds: dict, batch, threads: int, precision: str, digest: str) -> _Row:
    """A row OpenVINO runs (compiled once, like an ORT session; the same feeds)."""
    before = _rss()
    compiled = compile_onnx(model, threads=threads, precision=precision)
    row = _Row(model, DEVICE, batch if batch is not None else _leading(feeds), compiled, feeds,
               {k: tuple(v.shape) for k, v in feeds.items()}, session_bytes=max(0, _rss() - before), sha256=digest,
               runtime="openvino", precision=inference_precision(compiled))
    row.once = timed_call(compiled, feeds)
    _probe(row)
    return row


def _probe(row: _Row) -> None:
    """One untimed call: a model that fails at run time is bad input, said once."""
    try:
        row.once()
    except Exception as exc:
        raise BadInputError(f"{row.model} fails at run time on {', '.join(f'{k}{list(v)}' for k, v in row.shapes.items())}"
                            f" ({first_line(exc, 200)})", hint="check the shapes (--dim, --shape, --inputs) against "
                            "`onnxforge inspect`") from None


@dataclass
class _Clock:
    """Where a window of rounds began: wall, this process's CPU time (every thread's,
    ORT's pool included), the busy time of its CPUs and the time its threads lost (run
    queue wait plus its CPUs' steal); None: not judged, or not known here."""

    wall: float
    ours: float
    busy: float | None
    lost: float | None = None

    @classmethod
    def now(cls, cpus) -> "_Clock":
        if not cpus:
            return cls(time.perf_counter(), time.process_time(), None)
        stat, waited = busy_and_steal_seconds(cpus), run_queue_seconds()
        lost = waited + stat[1] if waited is not None and stat is not None else None
        return cls(time.perf_counter(), time.process_time(), stat[0] if stat else None, lost)


@dataclass
class _Tally:
    """The timing loop's bookkeeping: rounds so far, the clean ones, and the totals a
    Contention reports."""

    cpus: tuple
    threads: int
    judge: bool
    clean: list = field(default_factory=list)  # indices of the clean rounds
    rounds: int = 0
    clean_seconds: float = 0.0
    other: float = 0.0

    def window(self, since: _Clock, first_round: int, lookback: _Clock) -> _Clock:
        """Close the window of rounds since ``first_round``; judged over ``lookback``
        (at least WINDOW_S back, so a short last window is not judged on a few ticks)."""
        now = _Clock.now(self.cpus if self.judge else None)
        wall, ours = now.wall - lookback.wall, now.ours - lookback.ours
        busy = now.busy - lookback.busy if now.busy is not None and lookback.busy is not None else None
        # a thread that ended in the window takes its wait out of the sum: never below 0
        lost = max(0.0, now.lost - lookback.lost) if now.lost is not None and lookback.lost is not None else None
        bad = self.judge and contaminated(wall, ours, busy, len(self.cpus), self.threads, lost)
        if busy is not None and wall > 0:
            self.other += max(0.0, busy - ours) / wall * (now.wall - since.wall)
        if not bad:
            self.clean.extend(range(first_round, self.rounds))
            self.clean_seconds += now.wall - since.wall
        return now


def _time(rows: Sequence[_Row], warmup: int, iterations: int | None, duration: float | None,
          threads: int = 1) -> tuple[list[list[int]], list[list[int]], Contention]:
    """Warm-up, then interleaved rounds (one call per row each) until the budget holds
    that many clean rounds: ``iterations``, or ``duration`` seconds and at least 10
    rounds. Rounds are judged in windows (stats.contaminated); a contaminated window's
    rounds are discarded and more taken, up to EXTEND times the budget. Returns the
    nanoseconds per call of the clean rounds when enough were had (at least half the
    budget), else of every round; the process's CPU time around each call (every
    thread's: what the call cost, whatever the load); and what the CPU was like."""
    cpus = tuple(sorted(os.sched_getaffinity(0))) if hasattr(os, "sched_getaffinity") else ()
    judge = all(r.on_cpu for r in rows)
    t = _Tally(cpus, max(1, min(threads, len(cpus) or threads)), judge)
    marks = [_Clock.now(cpus if judge else None)]  # window starts (and the warm-up's), for the lookback
    for _ in range(warmup):
        for r in rows:
            r.once()
    lat: list[list[int]] = [[] for _ in rows]
    cpu: list[list[int]] = [[] for _ in rows]
    cpu_ns = time.process_time_ns
    over = _cpu_overhead(cpu_ns)
    seconds = duration or 2.0
    t0 = time.perf_counter()
    opened, first = _Clock.now(cpus if judge else None), 0
    loop = opened
    marks.append(opened)

    def enough(extra_rounds=0, extra_s=0.0) -> bool:
        if iterations is not None:
            return len(t.clean) + extra_rounds >= iterations
        return t.clean_seconds + extra_s >= seconds and len(t.clean) + extra_rounds >= 10

    def capped() -> bool:
        if iterations is not None:
            return t.rounds >= EXTEND * iterations
        return t.rounds >= 10 and time.perf_counter() - t0 >= EXTEND * seconds

    with task(f"timing {len(rows)} row(s)", total=iterations if iterations is not None else seconds, detail=True) as bar:
        while True:
            for i, r in enumerate(rows):
                c0 = cpu_ns()
                lat[i].append(r.once())
                cpu[i].append(max(0, cpu_ns() - c0 - over))
            t.rounds += 1
            now = time.perf_counter()
            open_s = now - opened.wall
            bar.update(len(t.clean) + t.rounds - first if iterations is not None else min(seconds, t.clean_seconds + open_s))
            done = enough(t.rounds - first, open_s) or capped()
            if open_s >= WINDOW_S or done:
                back = next((m for m in reversed(marks) if now - m.wall >= WINDOW_S), marks[0])
                opened, first = t.window(opened, first, back), t.rounds
                marks.append(opened)
                if enough() or capped():
                    break
    return _kept(lat, cpu, t, loop, iterations, seconds)


def _cpu_overhead(cpu_ns) -> int:
    """The CPU time the clock reads and a call of ``once`` cost by themselves (median of
    a no-op's), taken off each call's CPU time so a tiny model's is not mostly overhead."""
    def noop() -> int:
        t0 = perf_counter_ns()
        return perf_counter_ns() - t0

    samples = []
    for _ in range(101):
        c0 = cpu_ns()
        noop()
        samples.append(cpu_ns() - c0)
    return sorted(samples)[50]


def _kept(lat, cpu, t: _Tally, loop: _Clock, iterations, seconds):
    end = _Clock.now(None)
    wall = max(end.wall - loop.wall, 1e-9)
    if iterations is not None:
        clean = len(t.clean) >= max(min(10, iterations), -(-iterations // 2))
    else:
        clean = len(t.clean) >= 10 and t.clean_seconds >= seconds / 2
    c = Contention(cpus=len(t.cpus), threads=t.threads, rounds=t.rounds, discarded=t.rounds - len(t.clean),
                   cpu_share=round((end.ours - loop.ours) / (wall * t.threads), 3),
                   other_load=round(t.other / wall, 2), seconds=round(wall, 3), clean=clean or not t.judge,
                   judged="none" if not t.judge else "proc" if loop.busy is not None else "process")
    if clean and t.judge and c.discarded:  # the clean rounds alone; else every round, and the gates bound the verdict
        lat, cpu = [[row[k] for k in t.clean] for row in lat], [[row[k] for k in t.clean] for row in cpu]
    return lat, cpu, c


def _bounds(ref: BenchmarkResult, other: BenchmarkResult, floors: bool = True) -> tuple[float, float]:
    """What loaded rounds prove of the speed-up a quiet machine would show: load only
    slows a call, and no call runs faster than its CPU time spread over every thread.
    So quiet ref / other lies between (ref's CPU / threads) / other's loaded median and
    ref's loaded median / (other's CPU / threads). Without ``floors`` (a spinning
    pool) CPU time bounds nothing: (0, inf)."""
    lo = ref.cpu_ms[0] / ref.threads / other.latency.p50 if other.latency.p50 and floors else 0.0
    hi = ref.latency.p50 / (other.cpu_ms[0] / other.threads) if other.cpu_ms[0] and floors else math.inf
    return round(lo, 4), round(hi, 4)


def _result(r: _Row, ns: Sequence[int], cpu_ns: Sequence[int], *, threads, seed, save_latencies, placement, popts,
            notes) -> BenchmarkResult:

    ms = [v / 1e6 for v in ns]
    stats, cv = latency_stats(ms, seed)
    cpu_ms = np.percentile(np.asarray(cpu_ns, dtype=np.float64) / 1e6, [50, 99]) if len(cpu_ns) else (0.0, 0.0)
    counts, edges = histogram_with_edges(ms)
    provider = short_provider(r.provider) if r.runtime == "ort" else r.provider
    if cv > HIGH_CV:
        notes.append(f"{Path(r.model).name} ({provider if r.runtime == 'ort' else 'openvino:' + provider}, batch "
                     f"{r.batch}): coefficient of variation {cv:.0%}: the machine is noisy, compare the intervals, "
                     "not the digits")
    return BenchmarkResult(
        model=r.model, requested_provider=provider, active_providers=r.active(), runtime=r.runtime,
        inference_precision=r.precision,
        threads=threads, batch=r.batch, latency=stats, throughput=r.batch * 1000.0 / stats.p50 if stats.p50 else 0.0,
        environment={}, cv=cv, shapes=r.shapes, io_binding=r.io_binding, copies_included=r.copies_included,
        placement=_placement(r.model, r.provider, popts.get(r.provider), threads) if placement and r.runtime == "ort"
        else None,
        memory={"session_bytes": r.session_bytes, "peak_rss_bytes": _peak_rss()},
        histogram=counts, histogram_edges=edges, latencies_ms=tuple(ms) if save_latencies else (), sha256=r.sha256,
        cpu_ms=(round(float(cpu_ms[0]), 6), round(float(cpu_ms[1]), 6)),
    )


def benchmark(
    models: Sequence[str],
    *,
    providers: Sequence[str] = ("cpu",),
    provider_options: Mapping[str, Mapping[str, str]] | None = None,
    dims: Mapping[str, int] | None = None,
    shapes: Mapping[str, tuple] | None = None,
    batches: Sequence[int] | None = None,
    inputs: str | None = None,
    seed: int = 0,
    val_ranges: Mapping[str, tuple[float, float]] | None = None,
    threads: int | None = None,
    inter_threads: int | None = None,
    warmup: int = 10,
    iterations: int | None = None,
    duration: float | None = None,
    io_binding: bool = False,
    placement: bool = False,
    spinning: bool | None = None,
    save_latencies: bool = False,
    max_p50_ms: float | None = None,
    max_p99_ms: float | None = None,
    min_speedup: float | None = None,
    baseline: str | None = None,
    max_regression: float = 0.10,
    runtimes: Sequence[str] = ("ort",),
    ov_precision: str = "auto",
) -> BenchmarkReport:
    """Benchmark each model on each runtime (ORT: on each provider) and batch size,
    interleaved; see the module docstring. ``runtimes``: ort, openvino (OpenVINO's CPU
    device at ``ov_precision``, timed in the same rounds)."""
    if not models:
        raise UsageError("no model to benchmark")
    if iterations is not None and iterations < 1 or duration is not None and not duration > 0:
        raise UsageError("--iterations and --duration must be positive")
    if inputs and batches:
        raise UsageError("--batch sweeps generated inputs; it cannot resize --inputs")
    runtimes = _check_runtimes(runtimes, providers)
    fulls = [resolve_provider(p) for p in providers]
    popts = {resolve_provider(k): dict(v) for k, v in (provider_options or {}).items()}
    n_threads = threads or cpu_quota()
    if spinning is None and len(models) * _targets(runtimes, fulls) * len(batches or [None]) > 1:
        spinning = False
    base_line = load_baseline(baseline) if baseline else None
    rows = _open_rows(models, fulls, popts, batches, threads=n_threads, inter_threads=inter_threads,
                      spinning=spinning, io_binding=io_binding,
                      feed_args=dict(dims=dims, shapes=shapes, inputs=inputs, seed=seed, val_ranges=val_ranges),
                      runtimes=runtimes, ov_precision=ov_precision, notes=(notes := []))
    if any(r.copies_included for r in rows):
        notes.append("host<->device copies are inside the timed call (pass --io-binding to keep data on the device)")
    if spinning is False:
        notes.append("intra-op spinning off: several sessions share this process")
    with exclusive_timing(", ".join(dict.fromkeys(Path(m).name for m in models))):
        lat, cpu, contention = _time(rows, warmup, iterations, duration, n_threads)
    results = [_result(r, ns, c, threads=n_threads, seed=seed, save_latencies=save_latencies, placement=placement,
                       popts=popts, notes=notes) for r, ns, c in zip(rows, lat, cpu)]
    # a spinning pool burns CPU waiting for work: then CPU time says nothing of the work a call needs
    # (TBB's workers spin-wait too, unasked: OpenVINO rows make CPU time no floor either)
    floors = (spinning is False or contention.threads == 1) and "openvino" not in runtimes
    comparisons = [Comparison(results[i].model, results[0].model, *_point_ci(speedup_ci(lat[0], lat[i], seed)),
                              bounds=None if contention.clean else _bounds(results[0], results[i], floors))
                   for i in range(1, len(results))]
    gates = latency_gates(results, max_p50_ms, max_p99_ms) + speedup_gates(comparisons, min_speedup)
    if base_line is not None:
        gates += baseline_gates(results, base_line, max_regression, notes)
    if not contention.clean:  # the figures include loaded rounds: a gate decided only where its bounds decide it
        gates = settle(gates, results, comparisons, contention, floors)
    return BenchmarkReport(tuple(results), tuple(comparisons), tuple(gates), all(g.passed for g in gates),
                           environment(), tuple(dict.fromkeys(notes)), contention, verdict(gates), _fastest(results))


def _check_runtimes(runtimes: Sequence[str], providers: Sequence[str]) -> tuple[str, ...]:
    out = tuple(dict.fromkeys(r.strip().lower() for r in runtimes))
    bad = [r for r in out if r not in RUNTIMES]
    if not out or bad:
        raise UsageError(f"unknown runtime {bad[0] if bad else ''!r}", hint="use one of: " + ", ".join(RUNTIMES))
    if "ort" not in out and tuple(providers) != ("cpu",):
        raise UsageError("--provider picks ONNX Runtime's execution provider, but no row runs on ONNX Runtime",
                         hint="add --runtime ort, or drop --provider (OpenVINO runs on its CPU device)")
    return out


def _targets(runtimes: Sequence[str], fulls: Sequence[str]) -> int:
    return ("ort" in runtimes) * len(fulls) + ("openvino" in runtimes)


def _fastest(results: Sequence[BenchmarkResult]) -> tuple[Fastest, ...]:
    """Per target (runtime and provider) and batch, the model with the lowest median:
    what a user deploying there picks. Parity is not benchmark's to judge (validate, the
    release's ledger)."""
    best: dict[tuple, BenchmarkResult] = {}
    for r in results:
        key = (r.runtime, r.requested_provider, r.batch)
        if key not in best or r.latency.p50 < best[key].latency.p50:
            best[key] = r
    return tuple(Fastest(r.runtime, r.requested_provider, r.batch, r.model, r.latency.p50) for r in best.values())


def _point_ci(t: tuple[float, float, float]) -> tuple[float, tuple[float, float]]:
    return t[0], (t[1], t[2])


def _leading(feeds) -> int:
    for v in feeds.values():
        if getattr(v, "ndim", 0):
            return int(v.shape[0])
    return 1


# ----------------------------------------------------------------------------- exclusive timing
# Several releases at once (onnxforge zoo) must not time on shared cores. The zoo names
# a lock file in ONNXFORGE_BENCH_LOCK; each timing phase (warm-up and timed rounds, the
# only part whose numbers other work would distort) holds an exclusive flock on it, so
# every process naming the same file times one at a time while conversion and
# quantization of other models go on. Each phase's start and end go to TIMED, which the
# zoo reads back for its timeline. Without the variable nothing changes.

BENCH_LOCK_ENV = "ONNXFORGE_BENCH_LOCK"
TIMED: list[dict] = []  # {"what", "start", "end", "waited"}: epoch seconds, this process's phases


@contextlib.contextmanager
def exclusive_timing(what: str = ""):
    path = os.environ.get(BENCH_LOCK_ENV)
    if not path:
        yield
        return

    asked = time.time()
    try:
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o666)
    except OSError as exc:  # timing beside other timing would be a silent lie: refuse instead
        raise BadInputError(f"cannot open the benchmark lock {path} ({exc.strerror or exc})",
                            hint=f"point {BENCH_LOCK_ENV} at a writable file, or unset it") from None
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)  # closing the descriptor releases it, even on a crash
        start = time.time()
        try:
            yield
        finally:
            TIMED.append({"what": what, "start": start, "end": time.time(), "waited": round(start - asked, 3)})
    finally:
        os.close(fd)
