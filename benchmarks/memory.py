"""Peak memory and wall time of each step on BERT, against plain ORT and plain torch.onnx.

    python benchmarks/memory.py [--size base|tiny] [--workdir DIR] [--keep] [--where]
                                [--steps convert,simplify,quantize,ort_quantize,torch_export]

BertModel from ``BertConfig()`` (``base``: 110M parameters, 418 MiB of fp32 weights;
``tiny``: 4 layers of 256 for a quick run), random weights with a fixed seed, saved as a
Hugging Face folder; nothing is downloaded. Each step runs in a fresh process:

  convert       onnxforge convert torch FOLDER (dynamo export + its parity checks)
  simplify      onnxforge simplify
  quantize      onnxforge quantize dynamic --allow-generated-data --speed-budget 0
  quantize_static  onnxforge quantize static --calibration random --samples 8 (the transformer recipe)
  int4          onnxforge quantize int4
  validate      onnxforge validate of the simplified model against the dynamic int8
  benchmark     onnxforge benchmark of the simplified model, 2 s
  ort_quantize  plain onnxruntime.quantization.quantize_dynamic on the simplified model
  torch_export  plain torch.onnx.export(dynamo=True) of the same module

Peak RSS is the process's VmHWM (/proc/self/status) at its end; the table gives it
against the weight bytes (goal, issue 27: every onnxforge step <= 2.5x). ``--where``
samples RSS in a thread every 20 ms and, each time it rises 32 MiB past its highest,
records the main thread's innermost onnxforge frames: what the process was doing when its
memory peaked (the sampling itself can lift the peak a little: take the table's figures
from a run without it). Wall times on a shared machine are rough; memory is not.
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import tempfile
import textwrap
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
from benchmarks._util import print_table  # noqa: E402

SIZES = {  # hidden, layers, heads, intermediate
    "base": None,  # BertConfig()'s own: 768, 12, 12, 3072
    "tiny": (256, 4, 4, 1024),
}
STEPS = ("convert", "simplify", "quantize", "quantize_static", "int4", "validate", "benchmark", "ort_quantize",
         "torch_export")

# Runs CODE in this fresh process; reports its wall time and peak RSS and, with WHERE,
# the stacks at each new RSS high.
RUNNER = textwrap.dedent("""
    import json, os, sys, threading, time, traceback
    sys.path.insert(0, {root!r})

    def rss():
        return next(int(l.split()[1]) * 1024 for l in open('/proc/self/status') if l.startswith('VmRSS'))

    highs, main_id = [], threading.main_thread().ident
    def sample(stop):
        top = 0
        while not stop.wait(0.02):
            r = rss()
            if r > top + (32 << 20):
                top = r
                frame = sys._current_frames().get(main_id)
                stack = [f"{{os.path.basename(f.filename)}}:{{f.lineno}} {{f.name}}"
                         for f in traceback.extract_stack(frame) if 'onnxforge' in f.filename
                         or 'benchmarks' in f.filename][-4:]
                del frame  # a frame held here keeps its locals (a model) alive after it returns
                highs.append([round(r / 2**20), stack])
    stop = threading.Event()
    if {where!r}:
        threading.Thread(target=sample, args=(stop,), daemon=True).start()
    t0 = time.perf_counter()
    code = 0
    {body}
    wall = time.perf_counter() - t0
    stop.set()
    peak = next(int(l.split()[1]) * 1024 for l in open('/proc/self/status') if l.startswith('VmHWM'))
    json.dump({{"code": code, "wall": wall, "peak": peak, "highs": highs}}, open({out!r}, "w"))
""")


def bert(size: str, folder: Path) -> int:
    """Writes the model's folder; returns its weight bytes."""
    import torch
    from transformers import BertConfig, BertModel

    torch.manual_seed(0)
    dims = SIZES[size]
    cfg = BertConfig() if dims is None else BertConfig(hidden_size=dims[0], num_hidden_layers=dims[1],
                                                       num_attention_heads=dims[2], intermediate_size=dims[3])
    model = BertModel(cfg).eval()
    with torch.no_grad():  # BertModel's init leaves biases at 0, which no trained model has: the graph
        for name, p in model.named_parameters():  # simplify writes (and the attention fusions) would differ
            if name.endswith("bias"):
                p.normal_(0.0, 0.02)
    model.save_pretrained(folder)
    return sum(p.numel() * p.element_size() for p in model.parameters())


