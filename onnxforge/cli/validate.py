from __future__ import annotations

from typing import Annotated

import typer

from onnxforge.cli.common import check_outputs, emit, wants_json
from onnxforge.cli.groups import (CriteriaOptions, FigureReportOptions, InputOptions, ProviderPairOptions, SideOptions,
                                  ValidateExtraOptions, grouped)
from onnxforge.core.progress import task as progress


@grouped
def validate_cmd(
    reference: Annotated[str, typer.Argument(help="Reference: model.onnx, outputs.npz, an ONNX test-data folder, or a torch/sklearn source.", metavar="REFERENCE")],
    candidate: Annotated[str, typer.Argument(help="Candidate, in the same forms.", metavar="CANDIDATE")],
    providers: ProviderPairOptions,
    data: InputOptions,
    criteria: CriteriaOptions,
    extra: ValidateExtraOptions,
    sides: SideOptions,
    out: FigureReportOptions,
) -> None:
    """Compare two models' outputs on the same inputs; exit 1 when they differ past tolerance."""
    from onnxforge.data.specs import (parse_dims, parse_input_norms, parse_key_values, parse_per_output,
                                      parse_val_ranges)
    from onnxforge.checks.compare import Criteria, make_tolerance
    from onnxforge.checks.parity import validate

    as_json = wants_json(out.json_, out.fmt)
    check_outputs(out.force, (reference, candidate, data.inputs, sides.weights), report=out.report,
                  save_inputs=extra.save_inputs, save_outputs=extra.save_outputs,
                  save_intermediates_to=extra.save_intermediates_to, html=out.html)
    if criteria.task not in (None, "classification", "regression"):
        raise typer.BadParameter("use classification or regression", param_hint="--task")
    c = criteria
    agree = Criteria(c.check_stat, c.min_cosine, c.min_agreement, c.task, c.top_k)
    with progress("validate"):
        result = validate(
            reference, candidate,
            inputs=str(data.inputs) if data.inputs else None, samples=data.samples, seed=data.seed,
            dims=parse_dims(data.dim or []), val_ranges=parse_val_ranges(data.val_range or []),
            input_norms=parse_input_norms(data.input_norm or []),
            provider=providers.provider, ref_provider=providers.ref_provider, runtime=providers.runtime,
            ref_runtime=providers.ref_runtime, ov_precision=providers.ov_precision,
            tolerance=make_tolerance(parse_per_output(c.atol or [], "--atol"), parse_per_output(c.rtol or [], "--rtol")),
            criteria=agree, input_map=parse_key_values(extra.map_ or [], "--map"), localize=extra.localize,
            layerwise=extra.layerwise, save_intermediates=tuple(extra.save_intermediates or ()),
            save_intermediates_to=str(extra.save_intermediates_to) if extra.save_intermediates_to else None,
            save_inputs=str(extra.save_inputs) if extra.save_inputs else None,
            save_outputs=str(extra.save_outputs) if extra.save_outputs else None, threads=sides.threads,
            generate_tokens=extra.generate_tokens,
            source_options=sides.source_options(),
        )
    emit(result, as_json=as_json, report=out.report, passed=result.passed, html=out.html)
