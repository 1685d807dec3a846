"""`onnxforge serve-check`: a command with declared options, not a pipeline step (run = "")."""

from __future__ import annotations

from onnxforge.steps.base import StepDef
from onnxforge.steps.serve_check.check import serve_check
from onnxforge.steps.serve_check.options import ServeCheckOptions

STEPS = (
    StepDef("serve-check", serve_check, ServeCheckOptions,
            "Start a packaged model in a real MLServer on 127.0.0.1, check its answers over REST and gRPC against "
            "the golden outputs, send malformed requests, run a bounded load, and stop it.",
            run="", source="folder", output=False),
)
