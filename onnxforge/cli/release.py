from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from onnxforge.cli.common import ForceOpt, FormatOpt, JsonOpt, ReportOpt, emit, wants_json


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
    the source, benchmark, evaluate the gates, and write the release and its reports."""
    from onnxforge.release.config import load_config, plan
    from onnxforge.release.run import release

    as_json = wants_json(json_, fmt)
    if dry_run:
        emit(plan(load_config(config)), as_json=as_json, report=report, kind="release-plan")
        return
    res = release(config, out_dir, keep_steps=keep, force=force)
    emit(res, as_json=as_json, report=report, passed=True)
    if res.exit_code:
        raise typer.Exit(res.exit_code)
