from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer

from onnxforge.cli.common import (
    AtolOpt, DimOpt, ForceOpt, FormatOpt, HtmlOpt, InputsOpt, JsonOpt, ReportOpt, RtolOpt, SamplesOpt, SeedOpt,
    OvPrecisionOpt, ThreadsOpt, TrustPickleOpt, ValRangeOpt, InputNormOpt, check_outputs, complete_choices, emit, number, wants_json,
)
from onnxforge.core.options import LIMITS
from onnxforge.backends import RUNTIMES
from onnxforge.backends.onnx.runtime import PROVIDERS


def validate_cmd(
    reference: Annotated[str, typer.Argument(help="Reference: model.onnx, outputs.npz, an ONNX test-data folder, or a torch/sklearn source.", metavar="REFERENCE")],
    candidate: Annotated[str, typer.Argument(help="Candidate, in the same forms.", metavar="CANDIDATE")],
    provider: Annotated[str, typer.Option("--provider", help="Execution provider of the candidate.",
                                                            autocompletion=complete_choices(PROVIDERS))] = "cpu",
    ref_provider: Annotated[str, typer.Option("--ref-provider", help="Execution provider of the reference.")] = "cpu",
    runtime: Annotated[str, typer.Option("--runtime", help="What runs the candidate: ort (ONNX Runtime, on --provider) or openvino (the openvino package).",
                                         autocompletion=complete_choices(RUNTIMES))] = "ort",
    ref_runtime: Annotated[str, typer.Option("--ref-runtime", help="What runs the reference: ort or openvino.",
                                             autocompletion=complete_choices(RUNTIMES))] = "ort",
    ov_precision: OvPrecisionOpt = "auto",
    inputs: InputsOpt = None,
    samples: SamplesOpt = 1,
    seed: SeedOpt = 0,
    dim: DimOpt = None,
    val_range: ValRangeOpt = None,
    input_norm: InputNormOpt = None,
    atol: AtolOpt = None,
    rtol: RtolOpt = None,
    check_stat: Annotated[str, typer.Option("--check-stat", "--check-error-stat", help="Statistic that must be within tolerance: elementwise (elemwise), max, mean, median, p99.", metavar="STAT")] = "elementwise",
    min_cosine: Annotated[Optional[float], typer.Option("--min-cosine", help="Fail an output whose cosine similarity is below this.", callback=number(-1, 1))] = None,
    min_agreement: Annotated[Optional[float], typer.Option("--min-agreement", help="Fraction of labels (or top-1 classes with --task classification) that must agree.", callback=number(0, 1))] = None,
    task: Annotated[Optional[str], typer.Option("--task", help="classification: also report top-1 / top-k agreement of score outputs.")] = None,
    top_k: Annotated[int, typer.Option("--top-k", help="k for top-k agreement.", min=1, max=LIMITS["top_k"])] = 5,
    map_: Annotated[Optional[list[str]], typer.Option("--map", help="Pair input names: REF=CAND (repeatable).", metavar="REF=CAND")] = None,
    localize: Annotated[bool, typer.Option("--localize", help="On failure, find the first node where two ONNX models diverge.")] = False,
    save_inputs: Annotated[Optional[Path], typer.Option("--save-inputs", help="Write the inputs used to this .npz.", metavar="PATH")] = None,
    save_outputs: Annotated[Optional[Path], typer.Option("--save-outputs", help="Write the reference's outputs to this .npz (golden outputs).", metavar="PATH")] = None,
    threads: ThreadsOpt = None,
    trust_pickle: TrustPickleOpt = False,
    weights: Annotated[Optional[str], typer.Option("--weights", help="state_dict for a torch factory side (weights_only=True).", metavar="PATH")] = None,
    trust: Annotated[Optional[list[str]], typer.Option("--trust", help="A type a .skops side may load (repeatable).", metavar="TYPE")] = None,
    force: ForceOpt = False,
    json_: JsonOpt = False,
    fmt: FormatOpt = "table",
    report: ReportOpt = None,
    html: HtmlOpt = None,
) -> None:
    """Compare two models' outputs on the same inputs; exit 1 when they differ past tolerance."""
    from onnxforge.core.progress import task as progress
    from onnxforge.data.specs import (parse_dims, parse_input_norms, parse_key_values, parse_per_output,
                                      parse_val_ranges)
    from onnxforge.checks.compare import make_tolerance
    from onnxforge.checks.parity import validate

    as_json = wants_json(json_, fmt)
    check_outputs(force, (reference, candidate, inputs, weights), report=report, save_inputs=save_inputs,
                  save_outputs=save_outputs, html=html)
    if task not in (None, "classification", "regression"):
        raise typer.BadParameter("use classification or regression", param_hint="--task")
    with progress("validate"):
        result = validate(
            reference, candidate,
            inputs=str(inputs) if inputs else None, samples=samples, seed=seed,
            dims=parse_dims(dim or []), val_ranges=parse_val_ranges(val_range or []),
            input_norms=parse_input_norms(input_norm or []),
            provider=provider, ref_provider=ref_provider, runtime=runtime, ref_runtime=ref_runtime,
            ov_precision=ov_precision,
            tolerance=make_tolerance(parse_per_output(atol or [], "--atol"), parse_per_output(rtol or [], "--rtol")),
            check_stat=check_stat, min_cosine=min_cosine, min_agreement=min_agreement, task=task, top_k=top_k,
            input_map=parse_key_values(map_ or [], "--map"), localize=localize,
            save_inputs=str(save_inputs) if save_inputs else None,
            save_outputs=str(save_outputs) if save_outputs else None, threads=threads,
            source_options={"trust_pickle": trust_pickle, "weights": weights, "trust": tuple(trust or ())},
        )
    emit(result, as_json=as_json, report=report, passed=result.passed, html=html)
