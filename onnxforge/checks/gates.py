"""Latency gates of a benchmark: p50/p99 limits, a minimum speed-up against the first
model, and a saved baseline with an allowed regression. Each GateResult names its
kind and the model it judged, so callers select gates by field, never by message."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Sequence

from onnxforge.core.errors import BadInputError, UsageError
from onnxforge.core.types import BenchmarkResult, Comparison, Contention, GateResult
from dataclasses import replace
from onnxforge.core.fileio import check_readable_file
from onnxforge.core.stats import contention_line
from onnxforge.report import SCHEMA_VERSION


def load_baseline(path: str) -> dict:
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


def _tag(r: BenchmarkResult) -> str:
    return f"{Path(r.model).name} ({r.target}, batch {r.batch})"


def latency_gates(results: Sequence[BenchmarkResult], max_p50: float | None, max_p99: float | None) -> list[GateResult]:
    gates = []
    for r in results:
        for name, value, limit in (("max_p50_ms", r.latency.p50, max_p50), ("max_p99_ms", r.latency.p99, max_p99)):
            if limit is None:
                continue
            ok = value <= limit
            gates.append(GateResult(name, ok, value, limit, f"{_tag(r)}: {name[4:7]} {value:.3f} ms "
                                    f"{'<=' if ok else '>'} {limit} ms", kind="latency", model=r.model))
    return gates


def speedup_gates(comparisons: Sequence[Comparison], min_speedup: float | None) -> list[GateResult]:
    if min_speedup is None:
        return []
    if not comparisons:
        raise UsageError("--min-speedup compares against the first model: give two or more")
    gates = []
    for c in comparisons:
        ok = c.speedup >= min_speedup
        gates.append(GateResult("min_speedup", ok, c.speedup, min_speedup,
                                f"{Path(c.model).name}: {c.speedup:.2f}x (95% CI {c.ci95[0]:.2f}-{c.ci95[1]:.2f}) "
                                f"vs {Path(c.against).name}, need >= {min_speedup}x", kind="speedup", model=c.model))
    return gates


def baseline_gates(results: Sequence[BenchmarkResult], base: dict, max_regression: float,
                   notes: list[str]) -> list[GateResult]:
    """Fails when even the low end of this run's median interval is past the baseline's
    p50 plus the allowance: worse beyond the noise, not by it."""
    gates, matched = [], False
    for r in results:
        for b in base.get("results", []):
            same = (b.get("sha256") and b.get("sha256") == r.sha256) or Path(b.get("model", "")).name == Path(r.model).name
            if not same or b.get("requested_provider") != r.requested_provider or b.get("batch") != r.batch \
                    or b.get("runtime", "ort") != r.runtime:
                continue
            matched = True
            if b.get("sha256") and b.get("sha256") != r.sha256:
                notes.append(f"{Path(r.model).name}: the model file changed since the baseline (sha256 differs)")
            bp50 = float(b["latency"]["p50"])
            limit = bp50 * (1 + max_regression)
            ok = r.latency.ci95[0] <= limit
            change = r.latency.p50 / bp50 - 1
            gates.append(GateResult("baseline", ok, r.latency.p50, limit,
                                    f"{_tag(r)}: p50 {r.latency.p50:.3f} ms vs baseline {bp50:.3f} ms ({change:+.1%}), "
                                    f"limit +{max_regression:.0%}", kind="baseline", model=r.model))
    if not matched:
        raise BadInputError("the baseline holds no result for these models, providers and batch sizes",
                            hint="it is a benchmark of another model; save a baseline of this one with --report")
    return gates


def settle(gates: Sequence[GateResult], results: Sequence[BenchmarkResult], comparisons: Sequence[Comparison],
           c: Contention, floors: bool = True) -> list[GateResult]:
    """The gates of a timing without enough clean rounds: its figures include loaded
    rounds, which bound what a quiet machine would measure without giving it. Load only
    slows a call, so the loaded latency is an upper bound; no call runs faster than its
    CPU time spread over every thread, so CPU time / threads is a lower bound (and a
    speed-up lies between Comparison.bounds). A gate passes or fails only where its
    bound decides it; else it is inconclusive. Without ``floors`` (a spinning thread
    pool, whose CPU time is not work) there is no lower bound: nothing fails."""

    bounds = {x.model: x.bounds for x in comparisons}
    out = []
    for g in gates:
        if g.kind not in ("latency", "speedup", "baseline"):
            out.append(g)
            continue
        if g.kind == "speedup":
            lo, hi = bounds.get(g.model) or (0.0, math.inf)
            status, why = ("passed" if lo >= g.limit else "failed" if hi < g.limit else "inconclusive",
                           f"quiet speed-up between {lo:.2f}x and {hi:.2f}x")
        else:
            r = next(r for r in results if g.message.startswith(_tag(r) + ":"))
            floor = (r.cpu_ms[1] if g.name == "max_p99_ms" else r.cpu_ms[0]) / r.threads if floors else 0.0
            status = "passed" if g.passed else "failed" if floor > g.limit else "inconclusive"
            why = f"CPU time per call / threads {floor:.3f} ms"
        out.append(replace(g, passed=status == "passed", status=status,
                           message=f"{g.message}; {status} on a busy machine ({why}): {contention_line(c)}"
                           if status != "passed" or g.kind == "speedup" else g.message))
    return out


def verdict(gates: Sequence[GateResult]) -> str:
    """passed, failed (any gate failed) or inconclusive (none failed, one undecided)."""
    statuses = {g.status for g in gates}
    return "failed" if "failed" in statuses else "inconclusive" if "inconclusive" in statuses else "passed"
