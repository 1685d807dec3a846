"""`onnxforge surgeon`: a command with declared options, not a pipeline step (run = "").
Its sub-commands (extract, set-outputs, rename, sanitize) are written by hand in
cli/surgeon.py: ``--inputs``/``--outputs`` name tensors there, as in Polygraphy."""

from __future__ import annotations

from onnxforge.steps.base import StepDef
from onnxforge.steps.surgeon.options import SurgeonOptions
from onnxforge.steps.surgeon.surgeon import surgeon

STEPS = (
    StepDef("surgeon", surgeon, SurgeonOptions,
            "Cut, re-point, rename or clean an ONNX graph; each result is loaded in ONNX Runtime and checked against "
            "the original's own tensors.", run=""),
)
