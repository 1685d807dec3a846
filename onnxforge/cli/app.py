"""The Typer app. Commands live one per module; this file wires them and owns main().

Commands are built on first use (``LazyGroup``): ``onnxforge --help`` lists them from
the table below without importing the step declarations or building ~150 options, which
was most of its start-up; ``onnxforge simplify ...`` builds only ``simplify``.
"""

from __future__ import annotations

import os
import sys
from typing import Annotated

import typer
from typer.core import TyperGroup

from onnxforge.cli.common import (STATE, exit_code_for, is_quiet_exit, is_stopped, report_error, report_stopped,
                                  setup_logging)
from pathlib import Path
import ast
import functools
import importlib
import signal
from onnxforge.cli.common import Terminated, several_values_flags, write_error_report
from onnxforge.core.errors import did_you_mean
from onnxforge.core.system import run_caches

# name -> where the command comes from: "module:attr" (a function or a Typer app), or
# "step:NAME", a command generated from the step declarations (steps/<step>/step.py,
# cli/stepcmd.py). Its help is written once, where it is defined (command_help reads it).
COMMANDS = {
    "inspect": "onnxforge.cli.inspect:inspect_cmd",
    "validate": "onnxforge.cli.validate:validate_cmd",
    "convert": "onnxforge.cli.convert:app",
    "simplify": "step:simplify",
    "quantize": "onnxforge.cli.quantize:app",
    "benchmark": "onnxforge.cli.benchmark:benchmark_cmd",
    "release": "onnxforge.cli.release:release_cmd",
    "package": "step:package",
    "serve-check": "step:serve-check",
    "surgeon": "onnxforge.cli.surgeon:app",
    "doctor": "onnxforge.cli.doctor:doctor_cmd",
    "schema": "onnxforge.cli.schema:schema_cmd",
    "zoo": "onnxforge.cli.zoo:app",
}
# Commands whose options come from the step declarations: their flags may take several values (Opt.several)
STEP_COMMANDS = ("convert", "simplify", "quantize", "package", "serve-check")


def build_command(name: str):
    """The click command for ``name`` (imports its module and builds its options)."""
    where = COMMANDS[name]
    if where.startswith("step:"):
        from onnxforge.cli.stepcmd import step_command

        fn = step_command(where[5:])
    else:
        module, _, attr = where.partition(":")
        fn = getattr(importlib.import_module(module), attr)
    if isinstance(fn, typer.Typer):  # a group: convert, quantize
        return typer.main.get_command(fn)
    single = typer.Typer(add_completion=False, rich_markup_mode=None, pretty_exceptions_enable=False)
    single.command(name)(fn)
    return typer.main.get_command(single)


def command_help(name: str) -> str:
    """A command's help as its definition writes it (the function's docstring, the Typer
    app's ``help=``, the StepDef's summary), read from the source without importing it:
    ``onnxforge --help`` lists every command, and importing them all (the steps' functions
    and options) took 500 ms on a loaded 2-core machine, where reading them takes 15-50 ms."""
    where = COMMANDS[name]
    if where.startswith("step:"):
        path, attr = f"steps/{where[5:].split('.')[0].replace('-', '_')}/step.py", where[5:]
    else:
        module, _, attr = where.partition(":")
        path = module.removeprefix("onnxforge.").replace(".", "/") + ".py"
    try:
        tree = ast.parse((Path(__file__).resolve().parent.parent / path).read_text(encoding="utf-8"))
    except OSError:  # an install without sources (.pyc only): the list loses its help, not the command
        return ""
    for node in ast.walk(tree):
        if isinstance(node, ast.FunctionDef) and node.name == attr:
            return ast.get_docstring(node) or ""
        if isinstance(node, ast.Assign) and [getattr(t, "id", None) for t in node.targets] == [attr]:
            return next(k.value.value for k in node.value.keywords if k.arg == "help")
        if isinstance(node, ast.Call) and getattr(node.func, "id", "") == "StepDef" and node.args[0].value == attr:
            return node.args[3].value
    raise LookupError(f"{where}: no help found")  # a test reads every command's


class _Commands(dict):
    """click's ``group.commands``, filled on first look-up (code that walks
    ``group.commands[name]``, such as documentation generators, still works)."""

    def __missing__(self, name: str):
        if name not in COMMANDS:
            raise KeyError(name)
        self[name] = build_command(name)
        return self[name]


