"""`onnxforge doctor`: what onnxforge sees on this machine (onnxforge/backends/environment.py)."""

from __future__ import annotations

from typing import Annotated, Optional

import typer

from onnxforge.cli.common import FormatOpt, JsonOpt, ReportOpt, check_outputs, emit, wants_json
from onnxforge.core.errors import MissingDependencyError


def doctor_cmd(
    require: Annotated[Optional[list[str]], typer.Option(
        "--require", help="A provider that must initialise here, else exit 5 (repeatable): cuda, tensorrt, ...",
        metavar="PROVIDER")] = None,
    force: Annotated[bool, typer.Option("--force", help="Overwrite an existing --report file.")] = False,
    json_: JsonOpt = False,
    fmt: FormatOpt = "table",
    report: ReportOpt = None,
) -> None:
    """Show versions, the onnxruntime build, which execution providers initialise, CPU and
    ISA, container limits, GPUs, and which extras are installed."""
    from onnxforge.backends.environment import doctor

    as_json = wants_json(json_, fmt)
    check_outputs(force, (), report=report)
    res = doctor(require=tuple(require or ()))
    emit(res, as_json=as_json, report=report, passed=True)
    if not res.passed:  # the report is out; the exit code says what CI must know
        from onnxforge.backends.onnx.runtime import provider_hint, resolve_provider, runtime_conflict_note

        wanted = {resolve_provider(r) for r in res.required}
        bad = next(c for c in res.providers if c.provider in wanted and not c.initialises)
        raise MissingDependencyError(f"{bad.name} ({bad.provider}) does not initialise here: {bad.error}",
                                     hint=runtime_conflict_note() or provider_hint(bad.provider))
