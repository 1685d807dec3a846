"""`onnxforge zoo ZOO.toml -o OUT` and `onnxforge zoo merge OUT/*/report.json -o OUT`.

`zoo` with anything but a subcommand's name runs `zoo run`, so the common case reads
as one command. Nothing here imports Ray or a model library: `onnxforge --help` stays
light.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Annotated, Optional

import typer
from typer.core import TyperGroup

from onnxforge.cli.common import STATE, annotate, check_outputs, console
from onnxforge.cli.groups import ReportOptions, grouped
from onnxforge.cli.common import complete_choices, is_stopped, wants_json
from onnxforge.core.options import LIMITS
from onnxforge.core.errors import UsageError, did_you_mean


class _RunByDefault(TyperGroup):
    def parse_args(self, ctx, args):
        if args and args[0] not in self.commands and args[0] not in ("-h", "--help"):
            args = ["run", *args]
        return super().parse_args(ctx, args)


app = typer.Typer(name="zoo", cls=_RunByDefault, no_args_is_help=True, add_completion=False, rich_markup_mode=None,
                  pretty_exceptions_enable=False,
                  help="Release many models at once (locally in parallel, on Ray, or as a CI matrix), with one "
                       "verdict.")

OutOpt = Annotated[Path, typer.Option("-o", "--out-dir", help="Where the releases and the verdict go.",
                                      metavar="DIR")]


@app.command("run")
@grouped
def zoo_run(
    zoo_file: Annotated[Path, typer.Argument(help="The zoo file (zoo.toml).", metavar="ZOO.toml")],
    out_dir: OutOpt = Path("zoo-out"),
    executor: Annotated[str, typer.Option("--executor", autocompletion=complete_choices(("local", "ray", "matrix")), help="local (worker processes), ray (a Ray task per "
                                          "release) or matrix (print a GitHub Actions matrix).",
                                          metavar="local|ray|matrix")] = "local",
    jobs: Annotated[Optional[int], typer.Option("--jobs", "-j", min=1, max=LIMITS["jobs"], help="Releases at once (local; the CPUs of "
                                                "a local Ray instance). Default: the CPU quota.")] = None,
    ray_address: Annotated[Optional[str], typer.Option("--ray-address", help="auto, HOST:PORT or ray://HOST:10001 "
                                                       "(default: start a local instance).")] = None,
    only: Annotated[Optional[list[str]], typer.Option("--only", help="Run only this release (NAME or NAME-TARGET, "
                                                      "repeatable): one CI matrix job.", metavar="RELEASE")] = None,
    out: ReportOptions = ReportOptions(),
) -> None:
    """Run every release the zoo file lists, on each of its targets, into OUT/NAME[-TARGET]/,
    then write one verdict (zoo-report.json, zoo-report.md, junit.xml, report.html).
    Exit 0 only when every release passed, 1 when any did not."""
    from onnxforge.zoo.run import EXECUTORS, ZooRun, check_report, run_zoo, zoo_inputs

    as_json = wants_json(out.json_, out.fmt)
    if executor not in EXECUTORS:
        raise UsageError(f"--executor {executor!r}: unknown",
                         hint=f"{did_you_mean(executor, EXECUTORS)} use local, ray or matrix".lstrip())
    if ray_address is not None and executor != "ray":
        raise UsageError("--ray-address needs --executor ray")
    if ray_address is not None and jobs is not None:
        raise UsageError("--jobs sizes a local Ray instance; a cluster at --ray-address has its own CPUs",
                         hint="drop --jobs (cpus_per_release in the zoo file sets what each release reserves)")
    if executor == "matrix":
        return _print_matrix(zoo_file, only or (), jobs)
    check_report(out_dir, out.report)
    check_outputs(out.force, zoo_inputs(zoo_file), report=out.report)  # the releases' configs and sources too
    rep = run_zoo(zoo_file, ZooRun(out_dir, executor, jobs, ray_address, tuple(only or ()), out.force,
                                   on_done=None if STATE.verbosity < 0 else _progress,
                                   progress=None if STATE.verbosity < 0 else "onnxforge.cli.progress:zoo_release_lines"))
    _finish(rep, out_dir, as_json, out.report)


def _print_matrix(zoo_file: Path, only, jobs) -> None:
    from onnxforge.zoo.config import load_zoo
    from onnxforge.zoo.matrix import matrix

    if jobs is not None:
        raise UsageError("--jobs has no meaning with --executor matrix", hint="each matrix entry is its own job")
    sys.stdout.write(json.dumps(matrix(load_zoo(zoo_file), only), separators=(",", ":")) + "\n")


@app.command("merge")
@grouped
def zoo_merge(
    reports: Annotated[list[Path], typer.Argument(help="Each release's report.json (or its folder).",
                                                  metavar="REPORT.json")],
    out_dir: Annotated[Path, typer.Option("-o", "--out-dir", help="Where the verdict goes.", metavar="DIR")],
    zoo_file: Annotated[Optional[Path], typer.Option("--zoo", help="The zoo file: a release it lists whose report "
                                                     "is missing counts as an error.", metavar="ZOO.toml")] = None,
    out: ReportOptions = ReportOptions(),
) -> None:
    """Build the combined verdict from release folders made elsewhere (a CI matrix's jobs):
    onnxforge zoo merge out/*/report.json -o out."""
    from onnxforge.zoo.config import load_zoo
    from onnxforge.zoo.merge import check_merge_out, merge, report_folders
    from onnxforge.zoo.report import write_all
    from onnxforge.zoo.run import check_out, check_report

    as_json = wants_json(out.json_, out.fmt)
    folders = report_folders(reports)
    check_merge_out(folders, out_dir)
    check_report(out_dir, out.report)
    check_outputs(out.force, [*reports, *folders], report=out.report)
    check_out(out_dir, out.force)
    expected = load_zoo(zoo_file).entries if zoo_file is not None else None
    rep = merge(reports, out_dir, expected)
    write_all(rep, out_dir)
    _finish(rep, out_dir, as_json, out.report)


def _progress(record, done: int, total: int) -> None:
    why = f" ({record.failure})" if record.failure and not record.passed else ""
    sys.stderr.write(f"zoo [{done}/{total}] {record.folder}: {record.status}{why}\n")
    sys.stderr.flush()


def _finish(rep, out_dir: Path, as_json: bool, report) -> None:
    from onnxforge import report as envelope

    if report is not None:
        envelope.write_report(str(report), rep, "zoo")
        STATE.report_written = True
    if as_json:
        sys.stdout.write(envelope.dumps(rep, "zoo") + "\n")
    elif rep.releases:  # a zoo that never started one has only its error to say
        _table(rep)
    if rep.exit_code:
        _say_why(rep, out_dir)
        raise typer.Exit(rep.exit_code)


def _table(rep) -> None:
    from rich.table import Table

    from onnxforge.zoo.report import TITLES, gate_columns, headers, row_cells, timeline_summary

    cols = gate_columns(rep)
    t = Table(title=f"onnxforge zoo: {TITLES.get(rep.status, rep.status.upper())}")
    for h in headers(cols):
        t.add_column(h)
    for r in rep.releases:
        t.add_row(*row_cells(r, cols))
    c = console()
    c.print(t)
    c.print(f"timing: {timeline_summary(rep)}")


def _say_why(rep, out_dir: Path) -> None:
    if is_stopped(rep.exit_code):  # main says it, once
        return
    if rep.error:
        sys.stderr.write(f"error: {rep.error}\n")
        sys.stderr.write(f"hint: {rep.hint or 'see zoo-report.md'}\n")
        annotate("error", "onnxforge zoo", rep.error)
        return
    bad = [r for r in rep.releases if not r.passed]
    sys.stderr.write(f"error: zoo {rep.status}: {len(bad)} of {len(rep.releases)} release(s) did not pass"
                     f" ({', '.join(r.folder for r in bad[:10])}{' ...' if len(bad) > 10 else ''})\n")
    sys.stderr.write(f"hint: see {out_dir / 'zoo-report.md'} and each release's report.md\n")
    for r in bad:
        annotate("error", f"release {r.folder}", f"{r.status}: {r.failure}")
