from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer

from onnxforge.cli.common import (
    AtolOpt, DimOpt, ForceOpt, FormatOpt, InputsOpt, JsonOpt, KeepFailedOpt, OutputOpt, ReportOpt, RtolOpt,
    SamplesOpt, SeedOpt, emit, wants_json,
)
from onnxforge.cli.simplify import ExternalDataOpt

app = typer.Typer(help="Quantize a model: dynamic or static int8 (CPU), or fp16 (GPU).", no_args_is_help=True)


@app.command("fp16")
def fp16_cmd(
    model: Annotated[Path, typer.Argument(help="The fp32 ONNX model.", metavar="IN.onnx")],
    output: OutputOpt,
    keep_io_types: Annotated[bool, typer.Option("--keep-io-types/--fp16-io", help="Keep fp32 inputs and outputs (default) or make them fp16.")] = True,
    block_op: Annotated[Optional[list[str]], typer.Option("--block-op", help="An op type to keep in fp32 (repeatable; added to ORT's default list).", metavar="OP")] = None,
    block_node: Annotated[Optional[list[str]], typer.Option("--block-node", help="A node name to keep in fp32 (repeatable).", metavar="NAME")] = None,
    inputs: InputsOpt = None,
    samples: SamplesOpt = 1,
    seed: SeedOpt = 0,
    dim: DimOpt = None,
    atol: AtolOpt = None,
    rtol: RtolOpt = None,
    keep_failed: KeepFailedOpt = False,
    external_data: ExternalDataOpt = None,
    force: ForceOpt = False,
    json_: JsonOpt = False,
    fmt: FormatOpt = "table",
    report: ReportOpt = None,
) -> None:
    """Convert fp32 weights and activations to fp16 (GPU targets), checked with fp16 tolerances."""
    from onnxforge.optimizers.fp16 import FP16_TOLERANCE, quantize_fp16
    from onnxforge.specs import parse_dims
    from onnxforge.validators.parity import parse_tolerances

    as_json = wants_json(json_, fmt)
    res = quantize_fp16(
        model, output, keep_io_types=keep_io_types, block_ops=block_op or (), block_nodes=block_node or (),
        inputs=str(inputs) if inputs else None, samples=samples, seed=seed, dims=parse_dims(dim or []),
        tolerance=parse_tolerances(atol, rtol, FP16_TOLERANCE), keep_failed=keep_failed, force=force,
        external_data=external_data,
    )
    emit(res, as_json=as_json, report=report, passed=res.passed)
