from __future__ import annotations

from typing import Annotated, Optional

import typer

from onnxforge.cli.common import (
    DimOpt, ForceOpt, OvPrecisionOpt, FormatOpt, HtmlOpt, InputsOpt, JsonOpt, ReportOpt, SeedOpt, ShapeOpt, ValRangeOpt, check_outputs, emit, number,
    complete_choices, wants_json,
)
from onnxforge.core.options import LIMITS
from onnxforge.backends import RUNTIMES
from onnxforge.backends.onnx.runtime import PROVIDERS


def _parse_regression(text: str) -> float:
    t = text.strip()
    try:
        v = float(t[:-1]) / 100 if t.endswith("%") else float(t)
    except ValueError:
        raise typer.BadParameter("write a fraction (0.1) or a percentage (10%)", param_hint="--max-regression") from None
    if not v >= 0 or v == float("inf"):  # NaN or infinity would switch the gate off
        raise typer.BadParameter(f"must be a finite number >= 0, got {text}", param_hint="--max-regression")
    return v


def benchmark_cmd(
    models: Annotated[list[str], typer.Argument(help="ONNX models; the first is the reference for speed-ups.", metavar="MODEL...")],
    provider: Annotated[Optional[list[str]], typer.Option("--provider", "-e", help="cpu, cuda, tensorrt, openvino, dml (repeatable: one row each).",
                                                                        autocompletion=complete_choices(PROVIDERS))] = None,
    runtime: Annotated[Optional[list[str]], typer.Option("--runtime", help="ort (ONNX Runtime, on each --provider) or openvino (the openvino package, CPU); repeatable: rows on each.",
                                                         autocompletion=complete_choices(RUNTIMES))] = None,
    ov_precision: OvPrecisionOpt = "auto",
    provider_option: Annotated[Optional[list[str]], typer.Option("--provider-option", help="EP option PROVIDER:KEY=VALUE, e.g. cuda:device_id=1.", metavar="P:K=V")] = None,
    dim: DimOpt = None,
    shape: ShapeOpt = None,
    batch: Annotated[Optional[str], typer.Option("--batch", help=f"Sweep the leading dim: 1,8,32 (each at most {LIMITS['batch']}).", metavar="N[,N...]")] = None,
    inputs: InputsOpt = None,
    seed: SeedOpt = 0,
    val_range: ValRangeOpt = None,
    threads: Annotated[Optional[int], typer.Option("--threads", "-x", help="Intra-op threads (default: the container's CPU quota).", min=1, max=LIMITS["threads"])] = None,
    inter_threads: Annotated[Optional[int], typer.Option("--inter-threads", "-y", help="Inter-op threads.", min=1, max=LIMITS["threads"])] = None,
    warmup: Annotated[int, typer.Option("--warmup", help="Untimed runs per row first.", min=0, max=LIMITS["warmup"])] = 10,
    iterations: Annotated[Optional[int], typer.Option("--iterations", "-r", help="Timed runs per row.", min=1, max=LIMITS["iterations"])] = None,
    duration: Annotated[Optional[float], typer.Option("--duration", "-t", help=f"Seconds of timed runs (default 2; at least 10 rounds; at most {LIMITS['seconds']:g}).", callback=number(0, LIMITS["seconds"], above=True))] = None,
    io_binding: Annotated[bool, typer.Option("--io-binding", help="Keep inputs/outputs on the device: copies are not timed.")] = False,
    placement: Annotated[bool, typer.Option("--placement", help="Report how many nodes each provider ran (from ORT's profiler).")] = False,
    spinning: Annotated[Optional[bool], typer.Option("--spinning/--no-spinning", help="Intra-op thread spinning (default: off with several rows).")] = None,
    max_p50_ms: Annotated[Optional[float], typer.Option("--max-p50-ms", help="Gate: fail when a row's p50 is above this.", callback=number(0, above=True))] = None,
    max_p99_ms: Annotated[Optional[float], typer.Option("--max-p99-ms", help="Gate: fail when a row's p99 is above this.", callback=number(0, above=True))] = None,
    min_speedup: Annotated[Optional[float], typer.Option("--min-speedup", help="Gate: each model at least this much faster than the first.", callback=number(0, above=True))] = None,
    baseline: Annotated[Optional[str], typer.Option("--baseline", help="A saved benchmark report (--report) to compare against.", metavar="PATH")] = None,
    max_regression: Annotated[str, typer.Option("--max-regression", help="Allowed slow-down against --baseline: 10% or 0.1.")] = "10%",
    save_latencies: Annotated[bool, typer.Option("--save-latencies", help="Include every iteration's latency in the JSON.")] = False,
    force: ForceOpt = False,
    json_: JsonOpt = False,
    fmt: FormatOpt = "table",
    report: ReportOpt = None,
    html: HtmlOpt = None,
) -> None:
    """Measure latency on ONNX Runtime providers or OpenVINO (interleaved rows, confidence intervals, CI gates)."""
    from onnxforge.core.progress import task
    from onnxforge.data.specs import parse_dims, parse_key_values, parse_shape_text, parse_val_ranges
    from onnxforge.checks.benchmark import benchmark

    as_json = wants_json(json_, fmt)
    check_outputs(force, (*models, inputs, baseline), report=report, html=html)
    batches = None
    if batch:
        try:
            batches = [int(b) for b in batch.split(",") if b.strip()]
        except ValueError:
            raise typer.BadParameter("write sizes as 1,8,32", param_hint="--batch") from None
        if not batches or any(b < 1 for b in batches):
            raise typer.BadParameter("sizes must be positive", param_hint="--batch")
        if max(batches) > LIMITS["batch"]:
            raise typer.BadParameter(f"{max(batches)} is above the maximum {LIMITS['batch']}", param_hint="--batch")
    shapes = {}
    for item in shape or []:
        name, sep, dims = item.rpartition(":")
        if not sep or not name:
            raise typer.BadParameter(f"{item!r}: write NAME:DIMS", param_hint="--shape")
        shapes[name] = parse_shape_text(dims)
    popts: dict[str, dict[str, str]] = {}
    for item in provider_option or []:
        prov, sep, kv = item.partition(":")
        if not sep:
            raise typer.BadParameter(f"{item!r}: write PROVIDER:KEY=VALUE", param_hint="--provider-option")
        popts.setdefault(prov, {}).update(parse_key_values([kv], "--provider-option"))
    with task("benchmark"):
        res = benchmark(
            models, providers=provider or ["cpu"], provider_options=popts, dims=parse_dims(dim or []),
            shapes=shapes, batches=batches, inputs=str(inputs) if inputs else None, seed=seed,
            val_ranges=parse_val_ranges(val_range or []), threads=threads, inter_threads=inter_threads,
            warmup=warmup, iterations=iterations, duration=duration, io_binding=io_binding, placement=placement,
            spinning=spinning, save_latencies=save_latencies, max_p50_ms=max_p50_ms, max_p99_ms=max_p99_ms,
            min_speedup=min_speedup, baseline=baseline, max_regression=_parse_regression(max_regression),
            runtimes=runtime or ["ort"], ov_precision=ov_precision,
        )
    emit(res, as_json=as_json, report=report, passed=res.passed, html=html)
