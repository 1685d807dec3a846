"""The quantize steps: every quantization mode, its options (options.py) and its code
live in this folder."""

from __future__ import annotations

from onnxforge.steps.base import StepDef
from onnxforge.steps.quantize.bf16 import quantize_bf16
from onnxforge.steps.quantize.fp16 import quantize_fp16
from onnxforge.steps.quantize.int4 import quantize_int4
from onnxforge.steps.quantize.options import Bf16Options, DynamicOptions, Fp16Options, Int4Options, StaticOptions
from onnxforge.steps.quantize.quantize import quantize_dynamic, quantize_static

STEPS = (
    StepDef("quantize.dynamic", quantize_dynamic, DynamicOptions,
            "int8 weights, activations quantized per call (ORT quantize_dynamic); parity, speed and size against "
            "the fp32 model.", run="quantize.dynamic"),
    StepDef("quantize.static", quantize_static, StaticOptions,
            "int8 weights and activations with ranges from calibration data (ORT quantize_static).",
            run="quantize.static"),
    StepDef("quantize.int4", quantize_int4, Int4Options,
            "4-bit weights of every MatMul in blocks (ORT MatMulNBits), fp32 activations; parity, speed and size "
            "against the fp32 model.", run="quantize.int4"),
    StepDef("quantize.bf16", quantize_bf16, Bf16Options,
            "bf16 where the runtime has kernels; refused (exit 3) on onnxruntime's CPU provider, which has none.",
            run="quantize.bf16"),
    StepDef("quantize.fp16", quantize_fp16, Fp16Options,
            "Convert fp32 weights and activations to fp16 (GPU targets), checked with fp16 tolerances.",
            run="quantize.fp16"),
)
