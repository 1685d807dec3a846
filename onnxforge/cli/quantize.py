from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer

from onnxforge.cli.common import (
    AtolOpt, DimOpt, ForceOpt, FormatOpt, InputsOpt, JsonOpt, KeepFailedOpt, OutputOpt, PrintStepOpt, ReportOpt,
    RtolOpt, SamplesOpt, SeedOpt, emit, print_step, wants_json,
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
    print_step_: PrintStepOpt = False,
    json_: JsonOpt = False,
    fmt: FormatOpt = "table",
    report: ReportOpt = None,
) -> None:
    """Convert fp32 weights and activations to fp16 (GPU targets), checked with fp16 tolerances."""
    from onnxforge.optimizers.fp16 import FP16_TOLERANCE, quantize_fp16
    from onnxforge.specs import parse_dims
    from onnxforge.validators.parity import parse_tolerances

    as_json = wants_json(json_, fmt)
    if print_step_:
        print_step("quantize.fp16", {"keep_io_types": None if keep_io_types else False, "block_ops": block_op,
                                     "block_nodes": block_node})
        return
    res = quantize_fp16(
        model, output, keep_io_types=keep_io_types, block_ops=block_op or (), block_nodes=block_node or (),
        inputs=str(inputs) if inputs else None, samples=samples, seed=seed, dims=parse_dims(dim or []),
        tolerance=parse_tolerances(atol, rtol, FP16_TOLERANCE), keep_failed=keep_failed, force=force,
        external_data=external_data,
    )
    emit(res, as_json=as_json, report=report, passed=res.passed)


ExcludeNodeOpt = Annotated[Optional[list[str]], typer.Option("--exclude-node", help="A node to leave in fp32 (repeatable).", metavar="NAME")]
ExcludeOpOpt = Annotated[Optional[list[str]], typer.Option("--exclude-op", help="An op type to leave in fp32 (repeatable).", metavar="TYPE")]
OpTypesOpt = Annotated[Optional[str], typer.Option("--op-types", help="Only quantize these op types: MatMul,Gemm,...", metavar="A,B")]
WeightTypeOpt = Annotated[Optional[str], typer.Option("--weight-type", help="int8 or uint8 (default: chosen for this CPU).")]
PerChannelOpt = Annotated[bool, typer.Option("--per-channel", help="Per-channel weight scales.")]
ReduceRangeOpt = Annotated[Optional[bool], typer.Option("--reduce-range/--no-reduce-range", help="7-bit weights (default: on for x86 without VNNI).")]
MaxMismatchOpt = Annotated[Optional[float], typer.Option("--max-mismatch", help="Budget: fraction of top-1 labels allowed to change (e.g. 0.01).")]
MinCosineOpt = Annotated[float, typer.Option("--min-cosine", help="Budget: cosine similarity of every output to fp32 (0 to turn off).")]
MinSpeedupOpt = Annotated[Optional[float], typer.Option("--min-speedup", help="Budget: int8 must be at least this much faster than fp32.")]
FallbackOpt = Annotated[bool, typer.Option("--fallback", help="On a failed parity budget, leave the most sensitive nodes in fp32, a few more each trial.")]
MaxTrialsOpt = Annotated[int, typer.Option("--max-trials", help="Trials for --fallback.", min=1)]
NoPreOpt = Annotated[bool, typer.Option("--no-preprocess", help="Skip ORT's quant_pre_process (shape inference and optimization).")]
CheckSamplesOpt = Annotated[int, typer.Option("--check-samples", help="Random samples for the parity check (when no --inputs).", min=1)]
BenchOpt = Annotated[float, typer.Option("--bench-seconds", help="Seconds of interleaved fp32/int8 timing.")]


