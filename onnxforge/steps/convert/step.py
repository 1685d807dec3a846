"""The convert step: a torch or scikit-learn source to ONNX, one declaration per
framework (the loading and running of each framework live in backends/<framework>/)."""

from __future__ import annotations

from onnxforge.steps.base import StepDef
from onnxforge.steps.convert.options import ConvertSklearnOptions, ConvertTorchOptions
from onnxforge.steps.convert.sklearn import convert_sklearn
from onnxforge.steps.convert.torch import convert_torch

STEPS = (
    StepDef("convert.torch", convert_torch, ConvertTorchOptions,
            "Export a torch model to ONNX, then check it against the module on the example inputs and at a second "
            "size of every dynamic axis.", run="convert", source="source"),
    StepDef("convert.sklearn", convert_sklearn, ConvertSklearnOptions,
            "Convert a fitted scikit-learn estimator or pipeline to ONNX, then check it against predict / "
            "predict_proba / transform.", run="convert", source="source"),
)
