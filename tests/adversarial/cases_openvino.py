"""OpenVINO as a runtime and NNCF as a quantizer (#27): flags that cannot apply are usage
errors before any work, and a model OpenVINO cannot convert is a conversion failure
naming the operator (exit 5 instead where the openvino package is absent)."""

from __future__ import annotations

import importlib.util
from pathlib import Path

from cases import A, Case, T, _i, _o

HAS_OV = importlib.util.find_spec("openvino") is not None


def _ml_model(ws: Path) -> None:
    """An ai.onnx.ml operator (what skl2onnx writes for classifiers): OpenVINO has no conversion for it."""
    from onnx import TensorProto, helper, save

    node = helper.make_node("LinearClassifier", ["x"], ["label", "scores"], domain="ai.onnx.ml",
                            coefficients=[1.0, 0.0, -1.0, 0.0], intercepts=[0.0, 0.1], classlabels_ints=[0, 1])
    g = helper.make_graph([node], "ml", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 2])],
                          [helper.make_tensor_value_info("label", TensorProto.INT64, [1]),
                           helper.make_tensor_value_info("scores", TensorProto.FLOAT, [1, 2])])
    save(helper.make_model(g, opset_imports=[helper.make_opsetid("", 17), helper.make_opsetid("ai.onnx.ml", 1)]),
         ws / "in" / "ml.onnx")


CASES = [
    Case("benchmark on an unknown runtime", A("benchmark", T, "--runtime", "tvm"), 2, "unknown runtime 'tvm'"),
    Case("ORT provider with OpenVINO rows only", A("benchmark", T, "--runtime", "openvino", "--provider", "cuda"), 2,
         "--runtime ort"),
    Case("an ORT provider for the OpenVINO side", A("validate", T, T, "--runtime", "openvino", "--provider", "cuda"),
         2, "OpenVINO runs on its CPU device"),
    Case("unknown OpenVINO precision", A("validate", T, T, "--runtime", "openvino", "--ov-precision", "int4"), 2,
         "--ov-precision"),
    Case("OpenVINO asked to run a factory", A("validate", T, "nosuchmodule:build", "--runtime", "openvino"), 2,
         "runs ONNX models"),
    Case("OpenVINO backend for a non-Triton package",
         A("package", T, "-o", _o("pkg"), "--target", "mlserver", "--runtime", "openvino"), 2,
         "Triton's OpenVINO backend"),
    Case("ORT's calibrator with NNCF",
         A("quantize", "static", T, "-o", _o("q.onnx"), "--engine", "nncf", "--method", "entropy", "--calibration",
           "random", "--allow-generated-data"), 2, "NNCF keeps its own"),
    Case("a model OpenVINO cannot convert", A("benchmark", _i("ml.onnx"), "--runtime", "openvino"),
         4 if HAS_OV else 5, "LinearClassifier" if HAS_OV else "openvino is not installed", setup=_ml_model),
]
