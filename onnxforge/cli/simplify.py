from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer

from onnxforge.cli.common import (
    AtolOpt, DimOpt, ForceOpt, FormatOpt, InputsOpt, JsonOpt, KeepFailedOpt, OutputOpt, PrintStepOpt, ReportOpt,
    RtolOpt, SamplesOpt, SeedOpt, emit, print_step, wants_json,
)

ExternalDataOpt = Annotated[Optional[bool], typer.Option("--external-data/--no-external-data", help="Weights in a separate file (default: only past 2 GB).")]


def simplify_cmd(
    model: Annotated[Path, typer.Argument(help="The ONNX model to simplify.", metavar="IN.onnx")],
    output: OutputOpt,
    onnxsim: Annotated[bool, typer.Option("--onnxsim/--no-onnxsim", help="Run onnxsim (constant folding, shape inference, dead nodes, fusions).")] = True,
    skip: Annotated[Optional[list[str]], typer.Option("--skip", help="An onnxsim optimization pass to skip (repeatable).", metavar="PASS")] = None,
    shape: Annotated[Optional[list[str]], typer.Option("--shape", help="Pin an input shape NAME:DIMS (dims stay dynamic otherwise).", metavar="NAME:DIMS")] = None,
    dim: DimOpt = None,
    max_constant_size: Annotated[Optional[int], typer.Option("--max-constant-size", help="Do not fold constants larger than this many bytes.")] = None,
    ort: Annotated[Optional[str], typer.Option("--ort", help="ONNX Runtime offline optimization: basic (portable), extended or all (ORT-only ops).", metavar="LEVEL")] = None,
    transformer: Annotated[Optional[str], typer.Option("--transformer", help="Transformer fusions for this model type (bert, gpt2, vit, ...).", metavar="TYPE")] = None,
    num_heads: Annotated[int, typer.Option("--num-heads", help="Attention heads (0: detect).")] = 0,
    hidden_size: Annotated[int, typer.Option("--hidden-size", help="Hidden size (0: detect).")] = 0,
    inputs: InputsOpt = None,
    samples: SamplesOpt = 1,
    seed: SeedOpt = 0,
    atol: AtolOpt = None,
    rtol: RtolOpt = None,
    allow_skip: Annotated[bool, typer.Option("--allow-skip", help="A failed engine is skipped (exit 0, marked in the report) instead of failing.")] = False,
    keep_failed: KeepFailedOpt = False,
    external_data: ExternalDataOpt = None,
    force: ForceOpt = False,
    print_step_: PrintStepOpt = False,
    json_: JsonOpt = False,
    fmt: FormatOpt = "table",
    report: ReportOpt = None,
) -> None:
    """Simplify a model (onnxsim, ORT offline optimization, transformer fusions), each step checked."""
    from onnxforge.optimizers.simplify import simplify
    from onnxforge.specs import parse_dims, parse_shape_text
    from onnxforge.validators.parity import parse_tolerances

    as_json = wants_json(json_, fmt)
    if print_step_:
        print_step("simplify", {"onnxsim": None if onnxsim else False, "skip": skip, "max_constant_size": max_constant_size,
                                "ort_level": ort, "transformer": transformer, "num_heads": num_heads or None,
                                "hidden_size": hidden_size or None, "allow_skip": allow_skip or None})
        return
    shapes = {}
    for item in shape or []:
        name, sep, dims = item.rpartition(":")
        if not sep or not name:
            raise typer.BadParameter(f"{item!r}: write NAME:DIMS", param_hint="--shape")
        parsed = parse_shape_text(dims)
        if not all(isinstance(d, int) for d in parsed):
            raise typer.BadParameter(f"{item!r}: --shape takes numbers", param_hint="--shape")
        shapes[name] = parsed
    res = simplify(
        model, output, onnxsim=onnxsim, skip=skip or (), shapes=shapes, dims=parse_dims(dim or []),
        max_constant_size=max_constant_size, ort_level=ort, transformer=transformer, num_heads=num_heads,
        hidden_size=hidden_size, inputs=str(inputs) if inputs else None, samples=samples, seed=seed,
        tolerance=parse_tolerances(atol, rtol), allow_skip=allow_skip, keep_failed=keep_failed, force=force,
        external_data=external_data,
    )
    emit(res, as_json=as_json, report=report, passed=res.passed)