def bodies(work: Path) -> dict[str, str]:
    folder, fp32, simple, int8 = work / "bert", work / "bert.onnx", work / "bert.simple.onnx", work / "bert.int8.onnx"

    def cli(*args) -> str:
        return f"from onnxforge.cli.app import main; code = main({[str(a) for a in args]!r})"

    return {
        "convert": cli("convert", "torch", folder, "-o", fp32, "--force", "--json"),
        "simplify": cli("simplify", fp32, "-o", simple, "--force", "--json"),
        "quantize": cli("quantize", "dynamic", simple, "-o", int8, "--allow-generated-data", "--speed-budget", "0",
                        "--force", "--json"),
        "quantize_static": cli("quantize", "static", simple, "-o", work / "bert.static.onnx", "--calibration",
                               "random", "--samples", "8", "--allow-generated-data", "--speed-budget", "0",
                               "--force", "--json"),
        "int4": cli("quantize", "int4", simple, "-o", work / "bert.int4.onnx", "--allow-generated-data",
                    "--speed-budget", "0", "--force", "--json"),
        "validate": cli("validate", simple, int8, "--json"),
        "benchmark": cli("benchmark", simple, "--duration", "2", "--json"),
        "ort_quantize": (f"from onnxruntime.quantization import quantize_dynamic, QuantType; "
                         f"quantize_dynamic({str(simple)!r}, {str(work / 'plain.int8.onnx')!r}, "
                         f"weight_type=QuantType.QInt8)"),
        "torch_export": (f"import torch; from transformers import BertModel; "
                         f"m = BertModel.from_pretrained({str(folder)!r}).eval(); "
                         f"ids = torch.ones(1, 16, dtype=torch.int64); "
                         f"torch.onnx.export(m, (ids,), {str(work / 'plain.onnx')!r}, dynamo=True, "
                         f"external_data=True, verbose=False)"),
    }


def run_step(name: str, body: str, work: Path, where: bool) -> dict:
    out = work / f".{name}.metrics.json"
    code = RUNNER.format(root=str(ROOT), body=body, out=str(out), where=where)
    t0 = time.perf_counter()
    p = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=work)
    res = json.loads(out.read_text()) if out.exists() else {"code": p.returncode, "wall": time.perf_counter() - t0,
                                                            "peak": 0, "highs": []}
    res["stderr_tail"] = p.stderr.strip().splitlines()[-3:]
    if p.returncode and not res["code"]:
        res["code"] = p.returncode
    return res


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--size", default="base", choices=sorted(SIZES))
    ap.add_argument("--workdir", help="where the models go (default: a temp folder, removed unless --keep)")
    ap.add_argument("--keep", action="store_true")
    ap.add_argument("--where", action="store_true", help="print what each step was doing at its RSS highs")
    ap.add_argument("--steps", default=",".join(STEPS))
    a = ap.parse_args()
    work = Path(a.workdir or tempfile.mkdtemp(prefix="onnxforge-memory-"))
    work.mkdir(parents=True, exist_ok=True)
    weights = bert(a.size, work / "bert")
    results = {}
    for name in a.steps.split(","):
        print(f"[memory] {name} ...", file=sys.stderr, flush=True)
        results[name] = r = run_step(name, bodies(work)[name], work, a.where)
        print(f"[memory] {name}: exit {r['code']}, {r['wall']:.1f} s, peak {r['peak'] / 2**30:.2f} GiB",
              file=sys.stderr, flush=True)
        if a.where:
            for mib, stack in r["highs"]:
                print(f"    {mib:6d} MiB  {' > '.join(stack)}", file=sys.stderr)
        if r["code"] not in (0, 1):
            print(f"[memory] {name} failed: {r['stderr_tail']}", file=sys.stderr)
    rows = [[name, r["code"], f"{r['peak'] / 2**30:.2f}", f"{r['peak'] / weights:.2f}x", f"{r['wall']:.1f}"]
            for name, r in results.items()]
    print_table(["step", "exit", "peak RSS GiB", "x weights", "wall s"], rows,
                title=f"BERT {a.size} ({weights / 2**20:.0f} MiB of fp32 weights), each step a fresh process")
    (work / "memory.json").write_text(json.dumps({"size": a.size, "weight_bytes": weights, "steps": results},
                                                 indent=1))
    if not a.keep and not a.workdir:
        shutil.rmtree(work, ignore_errors=True)
    else:
        print(f"models kept in {work}")


if __name__ == "__main__":
    main()
