"""ONNX models on OpenVINO's CPU device (the `openvino` package, extra `onnxforge[openvino]`):
a runtime beside ONNX Runtime, not ORT's OpenVINO execution provider (`--provider
openvino`, which needs the onnxruntime-openvino build in place of onnxruntime). openvino
loads inside the functions."""

from __future__ import annotations

from onnxforge.backends.openvino.runner import openvino_runner

RUNNERS = {"openvino": openvino_runner}
SUFFIXES: dict[str, tuple[str, ...]] = {}  # it runs .onnx files, asked for by --runtime openvino, never detected
