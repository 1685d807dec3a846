"""Node count and ORT CPU latency: raw export vs onnxsim alone vs onnxslim alone vs
onnxforge simplify (default, and with --ort basic / --transformer where it applies).

    pip install onnxslim   # benchmark environment only
    python benchmarks/simplify.py [--duration 1.5]

Latency: all variants of one model in one `onnxforge.benchmark` call (rows
interleaved A B C ..., 2 threads), medians and the speed-up against the raw model.
Goal: node count no higher than the better of onnxsim and onnxslim, latency no
worse than the raw export.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
from benchmarks._util import print_table  # noqa: E402


def build_models(d: Path) -> list[tuple[str, Path, dict, str | None]]:
    import onnx

    import onnxforge

    models = str(ROOT / "tests" / "models.py")
    out = []
    for name, fac, specs, extra in [
        ("mlp", "mlp", ["x:float32:batchx8"], {}),
        ("cnn", "cnn", ["x:float32:batchx3x16x16"], {}),
        ("transformer encoder", "encoder", ["x:float32:batchxseqx16"], {}),
        ("bert (tiny)", "tiny_bert", ["input_ids:int64:batchxseq", "attention_mask:int64:batchxseq"],
         {"val_ranges": {"input_ids": (0, 99), "attention_mask": (1, 1)}}),
    ]:
        p = d / f"{fac}.onnx"
        onnxforge.convert_torch(f"{models}:{fac}", p, inputs=specs, **extra)
        out.append((name, p, {"batch": 4, "seq": 16}, "bert" if fac == "tiny_bert" else None))
    light = Path(onnx.__file__).parent / "backend" / "test" / "data" / "light"
    for n in ("squeezenet", "inception_v1", "resnet50"):
        out.append((f"{n} (onnx light, opset 9)", light / f"light_{n}.onnx", {}, None))
    return out


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--duration", type=float, default=1.5)
    a = ap.parse_args()

    import onnx
    import onnxsim

    import onnxforge
    from onnxforge.checks.benchmark import benchmark

    try:
        import onnxslim
    except ImportError:
        onnxslim = None
        print("onnxslim is not installed (pip install onnxslim): its column is empty\n")
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        d = Path(tmp)
        for name, path, dims, ttype in build_models(d):
            variants = {"raw": path}
            m = onnx.load(str(path))
            s, _ = onnxsim.simplify(m, check_n=0)
            onnx.save(s, str(d / "onnxsim.onnx"))
            variants["onnxsim"] = d / "onnxsim.onnx"
            if onnxslim:
                onnx.save(onnxslim.slim(str(path)), str(d / "onnxslim.onnx"))
                variants["onnxslim"] = d / "onnxslim.onnx"
            r = onnxforge.simplify(path, d / "ours.onnx", force=True)
            variants["onnxforge"] = d / "ours.onnx"
            ok = {"onnxforge": r.passed}
            r2 = onnxforge.simplify(path, d / "ours_ort.onnx", force=True, ort_level="basic")
            variants["onnxforge --ort basic"] = d / "ours_ort.onnx"
            ok["onnxforge --ort basic"] = r2.passed
            if ttype:
                r3 = onnxforge.simplify(path, d / "ours_tr.onnx", force=True, transformer=ttype)
                variants[f"onnxforge --transformer {ttype}"] = d / "ours_tr.onnx"
                ok[f"onnxforge --transformer {ttype}"] = r3.passed
            rep = benchmark([str(p) for p in variants.values()], dims=dims, duration=a.duration * len(variants),
                            warmup=5, threads=2)
            nodes = {k: len(onnx.load(str(p), load_external_data=False).graph.node) for k, p in variants.items()}
            best_tool = min(nodes["onnxsim"], nodes.get("onnxslim", nodes["onnxsim"]))
            speed = {c.model: c for c in rep.comparisons}
            for (k, p), res in zip(variants.items(), rep.results):
                c = speed.get(res.model)
                rows.append([name, k, nodes[k], f"{res.latency.p50:.3f}", f"{res.latency.ci95[0]:.3f}-{res.latency.ci95[1]:.3f}",
                             f"{c.speedup:.2f}x" if c else "1.00x",
                             ("yes" if nodes[k] <= best_tool else f"NO ({best_tool})") if k.startswith("onnxforge") else "",
                             ("" if k not in ok else "pass" if ok[k] else "FAIL")])
    print_table(["model", "variant", "nodes", "p50 ms", "p50 95% CI", "vs raw", "nodes <= best tool", "check"], rows,
                title="simplify: nodes and ORT CPU latency (2 threads, interleaved per model)")


if __name__ == "__main__":
    main()
