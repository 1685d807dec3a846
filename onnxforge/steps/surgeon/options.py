"""The surgeon's options (a command, not a pipeline step: steps/surgeon/step.py)."""

from __future__ import annotations

from dataclasses import dataclass

from onnxforge.core.options import Samples, option
from onnxforge.steps.base import CheckOptions


@dataclass(frozen=True)
class SurgeonOptions(CheckOptions):
    """How a surgery writes and checks its result (``inputs`` is the check's data file,
    as for every step; the tensors to cut at are the function's own arguments)."""

    samples: Samples = option(1, "Random input samples for the check.", example=("--samples", "2"))
