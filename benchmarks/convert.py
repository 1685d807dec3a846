"""Wall time and peak memory of `convert` on the fixture models and a ~500 MB MLP.

    python benchmarks/convert.py [--big-mb 512] [--skip-big]

Each conversion runs in a fresh child process. The child reports its RSS after
importing torch/sklearn and onnxforge (the baseline) and the peak RSS at the end
(VmHWM); "added" is peak minus baseline, the memory the conversion itself took.
The goal is added peak <= 2.5x the model's weight bytes.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import textwrap
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
from benchmarks._util import print_table  # noqa: E402

CHILD = textwrap.dedent('''
    import json, sys, time
    sys.path.insert(0, {root!r})
    def rss(field):
        for line in open("/proc/self/status"):
            if line.startswith(field):
                return int(line.split()[1]) * 1024
    kind, factory, out, args = sys.argv[1], sys.argv[2], sys.argv[3], json.loads(sys.argv[4])
    import onnxforge
    if kind == "torch":
        import torch
    else:
        import sklearn, skl2onnx
    base = rss("VmRSS")
    t0 = time.perf_counter()
    if kind == "torch":
        res = onnxforge.convert_torch(factory, out, **args)
    else:
        res = onnxforge.convert_sklearn(factory, out, **args)
    wall = time.perf_counter() - t0
    print(json.dumps({{"wall": wall, "base": base, "peak": rss("VmHWM"), "passed": res.passed,
                      "weights": res.details.get("weight_bytes", 0)}}))
''')

FACTORIES = ROOT / "benchmarks" / "_models.py"


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--big-mb", type=int, default=512)
    ap.add_argument("--skip-big", action="store_true")
    a = ap.parse_args()
    cases = [
        ("mlp (fixture)", "torch", f"{FACTORIES}:mlp", {"inputs": ["x:float32:batchx8"]}),
        ("cnn (fixture)", "torch", f"{FACTORIES}:cnn", {"inputs": ["x:float32:batchx3x16x16"]}),
        ("iris pipeline (fixture)", "sklearn", f"{FACTORIES}:iris_pipeline", {}),
    ]
    if not a.skip_big:
        cases.append((f"mlp ~{a.big_mb} MB", "torch", f"{FACTORIES}:big_mlp",
                      {"inputs": ["x:float32:batchx4096"]}))
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for name, kind, factory, args in cases:
            env = {"BIG_MB": str(a.big_mb)}
            import os

            r = subprocess.run(
                [sys.executable, "-c", CHILD.format(root=str(ROOT)), kind, factory, str(Path(tmp) / "m.onnx"),
                 json.dumps({**args, "force": True})],
                capture_output=True, text=True, env={**os.environ, **env},
            )
            if r.returncode != 0:
                rows.append([name, "-", "-", "-", "-", "-", f"error: {r.stderr.strip().splitlines()[-1][:80]}"])
                continue
            m = json.loads(r.stdout.strip().splitlines()[-1])
            weights = m["weights"] or (Path(tmp) / "m.onnx").stat().st_size
            added = m["peak"] - m["base"]
            rows.append([name, f"{m['wall']:.2f}", f"{weights / 2**20:.1f}", f"{m['base'] / 2**20:.0f}",
                         f"{m['peak'] / 2**20:.0f}", f"{added / 2**20:.0f}",
                         f"{added / weights:.2f}x" if weights > 2**20 else "n/a (tiny)",
                         "yes" if m["passed"] else "NO"])
    print_table(["model", "wall s", "weights MiB", "baseline RSS MiB", "peak RSS MiB", "added MiB",
                 "added / weights", "check passed"], rows, title="convert: time and peak memory (fresh process each)")


if __name__ == "__main__":
    main()
