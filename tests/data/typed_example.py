"""A pipeline script as a user writes it; tests/test_typing.py runs mypy --strict on it
and reads the revealed types."""

from __future__ import annotations

from pathlib import Path

import onnxforge

conv = onnxforge.convert_torch("model.pt2", "model.onnx", inputs=["x:float32:batchx8"])
reveal_type(conv)
q = onnxforge.quantize_static(conv.artifact, "model.int8.onnx", calibration="calib.npz")
reveal_type(q)
reveal_type(q.speed)
par = onnxforge.validate("model.onnx", "model.int8.onnx", samples=8)
reveal_type(par)
rel = onnxforge.release({"model": {"source": "model.onnx", "framework": "onnx"}, "steps": [{"run": "simplify"}]},
                        Path("release-out"), base_dir=Path("."))
reveal_type(rel)
reveal_type(onnxforge.release("release.toml", "release-out").passed)
pkg = onnxforge.package("release-out", "release-out/mlserver", target="mlserver")
reveal_type(pkg)
chk = onnxforge.serve_check("release-out/mlserver")
reveal_type(chk)
zoo = onnxforge.run_zoo("zoo.toml", onnxforge.ZooRun(Path("zoo-out")))
reveal_type(zoo)
