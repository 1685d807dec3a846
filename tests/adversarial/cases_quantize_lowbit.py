"""quantize int4 and bf16 (#27): bad block sizes, accuracy levels and algorithms are usage
errors before any work; bf16 is refused where the runtime has no kernels; an int4 model
is not quantized again."""

from __future__ import annotations

from pathlib import Path

from cases import A, Case, T, _i, _o


def _int4_model(ws: Path) -> None:
    import numpy as np
    import onnx
    from onnx import TensorProto, helper

    node = helper.make_node("MatMulNBits", ["x", "w", "s"], ["y"], domain="com.microsoft", K=32, N=4, bits=4,
                            block_size=32)
    g = helper.make_graph([node], "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["n", 32])],
                          [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["n", 4])],
                          initializer=[helper.make_tensor("w", TensorProto.UINT8, [4, 1, 16],
                                                          np.zeros(64, np.uint8).tobytes(), raw=True),
                                       helper.make_tensor("s", TensorProto.FLOAT, [4], [1.0] * 4)])
    opsets = [helper.make_opsetid("", 17), helper.make_opsetid("com.microsoft", 1)]
    onnx.save(helper.make_model(g, opset_imports=opsets), ws / "in" / "int4.onnx")


_I4 = ("quantize", "int4", T, "-o", _o("q.onnx"), "--allow-generated-data")

CASES = [
    Case("int4 block size not a power of two", A(*_I4, "--block-size", "48"), 2, "power of two"),
    Case("int4 block size under 16", A(*_I4, "--block-size", "8"), 2, "at least 16"),
    Case("int4 accuracy level 5", A(*_I4, "--accuracy-level", "5"), 2, "--accuracy-level"),
    Case("int4 unknown algorithm", A(*_I4, "--algorithm", "awq"), 2, "--algorithm"),
    Case("int4 gptq refused", A(*_I4, "--algorithm", "gptq"), 2, "gptq is not offered"),
    Case("int4 without data", A("quantize", "int4", T, "-o", _o("q.onnx")), 2, "--allow-generated-data"),
    Case("int4 of an int4 model", A("quantize", "int4", _i("int4.onnx"), "-o", _o("q.onnx"), "--allow-generated-data"),
         3, "already quantized", setup=_int4_model),
    Case("bf16 on ORT's CPU provider", A("quantize", "bf16", T, "-o", _o("b.onnx")), 3, "no bfloat16 kernel"),
    Case("bf16 of a missing model", A("quantize", "bf16", _i("missing.onnx"), "-o", _o("b.onnx")), 3, "not found"),
]
