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

import json
import logging
import math
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Mapping, Sequence

from onnxforge.errors import BadInputError, UsageError
from onnxforge.types import BenchmarkReport, BenchmarkResult, Comparison, GateResult, LatencyStats

log = logging.getLogger("onnxforge")

HIGH_CV = 0.10
BOOTSTRAP_MAX_N = 5000


def latency_stats(ms: Sequence[float], seed: int = 0) -> tuple[LatencyStats, float]:
    import numpy as np

    a = np.asarray(ms, dtype=np.float64)
    q = np.percentile(a, [50, 90, 95, 99])
    mean = float(a.mean())
    std = float(a.std(ddof=1)) if a.size > 1 else 0.0
    stats = LatencyStats(n=int(a.size), mean=mean, std=std, min=float(a.min()), p50=float(q[0]), p90=float(q[1]),
                         p95=float(q[2]), p99=float(q[3]), max=float(a.max()), ci95=median_ci(a, seed))
    return stats, (std / mean if mean else 0.0)


def median_ci(a, seed: int = 0) -> tuple[float, float]:
    import numpy as np

    a = np.sort(np.asarray(a, dtype=np.float64))
    n = a.size
    if n < 3:
        return float(a[0]), float(a[-1])
    if n <= BOOTSTRAP_MAX_N:
        rng = np.random.default_rng(seed)
        meds = np.median(a[rng.integers(0, n, size=(1000, n))], axis=1)
        lo, hi = np.percentile(meds, [2.5, 97.5])
        return float(lo), float(hi)
    k = 1.96 * math.sqrt(n) / 2
    return float(a[max(0, int(math.floor(n / 2 - k)))]), float(a[min(n - 1, int(math.ceil(n / 2 + k)))])


def speedup_ci(base, other, seed: int = 0) -> tuple[float, float, float]:
    """median(base) / median(other) and its bootstrap 95% interval."""
    import numpy as np

    b, o = np.asarray(base, dtype=np.float64), np.asarray(other, dtype=np.float64)
    point = float(np.median(b) / np.median(o))
    if b.size <= BOOTSTRAP_MAX_N and o.size <= BOOTSTRAP_MAX_N:
        rng = np.random.default_rng(seed)
        mb = np.median(b[rng.integers(0, b.size, size=(1000, b.size))], axis=1)
        mo = np.median(o[rng.integers(0, o.size, size=(1000, o.size))], axis=1)
        lo, hi = np.percentile(mb / mo, [2.5, 97.5])
        return point, float(lo), float(hi)
    bl, bh = median_ci(b)
    ol, oh = median_ci(o)
    return point, bl / oh, bh / ol


def histogram(ms: Sequence[float], bins: int = 16) -> tuple[int, ...]:
    import numpy as np

    a = np.asarray(ms)
    hi = float(np.percentile(a, 99))
    lo = float(a.min())
    if hi <= lo:
        return (int(a.size),)
    counts, _ = np.histogram(np.clip(a, lo, hi), bins=bins, range=(lo, hi))
    return tuple(int(c) for c in counts)


def sparkline(counts: Sequence[int]) -> str:
    blocks = " ▁▂▃▄▅▆▇█"
    top = max(counts) if counts else 0
    return "".join(blocks[min(8, math.ceil(8 * c / top))] if top else " " for c in counts)


def _rss() -> int:
    from onnxforge.runtime import proc_kib

    return proc_kib("/proc/self/status", "VmRSS") or 0


def _peak_rss() -> int:
    import resource
    import sys

    r = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return r if sys.platform == "darwin" else r * 1024


@dataclass
class _Config:
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


def _feeds_for(specs, *, batch, dims, shapes, inputs, seed, val_ranges):
    from onnxforge.specs import check_sample_fits, generate_inputs, load_samples
    from onnxforge.types import TensorSpec

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
    from time import perf_counter_ns

    def once() -> int:
        t0 = perf_counter_ns()
        run(binding)
        binding.synchronize_outputs()
        return perf_counter_ns() - t0

    once.keep = keep  # the bound OrtValues must outlive the binding
    return once


def _plain(sess, feeds):
    from time import perf_counter_ns

    run = sess.run
    f = dict(feeds)

    def once() -> int:
        t0 = perf_counter_ns()
        run(None, f)
        return perf_counter_ns() - t0

    return once


