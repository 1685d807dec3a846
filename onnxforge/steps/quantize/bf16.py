"""bf16: refused where the runtime has no bfloat16 kernels, which is the case of
onnxruntime's CPU provider (1.32: a one-node bfloat16 MatMul fails to load with
NOT_IMPLEMENTED; Cast is the only bf16 kernel the CPU provider carries that a
converted model would need). Emulating bf16 with casts around fp32 kernels would run
slower than fp32 and prove nothing about a bf16 deployment, so no model is written.
"""

from __future__ import annotations

from pathlib import Path

from onnxforge.core.errors import BadInputError, ConversionError, first_line
from onnxforge.core.types import StepResult
from onnxforge.steps.quantize.options import Bf16Options
from onnxforge.core.options import resolve
from onnxforge.steps.quantize.quantize import fp32_source

PROBE_OPS = ("MatMul", "Add", "Mul")  # what every converted model runs


def quantize_bf16(model, output: str | Path, options: Bf16Options | None = None, /, **kwargs) -> StepResult:
    """bf16 weights and activations where the runtime runs them. Options: Bf16Options."""
    o = resolve(Bf16Options, options, kwargs)
    fp32_source(model, output, o, "bf16")  # a bad input is said as such first
    missing = missing_kernels()
    if missing:
        raise BadInputError(f"onnxruntime's CPU provider has no bfloat16 kernel for {', '.join(missing)}: a bf16 "
                            "model would not run here",
                            hint="OpenVINO runs bf16 on CPUs with AVX-512 BF16 or AMX (its default there): see "
                                 "benchmark --runtime openvino; on onnxruntime use quantize fp16 (GPU) or int8")
    raise ConversionError("this onnxruntime has bfloat16 kernels, but onnxforge does not convert to bf16 yet",
                          hint="use quantize fp16 or int8")


def missing_kernels() -> list[str]:
    """The ops of PROBE_OPS whose one-node bfloat16 model does not load and run on ORT's CPU provider."""
    import onnxruntime as ort
    from onnx import TensorProto, helper

    bf16 = TensorProto.BFLOAT16
    missing = []
    for op in PROBE_OPS:
        g = helper.make_graph([helper.make_node(op, ["a", "b"], ["c"])], "probe",
                              [helper.make_tensor_value_info(x, bf16, [2, 2]) for x in "ab"],
                              [helper.make_tensor_value_info("c", bf16, [2, 2])])
        m = helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)])
        try:  # kernels are looked up when the session is made
            ort.InferenceSession(m.SerializeToString(), providers=["CPUExecutionProvider"])
        except Exception as exc:
            missing.append(op if "NOT_IMPLEMENTED" in str(exc) else f"{op} ({first_line(exc, 80)})")
    return missing
