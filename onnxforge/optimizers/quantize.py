"""int8 quantization on ONNX Runtime: dynamic and static (with calibration), with
parity, speed and size measured against the fp32 model, budgets, and an
accuracy-aware fallback.

Defaults by CPU (after ORT's quantization guide):
- x86 with AVX-512 VNNI or AVX-VNNI: activations uint8, weights int8, no
  reduce_range (VNNI's u8*s8 dot products do not saturate);
- x86 with AVX2/AVX-512 but no VNNI: the same types with reduce_range (7-bit weights),
  because VPMADDUBSW saturates on u8*s8 pairs;
- ARM: int8 activations and weights (S8S8).
Dynamic quantization always has uint8 activations (ORT computes their range per
call). Static uses the QDQ format by default (portable; ORT fuses it on the CPU).

The check: by default every output's cosine similarity to the fp32 output must
be >= 0.99 (quantization noise leaves cosines above 0.999; a broken model falls
far below); ``--atol/--rtol`` add an elementwise check; ``--max-mismatch F`` requires
top-1 agreement >= 1-F on score outputs (labels compared as labels).
A model the runtime cannot load is never emitted: an op type without an int8 kernel
(ConvInteger with int8 weights, say) is left in fp32, and the report says so.
"""

from __future__ import annotations

import logging
import math
import re
import time
from pathlib import Path
from typing import Mapping, Sequence

from onnxforge.errors import BadInputError, ConversionError, UsageError, first_line
from onnxforge.types import ParityReport, StepResult, Tolerance

log = logging.getLogger("onnxforge")

METHODS = ("minmax", "entropy", "percentile", "distribution")
HISTOGRAM_METHODS = ("entropy", "percentile", "distribution")
QUANTIZED_OPS = {"QuantizeLinear", "DequantizeLinear", "DynamicQuantizeLinear", "MatMulInteger", "ConvInteger",
                 "QLinearConv", "QLinearMatMul", "QGemm", "QAttention", "DynamicQuantizeMatMul", "MatMulNBits"}
DEFAULT_MIN_COSINE = 0.99
LOOSE = Tolerance(atol=math.inf, rtol=math.inf)
# ORT op type produced -> the fp32 op type to leave unquantized when it has no kernel
_INTEGER_TO_FLOAT = {"ConvInteger": "Conv", "MatMulInteger": "MatMul", "QLinearConv": "Conv",
                     "QLinearMatMul": "MatMul", "QGemm": "Gemm", "QAttention": "Attention",
                     "DynamicQuantizeLSTM": "LSTM", "QLinearAdd": "Add", "QLinearMul": "Mul"}


def isa_defaults() -> dict:
    from onnxforge.runtime import cpu_info

    info = cpu_info()
    isa = info["isa"]
    arm = info["machine"].lower() in ("aarch64", "arm64") or isa.get("neon")
    if arm:
        return {"family": "arm", "activation_type": "int8", "weight_type": "int8", "reduce_range": False}
    vnni = isa.get("avx512_vnni") or isa.get("avx_vnni")
    family = "x86-vnni" if vnni else "x86-avx512" if isa.get("avx512f") else "x86-avx2" if isa.get("avx2") else "x86"
    return {"family": family, "activation_type": "uint8", "weight_type": "int8", "reduce_range": not vnni}


def _qtype(name: str):
    from onnxruntime.quantization import QuantType

    table = {"int8": QuantType.QInt8, "uint8": QuantType.QUInt8}
    if name not in table:
        raise UsageError(f"unknown quantization type {name!r}", hint="use int8 or uint8")
    return table[name]


def is_quantized(model) -> bool:
    ops = {n.op_type for n in model.graph.node}
    return bool(ops & QUANTIZED_OPS)


