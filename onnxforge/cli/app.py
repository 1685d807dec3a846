"""The Typer app. Commands live one per module; this file wires them and owns main()."""

from __future__ import annotations

import os
import sys
from typing import Annotated

import typer

from onnxforge.cli.common import STATE, exit_code_for, is_quiet_exit, report_error, setup_logging

app = typer.Typer(
    name="onnxforge",
    help="Take trained PyTorch and scikit-learn models to release-ready ONNX.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    rich_markup_mode=None,
    context_settings={"help_option_names": ["-h", "--help"]},
)


def _version(value: bool) -> None:
    if value:
        from onnxforge import __version__

        typer.echo(f"onnxforge {__version__}")
        raise typer.Exit(0)


@app.callback()
def _root(
    version: Annotated[bool, typer.Option("--version", callback=_version, is_eager=True, help="Print the version and exit.")] = False,
    debug: Annotated[bool, typer.Option("--debug", help="Show tracebacks for errors (works anywhere on the line).")] = False,
    verbose: Annotated[int, typer.Option("-v", "--verbose", count=True, help="More log output on stderr (repeatable).")] = 0,
    quiet: Annotated[bool, typer.Option("-q", "--quiet", help="Only errors on stderr.")] = False,
) -> None:
    STATE.debug = debug or bool(os.environ.get("ONNXFORGE_DEBUG"))
    STATE.verbosity = -1 if quiet else verbose
    setup_logging(STATE.verbosity)
    from onnxforge.cli.progress import install

    install(STATE.verbosity)


def _register() -> None:
    from onnxforge.cli.benchmark import benchmark_cmd
    from onnxforge.cli.convert import app as convert_app
    from onnxforge.cli.inspect import inspect_cmd
    from onnxforge.cli.quantize import app as quantize_app
    from onnxforge.cli.release import release_cmd
    from onnxforge.cli.stepcmd import step_command
    from onnxforge.cli.validate import validate_cmd
    from onnxforge.cli.zoo import app as zoo_app

    app.command("inspect")(inspect_cmd)
    app.command("validate")(validate_cmd)
    app.add_typer(convert_app, name="convert")
    app.command("simplify")(step_command("simplify"))
    app.add_typer(quantize_app, name="quantize")
    app.command("benchmark")(benchmark_cmd)
    app.command("release")(release_cmd)
    app.add_typer(zoo_app, name="zoo")


_register()


_ANYWHERE = ("--debug", "-v", "-vv", "-vvv", "--verbose", "-q", "--quiet")


def _hoist(args: list[str]) -> list[str]:
    """--debug, -v and -q work anywhere on the line (people add them after the command
    when a run fails): they move in front of the command."""
    flags = [a for a in args if a in _ANYWHERE]
    return flags + [a for a in args if a not in _ANYWHERE]


def _report_path(args: list[str]) -> str | None:
    for i, a in enumerate(args):
        if a == "--report" and i + 1 < len(args):
            return args[i + 1]
        if a.startswith("--report="):
            return a.split("=", 1)[1]
    return None


def main(argv: list[str] | None = None) -> int:
    """Console entry point: run the app, map every exception to one exit code."""
    import signal

    from onnxforge.cli.common import Terminated, write_error_report
    from onnxforge.fileio import remove_created_dirs

    args = _hoist(sys.argv[1:] if argv is None else list(argv))
    debug = "--debug" in args
    command = typer.main.get_command(app)

    def on_sigterm(signum, frame):  # what CI runners and `timeout` send: clean up like Ctrl-C
        STATE.terminated = True
        raise Terminated()

    previous = signal.signal(signal.SIGTERM, on_sigterm) if argv is None else None
    STATE.report_written, STATE.report_ok, STATE.terminated = False, None, False
    try:
        rv = command.main(args=args, prog_name="onnxforge", standalone_mode=False)
        code = rv if isinstance(rv, int) else 0
        exc = None
        if code == 130:  # Typer turned Ctrl-C into Exit(130), which click returns here
            sys.stderr.write("terminated\n" if STATE.terminated else "interrupted\n")
    except BaseException as e:  # noqa: BLE001 - this is the one place that maps them all
        exc, code = e, exit_code_for(e)
        if not is_quiet_exit(e):
            report_error(e, STATE.debug or debug)
    finally:
        if previous is not None:
            signal.signal(signal.SIGTERM, previous)
    if STATE.terminated and code == 130:  # click turns any KeyboardInterrupt into Abort: say which it was
        code = 143
    if code != 0:
        report = _report_path(args)
        if report and not STATE.report_written:
            write_error_report(report, exc or RuntimeError(f"exit {code}"), code)
        remove_created_dirs()
    sys.stdout.flush()
    if argv is None:
        sys.exit(code)
    return code
