"""ONNX models on ONNX Runtime: sessions and providers (runtime.py), the model's runner
(runner.py), saved (golden) outputs (saved.py), and what a model holds (inspection.py)."""

from __future__ import annotations

from onnxforge.backends.onnx.runner import onnx_runner
from onnxforge.backends.onnx.saved import saved_runner

RUNNERS = {"onnx": onnx_runner, "saved": saved_runner}
SUFFIXES: dict[str, tuple[str, ...]] = {}  # .onnx, .npz and folders: told apart by backends.kind_of
