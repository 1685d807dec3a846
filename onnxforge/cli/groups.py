"""Option groups of the hand-written commands (validate, benchmark, surgeon, zoo), as in
Polygraphy's argument groups: each group is a frozen dataclass whose fields are Typer
parameters, declared once and shared by the commands that take it. ``@grouped`` turns
a command that takes groups into the flat signature Typer reads, and calls it with one
instance per group, so a command function stays short whatever its flag count.

The step commands (convert, simplify, quantize, package, serve-check) take their flags
from the step declarations instead (cli/stepcmd.py).
"""

from __future__ import annotations

import dataclasses
import functools
import inspect
import typing
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Optional

import typer

from onnxforge.backends import RUNTIMES
from onnxforge.backends.onnx.runtime import PROVIDERS
from onnxforge.cli.common import (AtolOpt, OvPrecisionOpt, DimOpt, ForceOpt, FormatOpt, HtmlOpt, InputNormOpt, InputsOpt, JsonOpt,
                                  ReportOpt, RtolOpt, SamplesOpt, SeedOpt, ShapeOpt, ThreadsOpt, TrustPickleOpt,
                                  ValRangeOpt, complete_choices, number)
from onnxforge.core.options import LIMITS


def grouped(fn):
    """Typer sees each field of the groups ``fn`` takes (parameters annotated with a
    dataclass) as a parameter of its own, in place; ``fn`` is called with the groups
    built from them. Field names must be unique across a command's parameters. Typer
    passes every parameter by keyword, so all are keyword-only here."""
    hints = typing.get_type_hints(fn, include_extras=True)
    params, groups = [], {}
    for p in inspect.signature(fn).parameters.values():
        cls = hints[p.name]
        if not dataclasses.is_dataclass(cls):
            params.append(p.replace(annotation=cls, kind=inspect.Parameter.KEYWORD_ONLY))
            continue
        groups[p.name] = cls
        fields = typing.get_type_hints(cls, include_extras=True)
        params += [inspect.Parameter(f.name, inspect.Parameter.KEYWORD_ONLY, default=f.default,
                                     annotation=fields[f.name]) for f in dataclasses.fields(cls)]
    names = [p.name for p in params]
    if len(set(names)) != len(names):
        raise TypeError(f"{fn.__name__}: a group field shadows another parameter: {sorted(names)}")

    @functools.wraps(fn)
    def command(**kw):
        for name, cls in groups.items():
            kw[name] = cls(**{f.name: kw.pop(f.name) for f in dataclasses.fields(cls)})
        return fn(**kw)

    command.__signature__ = inspect.Signature(params)
    command.__annotations__ = {p.name: p.annotation for p in params}
    return command


# ----------------------------------------------------------------------------- shared by several commands

@dataclass(frozen=True)
class ReportOptions:
    """How a command writes its result."""

    force: ForceOpt = False
    json_: JsonOpt = False
    fmt: FormatOpt = "table"
    report: ReportOpt = None


@dataclass(frozen=True)
class FigureReportOptions(ReportOptions):
    """ReportOptions and an HTML page with figures (validate, benchmark)."""

    html: HtmlOpt = None


@dataclass(frozen=True)
class ToleranceOptions:
    atol: AtolOpt = None
    rtol: RtolOpt = None


# ----------------------------------------------------------------------------- validate

@dataclass(frozen=True)
class ProviderPairOptions:
    provider: Annotated[str, typer.Option("--provider", help="Execution provider of the candidate.",
                                          autocompletion=complete_choices(PROVIDERS))] = "cpu"
    ref_provider: Annotated[str, typer.Option("--ref-provider", help="Execution provider of the reference.")] = "cpu"
    runtime: Annotated[str, typer.Option(
        "--runtime", help="What runs the candidate: ort (ONNX Runtime, on --provider) or openvino (the openvino "
                          "package).", autocompletion=complete_choices(RUNTIMES))] = "ort"
    ref_runtime: Annotated[str, typer.Option("--ref-runtime", help="What runs the reference: ort or openvino.",
                                             autocompletion=complete_choices(RUNTIMES))] = "ort"
    ov_precision: OvPrecisionOpt = "auto"


