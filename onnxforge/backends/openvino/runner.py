"""An ONNX model compiled by OpenVINO for its CPU device, as a Runner, and the call the
benchmark times.

OpenVINO reads the .onnx file itself (its ONNX frontend) and compiles it with
PERFORMANCE_HINT=LATENCY (one stream: what a batch-1 request sees) and
INFERENCE_NUM_THREADS (default: the container's CPU quota, as for ORT). The inference
precision is OpenVINO's choice unless asked: on a CPU with bf16 kernels (AVX-512 BF16,
AMX) that is bf16, so parity against fp32 ORT then needs bf16's tolerance; the precision
it ran at is reported (``inference_precision``).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Callable, Mapping

from onnxforge.backends.base import Runner
from onnxforge.core.errors import BadInputError, ConversionError, UsageError, require
from time import perf_counter_ns
import numpy as np
from onnxforge.core.fileio import load_onnx
from onnxforge.core.system import cpu_quota
from onnxforge.data.specs import model_io_specs

PRECISIONS = ("auto", "f32", "bf16", "f16")  # auto: OpenVINO's default for the CPU
DEVICE = "CPU"


def compile_onnx(path, *, threads: int | None = None, precision: str = "auto"):
    """The compiled model, or an error: missing openvino exits 5, a model OpenVINO cannot
    read or compile exits 4, a precision this CPU has no kernels for exits 3."""
    load_onnx(path, graph_only=True)  # onnxforge's own errors for a missing or broken file
    ov = require("openvino", "openvino")
    if precision not in PRECISIONS:
        raise UsageError(f"unknown OpenVINO precision {precision!r}", hint="use one of: " + ", ".join(PRECISIONS))
    core = ov.Core()
    if precision != "auto":
        caps = {str(c).lower() for c in core.get_property(DEVICE, "OPTIMIZATION_CAPABILITIES")}
        if {"f32": "fp32", "bf16": "bf16", "f16": "fp16"}[precision] not in caps:
            raise BadInputError(f"OpenVINO's CPU device has no {precision} kernels on this CPU "
                                f"(it offers: {', '.join(sorted(caps))})",
                                hint="use --ov-precision f32 (or auto), or run on a CPU that has them")
    config: dict[str, Any] = {"PERFORMANCE_HINT": "LATENCY", "INFERENCE_NUM_THREADS": int(threads or cpu_quota())}
    if precision != "auto":
        config["INFERENCE_PRECISION_HINT"] = precision
    try:
        return core.compile_model(str(path), DEVICE, config)
    except Exception as exc:  # OpenVINO raises RuntimeError with its C++ stack as text
        raise ConversionError(f"{path}: OpenVINO cannot compile this model ({_reason(exc)})",
                              hint="check the ops with `onnxforge inspect`; run it on ONNX Runtime instead "
                                   "(--runtime ort)") from None


def _reason(exc: BaseException) -> str:
    """OpenVINO's message without its 'Exception from src/...' frames and log noise."""
    lines = [ln.strip() for ln in str(exc).splitlines() if ln.strip()]
    keep = [ln for ln in lines if not ln.startswith(("Exception from", "Check '", "E0000", "WARNING:", "Summary:"))]
    return " ".join(keep or lines or [type(exc).__name__]).lstrip("- ")[:300]


def inference_precision(compiled) -> str:
    """The precision OpenVINO runs the model at (f32, bf16, f16)."""
    return compiled.get_property("INFERENCE_PRECISION_HINT").get_type_name()


def output_ports(compiled, names) -> dict[str, Any]:
    """ONNX output name -> the compiled model's port that carries it."""
    ports = {}
    for name in names:
        port = next((o for o in compiled.outputs if name in o.get_names()), None)
        if port is None:
            raise ConversionError(f"OpenVINO's compiled model has no output {name!r}",
                                  hint="the ONNX frontend renamed or dropped it; run it on ONNX Runtime instead")
        ports[name] = port
    return ports


def openvino_runner(path, *, label: str | None = None, threads: int | None = None,
                    precision: str = "auto") -> Runner:

    ins, outs = model_io_specs(load_onnx(path, graph_only=True))
    compiled = compile_onnx(path, threads=threads, precision=precision)
    ports = output_ports(compiled, [o.name for o in outs])
    request = compiled.create_infer_request()

    def run(feeds: Mapping[str, Any]) -> dict:
        res = request.infer(dict(feeds))
        return {name: np.array(res[port]) for name, port in ports.items()}  # a copy: the request reuses its buffers

    tag = f"openvino:{inference_precision(compiled)}"
    return Runner(label=label or f"{Path(path).name}@{tag}", kind="openvino", inputs=ins, outputs=tuple(ports), fn=run,
                  path=str(path), provider=tag)


def timed_call(compiled, feeds: Mapping[str, Any]) -> Callable[[], int]:
    """One synchronous inference on the given inputs, in nanoseconds: the benchmark's
    timed region, like ORT's ``session.run`` (inputs passed per call without a copy,
    outputs returned)."""
    request = compiled.create_infer_request()
    infer = request.infer
    f = dict(feeds)

    def once() -> int:
        t0 = perf_counter_ns()
        infer(f, share_inputs=True)
        return perf_counter_ns() - t0

    return once