def _placement(model: str, provider: str, provider_options, threads) -> dict[str, int]:
    """Nodes per provider, from one profiled run in a separate session."""
    import os
    import tempfile

    from onnxforge.runtime import create_session, run_session
    from onnxforge.specs import generate_inputs

    with tempfile.TemporaryDirectory() as tmp:
        from onnxforge.runtime import session_options

        so = session_options(threads=threads, profiling=True)
        so.profile_file_prefix = os.path.join(tmp, "profile")
        sess = create_session(model, provider, provider_options=provider_options, options=so)
        from onnxforge.specs import model_io_specs
        from onnxforge.fileio import load_onnx

        specs, _ = model_io_specs(load_onnx(model, load_external_data=False))
        run_session(sess, generate_inputs(specs, seed=0))
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
    progress: bool = False,
) -> BenchmarkReport:
    """Benchmark each model on each provider (and batch size), interleaved; see the module docstring."""

    from onnxforge.fileio import check_readable_file, load_onnx, sha256_file
    from onnxforge.runtime import create_session, cpu_quota, environment, resolve_provider, short_provider
    from onnxforge.specs import model_io_specs

    if not models:
        raise UsageError("no model to benchmark")
    if iterations is not None and iterations < 1 or duration is not None and duration <= 0:
        raise UsageError("--iterations and --duration must be positive")
    if inputs and batches:
        raise UsageError("--batch sweeps generated inputs; it cannot resize --inputs")
    fulls = [resolve_provider(p) for p in providers]
    popts = {resolve_provider(k): dict(v) for k, v in (provider_options or {}).items()}
    n_threads = threads or cpu_quota()
    n_configs = len(models) * len(fulls) * len(batches or [None])
    if spinning is None and n_configs > 1:
        spinning = False
    base_line = _load_baseline(baseline) if baseline else None
    notes = []
    configs: list[_Config] = []
    for m in models:
        check_readable_file(m, "model")
        specs, _ = model_io_specs(load_onnx(m, load_external_data=False))
        digest = sha256_file(m)
        for prov in fulls:
            for b in batches or [None]:
                feeds = _feeds_for(specs, batch=b, dims=dims, shapes=shapes, inputs=inputs, seed=seed,
                                   val_ranges=val_ranges)
                before = _rss()
                sess = create_session(m, prov, provider_options=popts.get(prov), threads=n_threads,
                                      inter_threads=inter_threads, spinning=spinning)
                cfg = _Config(m, prov, b if b is not None else _leading(feeds), sess, feeds,
                              {k: tuple(v.shape) for k, v in feeds.items()}, session_bytes=max(0, _rss() - before),
                              sha256=digest)
                on_device = prov != "CPUExecutionProvider"
                if io_binding:
                    cfg.once = _binder(sess, feeds, prov, popts.get(prov, {}))
                    cfg.io_binding = True
                else:
                    cfg.once = _plain(sess, feeds)
                    cfg.copies_included = on_device
                configs.append(cfg)
    if any(c.copies_included for c in configs):
        notes.append("host<->device copies are inside the timed call (pass --io-binding to keep data on the device)")
    if spinning is False:
        notes.append("intra-op spinning off: several sessions share this process")

    for _ in range(warmup):
        for c in configs:
            c.once()
    lat: list[list[int]] = [[] for _ in configs]
    deadline = None if iterations is not None else time.perf_counter() + (duration or 2.0)
    target = iterations
    bar = _progress(progress, target, duration or 2.0 if target is None else None)
    rounds = 0
    try:
        while True:
            for i, c in enumerate(configs):
                lat[i].append(c.once())
            rounds += 1
            if bar:
                bar.advance(rounds)
            if target is not None:
                if rounds >= target:
                    break
            elif rounds >= 10 and time.perf_counter() >= deadline:
                break
    finally:
        if bar:
            bar.close()

    env = environment()
    results = []
    for c, ns in zip(configs, lat):
        ms = [v / 1e6 for v in ns]
        stats, cv = latency_stats(ms, seed)
        res = BenchmarkResult(
            model=c.model, requested_provider=short_provider(c.provider),
            active_providers=tuple(c.sess.get_providers()), threads=n_threads, batch=c.batch, latency=stats,
            throughput=c.batch * 1000.0 / stats.p50 if stats.p50 else 0.0, environment={}, cv=cv,
            shapes=c.shapes, io_binding=c.io_binding, copies_included=c.copies_included,
            placement=_placement(c.model, c.provider, popts.get(c.provider), n_threads) if placement else None,
            memory={"session_bytes": c.session_bytes, "peak_rss_bytes": _peak_rss()},
            histogram=histogram(ms), latencies_ms=tuple(ms) if save_latencies else (), sha256=c.sha256,
        )
        if cv > HIGH_CV:
            notes.append(f"{Path(c.model).name} ({short_provider(c.provider)}, batch {c.batch}): coefficient of "
                         f"variation {cv:.0%}: the machine is noisy, compare the intervals, not the digits")
        results.append(res)
    comparisons = []
    for i in range(1, len(results)):
        point, lo, hi = speedup_ci(lat[0], lat[i], seed)
        comparisons.append(Comparison(results[i].model, results[0].model, point, (lo, hi)))
    gates = _gates(results, comparisons, max_p50_ms, max_p99_ms, min_speedup, base_line, max_regression, notes)
    return BenchmarkReport(tuple(results), tuple(comparisons), tuple(gates), all(g.passed for g in gates), env,
                           tuple(dict.fromkeys(notes)))