@dataclass(frozen=True)
class InputOptions:
    """The inputs both sides run on: given, or generated."""

    inputs: InputsOpt = None
    samples: SamplesOpt = 1
    seed: SeedOpt = 0
    dim: DimOpt = None
    val_range: ValRangeOpt = None
    input_norm: InputNormOpt = None


@dataclass(frozen=True)
class CriteriaOptions(ToleranceOptions):
    """What makes two sides agree."""

    check_stat: Annotated[str, typer.Option(
        "--check-stat", "--check-error-stat", metavar="STAT",
        help="Statistic that must be within tolerance: elementwise (elemwise), max, mean, median, p99.")] = "elementwise"
    min_cosine: Annotated[Optional[float], typer.Option(
        "--min-cosine", help="Fail an output whose cosine similarity is below this.", callback=number(-1, 1))] = None
    min_agreement: Annotated[Optional[float], typer.Option(
        "--min-agreement", help="Fraction of labels (or top-1 classes with --task classification) that must agree.",
        callback=number(0, 1))] = None
    task: Annotated[Optional[str], typer.Option(
        "--task", help="classification: also report top-1 / top-k agreement of score outputs.")] = None
    top_k: Annotated[int, typer.Option("--top-k", help="k for top-k agreement.", min=1, max=LIMITS["top_k"])] = 5


@dataclass(frozen=True)
class ValidateExtraOptions:
    """What validate does beside comparing: pair names, localize, save what it used."""

    map_: Annotated[Optional[list[str]], typer.Option(
        "--map", help="Pair input names: REF=CAND (repeatable).", metavar="REF=CAND")] = None
    localize: Annotated[bool, typer.Option(
        "--localize", help="On failure, find the first node where two ONNX models diverge.")] = False
    layerwise: Annotated[bool, typer.Option(
        "--layerwise", help="Compare every intermediate tensor two ONNX models share (first sample), in topological "
                            "order; name the 5 whose nodes add the most error.")] = False
    save_intermediates: Annotated[Optional[list[str]], typer.Option(
        "--save-intermediates", help="Intermediate tensors to write from both models (comma list, repeatable, or "
                                     "all); needs --save-intermediates-to.", metavar="NAMES")] = None
    save_intermediates_to: Annotated[Optional[Path], typer.Option(
        "--save-intermediates-to", help="The .npz --save-intermediates writes (keys reference/NAME, candidate/NAME).",
        metavar="PATH")] = None
    save_inputs: Annotated[Optional[Path], typer.Option(
        "--save-inputs", help="Write the inputs used to this .npz.", metavar="PATH")] = None
    save_outputs: Annotated[Optional[Path], typer.Option(
        "--save-outputs", help="Write the reference's outputs to this .npz (golden outputs).", metavar="PATH")] = None
    generate_tokens: Annotated[Optional[int], typer.Option(
        "--generate-tokens", help="A candidate with a key/value cache (past_key_values.* inputs) against its Hugging "
                                  "Face folder or another such model: greedy-decode this many new tokens with both "
                                  "and require the same ids (default 8).", min=1, max=LIMITS["tokens"])] = None


@dataclass(frozen=True)
class SideOptions:
    """How a side that is not an ONNX file is loaded, and the threads each side runs on."""

    threads: ThreadsOpt = None
    trust_pickle: TrustPickleOpt = False
    weights: Annotated[Optional[str], typer.Option(
        "--weights", help="state_dict for a torch factory side (weights_only=True).", metavar="PATH")] = None
    trust: Annotated[Optional[list[str]], typer.Option(
        "--trust", help="A type a .skops side may load (repeatable).", metavar="TYPE")] = None

    def source_options(self) -> dict:
        return {"trust_pickle": self.trust_pickle, "weights": self.weights, "trust": tuple(self.trust or ())}


# ----------------------------------------------------------------------------- benchmark

