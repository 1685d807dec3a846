"""Every int8 MatMul form ONNX Runtime offers, on BERT-base's shapes, timed in ONE run.

    python benchmarks/int8_kernels.py [--rounds 15] [--threads 2] [--no-wait]

Why this exists (issue 17): on BERT, onnxforge's int8 is 1.01-1.09x plain
`quantize_dynamic`, the goal 1.2x. The fused attention is the only change the recipe
makes that plain int8 lacks; the other lever would be a faster int8 kernel. This table
says whether one exists on this CPU: a chain of four MatMuls [1, 128, 768] x [768, 3072]
(then x [3072, 768], BERT-base's feed-forward), fp32 and each quantized form, rows
interleaved per round, ratios as medians of per-round ratios with bootstrap 95%
intervals. Accuracy: cosine of the chain's output to fp32's.

Rows: plain `quantize_dynamic` (s8 weights, per tensor: ORT's defaults), u8 weights,
reduce_range, per-channel, and `MatMulNBits` (8 and 4 bits, blocks of 32 and 128,
accuracy_level 4: int8 compute), ORT's weight-only path for LLMs.
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
from benchmarks._util import ForeignCpu, machine_line, paired_ratio, print_table, wait_quiet  # noqa: E402

K, N, SEQ = 768, 3072, 128


def _chain(path: Path) -> None:
    import numpy as np
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(0)
    w = (rng.standard_normal((K, N)) * 0.05).astype(np.float32)
    nodes, inits, x = [], [], "x"
    for i in range(4):
        inits.append(numpy_helper.from_array(w if i % 2 == 0 else np.ascontiguousarray(w.T), f"w{i}"))
        nodes.append(helper.make_node("MatMul", [x, f"w{i}"], [f"y{i}"]))
        x = f"y{i}"
    graph = helper.make_graph(nodes, "chain", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, SEQ, K])],
                              [helper.make_tensor_value_info(x, TensorProto.FLOAT, None)], inits)
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), str(path))


def _variants(d: Path) -> dict[str, Path]:
    import onnx
    from onnxruntime.quantization import QuantType, quantize_dynamic
    from onnxruntime.quantization.matmul_nbits_quantizer import DefaultWeightOnlyQuantConfig, MatMulNBitsQuantizer

    fp32 = d / "fp32.onnx"
    _chain(fp32)
    out = {"fp32": fp32}
    for name, kw in (("int8 plain (s8, per tensor)", {"weight_type": QuantType.QInt8}),
                     ("int8 u8 weights", {"weight_type": QuantType.QUInt8}),
                     ("int8 reduce_range", {"weight_type": QuantType.QInt8, "reduce_range": True}),
                     ("int8 per-channel", {"weight_type": QuantType.QInt8, "per_channel": True})):
        out[name] = d / f"{len(out)}.onnx"
        quantize_dynamic(str(fp32), str(out[name]), **kw)
    for bits in (8, 4):
        for block in (32, 128):
            cfg = DefaultWeightOnlyQuantConfig(block_size=block, is_symmetric=True, accuracy_level=4, bits=bits)
            q = MatMulNBitsQuantizer(onnx.load(str(fp32)), algo_config=cfg)
            q.process()
            name = f"MatMulNBits {bits}-bit, block {block}"
            out[name] = d / f"{len(out)}.onnx"
            onnx.save(q.model.model, str(out[name]))
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rounds", type=int, default=15)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--no-wait", action="store_true")
    a = ap.parse_args()
    import logging

    import numpy as np
    import onnxruntime as ort

    logging.disable(logging.WARNING)  # ORT asks for pre-processing; the NBits quantizer logs every node
    with tempfile.TemporaryDirectory() as tmp:
        paths = _variants(Path(tmp))
        so = ort.SessionOptions()
        so.intra_op_num_threads = a.threads
        sessions = {k: ort.InferenceSession(str(p), so, providers=["CPUExecutionProvider"]) for k, p in paths.items()}
        x = np.random.default_rng(1).standard_normal((1, SEQ, K)).astype(np.float32)
        ref = sessions["fp32"].run(None, {"x": x})[0]
        if not a.no_wait:
            wait_quiet()
        times: dict[str, list[float]] = {k: [] for k in sessions}
        with ForeignCpu() as foreign:
            for _ in range(a.rounds):
                for k, s in sessions.items():
                    t = time.perf_counter()
                    for _ in range(5):
                        s.run(None, {"x": x})
                    times[k].append((time.perf_counter() - t) / 5 * 1e3)
    rows = []
    plain = "int8 plain (s8, per tensor)"
    for k, s in sessions.items():
        y = s.run(None, {"x": x})[0]
        cos = float((y * ref).sum() / np.linalg.norm(y) / np.linalg.norm(ref))
        vf, lf, hf = paired_ratio(times["fp32"], times[k])
        vp, lp, hp = paired_ratio(times[plain], times[k])
        rows.append([k, f"{statistics.median(times[k]):.2f}", f"{vf:.2f}x [{lf:.2f}-{hf:.2f}]",
                     f"{vp:.2f}x [{lp:.2f}-{hp:.2f}]", f"{cos:.6f}"])
    print_table(["variant", "median ms", "vs fp32", "vs plain int8", "cosine"], rows,
                title=f"4 MatMuls [1,{SEQ},{K}]x[{K},{N}] / [{N},{K}], {a.threads} threads, {a.rounds} rounds "
                      f"(ORT {ort.__version__}; other processes used {foreign.share:.0%} of the CPU)")
    print(machine_line())


if __name__ == "__main__":
    main()
