"""torch sources: loading (sources.py, pt2.py for .pt2 archives), running (runner.py)
and Hugging Face folders (hf.py). torch and transformers load inside the functions."""

from __future__ import annotations

from onnxforge.backends.torch.hf import hf_runner
from onnxforge.backends.torch.runner import torch_source_runner
from onnxforge.backends.torch.sources import TORCH_SUFFIXES

RUNNERS = {"torch": torch_source_runner, "hf": hf_runner}
SUFFIXES = {"torch": TORCH_SUFFIXES}
