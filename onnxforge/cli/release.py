from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from onnxforge.cli.common import (ForceOpt, FormatOpt, JsonOpt, ReportOpt, annotate, check_outputs, emit, is_stopped,
                                  wants_json)
import sys


def release_cmd(
    config: Annotated[Path, typer.Argument(help="The release.toml.", metavar="CONFIG")],
    out_dir: Annotated[Path, typer.Option("-o", "--out-dir", help="Where the release goes.", metavar="DIR")] = Path("release-out"),
    dry_run: Annotated[bool, typer.Option("--dry-run", help="Validate the config and print the plan; run nothing.")] = False,
    keep: Annotated[bool, typer.Option("--keep/--no-keep", help="Keep the intermediate models under OUT_DIR/steps/.")] = True,
    force: ForceOpt = False,
    json_: JsonOpt = False,
    fmt: FormatOpt = "table",
    report: ReportOpt = None,
) -> None:
    """Run the pipeline in CONFIG (convert, simplify, quantize ...), check every step against
    the source, benchmark, evaluate the gates, and write the release and its reports (on
    every exit: report.json, report.md, report.html, junit.xml)."""
    from onnxforge.pipeline.config import load_config, plan
    from onnxforge.pipeline.run import release

    as_json = wants_json(json_, fmt)
    check_outputs(force, (config,), report=report)
    if dry_run:
        emit(plan(load_config(config)), as_json=as_json, report=report, kind="release-plan")
        return
    res = release(config, out_dir, keep_steps=keep, force=force)
    emit(res, as_json=as_json, report=report, passed=True)
    if res.exit_code:
        _say_why(res)
        raise typer.Exit(res.exit_code)


def _say_why(res) -> None:
    """A failed release says why on stderr like every other command (and on the CI run page)."""
    if is_stopped(res.exit_code):  # main says it, once
        return
    sys.stderr.write(f"error: release {res.status}: {res.error or res.failure}\n")
    sys.stderr.write(f"hint: {res.hint or 'see report.md and junit.xml in the release folder'}\n")
    for g in res.gates:
        if not g.passed:
            annotate("error", f"gate {g.name}", g.message)
    for i, s in enumerate(res.steps):
        if not s.passed:
            annotate("error", f"step {i} {s.step}", "its own check failed")
    annotate("error", "onnxforge release", f"{res.status}: {res.error or res.failure}")
