"""onnxforge: trained PyTorch and scikit-learn models to release-ready ONNX.

The public API is resolved lazily so `import onnxforge` (and `onnxforge --help`)
never imports torch, sklearn or onnxsim.
"""

from __future__ import annotations

import importlib

__version__ = "0.1.0"

_API = {
    "inspect": "onnxforge.inspection:inspect_model",
    "validate": "onnxforge.validators.parity:validate",
    "compare": "onnxforge.validators.compare:compare",
    "open_runner": "onnxforge.runners:open_runner",
    "convert_torch": "onnxforge.converters.torch:convert_torch",
    "convert_sklearn": "onnxforge.converters.sklearn:convert_sklearn",
    "benchmark": "onnxforge.validators.benchmark:benchmark",
    "simplify": "onnxforge.optimizers.simplify:simplify",
    "quantize_fp16": "onnxforge.optimizers.fp16:quantize_fp16",
    "quantize": "onnxforge.optimizers.quantize:quantize",
    "quantize_dynamic": "onnxforge.optimizers.quantize:quantize_dynamic",
    "quantize_static": "onnxforge.optimizers.quantize:quantize_static",
    "release": "onnxforge.pipeline.run:release",
    "doctor": "onnxforge.environment:doctor",
}

__all__ = ["__version__", *_API]


def __getattr__(name: str):
    target = _API.get(name)
    if target is None:
        raise AttributeError(f"module 'onnxforge' has no attribute {name!r}")
    module, _, attr = target.partition(":")
    value = getattr(importlib.import_module(module), attr)
    globals()[name] = value
    return value


def __dir__():
    return sorted(__all__)