def _preprocess(src: Path, dst: Path, notes: list) -> Path:
    """ORT's recommended pre-processing (symbolic shape inference, optimization);
    on failure continue with the original model and say so."""
    from onnxruntime.quantization.shape_inference import quant_pre_process

    from onnxforge.steps import quiet_third_party

    try:
        with quiet_third_party():
            quant_pre_process(str(src), str(dst), save_as_external_data=True, all_tensors_to_one_file=True,
                              external_data_location=dst.name + ".data")
        return dst
    except Exception as exc:
        notes.append(f"pre-processing (quant_pre_process) failed, quantized without it: {type(exc).__name__}: "
                     f"{first_line(exc, 200)}")
        return src


def _initializers_not_inputs(src: Path, dst: Path, notes: list) -> Path:
    """Old exporters (IR < 4) list initializers as graph inputs too; ORT's calibration
    then asks for them as feeds. Drop them from the inputs in a copy."""
    from onnxforge.fileio import load_onnx
    from onnxforge.steps import save_scratch

    m = load_onnx(src)
    inits = {t.name for t in m.graph.initializer}
    keep = [i for i in m.graph.input if i.name not in inits]
    if len(keep) == len(m.graph.input):
        return src
    n = len(m.graph.input) - len(keep)
    del m.graph.input[:]
    m.graph.input.extend(keep)
    if m.ir_version < 4:
        m.ir_version = 4  # IR 4 is where initializers stopped being inputs
    save_scratch(m, dst)
    notes.append(f"{n} initializer(s) were also listed as graph inputs (old exporter); removed from the inputs")
    return dst


def _load_check(path: Path) -> str | None:
    """None when ORT loads the model; else the fp32 op type that has no kernel."""
    import onnxruntime as ort

    try:
        ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
        return None
    except Exception as exc:
        text = str(exc)
        m = re.search(r"implementation for (\w+)\(", text)
        if m:
            return _INTEGER_TO_FLOAT.get(m.group(1), m.group(1))
        raise ConversionError(f"the quantized model does not load in onnxruntime ({first_line(exc)})",
                              hint="exclude the failing op with --exclude-op") from None


