"""Overhead of the parity engine.

    python benchmarks/validate.py

1. compare(): milliseconds per MB of output, for outputs of 1, 16 and 64 MB
   (float32, a perturbed copy), median of 7 runs.
2. --localize on a ~100-node model (a 50-layer MatMul/Tanh chain with one weight
   nudged): time of a plain validate vs validate + localize, interleaved, 5 runs.
"""

from __future__ import annotations

import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
from benchmarks._util import print_table  # noqa: E402


def main() -> None:
    import numpy as np

    from fixtures.make_fixtures import onnx_chain
    from onnxforge.core.types import Tolerance
    from onnxforge.checks.compare import compare
    from onnxforge.checks.parity import validate

    rng = np.random.default_rng(0)
    rows = []
    for mb in (1, 16, 64):
        n = mb * 2**20 // 4
        ref = {"y": rng.standard_normal(n, dtype=np.float32)}
        cand = {"y": ref["y"] + rng.standard_normal(n, dtype=np.float32) * 1e-6}
        times = []
        for _ in range(7):
            t0 = time.perf_counter()
            compare(ref, cand, Tolerance())
            times.append(time.perf_counter() - t0)
        med = statistics.median(times) * 1000
        rows.append([f"{mb} MB", f"{med:.1f}", f"{med / mb:.2f}", f"{min(times) * 1000:.1f}-{max(times) * 1000:.1f}"])
    print_table(["output size", "median ms", "ms per MB", "range ms"], rows, title="compare() cost (float32, 1 output)")
    print()

    with tempfile.TemporaryDirectory() as tmp:
        a = onnx_chain(Path(tmp) / "a.onnx", layers=50, width=64)
        b = onnx_chain(Path(tmp) / "b.onnx", layers=50, width=64, perturb=30)
        plain, loc = [], []
        result = None
        for _ in range(5):
            t0 = time.perf_counter()
            validate(str(a), str(b), dims={"batch": 8})
            plain.append(time.perf_counter() - t0)
            t0 = time.perf_counter()
            result = validate(str(a), str(b), dims={"batch": 8}, localize=True)
            loc.append(time.perf_counter() - t0)
        p, l_ = statistics.median(plain) * 1000, statistics.median(loc) * 1000
        print_table(
            ["model", "validate ms", "validate --localize ms", "localize overhead ms", "found"],
            [["chain, 100 nodes", f"{p:.1f}", f"{l_:.1f}", f"{l_ - p:.1f}",
              f"{result.localized.node} ({result.localized.op_type})"]],
            title="--localize on a 100-node model (medians of 5, interleaved)",
        )


if __name__ == "__main__":
    main()
