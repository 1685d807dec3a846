"""onnxforge: trained PyTorch and scikit-learn models to release-ready ONNX.

The public API is resolved lazily so `import onnxforge` (and `onnxforge --help`)
never imports torch, sklearn or onnxsim.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"

_API = {
    "inspect": "onnxforge.backends.onnx.inspection:inspect_model",
    "validate": "onnxforge.checks.parity:validate",
    "compare": "onnxforge.checks.compare:compare",
    "open_runner": "onnxforge.backends:open_runner",
    "convert_torch": "onnxforge.steps.convert.torch:convert_torch",
    "convert_sklearn": "onnxforge.steps.convert.sklearn:convert_sklearn",
    "benchmark": "onnxforge.checks.benchmark:benchmark",
    "simplify": "onnxforge.steps.simplify.simplify:simplify",
    "quantize_fp16": "onnxforge.steps.quantize.fp16:quantize_fp16",
    "quantize": "onnxforge.steps.quantize.quantize:quantize",
    "quantize_dynamic": "onnxforge.steps.quantize.quantize:quantize_dynamic",
    "quantize_static": "onnxforge.steps.quantize.quantize:quantize_static",
    "quantize_int4": "onnxforge.steps.quantize.int4:quantize_int4",
    "surgeon": "onnxforge.steps.surgeon.surgeon:surgeon",
    "release": "onnxforge.pipeline.run:release",
    "doctor": "onnxforge.backends.environment:doctor",
    "package": "onnxforge.steps.package.package:package",
    "serve_check": "onnxforge.steps.serve_check.check:serve_check",
    "run_zoo": "onnxforge.zoo.run:run_zoo",
    "ZooRun": "onnxforge.zoo.run:ZooRun",
}

if TYPE_CHECKING:  # what type checkers see (`X as X`: re-exported under mypy --strict); at run time
    # __getattr__ imports each on first use
    from onnxforge.steps.convert.sklearn import convert_sklearn as convert_sklearn
    from onnxforge.steps.convert.torch import convert_torch as convert_torch
    from onnxforge.backends.environment import doctor as doctor
    from onnxforge.backends.onnx.inspection import inspect_model as inspect
    from onnxforge.steps.quantize.fp16 import quantize_fp16 as quantize_fp16
    from onnxforge.steps.quantize.quantize import quantize as quantize
    from onnxforge.steps.quantize.quantize import quantize_dynamic as quantize_dynamic
    from onnxforge.steps.quantize.quantize import quantize_static as quantize_static
    from onnxforge.steps.quantize.int4 import quantize_int4 as quantize_int4
    from onnxforge.steps.simplify.simplify import simplify as simplify
    from onnxforge.steps.surgeon.surgeon import surgeon as surgeon
    from onnxforge.pipeline.run import release as release
    from onnxforge.backends import open_runner as open_runner
    from onnxforge.steps.serve_check.check import serve_check as serve_check
    from onnxforge.steps.package.package import package as package
    from onnxforge.checks.benchmark import benchmark as benchmark
    from onnxforge.checks.compare import compare as compare
    from onnxforge.checks.parity import validate as validate
    from onnxforge.zoo.run import ZooRun as ZooRun
    from onnxforge.zoo.run import run_zoo as run_zoo

__all__ = ["__version__", *_API]


def __getattr__(name: str) -> Any:
    target = _API.get(name)
    if target is None:
        raise AttributeError(f"module 'onnxforge' has no attribute {name!r}")
    module, _, attr = target.partition(":")
    value = getattr(importlib.import_module(module), attr)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(__all__)