def quantize(
    model: str | Path,
    output: str | Path,
    *,
    mode: str = "dynamic",
    calibration: str | None = None,
    method: str = "minmax",
    percentile: float = 99.999,
    fmt: str = "qdq",
    per_channel: bool = False,
    reduce_range: bool | None = None,
    weight_type: str | None = None,
    activation_type: str | None = None,
    op_types: Sequence[str] | None = None,
    exclude_nodes: Sequence[str] = (),
    exclude_ops: Sequence[str] = (),
    samples: int | None = None,
    max_memory: int | None = None,
    preprocess: bool = True,
    inputs: str | None = None,
    check_samples: int = 4,
    seed: int = 0,
    dims: Mapping[str, int] | None = None,
    tolerance: Tolerance | None = None,
    min_cosine: float | None = DEFAULT_MIN_COSINE,
    max_mismatch: float | None = None,
    min_speedup: float | None = None,
    fallback: bool = False,
    max_trials: int = 4,
    bench_seconds: float = 2.0,
    keep_failed: bool = False,
    force: bool = False,
    external_data: bool | None = None,
    progress: bool = False,
) -> StepResult:
    """Quantize to int8 (dynamic or static), then check parity, speed and size against
    the fp32 model; see the module docstring."""
    from onnxforge.fileio import check_output_path, external_data_files, load_onnx, scratch_dir
    from onnxforge.specs import model_io_specs
    from onnxforge.steps import finish, lineage_of, summary

    if mode not in ("dynamic", "static"):
        raise UsageError(f"unknown mode {mode!r}")
    if method not in METHODS:
        raise UsageError(f"unknown --method {method!r}", hint="use " + ", ".join(METHODS))
    if fmt not in ("qdq", "qoperator"):
        raise UsageError(f"unknown --format {fmt!r}", hint="use qdq or qoperator")
    if mode == "static" and not calibration:
        raise UsageError("static quantization needs calibration data",
                         hint="pass --calibration data.npz (or --calibration random for a smoke test)")
    src = Path(model)
    m = load_onnx(src, load_external_data=False)
    if is_quantized(m):
        ops = sorted({n.op_type for n in m.graph.node} & QUANTIZED_OPS)
        raise BadInputError(f"{src} is already quantized (it has {', '.join(ops)})",
                            hint="quantize the fp32 model")
    specs, _ = model_io_specs(m)
    has_ext = bool(external_data_files(m))
    del m
    target = check_output_path(output, force=force, inputs=(src,))
    chosen = isa_defaults()
    w_type = weight_type or chosen["weight_type"]
    a_type = activation_type or chosen["activation_type"]
    rr = chosen["reduce_range"] if reduce_range is None else reduce_range
    notes: list[str] = []
    details: dict = {"mode": mode, "cpu_family": chosen["family"], "weight_type": w_type,
                     "activation_type": a_type if mode == "static" else "uint8 (dynamic)", "reduce_range": rr,
                     "per_channel": per_channel}
    if mode == "static":
        details.update(format=fmt, method=method)
        if str(calibration) == "random":
            notes.append("calibration on random data: a smoke test, not a meaningful calibration")
    log.info("quantize %s: weights %s, activations %s, reduce_range %s (%s)", mode, w_type,
             details["activation_type"], rr, chosen["family"])
    tol = tolerance or LOOSE
    task = "classification" if max_mismatch is not None else None
    min_agreement = 1 - max_mismatch if max_mismatch is not None else None
    before = summary(src)

    with scratch_dir(target) as tmp:
        base = _initializers_not_inputs(src, tmp / "norm.onnx", notes)
        base = _preprocess(base, tmp / "pre.onnx", notes) if preprocess else base
        if mode == "static":
            _check_calibration_memory(base, calibration, specs, method, samples, seed, dims, max_memory, notes)
        excluded = list(exclude_nodes)
        excluded_ops = list(exclude_ops)
        trials = []
        ranking: list[str] | None = None
        best = None
        for trial in range(max_trials if fallback else 1):
            qpath = tmp / f"q{trial}.onnx"
            t0 = time.perf_counter()
            while True:
                _run_ort_quantizer(mode, base, qpath, calibration=calibration, specs=specs, method=method,
                                   percentile=percentile, fmt=fmt, per_channel=per_channel, reduce_range=rr,
                                   w_type=w_type, a_type=a_type, op_types=op_types, excluded=excluded,
                                   excluded_ops=excluded_ops, samples=samples, seed=seed, dims=dims,
                                   external=has_ext, progress=progress)
                missing = _load_check(qpath)
                if missing is None:
                    break
                if missing in excluded_ops:
                    raise ConversionError(f"the quantized model still has no kernel for {missing}")
                excluded_ops.append(missing)
                notes.append(f"onnxruntime has no int8 kernel for quantized {missing} here "
                             f"(weights {w_type}); left {missing} in fp32")
            seconds = time.perf_counter() - t0
            checks = _checks(src, qpath, tol, inputs, check_samples, seed, dims, task, min_agreement, min_cosine)
            speed = _speed(src, qpath, dims, inputs, bench_seconds)
            parity_ok = all(c.passed for c in checks)
            speed_ok = min_speedup is None or speed["speedup"] >= min_speedup
            rec = {"trial": trial, "excluded_nodes": list(excluded), "excluded_ops": list(excluded_ops),
                   "parity_passed": parity_ok, "min_cosine": _min_cos(checks), "speedup": speed["speedup"],
                   "speedup_ci95": speed["ci95"], "seconds": round(seconds, 3)}
            trials.append(rec)
            if best is None or _better(rec, best[0]):
                best = (rec, qpath, checks, speed)
            if parity_ok and speed_ok:
                best = (rec, qpath, checks, speed)
                break
            if not fallback or parity_ok:  # excluding nodes cannot make a model faster
                break
            if ranking is None:
                ranking = rank_sensitive_nodes(src, qpath, specs, dims, seed)
                details["sensitivity"] = ranking[:20]
            batch = [n for n in ranking if n not in excluded][: max(1, 2 ** trial)]
            if not batch:
                break
            excluded.extend(batch)
        rec, qpath, checks, speed = best
        passed = rec["parity_passed"] and (min_speedup is None or rec["speedup"] >= min_speedup)
        if speed["speedup"] < 1.0:
            notes.append(f"the int8 model is slower than fp32 here ({speed['speedup']:.2f}x): "
                         "on this CPU the quantized kernels do not pay for their overhead on this model")
        after = summary(qpath)
        details.update(before=before, after=after, trials=trials, speed=speed,
                       size={"fp32_bytes": before["file_bytes"], "int8_bytes": after["file_bytes"],
                             "ratio": round(after["file_bytes"] / max(1, before["file_bytes"]), 4)},
                       excluded_nodes=rec["excluded_nodes"], excluded_ops=rec["excluded_ops"])
        if min_speedup is not None:
            details["min_speedup"] = min_speedup
        return finish(qpath, target, step=f"quantize:{mode}", passed=passed, keep_failed=keep_failed, force=force,
                      external_data=external_data, lineage=(*lineage_of(src), f"quantize:{mode}"), checks=checks,
                      notes=notes, details=details)


