"""`onnxforge package`'s options (and the release's [package] section)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal, Optional

from onnxforge.core.errors import UsageError
from onnxforge.core.options import MaxBatch, PosInt, Seed, Threads, Tolerance, option
from onnxforge.data.specs import parse_dims
from onnxforge.steps.base import tol_option
import re


def _check_model_name(name: str) -> None:
    """The name becomes a folder (Triton's repository) and a URL path (MLServer): an
    empty one, '..' or a slash would land the model somewhere else, or nowhere."""
    if not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9._-]*", name):
        raise UsageError(f"{name!r} is not a usable model name",
                         hint="letters, digits, '.', '_' and '-', starting with a letter or digit (it names a folder)")


def _check_provider(name: str) -> None:
    from onnxforge.backends.onnx.runtime import resolve_provider

    resolve_provider(name)


@dataclass(frozen=True)
class PackageOptions:
    """`onnxforge package` and the release's [package] section (whose ``targets`` list
    names the targets; the other keys are these)."""

    target: Literal["mlflow", "mlserver", "triton"] = option(
        "mlserver", "mlserver (Seldon's server), mlflow (an MLflow model), triton (a model repository).", toml=None,
        example=("--target", "triton"))
    name: Optional[str] = option(None, "Model name in the server (default: the release's name, else the model file's stem).",
                                 check=_check_model_name, example=("--name", "digits"))
    provider: str = option("cpu", "Execution provider the server runs on.", check=lambda v: _check_provider(v),
                           example=("--provider", "cuda"))
    runtime: Literal["ort", "openvino"] = option(
        "ort", "triton target: its onnxruntime backend (ort) or its OpenVINO backend (openvino: reads model.onnx, "
               "CPU).", example=("--runtime", "openvino"))
    threads: Optional[Threads] = option(None, "Intra-op threads of the served session.", example=("--threads", "2"))
    max_batch_size: MaxBatch = option(64, "Triton's max_batch_size when the model has a batch dim.",
                                       example=("--max-batch-size", "32"))
    mlflow_tracking_uri: Optional[str] = option(None, "mlflow target: log the model to this tracking store "
                                                      "(sqlite:///mlflow.db works offline).",
                                                example=("--mlflow-tracking-uri", "sqlite:///mlflow.db"))
    experiment: str = option("onnxforge", "mlflow target: the experiment of the run.",
                             example=("--experiment", "nightly"))
    register: Optional[str] = option(None, "mlflow target: register the logged model under this name.",
                                     example=("--register", "digits"))
    inputs: Optional[str] = option(None, "Golden inputs (default: the release's validation data, else generated).",
                                   metavar="PATH", toml=None, path=True)
    seed: Seed = option(0, "Seed for generated golden inputs.", toml=None, example=("--seed", "3"))
    dims: dict[str, PosInt] = option({}, "Symbolic dims of generated golden inputs: NAME=VALUE (repeatable).",
                                     flag="--dim", metavar="NAME=VALUE", parse=parse_dims, example=("--dim", "batch=2"))
    atol: Optional[Tolerance] = tol_option("atol", "1e-4")
    rtol: Optional[Tolerance] = tol_option("rtol", "1e-3")
    keep_failed: bool = option(False, "Write the folder even when its proof fails.", toml=None,
                               example=("--keep-failed",))
    force: bool = option(False, "Replace an existing output folder (never the source).", toml=None,
                         example=("--force",))
