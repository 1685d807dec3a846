from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from onnxforge.cli.common import ForceOpt, FormatOpt, JsonOpt, ReportOpt, check_outputs, emit, wants_json


def inspect_cmd(
    model: Annotated[Path, typer.Argument(help="An ONNX model file.", show_default=False, metavar="MODEL")],
    json_: JsonOpt = False,
    fmt: FormatOpt = "table",
    report: ReportOpt = None,
    force: ForceOpt = False,
) -> None:
    """Show a model's inputs, outputs, opsets, ops, parameters, external data, and whether
    the installed onnxruntime can run it."""
    from onnxforge.backends.onnx.inspection import inspect_model

    as_json = wants_json(json_, fmt)
    check_outputs(force, (model,), report=report)
    info = inspect_model(model)
    emit(info, as_json=as_json, report=report, passed=bool(info.runtime.get("supported", True)))
