import json
import math

import numpy as np
import pytest

from onnxforge import report
from onnxforge.core.errors import ExitCode, MissingDependencyError, UsageError
from onnxforge.backends.onnx.runtime import (
    cpu_quota,
    create_session,
    resolve_provider,
    run_session,
    runtime_support,
    support_verdict,
)
from onnxforge.core.types import OutputDiff, ParityReport, TensorSpec


def test_envelope_is_strict_json():
    d = OutputDiff("y", math.nan, math.inf, 0.0, 0.0, 0.5, -math.inf, False, shape=(2,))
    r = ParityReport("a", "b", 1, (d,), False)
    env = json.loads(report.dumps(r))
    assert env["schema_version"] == 1 and env["kind"] == "parity"
    assert env["onnxforge_version"]
    out = env["result"]["outputs"][0]
    assert out["max_abs"] == "NaN" and out["max_rel"] == "Infinity" and out["cosine"] == "-Infinity"
    assert env["result"]["passed"] is False


def test_numpy_values_serialize():
    assert report.to_jsonable({"a": np.float32(1.5), "b": np.arange(3), "s": TensorSpec("x", "int64", (1,))}) == {
        "a": 1.5, "b": [0, 1, 2], "s": {"name": "x", "dtype": "int64", "shape": [1]}}


def test_provider_names():
    assert resolve_provider("cpu") == "CPUExecutionProvider"
    assert resolve_provider("CUDA") == "CUDAExecutionProvider"
    assert resolve_provider("CPUExecutionProvider") == "CPUExecutionProvider"
    with pytest.raises(UsageError, match="unknown execution provider"):
        resolve_provider("gpu2000")


def test_unavailable_provider_is_exit_5(fx):
    import onnxruntime as ort

    if "CUDAExecutionProvider" in ort.get_available_providers():
        pytest.skip("CUDA provider is active here; this test checks the missing-provider path")
    with pytest.raises(MissingDependencyError) as e:
        create_session(fx / "tiny.onnx", "cuda")
    assert e.value.exit_code == ExitCode.MISSING_DEPENDENCY
    assert "CPUExecutionProvider" in str(e.value)


def test_session_runs_and_reports_cpu(fx):
    sess = create_session(fx / "tiny.onnx", "cpu", threads=1)
    assert sess.get_providers()[0] == "CPUExecutionProvider"
    out = run_session(sess, {"x": np.ones((2, 4), np.float32)})
    assert set(out) == {"logits", "probs"}
    np.testing.assert_allclose(out["probs"].sum(axis=1), 1.0, rtol=1e-5)


def test_runtime_support_probe():
    sup = runtime_support()
    assert sup["max_ir_version"] >= 9 and sup["max_opset"] >= 17
    assert support_verdict(8, {"": 17})["supported"]
    v = support_verdict(sup["max_ir_version"] + 1, {"": sup["max_opset"] + 1})
    assert not v["supported"] and "IR version" in v["reason"] and "opset" in v["reason"]


def test_cpu_quota_positive():
    assert 1 <= cpu_quota() <= (__import__("os").cpu_count() or 1)


def test_runtime_package_conflict_note():
    from onnxforge.backends.onnx.runtime import installed_runtime_packages, runtime_conflict_note

    assert "onnxruntime" in installed_runtime_packages() or any(
        p.startswith("onnxruntime-") for p in installed_runtime_packages())
    assert runtime_conflict_note(["onnxruntime"]) is None
    note = runtime_conflict_note(["onnxruntime", "onnxruntime-gpu"])
    assert "onnxruntime, onnxruntime-gpu" in note and "Uninstall all" in note
