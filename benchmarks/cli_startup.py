"""Start-up time of the CLI against a bare Python interpreter.

    python benchmarks/cli_startup.py [--runs 15]

Runs `python -c pass`, `onnxforge --help` and `onnxforge inspect tiny.onnx` interleaved
(A B C A B C ...), so machine drift hits all three, and prints medians, p10/p90 and
the ratio to bare Python.
"""

from __future__ import annotations

import argparse
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from benchmarks._util import print_table, summarize  # noqa: E402
from fixtures.make_fixtures import onnx_tiny  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--runs", type=int, default=15)
    args = ap.parse_args()
    tmp = Path(tempfile.mkdtemp())
    model = onnx_tiny(tmp / "tiny.onnx")
    exe = shutil.which("onnxforge") or f"{sys.executable} -m onnxforge"
    cmds = {
        "python -c pass": [sys.executable, "-c", "pass"],
        "onnxforge --help": [*exe.split(), "--help"],
        "onnxforge inspect tiny.onnx": [*exe.split(), "inspect", str(model)],
    }
    times: dict[str, list[float]] = {k: [] for k in cmds}
    for _ in range(args.runs):
        for name, cmd in cmds.items():
            t0 = time.perf_counter()
            subprocess.run(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, check=True)
            times[name].append(time.perf_counter() - t0)
    base = summarize(times["python -c pass"])["median"]
    rows = []
    for name, t in times.items():
        s = summarize(t)
        rows.append([name, f"{s['median'] * 1000:.0f}", f"{s['p10'] * 1000:.0f}", f"{s['p90'] * 1000:.0f}", f"{s['median'] / base:.2f}x"])
    print_table(["command", "median ms", "p10 ms", "p90 ms", "vs python"], rows,
                title=f"CLI start-up, {args.runs} interleaved runs each")
    shutil.rmtree(tmp)


if __name__ == "__main__":
    main()
