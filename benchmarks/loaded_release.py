"""The README's main job on a loaded machine: does its latency gate hold?

    python benchmarks/loaded_release.py [--runs 10] [--burners 2]

Runs `onnxforge release fixtures/example/release.toml -o OUT --force` (OUT a temporary
folder) --runs times, one after another, with --burners CPU-burning processes (busy
loops, not pinned) running beside it the whole time, and prints per run: the exit code,
the latency gate's verdict (passed / inconclusive / failed), the speed-up with its 95%
interval, the CPU share the timing measured, the rounds discarded, and the seconds; then
the count of each verdict. The example's int8 model is faster than fp32 on a quiet
machine, so a FAIL here is a wrong verdict; inconclusive is the honest answer to a
machine that could not give the timing its CPUs.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
from benchmarks._util import print_table  # noqa: E402

CONFIG = ROOT / "fixtures" / "example" / "release.toml"
ENV = {**os.environ, "PYTHONPATH": str(ROOT)}


def _burners(n: int) -> list[subprocess.Popen]:
    return [subprocess.Popen([sys.executable, "-c", "while True: pass"]) for _ in range(n)]


def _verdict(gates: list[dict]) -> str:
    statuses = {g["status"] for g in gates if g.get("kind") in ("latency", "speedup")}
    if not statuses:
        return "not run"
    return "failed" if "failed" in statuses else "inconclusive" if "inconclusive" in statuses else "passed"


def _one(i: int, out: Path) -> list:
    t0 = time.perf_counter()
    p = subprocess.run([sys.executable, "-m", "onnxforge", "release", str(CONFIG), "-o", str(out), "--force", "-q"],
                       capture_output=True, text=True, env=ENV, cwd=out.parent)
    secs = time.perf_counter() - t0
    try:
        rep = json.loads((out / "report.json").read_text())["result"]
    except (OSError, ValueError):
        return [i, p.returncode, "no report", "-", "-", "-", f"{secs:.1f}"]
    bench = rep.get("benchmark") or {}
    comp = (bench.get("comparisons") or [None])[0]
    c = bench.get("contention") or {}
    speed = f"{comp['speedup']:.2f}x ({comp['ci95'][0]:.2f}-{comp['ci95'][1]:.2f})" if comp else "-"
    share = f"{c['cpu_share']:.0%} of {c['threads']} (others {c['other_load']:.1f})" if c else "-"
    dropped = f"{c['discarded']}/{c['rounds']}" if c else "-"
    return [i, p.returncode, _verdict(rep.get("gates", [])), speed, share, dropped, f"{secs:.1f}"]


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--runs", type=int, default=10)
    ap.add_argument("--burners", type=int, default=2)
    args = ap.parse_args()
    rows = []
    burners = _burners(args.burners)
    try:
        with tempfile.TemporaryDirectory(prefix="loaded-release-") as tmp:
            for i in range(1, args.runs + 1):
                rows.append(_one(i, Path(tmp) / "out"))
                print(f"run {i}/{args.runs}: exit {rows[-1][1]}, {rows[-1][2]}", file=sys.stderr)
    finally:
        for b in burners:
            b.kill()
            b.wait()
    print_table(["run", "exit", "latency gate", "speed-up (95% CI)", "CPU share measured", "rounds discarded",
                 "seconds"], rows, title=f"{CONFIG.relative_to(ROOT)} with {args.burners} CPU burner(s) beside it "
                                          f"({os.cpu_count()} CPUs)")
    counts = {v: sum(1 for r in rows if r[2] == v) for v in ("passed", "inconclusive", "failed")}
    print(f"\n{counts['passed']} passed, {counts['inconclusive']} inconclusive, {counts['failed']} failed "
          f"of {len(rows)}")
    return 1 if counts["failed"] else 0


if __name__ == "__main__":
    sys.exit(main())