def _run(mode, model, output, *, atol, rtol, op_types, exclude_node, exclude_op, dim, inputs, max_mismatch,
         min_cosine, json_, fmt, report, fmt_q="qdq", **kw):
    from onnxforge.cli.common import STATE
    from onnxforge.optimizers.quantize import LOOSE, quantize
    from onnxforge.specs import parse_dims
    from onnxforge.types import Tolerance
    from onnxforge.validators.parity import parse_tolerances

    as_json = wants_json(json_, fmt)
    res = quantize(
        # no elementwise check unless asked; asking for one bound leaves the other at 0
        model, output, mode=mode,
        tolerance=parse_tolerances(atol, rtol, Tolerance(0.0, 0.0)) if (atol or rtol) else LOOSE,
        op_types=[t.strip() for t in op_types.split(",") if t.strip()] if op_types else None,
        exclude_nodes=exclude_node or (), exclude_ops=exclude_op or (), dims=parse_dims(dim or []),
        inputs=str(inputs) if inputs else None, max_mismatch=max_mismatch, min_cosine=min_cosine or None,
        progress=not as_json and STATE.verbosity >= 0, fmt=fmt_q, **kw,
    )
    emit(res, as_json=as_json, report=report, passed=res.passed)


@app.command("dynamic")
def dynamic_cmd(
    model: Annotated[Path, typer.Argument(help="The fp32 ONNX model.", metavar="IN.onnx")],
    output: OutputOpt,
    weight_type: WeightTypeOpt = None,
    per_channel: PerChannelOpt = False,
    reduce_range: ReduceRangeOpt = None,
    op_types: OpTypesOpt = None,
    exclude_node: ExcludeNodeOpt = None,
    exclude_op: ExcludeOpOpt = None,
    no_preprocess: NoPreOpt = False,
    inputs: InputsOpt = None,
    check_samples: CheckSamplesOpt = 4,
    seed: SeedOpt = 0,
    dim: DimOpt = None,
    atol: AtolOpt = None,
    rtol: RtolOpt = None,
    min_cosine: MinCosineOpt = 0.99,
    max_mismatch: MaxMismatchOpt = None,
    min_speedup: MinSpeedupOpt = None,
    fallback: FallbackOpt = False,
    max_trials: MaxTrialsOpt = 4,
    bench_seconds: BenchOpt = 2.0,
    keep_failed: KeepFailedOpt = False,
    external_data: ExternalDataOpt = None,
    force: ForceOpt = False,
    print_step_: PrintStepOpt = False,
    json_: JsonOpt = False,
    fmt: FormatOpt = "table",
    report: ReportOpt = None,
) -> None:
    """int8 weights, activations quantized per call (ORT quantize_dynamic); parity, speed
    and size against the fp32 model."""
    if print_step_:
        print_step("quantize.dynamic", {"weight_type": weight_type, "per_channel": per_channel or None,
                                        "reduce_range": reduce_range, "op_types": op_types.split(",") if op_types else None,
                                        "exclude_nodes": exclude_node, "exclude_ops": exclude_op,
                                        "preprocess": False if no_preprocess else None,
                                        "min_cosine": min_cosine if min_cosine != 0.99 else None,
                                        "max_mismatch": max_mismatch, "min_speedup": min_speedup,
                                        "fallback": fallback or None})
        return
    _run("dynamic", model, output, weight_type=weight_type, per_channel=per_channel, reduce_range=reduce_range,
         op_types=op_types, exclude_node=exclude_node, exclude_op=exclude_op, preprocess=not no_preprocess,
         inputs=inputs, check_samples=check_samples, seed=seed, dim=dim, atol=atol, rtol=rtol,
         min_cosine=min_cosine, max_mismatch=max_mismatch, min_speedup=min_speedup, fallback=fallback,
         max_trials=max_trials, bench_seconds=bench_seconds, keep_failed=keep_failed,
         external_data=external_data, force=force, json_=json_, fmt=fmt, report=report)


