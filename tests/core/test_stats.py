import numpy as np
import pytest

from onnxforge.core.stats import histogram, latency_stats, median_ci, paired_speedup, sparkline, speedup_ci


def test_latency_stats_known_values():
    ms = list(range(1, 101))  # 1..100 ms
    s, cv = latency_stats(ms)
    assert s.n == 100 and s.min == 1 and s.max == 100
    assert s.p50 == pytest.approx(50.5) and s.p90 == pytest.approx(90.1) and s.p99 == pytest.approx(99.01)
    assert s.mean == pytest.approx(50.5) and cv == pytest.approx(s.std / s.mean)
    assert s.ci95[0] <= s.p50 <= s.ci95[1]


def test_median_ci_bootstrap_and_large_n():
    rng = np.random.default_rng(1)
    small = rng.normal(10, 1, 400)
    lo, hi = median_ci(small)
    assert lo < np.median(small) < hi and hi - lo < 0.5
    big = rng.normal(10, 1, 50_000)  # order-statistic path
    lo2, hi2 = median_ci(big)
    assert lo2 < np.median(big) < hi2 and hi2 - lo2 < 0.05


def test_speedup_ci():
    rng = np.random.default_rng(2)
    a = rng.normal(10, 0.5, 500)
    b = rng.normal(5, 0.25, 500)
    point, lo, hi = speedup_ci(a, b)
    assert point == pytest.approx(2.0, rel=0.05) and lo < point < hi
    p2, lo2, hi2 = speedup_ci(a, a.copy())
    assert p2 == pytest.approx(1.0) and lo2 <= 1.0 <= hi2


def test_paired_speedup_cancels_a_rounds_load():
    """Interleaved rows meet the same load in a round: the per-round ratio drops it, the
    ratio of medians does not."""
    rng = np.random.default_rng(3)
    load = rng.uniform(1, 3, 400)  # each round's slow-down, shared by both rows
    ref, other = 10 * load * rng.normal(1, 0.01, 400), 5 * load * rng.normal(1, 0.01, 400)
    point, lo, hi = paired_speedup(ref, other)
    assert point == pytest.approx(2.0, rel=0.01) and lo < point < hi and hi - lo < 0.01
    _, lo2, hi2 = speedup_ci(ref, other)
    assert hi2 - lo2 > 10 * (hi - lo)


def test_every_timing_takes_core_stats_figures():
    """serve-check's load and in-process latency once had their own statistics (std
    with ddof=0, the order-statistic interval at any n); now core.stats'."""
    from onnxforge.steps.serve_check.check import latency_stats as serve_stats

    ms = list(np.random.default_rng(4).exponential(2.0, 300))
    assert serve_stats(ms) == latency_stats(ms)[0] and serve_stats([]) is None


def test_histogram_and_sparkline():
    counts = histogram([1.0] * 50 + [2.0] * 50, bins=4)
    assert sum(counts) == 100 and counts[0] == 50
    line = sparkline(counts)
    assert len(line) == 4 and line[0] == "█"


def test_histogram_edges():
    from onnxforge.core.stats import histogram_with_edges

    ms = list(np.linspace(1.0, 2.0, 1000)) + [50.0]  # one stall
    counts, edges = histogram_with_edges(ms)
    assert len(edges) == len(counts) + 1 == 17 and sum(counts) == 1001
    assert edges[0] == 1.0 and edges[-1] == pytest.approx(np.percentile(ms, 99))
    assert all(a < b for a, b in zip(edges, edges[1:]))
    assert histogram_with_edges([3.0] * 5) == ((5,), (3.0, 3.0))


def test_contaminated_windows():
    from onnxforge.core.stats import contaminated

    # single-threaded: the process's own CPU time decides (exact)
    assert contaminated(1.0, 0.45, None, cpus=1, threads=1)
    assert not contaminated(1.0, 0.97, 1.0, cpus=1, threads=1)
    # several threads: the CPUs other work left (busy minus ours; steal counts as busy)
    assert contaminated(1.0, 1.0, 2.0, cpus=2, threads=2)  # one CPU of two taken by others
    assert not contaminated(1.0, 1.2, 1.3, cpus=2, threads=2)
    assert not contaminated(1.0, 1.0, 2.0, cpus=2, threads=1)  # the other CPU busy: ours is free
    # a window shorter than /proc/stat can resolve is judged on the process alone
    assert not contaminated(0.05, 0.05, 0.05 + 0.02, cpus=1, threads=1)
