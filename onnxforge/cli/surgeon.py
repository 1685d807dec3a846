"""`onnxforge surgeon extract | set-outputs | rename | sanitize` (onnxforge/optimizers/surgeon.py).

As in Polygraphy's surgeon, ``--inputs`` and ``--outputs`` name tensors here; the data
for the check is ``--data``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer

from onnxforge.cli.common import OutputOpt, check_outputs, emit, wants_json
from onnxforge.cli.groups import CheckDataOptions, ReportOptions, ToleranceOptions, grouped
from onnxforge.core.progress import task

app = typer.Typer(name="surgeon", no_args_is_help=True, add_completion=False, rich_markup_mode=None,
                  pretty_exceptions_enable=False,
                  help="Cut, re-point, rename or clean an ONNX graph; each result is loaded in ONNX Runtime and "
                       "checked against the original's own tensors.")

ModelArg = Annotated[Path, typer.Argument(help="The ONNX model.", metavar="MODEL")]
NamesOpt = Optional[list[str]]
KeepFailedOpt = Annotated[bool, typer.Option("--keep-failed", help="Write the result even when its check fails, as "
                                                                   "NAME.failed.onnx.")]


def _names(values: list[str] | None) -> list[str]:
    """--outputs a,b --outputs c -> [a, b, c] (Polygraphy writes them space-separated: repeat the flag)."""
    return [n.strip() for v in values or [] for n in v.split(",") if n.strip()]


def _run(operation: str, model: Path, output: Path, data: CheckDataOptions, tolerance: ToleranceOptions,
         keep_failed: bool, out: ReportOptions, **names) -> None:
    from onnxforge.steps.surgeon.surgeon import surgeon
    from onnxforge.data.specs import parse_dims, parse_per_output

    as_json = wants_json(out.json_, out.fmt)
    check_outputs(out.force, (model, data.data), report=out.report)
    with task(f"surgeon {operation}"):
        result = surgeon(operation, model, output, inputs=str(data.data) if data.data else None, samples=data.samples,
                         seed=data.seed, dims=parse_dims(data.dim or []),
                         atol=parse_per_output(tolerance.atol or [], "--atol") or None,
                         rtol=parse_per_output(tolerance.rtol or [], "--rtol") or None, keep_failed=keep_failed,
                         force=out.force, **names)
    emit(result, as_json=as_json, report=out.report, passed=result.passed)


@app.command("extract")
@grouped
def extract_cmd(
    model: ModelArg,
    output: OutputOpt,
    inputs: Annotated[NamesOpt, typer.Option("--inputs", help="Tensors the sub-graph starts from (comma-separated "
                                                              "or repeated).", metavar="NAMES")] = None,
    outputs: Annotated[NamesOpt, typer.Option("--outputs", help="Tensors the sub-graph ends at (comma-separated or "
                                                                "repeated).", metavar="NAMES")] = None,
    data: CheckDataOptions = CheckDataOptions(), tolerance: ToleranceOptions = ToleranceOptions(),
    keep_failed: KeepFailedOpt = False, out: ReportOptions = ReportOptions(),
) -> None:
    """The sub-graph between tensors, shapes inferred; checked by feeding it what the
    original computed at its inputs and comparing with what the original computed at its
    outputs. Exit 1 when they differ."""
    _run("extract", model, output, data, tolerance, keep_failed, out,
         input_names=_names(inputs), output_names=_names(outputs))


@app.command("set-outputs")
@grouped
def set_outputs_cmd(
    model: ModelArg,
    output: OutputOpt,
    outputs: Annotated[NamesOpt, typer.Option("--outputs", help="The model's new outputs: any tensors it computes "
                                                                "(comma-separated or repeated).",
                                              metavar="NAMES")] = None,
    data: CheckDataOptions = CheckDataOptions(), tolerance: ToleranceOptions = ToleranceOptions(),
    keep_failed: KeepFailedOpt = False, out: ReportOptions = ReportOptions(),
) -> None:
    """Make these tensors the model's outputs (nodes no output needs are dropped);
    checked against the original's tensors of the same names."""
    _run("set-outputs", model, output, data, tolerance, keep_failed, out, output_names=_names(outputs))


@app.command("rename")
@grouped
def rename_cmd(
    model: ModelArg,
    output: OutputOpt,
    map_: Annotated[NamesOpt, typer.Option("--map", help="OLD=NEW: rename a tensor (an input, an output or any "
                                                         "other), everywhere it is used (repeatable).",
                                           metavar="OLD=NEW")] = None,
    data: CheckDataOptions = CheckDataOptions(), tolerance: ToleranceOptions = ToleranceOptions(),
    keep_failed: KeepFailedOpt = False, out: ReportOptions = ReportOptions(),
) -> None:
    """Rename tensors; checked against the original's tensors under their old names."""
    from onnxforge.data.specs import parse_key_values

    _run("rename", model, output, data, tolerance, keep_failed, out,
         mapping=parse_key_values(map_ or [], "--map"))


@app.command("sanitize")
@grouped
def sanitize_cmd(
    model: ModelArg,
    output: OutputOpt,
    data: CheckDataOptions = CheckDataOptions(), tolerance: ToleranceOptions = ToleranceOptions(),
    keep_failed: KeepFailedOpt = False, out: ReportOptions = ReportOptions(),
) -> None:
    """Clean a model: onnxforge's clean-ups (Identity, no-op Dropout and Add, shape
    slices), dead nodes and unused initializers dropped, shapes inferred; checked against
    the original's outputs."""
    _run("sanitize", model, output, data, tolerance, keep_failed, out)
