"""BERT-base (from its config, random weights, seeded) saved as a Hugging Face folder,
exported by `onnxforge convert` (dynamo): nodes, padded-mask parity and fp32 ORT CPU
speed of the raw export, `onnxforge simplify --transformer bert`, and Olive's
`auto-opt --precision fp32 --use_dynamo_exporter` (when `olive` is installed; skipped
with a message otherwise).

    python benchmarks/simplify_bert.py [--seq 128] [--duration 5] [--no-wait] [--int8]

--int8 adds, in the same loop: plain ORT `quantize_dynamic` of the raw export,
`onnxforge quantize dynamic` of it (the auto recipe) and Olive's `auto-opt --precision
int8` (its transformer optimizer, then ORT's dynamic quantization); goal (#27): onnxforge's
int8 never behind Olive's best (>= 1.0x, paired per round).

Nodes: in the file, and as ONNX Runtime runs it (ORT_ENABLE_ALL's fusions applied,
the count issue #27 compared). Parity: every variant against the raw export on a
right-padded and a holed attention_mask (cosine, max abs). Speed: one
`onnxforge.benchmark` call, rows interleaved (batch 1, 2 threads), medians with the
speed-up over the raw export and its 95% interval; it waits for a quiet machine first
and prints the contention the timing saw. Goals (#27): nodes <= Olive's, fp32 speed
>= Olive's.
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
from benchmarks._util import machine_line, paired_ratio, print_table, wait_quiet  # noqa: E402

INPUTS = ("input_ids", "attention_mask", "token_type_ids")  # the same names in both exports; dims differ


def build(d: Path, int8: bool = False) -> dict[str, Path]:
    sys.path.insert(0, str(ROOT / "benchmarks"))
    from _quant_models import bert_base

    import onnxforge

    bert_base().save_pretrained(d / "hf")
    raw = d / "raw.onnx"
    assert onnxforge.convert_torch(str(d / "hf"), raw, exporter="dynamo").passed
    out = {"raw export": raw}
    r = onnxforge.simplify(raw, d / "simplified.onnx", transformer="bert")
    print(f"onnxforge simplify: {'passed' if r.passed else 'FAILED'} in {r.seconds:.0f} s")
    out["onnxforge simplify --transformer bert"] = d / "simplified.onnx"
    olive = _olive(d)
    if olive:
        out["olive auto-opt fp32 (dynamo)"] = olive
    if int8:
        from onnxruntime.quantization import quantize_dynamic

        quantize_dynamic(str(raw), str(d / "plain.onnx"))
        out["int8 plain quantize_dynamic"] = d / "plain.onnx"
        # random weights, no data of its own: judged on generated inputs, knowingly
        r = onnxforge.quantize(raw, d / "ours.onnx", mode="dynamic", allow_generated_data=True, bench_seconds=2)
        print(f"onnxforge quantize dynamic: {'passed' if r.passed else 'FAILED'}, recipe "
              f"{r.details.get('recipe', {}).get('chosen')}")
        out["int8 onnxforge quantize dynamic"] = d / "ours.onnx"
        olive = _olive(d, "int8")
        if olive:
            out["olive auto-opt int8 (dynamo)"] = olive
    return out


def _olive(d: Path, precision: str = "fp32") -> Path | None:
    exe = shutil.which("olive")
    if exe is None:
        print("olive is not installed (pip install olive-ai): its row is left out")
        return None
    env = dict(os.environ, HF_HUB_OFFLINE="1")
    p = subprocess.run([exe, "auto-opt", "-m", str(d / "hf"), "-t", "feature-extraction", "--device", "cpu",
                        "--provider", "CPUExecutionProvider", "--precision", precision, "--use_dynamo_exporter",
                        "-o", str(d / f"olive-{precision}"), "--disable_telemetry"], capture_output=True, text=True,
                       env=env, cwd=d)
    model = d / f"olive-{precision}" / "model.onnx"
    if p.returncode or not model.exists():
        print(f"olive auto-opt failed (exit {p.returncode}): {(p.stderr or p.stdout).strip()[-300:]}")
        return None
    return model


def ort_nodes(path: Path, tmp: Path) -> int:
    """Nodes of the graph ONNX Runtime runs (ORT_ENABLE_ALL, CPU)."""
    import onnx
    import onnxruntime as ort

    so = ort.SessionOptions()
    so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    so.optimized_model_filepath = str(tmp / "ort_view.onnx")
    so.add_session_config_entry("session.optimized_model_external_initializers_file_name", "ort_view.data")
    so.log_severity_level = 3
    ort.InferenceSession(str(path), so, providers=["CPUExecutionProvider"])
    n = len(onnx.load(so.optimized_model_filepath, load_external_data=False).graph.node)
    for f in ("ort_view.onnx", "ort_view.data"):
        (tmp / f).unlink(missing_ok=True)
    return n


def padded_parity(ref: Path, cand: Path, seq: int) -> tuple[float, float]:
    """(min cosine, max abs) over both outputs on right-padded and holed masks."""
    import numpy as np
    import onnxruntime as ort

    rng = np.random.default_rng(0)
    right = np.ones((3, seq), np.int64)
    right[1, seq // 3:] = 0
    right[2, 5:] = 0
    holes = (rng.random((3, seq)) < 0.7).astype(np.int64)
    holes[:, 0] = 1
    ids = rng.integers(0, 30000, (3, seq))
    tt = (np.arange(seq) >= seq // 2).astype(np.int64)[None].repeat(3, 0)
    sessions = [ort.InferenceSession(str(p), providers=["CPUExecutionProvider"]) for p in (ref, cand)]
    cos, mx = 1.0, 0.0
    for mask in (right, holes):
        feeds = {"input_ids": ids, "attention_mask": mask, "token_type_ids": tt}
        a, b = (s.run(None, {i.name: feeds[i.name] for i in s.get_inputs()}) for s in sessions)
        for x, y in zip(a, b):
            x, y = x.astype(np.float64).ravel(), y.astype(np.float64).ravel()
            cos = min(cos, float(x @ y / np.linalg.norm(x) / np.linalg.norm(y)))
            mx = max(mx, float(np.abs(x - y).max()))
    return cos, mx


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--seq", type=int, default=128)
    ap.add_argument("--duration", type=float, default=5.0, help="timing seconds per row")
    ap.add_argument("--no-wait", action="store_true", help="time at once, quiet machine or not")
    ap.add_argument("--int8", action="store_true", help="add the int8 rows: plain, onnxforge, Olive")
    a = ap.parse_args()

    import onnx

    from onnxforge.checks.benchmark import benchmark
    from onnxforge.core.stats import contention_line

    with tempfile.TemporaryDirectory() as tmp:
        d = Path(tmp)
        variants = build(d, a.int8)
        raw = variants["raw export"]
        facts = {}
        for name, p in variants.items():
            m = onnx.load(str(p), load_external_data=False)
            facts[name] = (len(m.graph.node), ort_nodes(p, d), *padded_parity(raw, p, a.seq))
        quiet = None if a.no_wait else wait_quiet()
        rep = benchmark([str(p) for p in variants.values()], shapes={n: (1, a.seq) for n in INPUTS},
                        threads=2, warmup=5, duration=a.duration * len(variants), save_latencies=True,
                        val_ranges={"input_ids": (0, 1000), "attention_mask": (1, 1), "token_type_ids": (0, 1)})
        by_model = {c.model: c for c in rep.comparisons}
        rows = []
        for (name, p), res in zip(variants.items(), rep.results):
            c = by_model.get(res.model)
            nodes, in_ort, cos, mx = facts[name]
            rows.append([name, nodes, in_ort, f"{cos:.6f}", f"{mx:.2g}", f"{res.latency.p50:.2f}",
                         f"{c.speedup:.2f}x ({c.ci95[0]:.2f}-{c.ci95[1]:.2f})" if c else "1.00x"])
        print_table(["variant", "nodes", "nodes in ORT", "padded cosine", "max abs", "p50 ms", "vs raw (95% CI)"], rows,
                    title=f"BERT-base, batch 1, seq {a.seq}, 2 threads, rows interleaved")
        print(machine_line())
        lat = {name: r.latencies_ms for name, r in zip(variants, rep.results)}
        for ours, olive, what in (("onnxforge simplify --transformer bert", "olive auto-opt fp32 (dynamo)", "fp32"),
                                  ("int8 onnxforge quantize dynamic", "olive auto-opt int8 (dynamo)", "int8")):
            if olive in lat and ours in lat:  # the goals' own ratios, paired per round
                m, lo, hi = paired_ratio(lat[olive], lat[ours])
                print(f"onnxforge vs Olive {what}: {m:.3f}x ({lo:.3f}-{hi:.3f}) (goal >= 1.0x)")
        if "int8 plain quantize_dynamic" in lat:
            m, lo, hi = paired_ratio(lat["int8 plain quantize_dynamic"], lat["int8 onnxforge quantize dynamic"])
            print(f"onnxforge int8 vs plain quantize_dynamic: {m:.3f}x ({lo:.3f}-{hi:.3f}) (goal >= 1.3x)")
        if rep.contention:
            print("timing:", contention_line(rep.contention))
        if quiet:
            print(f"waited {quiet['waited_s']} s for a quiet machine; load average then {' '.join(quiet['loadavg'])}")


if __name__ == "__main__":
    main()