class LazyGroup(TyperGroup):
    """The root group: commands from COMMANDS, built when one is called or completed."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.commands = _Commands(self.commands)

    def list_commands(self, ctx) -> list[str]:
        return list(COMMANDS)

    def get_command(self, ctx, cmd_name: str):
        return self.commands[cmd_name] if cmd_name in COMMANDS else None

    def resolve_command(self, ctx, args):
        """Typer suggests from ``self.commands``, which fills lazily: suggest from the table."""
        try:
            return super().resolve_command(ctx, args)
        except Exception as e:
            near = did_you_mean(args[0], COMMANDS) if args and hasattr(e, "message") else ""
            if near and "Did you mean" not in e.message:
                e.message = f"{e.message.rstrip('.')}. {near[0].upper()}{near[1:]}"
            raise

    def format_commands(self, ctx, formatter) -> None:
        """The command list from the table: nothing is imported to print it."""
        from typer._click.utils import make_default_short_help

        limit = formatter.width - 6 - max(len(n) for n in COMMANDS)
        with formatter.section("Commands"):
            formatter.write_dl([(n, make_default_short_help(command_help(n), limit)) for n in COMMANDS])


app = typer.Typer(
    name="onnxforge",
    help="Take trained PyTorch and scikit-learn models to release-ready ONNX.",
    cls=LazyGroup,
    no_args_is_help=True,
    add_completion=True,  # --install-completion, --show-completion (bash, zsh, fish, powershell)
    pretty_exceptions_enable=False,
    rich_markup_mode=None,
    context_settings={"help_option_names": ["-h", "--help"]},
)


@functools.cache
def root_command():
    """The click command tree, built once per process. Typer builds a command's options
    from its signature (pydantic adapters, annotations evaluated): 5-20 ms a command,
    which every in-process call of main() (the zoo's local workers, a library loop, the
    tests: 750 builds, 7 s, in the fast lane) paid again. Click's commands keep no state
    between invocations: each call parses into its own context."""
    return typer.main.get_command(app)


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
    setup_logging(STATE.verbosity, STATE.debug)
    from onnxforge.cli.progress import install

    install(STATE.verbosity)


_ANYWHERE = ("--debug", "-v", "-vv", "-vvv", "--verbose", "-q", "--quiet")


def _hoist(args: list[str]) -> list[str]:
    """--debug, -v and -q work anywhere on the line (people add them after the command
    when a run fails): they move in front of the command."""
    flags = [a for a in args if a in _ANYWHERE]
    return flags + [a for a in args if a not in _ANYWHERE]


def _several_values(args: list[str]) -> list[str]:
    """Polygraphy and onnxsim write several values after one flag (``--atol 1e-5
    out0:1e-4``, ``--input-shapes a:[1,8] b:[1,4]``); Click takes one value per flag, so
    the flag is repeated before each further value. A following token is a value only
    when it reads as one (a number, NAME:NUMBER, NAME:DIMS), so positional arguments
    after the values stay positional."""
    flags = several_values_flags()
    if any(a in STEP_COMMANDS for a in args):  # their flags are declared in steps/: import them only then
        from onnxforge.cli.stepcmd import several_values_flags as step_flags

        flags = {**step_flags(), **flags}
    out: list[str] = []
    i = 0
    while i < len(args):
        a = args[i]
        out.append(a)
        i += 1
        if a == "--":
            return out + args[i:]
        flag = a.split("=", 1)[0]
        test = flags.get(flag)
        if test is None:
            continue
        if "=" not in a and i < len(args):  # the flag's own value
            out.append(args[i])
            i += 1
        while i < len(args) and test(args[i]):
            out += [flag, args[i]]
            i += 1
    return out


def _report_path(args: list[str]) -> str | None:
    for i, a in enumerate(args):
        if a == "--report" and i + 1 < len(args):
            return args[i + 1]
        if a.startswith("--report="):
            return a.split("=", 1)[1]
    return None


def main(argv: list[str] | None = None) -> int:
    """Console entry point: run the app, map every exception to one exit code."""

    args = _several_values(_hoist(sys.argv[1:] if argv is None else list(argv)))
    debug = "--debug" in args
    command = root_command()

    def on_sigterm(signum, frame):  # what CI runners and `timeout` send: clean up like Ctrl-C
        if STATE.terminated:  # the same signal again, sent to the process group too: the clean-up goes on
            return
        STATE.terminated = True
        raise Terminated()

    previous = signal.signal(signal.SIGTERM, on_sigterm) if argv is None else None
    STATE.report_written, STATE.report_ok, STATE.terminated = False, None, False
    try:
        with run_caches():
            rv = command.main(args=args, prog_name="onnxforge", standalone_mode=False)
        code = rv if isinstance(rv, int) else 0
        exc = None
        if is_stopped(code):  # a release or zoo stopped by Ctrl-C or SIGTERM returns its exit code here
            report_stopped(STATE.terminated)
    except BaseException as e:  # noqa: BLE001 - this is the one place that maps them all
        exc, code = e, exit_code_for(e)
        if type(e).__name__ == "NoArgsIsHelpError":  # `onnxforge` alone: the help, not an error (Click's way; exit 2)
            typer.echo(e.ctx.get_help(), err=True)
        elif not is_quiet_exit(e):
            report_error(e, STATE.debug or debug)
    finally:
        from onnxforge.core.progress import set_reporter

        set_reporter(None)  # the next run (or library call in this process) installs its own
        if previous is not None and not STATE.terminated:  # terminated: on_sigterm stays to absorb repeats
            signal.signal(signal.SIGTERM, previous)
    if STATE.terminated and code == 130:  # click turns any KeyboardInterrupt into Abort: say which it was
        code = 143
    if code != 0:
        report = _report_path(args)
        if report and not STATE.report_written:
            write_error_report(report, exc or RuntimeError(f"exit {code}"), code)
        from onnxforge.core.fileio import remove_created_dirs

        remove_created_dirs()
    sys.stdout.flush()
    if argv is None:
        if code in (130, 143):
            _forget_inner_interrupt()
        sys.exit(code)
    return code


def _forget_inner_interrupt() -> None:
    """After a Ctrl-C that landed in an import, `python -m onnxforge` sometimes printed
    its interrupted verdict and then died by SIGINT (exit -2, 1 run in 8 of a release
    stopped as its quantize step began; never with a plain script). CPython keeps a flag
    for a KeyboardInterrupt left unhandled by code run through its PyRun_* entry points
    and, for `-m`, kills itself with SIGINT after the interpreter exits when it is set;
    running a string through that path resets it (0 of 36 runs since)."""
    import ctypes

    ctypes.pythonapi.PyRun_SimpleString(b"pass")