@app.command("static")
def static_cmd(
    model: Annotated[Path, typer.Argument(help="The fp32 ONNX model.", metavar="IN.onnx")],
    output: OutputOpt,
    calibration: Annotated[str, typer.Option("--calibration", help="Calibration data: .npz with a sample axis, a folder of samples, or 'random'.", metavar="DATA")],
    method: Annotated[str, typer.Option("--method", help="minmax, entropy, percentile, distribution.")] = "minmax",
    percentile: Annotated[float, typer.Option("--percentile", help="For --method percentile.")] = 99.999,
    format_: Annotated[str, typer.Option("--quant-format", help="qdq (default) or qoperator. (--format is the output format, as everywhere.)")] = "qdq",
    samples: Annotated[Optional[int], typer.Option("--samples", help="Calibration samples to use (default: all).", min=1)] = None,
    activation_type: Annotated[Optional[str], typer.Option("--activation-type", help="int8 or uint8 (default: chosen for this CPU).")] = None,
    weight_type: WeightTypeOpt = None,
    per_channel: PerChannelOpt = False,
    reduce_range: ReduceRangeOpt = None,
    op_types: OpTypesOpt = None,
    exclude_node: ExcludeNodeOpt = None,
    exclude_op: ExcludeOpOpt = None,
    max_memory: Annotated[Optional[str], typer.Option("--max-memory", help="Refuse histogram calibration estimated above this (e.g. 4GiB; default half the available memory).")] = None,
    no_preprocess: NoPreOpt = False,
    inputs: InputsOpt = None,
    check_samples: CheckSamplesOpt = 4,
    seed: SeedOpt = 0,
    dim: DimOpt = None,
    atol: AtolOpt = None,
    rtol: RtolOpt = None,
    min_cosine: MinCosineOpt = 0.99,
    max_mismatch: MaxMismatchOpt = None,
    min_speedup: MinSpeedupOpt = None,
    fallback: FallbackOpt = False,
    max_trials: MaxTrialsOpt = 4,
    bench_seconds: BenchOpt = 2.0,
    keep_failed: KeepFailedOpt = False,
    external_data: ExternalDataOpt = None,
    force: ForceOpt = False,
    print_step_: PrintStepOpt = False,
    json_: JsonOpt = False,
    fmt: FormatOpt = "table",
    report: ReportOpt = None,
) -> None:
    """int8 weights and activations with ranges from calibration data (ORT quantize_static)."""
    if print_step_:
        print_step("quantize.static", {"method": method if method != "minmax" else None,
                                       "percentile": percentile if method == "percentile" else None,
                                       "format": format_ if format_ != "qdq" else None, "samples": samples,
                                       "activation_type": activation_type, "weight_type": weight_type,
                                       "per_channel": per_channel or None, "reduce_range": reduce_range,
                                       "op_types": op_types.split(",") if op_types else None,
                                       "exclude_nodes": exclude_node, "exclude_ops": exclude_op,
                                       "min_cosine": min_cosine if min_cosine != 0.99 else None,
                                       "max_mismatch": max_mismatch, "min_speedup": min_speedup,
                                       "fallback": fallback or None})
        return
    _run("static", model, output, calibration=calibration, method=method, percentile=percentile,
         fmt_q=format_, samples=samples, activation_type=activation_type, weight_type=weight_type,
         per_channel=per_channel, reduce_range=reduce_range, op_types=op_types, exclude_node=exclude_node,
         exclude_op=exclude_op, max_memory=_parse_bytes(max_memory), preprocess=not no_preprocess, inputs=inputs,
         check_samples=check_samples, seed=seed, dim=dim, atol=atol, rtol=rtol, min_cosine=min_cosine,
         max_mismatch=max_mismatch, min_speedup=min_speedup, fallback=fallback, max_trials=max_trials,
         bench_seconds=bench_seconds, keep_failed=keep_failed, external_data=external_data, force=force,
         json_=json_, fmt=fmt, report=report)


def _parse_bytes(text: str | None) -> int | None:
    if text is None:
        return None
    import re

    m = re.match(r"^\s*([\d.]+)\s*([KMGT]?i?B?)?\s*$", text, re.I)
    if not m:
        raise typer.BadParameter("write a size such as 4GiB or 512MB", param_hint="--max-memory")
    unit = (m.group(2) or "").upper().replace("I", "").replace("B", "")
    return int(float(m.group(1)) * {"": 1, "K": 2**10, "M": 2**20, "G": 2**30, "T": 2**40}[unit])
