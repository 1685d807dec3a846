"""int8 and fused fp32 speed on this CPU, every variant of a model timed in ONE run.

    python benchmarks/quantize.py [--seconds 60] [--models base,small,cnn] [--no-wait]

Models: BERT-base and BERT-small (4 layers, hidden 512) from transformers configs
(random weights made to look trained: non-zero biases and LayerNorm scales; seq 128,
batch 1), and a ResNet-18-like CNN (1x3x224x224, static int8). 2 threads.

Transformer rows (one `onnxforge.benchmark` call, rows interleaved A B C ... per round):
  fp32 export | fp32 + ORT's transformer optimizer (bert) | fp32 where ORT's own fusions
  work (eager attention, TorchScript export, ORT optimizer: Attention with mask_index) |
  fp32 onnxforge simplify --transformer bert | plain `quantize_dynamic` (ORT defaults) |
  the ORT-fused model + `quantize_dynamic` | Optimum-style avx2
  dynamic (ORT optimizer, then u8 symmetric weights, per-tensor, no reduce_range, as
  `AutoQuantizationConfig.avx2(is_static=False, per_channel=False)`) | onnxforge
  quantize dynamic (auto recipe) | onnxforge simplify --transformer, then quantize dynamic |
  onnxforge quantize static (transformer recipe: every MatMul in int8, the attention
  products included, calibrated on 32 tokenised samples, half of them padded) |
  onnxforge quantize int4 --gather (4-bit MatMul and embedding weights, fp32 activations).
Ratios are medians of per-round ratios (both rows saw the same load in a round) with
bootstrap 95% intervals. Accuracy: min cosine to the fp32 export over random inputs
and padded attention masks, and its drop against plain int8.

The machine is shared: each timing waits for other processes to use < 10% of the
CPU (--no-wait skips that) and records what they used during the run.
Goals (issue 17): BERT-base onnxforge int8 >= 1.2x plain int8 with cosine drop
<= 0.001; BERT-small >= 1.15x; fuse-then-quantize >= 1.0x plain (interval);
fused fp32 >= 1.15x the export; static int8 CNN >= 2.0x fp32 and >= 2x plain.
Issue 27: BERT-base onnxforge int8 (static, transformer recipe) >= 1.3x plain
quantize_dynamic at cosine >= 0.999 on padded inputs.
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
from benchmarks._util import ForeignCpu, machine_line, paired_ratio, print_table, wait_quiet  # noqa: E402

MODELS = f"{ROOT / 'benchmarks' / '_quant_models.py'}"
BERT_INPUTS = ["input_ids:int64:1x128", "attention_mask:int64:1x128"]
BERT_RANGES = {"input_ids": (0, 30000), "attention_mask": (1, 1)}


class _Reader:
    def __init__(self, samples):
        self.it = iter(samples)

    def get_next(self):
        return next(self.it, None)


def _nodes(path) -> int:
    import onnx

    return len(onnx.load(str(path), load_external_data=False).graph.node)


def _accuracy(ref, variants: dict, samples) -> dict:
    """Min cosine of every output over the samples, per variant, against ``ref``."""
    import numpy as np
    import onnxruntime as ort

    def run(p):
        s = ort.InferenceSession(str(p), providers=["CPUExecutionProvider"])
        return [s.run(None, f) for f in samples]

    base = run(ref)
    out = {}
    for name, p in variants.items():
        got = run(p)
        cos = [float(np.dot(a.ravel().astype(np.float64), b.ravel()) / np.linalg.norm(a) / np.linalg.norm(b))
               for ra, rb in zip(base, got) for a, b in zip(ra, rb)]
        out[name] = min(cos)
    return out


def _time(variants: dict, seconds: float, wait: bool, **kw) -> tuple[dict, dict]:
    from onnxforge.checks.benchmark import benchmark

    quiet = wait_quiet() if wait else {"waited_s": 0, "loadavg": open("/proc/loadavg").read().split()[:3]}
    with ForeignCpu() as f:
        rep = benchmark([str(p) for p in variants.values()], duration=seconds, warmup=5, threads=2,
                        save_latencies=True, **kw)
    lat = {k: r.latencies_ms for k, r in zip(variants, rep.results)}
    p50 = {k: r.latency.p50 for k, r in zip(variants, rep.results)}
    cond = {**quiet, "foreign_share_during": round(f.share, 3), "rounds": rep.results[0].latency.n,
            "loadavg_after": open("/proc/loadavg").read().split()[:3]}
    return {"lat": lat, "p50": p50}, cond


def transformer_case(label: str, factory: str, d: Path, seconds: float, wait: bool) -> dict:
    from onnxruntime.quantization import QuantType, quantize_dynamic

    import onnxforge
    from onnxforge.core.fileio import load_onnx
    from onnxforge.steps.quantize.attention import padded_mask_inputs
    from onnxforge.steps.simplify.simplify import run_transformer
    from onnxforge.data.generate import generate_inputs
    from onnxforge.data.specs import model_io_specs

    fp32 = d / f"{factory}.onnx"
    onnxforge.convert_torch(f"{MODELS}:{factory}", fp32, inputs=BERT_INPUTS, val_ranges=BERT_RANGES, force=True)
    build = {}
    t0 = time.perf_counter()
    run_transformer(fp32, d / f"{factory}.ort.onnx", model_type="bert")
    build["ort optimizer"] = time.perf_counter() - t0
    t0 = time.perf_counter()
    simp = onnxforge.simplify(fp32, d / f"{factory}.fused.onnx", transformer="bert", force=True)
    build["onnxforge simplify"] = time.perf_counter() - t0
    t0 = time.perf_counter()
    quantize_dynamic(str(fp32), str(d / f"{factory}.plain.onnx"))
    build["plain quantize_dynamic"] = time.perf_counter() - t0
    t0 = time.perf_counter()
    quantize_dynamic(str(d / f"{factory}.ort.onnx"), str(d / f"{factory}.optimum.onnx"), weight_type=QuantType.QUInt8,
                     per_channel=False, reduce_range=False,
                     extra_options={"WeightSymmetric": True, "ActivationSymmetric": False})
    build["optimum-style avx2"] = time.perf_counter() - t0
    t0 = time.perf_counter()
    # a BERT of random weights has no real data: its verdict is on generated inputs, knowingly
    # speed_budget 0: the rows are timed below, side by side; the step's own budget, inconclusive on a busy
    # machine, would leave nothing written
    ours = onnxforge.quantize(fp32, d / f"{factory}.ours.onnx", mode="dynamic", force=True, bench_seconds=3,
                              allow_generated_data=True, speed_budget=0)
    build["onnxforge quantize"] = time.perf_counter() - t0
    t0 = time.perf_counter()
    chain = onnxforge.quantize(d / f"{factory}.fused.onnx", d / f"{factory}.chain.onnx", mode="dynamic", force=True,
                               bench_seconds=3, allow_generated_data=True, speed_budget=0)
    build["simplify then quantize"] = time.perf_counter() - t0
    calib = _token_calibration(d / f"{factory}.calib.npz")
    t0 = time.perf_counter()
    static = onnxforge.quantize(fp32, d / f"{factory}.static.onnx", mode="static", calibration=str(calib), force=True,
                                bench_seconds=3, speed_budget=0)
    build["onnxforge quantize static"] = time.perf_counter() - t0
    t0 = time.perf_counter()
    int4 = onnxforge.quantize_int4(fp32, d / f"{factory}.int4.onnx", force=True, bench_seconds=3, speed_budget=0,
                                   allow_generated_data=True, gather=True)
    build["onnxforge quantize int4"] = time.perf_counter() - t0
    # where ORT's own fusions work: eager attention, TorchScript export, then its optimizer
    ts = d / f"{factory}.ts.onnx"
    onnxforge.convert_torch(f"{MODELS}:{factory}_eager", ts, inputs=BERT_INPUTS, val_ranges=BERT_RANGES, force=True,
                            exporter="torchscript", output_names=["last_hidden_state", "pooler_output"])
    run_transformer(ts, d / f"{factory}.ts.ort.onnx", model_type="bert")
    quantize_dynamic(str(d / f"{factory}.ts.ort.onnx"), str(d / f"{factory}.ts.ort.int8.onnx"),
                     extra_options={"DefaultTensorType": 1})  # ORT's quantizer cannot type its own fused ops' outputs
    variants = {
        "fp32 export": fp32,
        "fp32 + ORT transformer optimizer": d / f"{factory}.ort.onnx",
        "fp32 ORT-fused (eager attn, TorchScript)": d / f"{factory}.ts.ort.onnx",
        "fp32 onnxforge simplify --transformer": d / f"{factory}.fused.onnx",
        "int8 plain quantize_dynamic": d / f"{factory}.plain.onnx",
        "int8 Optimum-style avx2": d / f"{factory}.optimum.onnx",
        "int8 ORT-fused (eager attn) + quantize_dynamic": d / f"{factory}.ts.ort.int8.onnx",
        "int8 onnxforge quantize dynamic": d / f"{factory}.ours.onnx",
        "int8 onnxforge simplify + quantize": d / f"{factory}.chain.onnx",
        "int8 onnxforge quantize static (transformer)": d / f"{factory}.static.onnx",
        "int4 onnxforge quantize int4 --gather": d / f"{factory}.int4.onnx",
    }
    specs, _ = model_io_specs(load_onnx(fp32, load_external_data=False))
    samples = [generate_inputs(specs, seed=s, val_ranges=BERT_RANGES) for s in range(2)]
    samples += padded_mask_inputs(specs, ("attention_mask",), dims={}, seed=3, val_ranges=BERT_RANGES)
    cos = _accuracy(fp32, {k: v for k, v in variants.items() if k.startswith(("int8", "int4"))}, samples)
    times, cond = _time(variants, seconds, wait, val_ranges=BERT_RANGES)
    return {"label": label, "variants": variants, "times": times, "cond": cond, "cos": cos, "build": build,
            "recipe": ours.details.get("recipe"), "chain_recipe": chain.details.get("recipe"),
            "passed": {"onnxforge quantize": ours.passed, "simplify": simp.passed, "chain": chain.passed,
                       "static": static.passed, "int4": int4.passed},
            "static_details": {k: static.details.get(k) for k in ("recipe", "per_channel", "mask_path_fp32")},
            "timings": {"dynamic": ours.timings, "static": static.timings, "int4": int4.timings},
            "simplify_steps": [(e.step, e.status) for e in simp.engines]}


def _token_calibration(path: Path, n: int = 32) -> Path:
    """Tokenised-text stand-in: random ids, every other row padded after a random length."""
    import numpy as np

    rng = np.random.default_rng(0)
    ids = rng.integers(1, 30000, (n, 1, 128))
    mask = np.ones((n, 1, 128), np.int64)
    for i in range(0, n, 2):
        mask[i, 0, rng.integers(8, 128):] = 0
    np.savez(path, input_ids=ids * mask, attention_mask=mask)
    return path


def cnn_case(d: Path, seconds: float, wait: bool) -> dict:
    import numpy as np
    from onnxruntime.quantization import quantize_static

    import onnxforge

    fp32 = d / "cnn.onnx"
    onnxforge.convert_torch(f"{MODELS}:resnet18_like", fp32, inputs=["x:float32:1x3x224x224"], force=True)
    calib = d / "calib.npz"
    arrays = np.random.default_rng(0).random((100, 1, 3, 224, 224), dtype=np.float32)
    np.savez(calib, x=arrays)
    quantize_static(str(fp32), str(d / "cnn.plain.onnx"), _Reader({"x": arrays[i]} for i in range(100)))
    ours = onnxforge.quantize(fp32, d / "cnn.ours.onnx", mode="static", calibration=str(calib), force=True,
                              bench_seconds=2)
    variants = {"fp32 export": fp32, "int8 plain quantize_static": d / "cnn.plain.onnx",
                "int8 onnxforge quantize static": d / "cnn.ours.onnx"}
    times, cond = _time(variants, seconds, wait)
    code = (
        "import sys, json; sys.path.insert(0, %r)\n"
        "import onnxforge\n"
        "from onnxforge.core.system import proc_kib\n"
        "import onnxruntime.quantization\n"
        "base = proc_kib('/proc/self/status', 'VmRSS')\n"
        "onnxforge.quantize(%r, %r, mode='static', calibration=%r, force=True, bench_seconds=0.5)\n"
        "print(json.dumps({'base': base, 'peak': proc_kib('/proc/self/status', 'VmHWM')}))\n"
    ) % (str(ROOT), str(fp32), str(d / "mem.onnx"), str(calib))
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    mem = json.loads(out.stdout.strip().splitlines()[-1]) if out.returncode == 0 else None
    return {"label": "resnet18-like (224)", "variants": variants, "times": times, "cond": cond, "cos": {},
            "mem": mem, "passed": {"onnxforge quantize": ours.passed}, "details": {
                k: ours.details[k] for k in ("cpu_family", "weight_type", "activation_type", "reduce_range")}}


def report(case: dict, plain_key: str | None) -> tuple[list, dict]:
    lat = case["times"]["lat"]
    names = list(case["variants"])
    ref = names[0]
    rows, ratios = [], {}
    for k in names:
        vs_fp32 = paired_ratio(lat[ref], lat[k]) if k != ref else (1.0, 1.0, 1.0)
        vs_plain = paired_ratio(lat[plain_key], lat[k]) if plain_key and k.startswith(("int8", "int4")) else None
        ratios[k] = {"fp32": vs_fp32, "plain": vs_plain}
        cos = case["cos"].get(k)
        drop = case["cos"][plain_key] - cos if cos is not None and plain_key in case["cos"] else None
        rows.append([case["label"], k, _nodes(case["variants"][k]), f"{case['times']['p50'][k]:.2f}",
                     f"{vs_fp32[0]:.2f}x [{vs_fp32[1]:.2f}-{vs_fp32[2]:.2f}]",
                     f"{vs_plain[0]:.3f}x [{vs_plain[1]:.3f}-{vs_plain[2]:.3f}]" if vs_plain else "",
                     f"{cos:.5f}" if cos is not None else "", f"{drop:+.5f}" if drop is not None else ""])
    return rows, ratios


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--seconds", type=float, default=60.0, help="timing per model (all rows together)")
    ap.add_argument("--models", default="base,small,cnn", help="comma list of base, small, cnn")
    ap.add_argument("--no-wait", action="store_true", help="do not wait for a quiet machine")
    ap.add_argument("--json", help="also write every latency and result here")
    a = ap.parse_args()
    which = a.models.split(",")
    cases = []
    with tempfile.TemporaryDirectory() as tmp:
        d = Path(tmp)
        if "small" in which:
            cases.append(transformer_case("bert-small (seq 128)", "bert_small", d, a.seconds, not a.no_wait))
        if "base" in which:
            cases.append(transformer_case("bert-base (seq 128)", "bert_base", d, a.seconds, not a.no_wait))
        if "cnn" in which:
            cases.append(cnn_case(d, a.seconds / 2, not a.no_wait))
        rows, goals, dump = [], [], []
        for c in cases:
            plain = "int8 plain quantize_dynamic" if "int8 plain quantize_dynamic" in c["variants"] else \
                "int8 plain quantize_static"
            r, ratios = report(c, plain)
            rows += r
            dump.append({**{k: v for k, v in c.items() if k not in ("variants", "times")},
                         "p50": c["times"]["p50"], "ratios": ratios,
                         "latencies_ms": {k: list(v) for k, v in c["times"]["lat"].items()}})
            goals += _goals(c, ratios)
    print_table(["model", "variant", "nodes", "p50 ms", "vs fp32 [95%]", "vs plain int8 [95%]", "min cos",
                 "cos drop vs plain"], rows, title="latency, 2 threads, rows interleaved per model (paired ratios)")
    print(machine_line())
    for c in cases:
        print(f"note: {c['label']}: machine during timing: others used {c['cond']['foreign_share_during']:.0%} of the "
              f"CPU, load {' '.join(c['cond']['loadavg'])} before / {' '.join(c['cond']['loadavg_after'])} after, "
              f"{c['cond']['rounds']} rounds, waited {c['cond']['waited_s']} s for quiet")
        if c.get("recipe"):
            cands = ", ".join(f"{x['name']} {x['p50_ms']}" + ("" if x["passed"] else f" (dropped: {x['note'][:80]})")
                              for x in c["recipe"]["candidates"])
            print(f"note: {c['label']}: onnxforge recipe kept {c['recipe']['chosen']} (its own timing, ms: {cands})")
        if c.get("build"):
            print(f"note: {c['label']}: build seconds: " + ", ".join(f"{k} {v:.1f}" for k, v in c["build"].items()))
        if c.get("timings"):
            print(f"note: {c['label']}: onnxforge seconds (work / checks / total): " + ", ".join(
                f"{k} {t.work_s:.1f}/{t.checks_s:.1f}/{t.total_s:.1f}" for k, t in c["timings"].items() if t))
        if c.get("simplify_steps"):
            print(f"note: {c['label']}: simplify steps: {c['simplify_steps']}")
        if c.get("mem"):
            m = c["mem"]
            print(f"note: static calibration, 100 samples of 1x3x224x224 (minmax): peak RSS {m['peak'] / 2**20:.0f} MiB "
                  f"({(m['peak'] - m['base']) / 2**20:.0f} MiB above the process after imports)")
        if c.get("details"):
            print(f"note: {c['label']}: onnxforge static defaults {c['details']}")
    for g in goals:
        print("goal:", g)
    if a.json:
        Path(a.json).write_text(json.dumps(dump, indent=1, default=str))


def _goals(c: dict, ratios: dict) -> list[str]:
    out = []

    def line(text, r, limit, use_low=False):
        v = r[1] if use_low else r[0]
        return f"{'MET' if v >= limit else 'NOT MET'}: {c['label']} {text}: {r[0]:.3f}x [{r[1]:.3f}-{r[2]:.3f}] " \
               f"(goal >= {limit}{' at the low end' if use_low else ''})"

    if "int8 onnxforge quantize dynamic" in ratios:
        limit = 1.2 if "base" in c["label"] else 1.15
        out.append(line("onnxforge int8 vs plain int8", ratios["int8 onnxforge quantize dynamic"]["plain"], limit))
        drop = c["cos"]["int8 plain quantize_dynamic"] - c["cos"]["int8 onnxforge quantize dynamic"]
        out.append(f"{'MET' if drop <= 0.001 else 'NOT MET'}: {c['label']} cosine drop vs plain {drop:+.5f} "
                   "(goal <= 0.001)")
        out.append(line("fuse-then-quantize vs plain int8", ratios["int8 onnxforge simplify + quantize"]["plain"],
                        1.0, use_low=True))
        out.append(line("fused fp32 vs the export", ratios["fp32 onnxforge simplify --transformer"]["fp32"], 1.15))
    key = "int8 onnxforge quantize static (transformer)"
    if key in ratios:
        out.append(line("static int8 (transformer recipe) vs plain int8", ratios[key]["plain"], 1.3))
        out.append(f"{'MET' if c['cos'][key] >= 0.999 else 'NOT MET'}: {c['label']} static int8 min cosine "
                   f"{c['cos'][key]:.5f}, padded inputs included (goal >= 0.999)")
    if "int8 onnxforge quantize static" in ratios:
        out.append(line("static int8 vs fp32", ratios["int8 onnxforge quantize static"]["fp32"], 2.0))
        out.append(line("static int8 vs plain quantize_static", ratios["int8 onnxforge quantize static"]["plain"], 2.0))
    return out


if __name__ == "__main__":
    main()
