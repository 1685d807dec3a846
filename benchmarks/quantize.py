"""int8 speed on this CPU: fp32 vs onnxforge's dynamic/static outputs vs plain
quantize_dynamic / quantize_static with ORT's defaults, all in one interleaved run.

    python benchmarks/quantize.py [--seconds 30] [--skip-bert]

Models: BERT-base from a transformers config (random weights, seq 128, batch 1) and
a ResNet-18-like CNN (1x3x224x224). 2 threads. Per model, every variant is a row of
one `onnxforge.benchmark` call (rows interleaved A B C ...), so the speed-ups are
ratios measured side by side. Also: peak RSS of static calibration on 100 samples
(minmax), in a fresh process. Goals: dynamic int8 BERT >= 2.0x fp32; static int8 CNN
>= 2.0x; onnxforge never slower than the plain-defaults ORT output.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
from benchmarks._util import print_table  # noqa: E402

MODELS = f"{ROOT / 'benchmarks' / '_quant_models.py'}"


class _Reader:
    def __init__(self, samples):
        self.it = iter(samples)

    def get_next(self):
        return next(self.it, None)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--seconds", type=float, default=30.0, help="timing per model (all rows together)")
    ap.add_argument("--skip-bert", action="store_true")
    a = ap.parse_args()

    import numpy as np
    from onnxruntime.quantization import quantize_dynamic, quantize_static

    import onnxforge
    from onnxforge.validators.benchmark import benchmark

    rows, notes = [], []
    with tempfile.TemporaryDirectory() as tmp:
        d = Path(tmp)
        rng = np.random.default_rng(0)
        cases = []
        if not a.skip_bert:
            onnxforge.convert_torch(f"{MODELS}:bert_base", d / "bert.onnx",
                                    inputs=["input_ids:int64:1x128", "attention_mask:int64:1x128"],
                                    val_ranges={"input_ids": (0, 30000), "attention_mask": (1, 1)})
            cases.append(("bert-base (seq 128)", d / "bert.onnx", "dynamic"))
        onnxforge.convert_torch(f"{MODELS}:resnet18_like", d / "cnn.onnx", inputs=["x:float32:1x3x224x224"])
        calib = d / "calib.npz"
        np.savez(calib, x=rng.random((100, 1, 3, 224, 224), dtype=np.float32))
        cases.append(("resnet18-like (224)", d / "cnn.onnx", "static"))

        for name, fp32, mode in cases:
            variants = {"fp32": fp32}
            t0 = time.perf_counter()
            if mode == "dynamic":
                quantize_dynamic(str(fp32), str(d / "plain.onnx"))
            else:
                arrays = np.load(calib)["x"]
                quantize_static(str(fp32), str(d / "plain.onnx"), _Reader({"x": arrays[i]} for i in range(100)))
            plain_s = time.perf_counter() - t0
            variants[f"plain ORT quantize_{mode}"] = d / "plain.onnx"
            t0 = time.perf_counter()
            res = onnxforge.quantize(fp32, d / "ours.onnx", mode=mode, force=True, bench_seconds=2,
                                     calibration=str(calib) if mode == "static" else None)
            ours_s = time.perf_counter() - t0
            variants[f"onnxforge quantize {mode}"] = d / "ours.onnx"
            notes.append(f"{name}: plain quantize took {plain_s:.1f} s; onnxforge {ours_s:.1f} s including its "
                         f"checks (passed={res.passed}, {res.details['cpu_family']}, weights {res.details['weight_type']}, "
                         f"activations {res.details['activation_type']}, reduce_range {res.details['reduce_range']})")
            rep = benchmark([str(p) for p in variants.values()], duration=a.seconds, warmup=5, threads=2)
            speed = {c.model: c for c in rep.comparisons}
            for (k, _), r in zip(variants.items(), rep.results):
                c = speed.get(r.model)
                rows.append([name, k, f"{r.latency.p50:.2f}", f"{r.latency.p90:.2f}", r.latency.n,
                             f"{c.speedup:.2f}x [{c.ci95[0]:.2f}-{c.ci95[1]:.2f}]" if c else "1.00x"])

        # calibration memory, fresh process
        code = (
            "import sys, json; sys.path.insert(0, %r)\n"
            "import onnxforge\n"
            "def rss(f):\n"
            "    return next(int(l.split()[1]) * 1024 for l in open('/proc/self/status') if l.startswith(f))\n"
            "import onnxruntime.quantization\n"
            "base = rss('VmRSS')\n"
            "onnxforge.quantize(%r, %r, mode='static', calibration=%r, force=True, bench_seconds=0.5)\n"
            "print(json.dumps({'base': base, 'peak': rss('VmHWM')}))\n"
        ) % (str(ROOT), str(d / "cnn.onnx"), str(d / "mem.onnx"), str(calib))
        out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
        mem = json.loads(out.stdout.strip().splitlines()[-1]) if out.returncode == 0 else None
    print_table(["model", "variant", "p50 ms", "p90 ms", "n", "speed-up vs fp32 [95% CI]"], rows,
                title="int8 latency, 2 threads, rows interleaved per model")
    for n in notes:
        print("note:", n)
    if mem:
        print(f"static calibration, 100 samples of 1x3x224x224 (minmax), resnet18-like: peak RSS "
              f"{mem['peak'] / 2**20:.0f} MiB ({(mem['peak'] - mem['base']) / 2**20:.0f} MiB above the "
              f"process after imports; calibration data {100 * 3 * 224 * 224 * 4 / 2**20:.0f} MiB)")


if __name__ == "__main__":
    main()
