"""`onnxforge surgeon`: a command with declared options, not a pipeline step (run = "").
Its sub-commands (extract, set-outputs, rename, sanitize) are written by hand in
cli/surgeon.py: ``--inputs``/``--outputs`` name tensors there, as in Polygraphy."""

from __future__ import annotations

from onnxforge.steps.base import StepDef
from onnxforge.steps.surgeon.options import SurgeonOptions
from onnxforge.steps.surgeon.surgeon import surgeon

STEPS = (
    StepDef("surgeon", surgeon, SurgeonOptions,
            "The surgeon operations' shared options; the commands and their help are cli/surgeon.py's.", run=""),
)
