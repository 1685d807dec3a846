"""What every step shares: ``StepDef`` (a step's declaration: its function, its options
class, its summary and its [[steps]] run name), the option groups every
model-producing step has (``OutputOptions``, ``CheckOptions``) and the option helpers
their declarations use. Options are frozen dataclasses (core/options.py) whose fields
carry type, default, help, CLI flag, TOML key, parser and example; the CLI, the release
config, ``--print-step``, the schemas and the generated docs all come from them.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Optional

from onnxforge.core.options import PosInt, Seed, Tolerance, option
from onnxforge.data.specs import (check_input_norms, is_per_output_value, parse_dims, parse_input_norms,
                                  parse_per_output)


def tol_option(what: str, default_text: str):
    return option(None, f"{'Absolute' if what == 'atol' else 'Relative'} tolerance, with per-output overrides: "
                        f"--{what} 1e-4 logits:1e-3 (default: {default_text}).",
                  metavar="[NAME:]VALUE", parse=lambda v: parse_per_output(v, f"--{what}"),
                  several=is_per_output_value, example=(f"--{what}", "0.002", f"--{what}", "logits:0.01"))


def input_norms_option(why: str):
    return option({}, "Image normalisation of a float input: NAME:imagenet (or clip, half) or "
                      f"NAME:MEAN1,MEAN2,MEAN3/STD1,STD2,STD3 (no NAME: every float input). {why}",
                  flag="--input-norm", metavar="NAME:NORM", toml="model.input_norms", parse=parse_input_norms,
                  check=check_input_norms, example=("--input-norm", "x:imagenet"))


@dataclass(frozen=True)
class OutputOptions:
    """How a step writes its model (every model-producing step has these)."""

    external_data: Optional[bool] = option(None, "Weights in a separate NAME.data file (default: only past 2 GB).",
                                           flag="--external-data/--no-external-data", example=("--external-data",))
    keep_failed: bool = option(False, "Write the model even when its check fails, as NAME.failed.onnx.", toml=None,
                               example=("--keep-failed",))
    force: bool = option(False, "Overwrite an existing output (never an input).", toml=None, example=("--force",))


@dataclass(frozen=True)
class CheckOptions(OutputOptions):
    """How a step checks its model against the one before it."""

    inputs: Optional[str] = option(None, "Input data for the checks: .npz, .npy, a folder of NAME.npy, or numbered "
                                         "sample folders.", metavar="PATH", toml=None, path=True)
    seed: Seed = option(0, "Seed for generated inputs.", toml=None, example=("--seed", "3"))
    dims: dict[str, PosInt] = option({}, "Pin a symbolic dim: NAME=VALUE (repeatable).", flag="--dim",
                                     metavar="NAME=VALUE", parse=parse_dims, example=("--dim", "batch=4"))
    atol: Optional[Tolerance] = tol_option("atol", "1e-4")
    rtol: Optional[Tolerance] = tol_option("rtol", "1e-3")


@dataclass(frozen=True)
class StepDef:
    name: str  # "quantize.static"
    function: Callable  # the step itself: (model, output, options, /, **kwargs) -> StepResult
    options: type
    summary: str
    run: str  # the [[steps]] run = value ("" for a command that is not a step)
    source: str = "model"  # the positional argument: "model" (an ONNX file), "source", "package", "folder"
    output: bool = True  # takes -o
