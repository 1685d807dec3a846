from __future__ import annotations

from typing import Annotated

import typer

from onnxforge.cli.common import check_outputs, emit, wants_json
from onnxforge.cli.groups import (EngineOptions, FigureReportOptions, LatencyGateOptions, ShapeInputOptions,
                                  TimingOptions, grouped)
from onnxforge.core.options import LIMITS
from onnxforge.core.progress import task


def _parse_regression(text: str) -> float:
    t = text.strip()
    try:
        v = float(t[:-1]) / 100 if t.endswith("%") else float(t)
    except ValueError:
        raise typer.BadParameter("write a fraction (0.1) or a percentage (10%)", param_hint="--max-regression") from None
    if not v >= 0 or v == float("inf"):  # NaN or infinity would switch the gate off
        raise typer.BadParameter(f"must be a finite number >= 0, got {text}", param_hint="--max-regression")
    return v


@grouped
def benchmark_cmd(
    models: Annotated[list[str], typer.Argument(help="ONNX models; the first is the reference for speed-ups.", metavar="MODEL...")],
    engine: EngineOptions,
    data: ShapeInputOptions,
    timing: TimingOptions,
    gates: LatencyGateOptions,
    *,
    save_latencies: Annotated[bool, typer.Option("--save-latencies", help="Include every iteration's latency in the JSON.")] = False,
    out: FigureReportOptions,
) -> None:
    """Measure latency on ONNX Runtime providers or OpenVINO (interleaved rows, confidence intervals, CI gates)."""
    from onnxforge.data.specs import parse_dims, parse_val_ranges
    from onnxforge.checks.benchmark import benchmark

    as_json = wants_json(out.json_, out.fmt)
    check_outputs(out.force, (*models, data.inputs, gates.baseline), report=out.report, html=out.html)
    batches, shapes, popts = _batches(data.batch), _shapes(data.shape), _provider_options(engine.provider_option)
    t = timing
    with task("benchmark"):
        res = benchmark(
            models, providers=engine.provider or ["cpu"], provider_options=popts, dims=parse_dims(data.dim or []),
            shapes=shapes, batches=batches, inputs=str(data.inputs) if data.inputs else None, seed=data.seed,
            val_ranges=parse_val_ranges(data.val_range or []), threads=t.threads, inter_threads=t.inter_threads,
            warmup=t.warmup, iterations=t.iterations, duration=t.duration, io_binding=t.io_binding,
            placement=t.placement, spinning=t.spinning, save_latencies=save_latencies, max_p50_ms=gates.max_p50_ms,
            max_p99_ms=gates.max_p99_ms, min_speedup=gates.min_speedup, baseline=gates.baseline,
            max_regression=_parse_regression(gates.max_regression),
            runtimes=engine.runtime or ["ort"], ov_precision=engine.ov_precision,
        )
    emit(res, as_json=as_json, report=out.report, passed=res.passed, html=out.html)


def _batches(batch: str | None) -> list[int] | None:
    if not batch:
        return None
    try:
        batches = [int(b) for b in batch.split(",") if b.strip()]
    except ValueError:
        raise typer.BadParameter("write sizes as 1,8,32", param_hint="--batch") from None
    if not batches or any(b < 1 for b in batches):
        raise typer.BadParameter("sizes must be positive", param_hint="--batch")
    if max(batches) > LIMITS["batch"]:
        raise typer.BadParameter(f"{max(batches)} is above the maximum {LIMITS['batch']}", param_hint="--batch")
    return batches


def _shapes(shape: list[str] | None) -> dict:
    from onnxforge.data.specs import parse_shape_text

    shapes = {}
    for item in shape or []:
        name, sep, dims = item.rpartition(":")
        if not sep or not name:
            raise typer.BadParameter(f"{item!r}: write NAME:DIMS", param_hint="--shape")
        shapes[name] = parse_shape_text(dims)
    return shapes


def _provider_options(provider_option: list[str] | None) -> dict[str, dict[str, str]]:
    from onnxforge.data.specs import parse_key_values

    popts: dict[str, dict[str, str]] = {}
    for item in provider_option or []:
        prov, sep, kv = item.partition(":")
        if not sep:
            raise typer.BadParameter(f"{item!r}: write PROVIDER:KEY=VALUE", param_hint="--provider-option")
        popts.setdefault(prov, {}).update(parse_key_values([kv], "--provider-option"))
    return popts
