"""Latency statistics, the one place every timing takes them from (benchmark, quantize's
speed check and recipe search, the release's latency gate, serve-check's load):
percentiles, the 95% interval of the median (bootstrap up to 5000 samples, then the
distribution-free order-statistic interval), speed-up ratios with their interval, and
the histogram (with its bin edges) behind the sparkline and the HTML report's latency
plot.

Two speed-ups: ``speedup_ci`` (ratio of the medians, each side resampled on its own:
what ``benchmark`` reports and its gates judge) and ``paired_speedup`` (median of the
per-round ratios: what the recipe search ranks by, where every candidate ran in the
same rounds and a round's load cancels out of its ratio)."""

from __future__ import annotations

import math
from typing import Sequence

from onnxforge.core.types import LatencyStats
import numpy as np

BOOTSTRAP_MAX_N = 5000


def latency_stats(ms: Sequence[float], seed: int = 0) -> tuple[LatencyStats, float]:
    a = np.asarray(ms, dtype=np.float64)
    q = np.percentile(a, [50, 90, 95, 99])
    mean = float(a.mean())
    std = float(a.std(ddof=1)) if a.size > 1 else 0.0
    stats = LatencyStats(n=int(a.size), mean=mean, std=std, min=float(a.min()), p50=float(q[0]), p90=float(q[1]),
                         p95=float(q[2]), p99=float(q[3]), max=float(a.max()), ci95=median_ci(a, seed))
    return stats, (std / mean if mean else 0.0)


def median_ci(a, seed: int = 0) -> tuple[float, float]:
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


def paired_speedup(ref_ms, other_ms, seed: int = 0) -> tuple[float, float, float]:
    """Median over rounds of ref/other and its bootstrap 95% interval. Rows are timed
    interleaved, so both saw the same load in a round: on a shared machine this is
    much tighter than a ratio of medians."""
    r = np.asarray(ref_ms, dtype=np.float64) / np.asarray(other_ms, dtype=np.float64)
    rng = np.random.default_rng(seed)
    boots = np.median(r[rng.integers(0, r.size, size=(1000, r.size))], axis=1)
    lo, hi = np.percentile(boots, [2.5, 97.5])
    return float(np.median(r)), float(lo), float(hi)


def histogram(ms: Sequence[float], bins: int = 16) -> tuple[int, ...]:
    return histogram_with_edges(ms, bins)[0]


def histogram_with_edges(ms: Sequence[float], bins: int = 16) -> tuple[tuple[int, ...], tuple[float, ...]]:
    """Counts in ``bins`` equal-width bins from the minimum to the p99, and the bin edges
    (ms). The slowest 1% is counted in the last bin, so one stall does not squeeze the
    rest into a single bar. All values equal: one bin, its two edges equal."""
    a = np.asarray(ms, dtype=np.float64)
    hi = float(np.percentile(a, 99))
    lo = float(a.min())
    if hi <= lo:
        return (int(a.size),), (lo, lo)
    counts, edges = np.histogram(np.clip(a, lo, hi), bins=bins, range=(lo, hi))
    return tuple(int(c) for c in counts), tuple(float(e) for e in edges)


def sparkline(counts: Sequence[int]) -> str:
    blocks = " ▁▂▃▄▅▆▇█"
    top = max(counts) if counts else 0
    return "".join(blocks[min(8, math.ceil(8 * c / top))] if top else " " for c in counts)


# ----------------------------------------------------------------------------- CPU contention
# A timing round is only evidence when the timed process had the CPUs it asked for.
# Each window of rounds (at least WINDOW_S, so /proc/stat's 10 ms ticks resolve it) is
# contaminated when the time the rows' threads lost (run queue wait and steal) is more
# than 1 - MIN_FREE of the threads they use (without schedstats: when the CPUs left by
# other work are fewer than MIN_FREE of them), or, single-threaded, when the process
# itself ran less than MIN_FREE of the wall time (that measure is exact). A run shorter
# than WINDOW_S is judged on the process's CPU time alone. 0.85: /proc/stat's tick sampling is
# within about 0.1 CPU over 0.25 s, and a 15% slice of lost CPU is what turned the
# README's release gate from 1.3x to 0.98x.

WINDOW_S = 0.25
MIN_FREE = 0.85
EXTEND = 3  # clean rounds are sought for at most this many times the timing budget


def contaminated(wall: float, ours: float, busy: float | None, cpus: int, threads: int,
                 lost: float | None = None) -> bool:
    """Whether a window of ``wall`` seconds, in which this process ran ``ours`` CPU
    seconds and its ``cpus`` CPUs were busy ``busy`` seconds (None: unknown), left the
    timed rows less than they asked for. ``lost``: the seconds its threads waited on a
    run queue plus the steal on its CPUs in the window (None: unknown); where known it
    decides, busy is not consulted (its tick sampling counts a pool that sleeps between
    calls as other load: 90% of a quiet run's rounds were discarded)."""
    if wall <= 0:
        return False
    if threads == 1 and ours / wall < MIN_FREE:
        return True
    if wall < WINDOW_S:  # a few ticks: /proc/stat cannot tell load from rounding (nor steal)
        return False
    if lost is not None:
        return lost / wall > (1 - MIN_FREE) * threads
    if busy is None:
        return False
    others = max(0.0, busy - ours) / wall
    return cpus - others < MIN_FREE * threads


def contention_line(c) -> str:
    """A Contention in words: what the timed process got, and what was thrown away."""
    what = (f"got {c.cpu_share:.0%} of {c.threads} CPU{'s' if c.threads != 1 else ''}"
            + (f" (other load {c.other_load:.1f} CPUs on its {c.cpus})" if c.judged == "proc" else "")
            + f" over {c.rounds} rounds; {c.discarded} rounds discarded")
    return what + ("" if c.clean else f"; too few clean rounds in {EXTEND}x the budget")