def _leading(feeds) -> int:
    for v in feeds.values():
        if getattr(v, "ndim", 0):
            return int(v.shape[0])
    return 1


class _Bar:
    def __init__(self, total, seconds):
        from rich.progress import Progress

        from onnxforge.cli.common import console

        self.p = Progress(console=console(stderr=True), transient=True)
        self.p.start()
        self.total = total
        self.task = self.p.add_task("benchmark", total=total or 100)
        self.t0 = time.perf_counter()
        self.seconds = seconds
        self.last = 0.0

    def advance(self, rounds):
        now = time.perf_counter()
        if now - self.last < 0.1:  # outside the timed region, but keep it cheap
            return
        self.last = now
        done = rounds if self.total else min(100.0, 100 * (now - self.t0) / self.seconds)
        self.p.update(self.task, completed=done)

    def close(self):
        self.p.stop()


def _progress(enabled, total, seconds):
    import sys

    if not enabled or not sys.stderr.isatty():
        return None
    return _Bar(total, seconds)


def _load_baseline(path: str) -> dict:
    from onnxforge.fileio import check_readable_file
    from onnxforge.report import SCHEMA_VERSION

    p = check_readable_file(path, "baseline")
    try:
        env = json.loads(p.read_text())
    except (ValueError, UnicodeDecodeError) as exc:
        raise BadInputError(f"baseline {p} is not JSON ({exc})") from None
    if not isinstance(env, dict) or env.get("kind") != "benchmark":
        raise BadInputError(f"baseline {p} is not a benchmark report (kind {env.get('kind') if isinstance(env, dict) else '?'})",
                            hint="save one with: onnxforge benchmark MODEL --report baseline.json")
    if env.get("schema_version") != SCHEMA_VERSION:
        raise BadInputError(f"baseline {p} has schema version {env.get('schema_version')}, this onnxforge writes {SCHEMA_VERSION}",
                            hint="re-run the baseline with this onnxforge version")
    return env["result"]


def _gates(results, comparisons, max_p50, max_p99, min_speedup, base, max_regression, notes) -> list[GateResult]:
    gates = []
    for r in results:
        tag = f"{Path(r.model).name} ({r.requested_provider}, batch {r.batch})"
        if max_p50 is not None:
            ok = r.latency.p50 <= max_p50
            gates.append(GateResult("max_p50_ms", ok, r.latency.p50, max_p50,
                                    f"{tag}: p50 {r.latency.p50:.3f} ms {'<=' if ok else '>'} {max_p50} ms"))
        if max_p99 is not None:
            ok = r.latency.p99 <= max_p99
            gates.append(GateResult("max_p99_ms", ok, r.latency.p99, max_p99,
                                    f"{tag}: p99 {r.latency.p99:.3f} ms {'<=' if ok else '>'} {max_p99} ms"))
    if min_speedup is not None:
        if not comparisons:
            raise UsageError("--min-speedup compares against the first model: give two or more")
        for c in comparisons:
            ok = c.speedup >= min_speedup
            gates.append(GateResult("min_speedup", ok, c.speedup, min_speedup,
                                    f"{Path(c.model).name}: {c.speedup:.2f}x (95% CI {c.ci95[0]:.2f}-{c.ci95[1]:.2f}) "
                                    f"vs {Path(c.against).name}, need >= {min_speedup}x"))
    if base is not None:
        rows = base.get("results", [])
        matched = False
        for r in results:
            for b in rows:
                same = (b.get("sha256") and b.get("sha256") == r.sha256) or Path(b.get("model", "")).name == Path(r.model).name
                if not same or b.get("requested_provider") != r.requested_provider or b.get("batch") != r.batch:
                    continue
                matched = True
                if b.get("sha256") and b.get("sha256") != r.sha256:
                    notes.append(f"{Path(r.model).name}: the model file changed since the baseline (sha256 differs)")
                bp50 = float(b["latency"]["p50"])
                limit = bp50 * (1 + max_regression)
                # worse beyond the interval: even the low end of this run's median CI is past the limit
                ok = r.latency.ci95[0] <= limit
                change = r.latency.p50 / bp50 - 1
                gates.append(GateResult("baseline", ok, r.latency.p50, limit,
                                        f"{Path(r.model).name} ({r.requested_provider}, batch {r.batch}): p50 "
                                        f"{r.latency.p50:.3f} ms vs baseline {bp50:.3f} ms ({change:+.1%}), "
                                        f"limit +{max_regression:.0%}"))
        if not matched:
            raise BadInputError("the baseline holds no result for these models, providers and batch sizes",
                                hint="it is a benchmark of another model; save a baseline of this one with --report")
    return gates