def _better(a: dict, b: dict) -> bool:
    return (a["parity_passed"], a["min_cosine"] or 0, a["speedup"]) > (b["parity_passed"], b["min_cosine"] or 0, b["speedup"])


def _min_cos(checks: Sequence[ParityReport]) -> float | None:
    vals = [o.cosine for c in checks for o in c.outputs if o.label_agreement is None or o.topk_agreement is not None]
    return min(vals) if vals else None


def _checks(src, q, tol, inputs, samples, seed, dims, task, min_agreement, min_cosine):
    from onnxforge.steps import check_against

    return check_against(src, q, tolerance=tol, inputs=inputs, samples=samples, seed=seed, dims=dims,
                         label="int8", second_shape=False, task=task, min_agreement=min_agreement,
                         min_cosine=min_cosine)


def _speed(src, q, dims, inputs, seconds) -> dict:
    from onnxforge.validators.benchmark import benchmark

    rep = benchmark([str(src), str(q)], dims=dims, inputs=inputs, duration=seconds, warmup=5)
    c = rep.comparisons[0]
    return {"fp32_p50_ms": rep.results[0].latency.p50, "int8_p50_ms": rep.results[1].latency.p50,
            "speedup": round(c.speedup, 4), "ci95": [round(c.ci95[0], 4), round(c.ci95[1], 4)],
            "iterations": rep.results[0].latency.n}


def _check_calibration_memory(model, calibration, specs, method, samples, seed, dims, max_memory, notes) -> None:
    from onnxforge.optimizers.calibration import (activation_bytes, available_memory, histogram_memory_estimate,
                                                  iter_samples)

    n, it = iter_samples(calibration, specs, samples=samples, seed=seed, dims=dims)
    first = next(iter(it))
    per, unknown = activation_bytes(model, dims or {}, {k: v.shape for k, v in first.items()})
    if method not in HISTOGRAM_METHODS:
        return
    need = histogram_memory_estimate(per, n)
    limit = max_memory if max_memory is not None else available_memory() // 2
    if unknown:
        notes.append(f"memory estimate for {method} calibration leaves out {unknown} tensor(s) of unknown shape")
    if need > limit:
        raise BadInputError(
            f"{method} calibration on {n} samples needs about {need / 2**30:.2f} GiB "
            f"({per / 2**20:.1f} MiB of activations per sample), over the limit of {limit / 2**30:.2f} GiB",
            hint=f"use fewer samples (--samples {max(1, int(limit // max(1, 2 * per)))}) or --method minmax, "
            "or raise --max-memory")


