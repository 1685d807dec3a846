"""Models and folders for the serving tests (a plain module: tests/conftest.py is the
only conftest, imported by name from the test modules)."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest

SERVE_MISSING = [m for m in ("mlserver", "mlflow", "tritonclient", "sqlalchemy") if importlib.util.find_spec(m) is None]
# find_spec does not import: this process must never import mlserver (see onnxforge/steps/serve_check/check.py)
requires_serve = pytest.mark.skipif(bool(SERVE_MISSING), reason=f"serve extra not installed: {SERVE_MISSING}")

ROOT = Path(__file__).resolve().parents[3]
SK_EXAMPLE = ROOT / "fixtures" / "example-sklearn"


def labeled_model(path: Path, *, batch: str | int = "batch") -> Path:
    """x[batch,4] -> scores[batch,3] (float) and label[batch] (int64 argmax)."""
    import numpy as np
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(0)
    w = numpy_helper.from_array(rng.standard_normal((4, 3)).astype(np.float32), "W")
    nodes = [helper.make_node("MatMul", ["x", "W"], ["scores"]),
             helper.make_node("ArgMax", ["scores"], ["label"], axis=1, keepdims=0)]
    g = helper.make_graph(nodes, "labeled", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [batch, 4])],
                          [helper.make_tensor_value_info("scores", TensorProto.FLOAT, [batch, 3]),
                           helper.make_tensor_value_info("label", TensorProto.INT64, [batch])], [w])
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)])
    m.ir_version = 8
    onnx.checker.check_model(m)
    onnx.save(m, str(path))
    return path


def string_label_model(path: Path) -> Path:
    """A scikit-learn classifier with string classes: a tensor(string) label output."""
    import numpy as np
    from skl2onnx import to_onnx
    from sklearn.linear_model import LogisticRegression

    rng = np.random.default_rng(0)
    X = rng.standard_normal((60, 3)).astype(np.float32)
    y = np.array(["cat", "dog", "emu"])[np.argmax(X, axis=1)]
    clf = LogisticRegression(max_iter=200).fit(X, y)
    onx = to_onnx(clf, X[:1], options={id(clf): {"zipmap": False}}, target_opset=17)
    path.write_bytes(onx.SerializeToString())
    return path


def fp16_model(path: Path) -> Path:
    """x[batch,4] float16 -> y = relu(x) float16 and n = shape(x) int64: FP16 over V2
    travels as raw bytes on gRPC, beside a typed int64 output."""
    import onnx
    from onnx import TensorProto, helper

    g = helper.make_graph([helper.make_node("Relu", ["x"], ["y"]), helper.make_node("Shape", ["x"], ["n"])], "half",
                          [helper.make_tensor_value_info("x", TensorProto.FLOAT16, ["batch", 4])],
                          [helper.make_tensor_value_info("y", TensorProto.FLOAT16, ["batch", 4]),
                           helper.make_tensor_value_info("n", TensorProto.INT64, [2])])
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)])
    m.ir_version = 8
    onnx.checker.check_model(m)
    onnx.save(m, str(path))
    return path


def wide_model(path: Path) -> Path:
    """x[batch,256] -> y[batch,8]: an 8 KiB weight, past the 1 KiB above which
    mlflow.onnx's default writes weights as external data."""
    import numpy as np
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    w = numpy_helper.from_array(np.random.default_rng(0).standard_normal((256, 8)).astype(np.float32), "W")
    g = helper.make_graph([helper.make_node("MatMul", ["x", "W"], ["y"])], "wide",
                          [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", 256])],
                          [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["batch", 8])], [w])
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)])
    m.ir_version = 8
    onnx.checker.check_model(m)
    onnx.save(m, str(path))
    return path
