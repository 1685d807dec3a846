"""Does `onnxforge benchmark` report what a bare timing loop measures?

    python benchmarks/fidelity.py [--repeats 5]

Two models: a tiny one (~10 us per run) and a ~10 ms one. In one process, five
repeats alternate (per model) between onnxforge's benchmark() and a bare loop of
perf_counter_ns() around session.run on a session with the same options. Reported:
the ratio of medians (goal: within 1.03 on the 10 ms model), the per-call
overhead on the tiny model (goal: < 5 us), and the CV of onnxforge's median
across repeats (goal: < 3%).
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
from benchmarks._util import print_table  # noqa: E402


def bare_median_ms(sess, feeds, n: int, warmup: int) -> float:
    run = sess.run
    for _ in range(warmup):
        run(None, feeds)
    times = []
    for _ in range(n):
        t0 = time.perf_counter_ns()
        run(None, feeds)
        times.append(time.perf_counter_ns() - t0)
    return statistics.median(times) / 1e6


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--repeats", type=int, default=5)
    a = ap.parse_args()

    from fixtures.make_fixtures import onnx_chain, onnx_tiny
    from onnxforge.core.fileio import load_onnx
    from onnxforge.backends.onnx.runtime import create_session
    from onnxforge.core.system import cpu_quota
    from onnxforge.data.generate import generate_inputs
    from onnxforge.data.specs import model_io_specs
    from onnxforge.checks.benchmark import benchmark

    tmp = Path(tempfile.mkdtemp())
    cases = [
        ("tiny (~10 us)", onnx_tiny(tmp / "tiny.onnx"), {"batch": 1}, 3000),
        ("chain 1024x12 (~10 ms)", onnx_chain(tmp / "big.onnx", layers=12, width=1024), {"batch": 128}, 300),
    ]
    rows = []
    for name, path, dims, n in cases:
        specs, _ = model_io_specs(load_onnx(path, load_external_data=False))
        feeds = generate_inputs(specs, seed=0, dims=dims)
        sess = create_session(path, "cpu", threads=cpu_quota())
        ours, bare = [], []
        for _ in range(a.repeats):
            rep = benchmark([str(path)], dims=dims, iterations=n, warmup=20)
            ours.append(rep.results[0].latency.p50)
            bare.append(bare_median_ms(sess, feeds, n, 20))
        ratios = [o / b for o, b in zip(ours, bare)]
        over_us = [(o - b) * 1000 for o, b in zip(ours, bare)]
        cv = statistics.pstdev(ours) / statistics.mean(ours)
        cv_bare = statistics.pstdev(bare) / statistics.mean(bare)
        rows.append([name, f"{statistics.median(ours):.4f}", f"{statistics.median(bare):.4f}",
                     f"{statistics.median(ratios):.3f} ({min(ratios):.3f}-{max(ratios):.3f})",
                     f"{statistics.median(over_us):+.2f}", f"{cv:.1%}", f"{cv_bare:.1%}"])
    print_table(["model", "onnxforge p50 ms", "bare loop p50 ms", "ratio (range)", "overhead us/call",
                 "CV of p50 across repeats", "same, bare loop"], rows,
                title=f"benchmark fidelity, {a.repeats} interleaved repeats, {cpu_quota()} threads")


if __name__ == "__main__":
    main()
