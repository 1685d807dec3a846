"""`onnxforge package`: a command with declared options, not a pipeline step (run = "")."""

from __future__ import annotations

from onnxforge.steps.base import StepDef
from onnxforge.steps.package.options import PackageOptions
from onnxforge.steps.package.package import package

STEPS = (
    StepDef("package", package, PackageOptions,
            "Package a model or a release folder for a server: an MLflow model, an MLServer (Seldon) model folder, "
            "or a Triton model repository, with golden inputs and outputs, and prove it loads and answers.",
            run="", source="package"),
)