def _run_ort_quantizer(mode, base, out, *, calibration, specs, method, percentile, fmt, per_channel, reduce_range,
                       w_type, a_type, op_types, excluded, excluded_ops, samples, seed, dims, external, progress):
    from onnxruntime.quantization import CalibrationMethod, QuantFormat, quantize_dynamic, quantize_static

    from onnxforge.fileio import load_onnx

    nodes_excluded = list(excluded)
    if excluded_ops:
        m = load_onnx(base, load_external_data=False)
        nodes_excluded += [n.name for n in m.graph.node if n.op_type in excluded_ops and n.name]
    types = list(op_types) if op_types else None
    if types and excluded_ops:
        types = [t for t in types if t not in excluded_ops]
    from onnxforge.steps import quiet_third_party

    try:
        if mode == "dynamic":
            with quiet_third_party():
                    quantize_dynamic(str(base), str(out), op_types_to_quantize=types, per_channel=per_channel,
                                 reduce_range=reduce_range, weight_type=_qtype(w_type),
                                 nodes_to_exclude=nodes_excluded or None, use_external_data_format=external)
        else:
            from onnxforge.optimizers.calibration import StreamingReader, iter_samples

            n, it = iter_samples(calibration, specs, samples=samples, seed=seed, dims=dims)
            bar = _calibration_bar(n) if progress else None
            reader = StreamingReader(it, n, on_sample=bar.update if bar else None)
            try:
                with quiet_third_party():
                    quantize_static(
                        str(base), str(out), reader,
                        quant_format=QuantFormat.QDQ if fmt == "qdq" else QuantFormat.QOperator,
                        op_types_to_quantize=types, per_channel=per_channel, reduce_range=reduce_range,
                        activation_type=_qtype(a_type), weight_type=_qtype(w_type),
                        nodes_to_exclude=nodes_excluded or None, use_external_data_format=external,
                        calibrate_method={"minmax": CalibrationMethod.MinMax, "entropy": CalibrationMethod.Entropy,
                                          "percentile": CalibrationMethod.Percentile,
                                          "distribution": CalibrationMethod.Distribution}[method],
                        extra_options={"CalibPercentile": percentile} if method == "percentile" else None,
                    )
            finally:
                if bar:
                    bar.close()
    except (BadInputError, UsageError):
        raise
    except Exception as exc:
        raise ConversionError(f"onnxruntime's quantize_{mode} failed: {type(exc).__name__}: {first_line(exc)}",
                              hint="exclude the failing node or op type (--exclude-node / --exclude-op)") from None


class _calibration_bar:
    def __init__(self, total):
        import sys

        self.p = None
        if sys.stderr.isatty():
            from rich.progress import Progress

            from onnxforge.cli.common import console

            self.p = Progress(console=console(stderr=True), transient=True)
            self.p.start()
            self.task = self.p.add_task("calibration", total=total)

    def update(self, seen, total):
        if self.p:
            self.p.update(self.task, completed=seen)

    def close(self):
        if self.p:
            self.p.stop()


def rank_sensitive_nodes(fp32_path, q_path, specs, dims, seed) -> list[str]:
    """fp32 nodes ordered by how much error quantization adds at their output: the
    relative error of each shared intermediate tensor minus the largest error among
    that node's inputs (what ORT's qdq_loss_debug measures for QDQ models, here for
    both QDQ and dynamic models, matched by tensor name)."""
    import numpy as np

    from onnxforge.specs import generate_inputs
    from onnxforge.validators.parity import shared_intermediates

    fm, shared, a, b = shared_intermediates(fp32_path, q_path, generate_inputs(specs, seed=seed, dims=dims))
    both = [o for _, _, o in shared if o in a and o in b]
    err = {}
    for n in both:
        x, y = np.asarray(a[n], dtype=np.float64), np.asarray(b[n], dtype=np.float64)
        if x.shape != y.shape or x.dtype.kind not in "fc":
            continue
        denom = np.linalg.norm(x)
        err[n] = float(np.linalg.norm(x - y) / denom) if denom else float(np.linalg.norm(y))
    scored = []
    for node in fm.graph.node:
        outs = [err[o] for o in node.output if o in err]
        if not outs or not node.name:
            continue
        ins = [err[i] for i in node.input if i in err]
        scored.append((max(outs) - (max(ins) if ins else 0.0), node.name))
    scored.sort(reverse=True)
    return [name for _, name in scored]