@dataclass(frozen=True)
class EngineOptions:
    provider: Annotated[Optional[list[str]], typer.Option(
        "--provider", "-e", help="cpu, cuda, tensorrt, openvino, dml (repeatable: one row each).",
        autocompletion=complete_choices(PROVIDERS))] = None
    runtime: Annotated[Optional[list[str]], typer.Option(
        "--runtime", help="ort (ONNX Runtime, on each --provider) or openvino (the openvino package, CPU); "
                          "repeatable: rows on each.", autocompletion=complete_choices(RUNTIMES))] = None
    ov_precision: OvPrecisionOpt = "auto"
    provider_option: Annotated[Optional[list[str]], typer.Option(
        "--provider-option", help="EP option PROVIDER:KEY=VALUE, e.g. cuda:device_id=1.", metavar="P:K=V")] = None


@dataclass(frozen=True)
class ShapeInputOptions:
    """The inputs timed: their shapes (pinned, given, swept) and data (given, or generated)."""

    dim: DimOpt = None
    shape: ShapeOpt = None
    batch: Annotated[Optional[str], typer.Option(
        "--batch", help=f"Sweep the leading dim: 1,8,32 (each at most {LIMITS['batch']}).", metavar="N[,N...]")] = None
    inputs: InputsOpt = None
    seed: SeedOpt = 0
    val_range: ValRangeOpt = None


@dataclass(frozen=True)
class TimingOptions:
    threads: Annotated[Optional[int], typer.Option(
        "--threads", "-x", help="Intra-op threads (default: the container's CPU quota).", min=1,
        max=LIMITS["threads"])] = None
    inter_threads: Annotated[Optional[int], typer.Option(
        "--inter-threads", "-y", help="Inter-op threads.", min=1, max=LIMITS["threads"])] = None
    warmup: Annotated[int, typer.Option(
        "--warmup", help="Untimed runs per row first.", min=0, max=LIMITS["warmup"])] = 10
    iterations: Annotated[Optional[int], typer.Option(
        "--iterations", "-r", help="Timed runs per row.", min=1, max=LIMITS["iterations"])] = None
    duration: Annotated[Optional[float], typer.Option(
        "--duration", "-t", help=f"Seconds of timed runs (default 2; at least 10 rounds; at most "
                                 f"{LIMITS['seconds']:g}).", callback=number(0, LIMITS["seconds"], above=True))] = None
    io_binding: Annotated[bool, typer.Option(
        "--io-binding", help="Keep inputs/outputs on the device: copies are not timed.")] = False
    placement: Annotated[bool, typer.Option(
        "--placement", help="Report how many nodes each provider ran (from ORT's profiler).")] = False
    spinning: Annotated[Optional[bool], typer.Option(
        "--spinning/--no-spinning", help="Intra-op thread spinning (default: off with several rows).")] = None


@dataclass(frozen=True)
class LatencyGateOptions:
    max_p50_ms: Annotated[Optional[float], typer.Option(
        "--max-p50-ms", help="Gate: fail when a row's p50 is above this.", callback=number(0, above=True))] = None
    max_p99_ms: Annotated[Optional[float], typer.Option(
        "--max-p99-ms", help="Gate: fail when a row's p99 is above this.", callback=number(0, above=True))] = None
    min_speedup: Annotated[Optional[float], typer.Option(
        "--min-speedup", help="Gate: each model at least this much faster than the first.",
        callback=number(0, above=True))] = None
    baseline: Annotated[Optional[str], typer.Option(
        "--baseline", help="A saved benchmark report (--report) to compare against.", metavar="PATH")] = None
    max_regression: Annotated[str, typer.Option(
        "--max-regression", help="Allowed slow-down against --baseline: 10% or 0.1.")] = "10%"


# ----------------------------------------------------------------------------- surgeon

@dataclass(frozen=True)
class CheckDataOptions:
    """The data a surgeon result is checked on (``--inputs`` names tensors there)."""

    data: Annotated[Optional[Path], typer.Option(
        "--data", help="Input data of the original model for the check .npz, .npy, a folder of NAME.npy (default: "
                       "generated).", metavar="PATH")] = None
    samples: SamplesOpt = 1
    seed: SeedOpt = 0
    dim: DimOpt = None
