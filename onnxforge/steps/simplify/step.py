"""The simplify step: onnxsim, ORT's offline optimization and transformer fusions, each checked."""

from __future__ import annotations

from onnxforge.steps.base import StepDef
from onnxforge.steps.simplify.options import SimplifyOptions
from onnxforge.steps.simplify.simplify import simplify

STEPS = (
    StepDef("simplify", simplify, SimplifyOptions,
            "Simplify a model (onnxsim, ORT offline optimization, transformer fusions), each step checked.",
            run="simplify"),
)
