"""What every command shares: option aliases, output (JSON or table), the exit-code
mapping, and logging to stderr. Commands parse, call the library, then `emit`."""

from __future__ import annotations

import logging
import os
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any, Optional

import typer

from onnxforge.core.errors import ExitCode, OnnxforgeError, Terminated, did_you_mean  # noqa: F401 - Terminated: the CLI's name for it
from onnxforge.core.options import LIMITS
import math
from onnxforge.core.errors import UsageError, interrupt_of

log = logging.getLogger("onnxforge")


@dataclass
class State:
    debug: bool = False
    verbosity: int = 0  # -1 quiet, 0 normal, 1+ verbose
    report_written: bool = False
    report_ok: str | None = None  # the --report path, once it passed the output checks
    terminated: bool = False  # SIGTERM arrived


STATE = State()

# ----------------------------------------------------------------------------- options

def complete_choices(choices):
    """Shell completion (--install-completion) for a flag whose values are a fixed list."""
    def complete(incomplete: str) -> list[str]:
        return [c for c in map(str, choices) if c.startswith(incomplete)]

    return complete


JsonOpt = Annotated[bool, typer.Option("--json", help="Print only the JSON envelope on stdout.")]
FormatOpt = Annotated[
    str, typer.Option("--format", help="Output format: table or json.", metavar="table|json",
                      autocompletion=complete_choices(("table", "json")))
]
ReportOpt = Annotated[
    Optional[Path], typer.Option("--report", help="Also write the JSON envelope to this file (pass or fail).", metavar="PATH")
]
HtmlOpt = Annotated[
    Optional[Path], typer.Option("--html", help="Also write an HTML report with figures to this file (one "
                                                "self-contained file; pass or fail).", metavar="PATH")
]
ForceOpt = Annotated[bool, typer.Option("--force", help="Overwrite existing outputs (never an input).")]
OutputOpt = Annotated[Path, typer.Option("-o", "--output", help="Where to write the model (for package: the folder).", metavar="PATH")]
InputsOpt = Annotated[
    Optional[Path],
    typer.Option("--inputs", help="Input data: .npz, .npy, a folder of NAME.npy, or numbered sample folders.", metavar="PATH"),
]
DimOpt = Annotated[
    Optional[list[str]], typer.Option("--dim", help="Pin a symbolic dim: NAME=VALUE (repeatable).", metavar="NAME=VALUE")
]
ValRangeOpt = Annotated[
    Optional[list[str]],
    typer.Option("--val-range", help="Random input range NAME:[LO,HI] (or [LO,HI] for all).", metavar="NAME:[LO,HI]"),
]
InputNormOpt = Annotated[
    Optional[list[str]],
    typer.Option("--input-norm", help="Generate a float input as normalised images: NAME:imagenet (or clip, half) or "
                                      "NAME:MEAN1,MEAN2,MEAN3/STD1,STD2,STD3 (no NAME: every float input; default: "
                                      "what the model recorded).", metavar="NAME:NORM"),
]
OV_PRECISIONS = ("auto", "f32", "bf16", "f16")  # backends.openvino.runner.PRECISIONS (that module loads nothing heavy either)


def _ov_precision(value: str) -> str:
    if value not in OV_PRECISIONS:
        raise typer.BadParameter(f"{value!r}: use one of {', '.join(OV_PRECISIONS)}", param_hint="--ov-precision")
    return value


OvPrecisionOpt = Annotated[
    str, typer.Option("--ov-precision", help="OpenVINO's inference precision: auto (OpenVINO's choice: bf16 on CPUs "
                                             "with bf16 kernels), f32, bf16 or f16.", metavar="auto|f32|bf16|f16",
                      callback=_ov_precision, autocompletion=complete_choices(OV_PRECISIONS))
]
# Counts take their maximum from options.LIMITS (one table for every command and TOML key).
SeedOpt = Annotated[int, typer.Option("--seed", help="Seed for generated inputs.", min=0, max=LIMITS["seed"])]
SamplesOpt = Annotated[int, typer.Option("--samples", help="Number of random input samples.", min=1,
                                         max=LIMITS["samples"])]
ThreadsOpt = Annotated[Optional[int], typer.Option("--threads", help="ORT intra-op threads (default: the CPU quota).",
                                                   min=1, max=LIMITS["threads"])]
AtolOpt = Annotated[
    Optional[list[str]],
    typer.Option("--atol", help="Absolute tolerance, with per-output overrides: --atol 1e-4 logits:1e-3.", metavar="[NAME:]VALUE"),
]
RtolOpt = Annotated[
    Optional[list[str]],
    typer.Option("--rtol", help="Relative tolerance, with per-output overrides: --rtol 1e-3 logits:1e-2.", metavar="[NAME:]VALUE"),
]
# onnxsim's --overwrite-input-shape and Polygraphy's --input-shapes are --shape.
ShapeOpt = Annotated[
    Optional[list[str]],
    typer.Option("--shape", "--input-shapes", "--overwrite-input-shape",
                 help="Input shape NAME:DIMS, e.g. x:8x3x224x224 or x:[8,3,224,224] (several may follow one flag).",
                 metavar="NAME:DIMS"),
]


def several_values_flags() -> dict:
    """Flags of the hand-written commands (validate, benchmark) that take several values
    after one flag, as Polygraphy and onnxsim write them (``--atol 1e-5 out0:1e-4``),
    with the test a following token must pass to be one more value. The step commands
    declare theirs in their options classes (Opt.several)."""

    def tolerance(text: str) -> bool:  # specs is imported only when one of these flags is on the line
        from onnxforge.data.specs import is_per_output_value

        return is_per_output_value(text)

    def shape(text: str) -> bool:
        from onnxforge.data.specs import is_shape_value

        return is_shape_value(text)

    return {"--atol": tolerance, "--rtol": tolerance, "--shape": shape, "--input-shapes": shape,
            "--overwrite-input-shape": shape}


def check_outputs(force: bool, inputs, **outputs) -> None:
    """Before any work: every file the command will write (``--report`` ...) is not
    one of its inputs, not another of its outputs, and not an existing file unless
    ``--force``."""
    from onnxforge.core.fileio import check_output_path

    seen: dict = {}
    for name, path in outputs.items():
        if path is None:
            continue
        flag, path = "--" + name.replace("_", "-"), Path(path)
        key = path.resolve()
        if key in seen:
            raise UsageError(f"{flag} and {seen[key]} name the same file {path}", hint="give each output its own path")
        seen[key] = flag
        check_output_path(path, force=force, inputs=inputs, companions=() if name != "output" else (".data",),
                          what=flag)
    if outputs.get("report") is not None:
        STATE.report_ok = str(outputs["report"])  # an error envelope may go there now


def number(lo: float | None = None, hi: float | None = None, *, above: bool = False):
    """A click callback for a float option: finite, and within [lo, hi] (or > lo):
    a NaN threshold would switch a check off."""
    def check(value):
        if value is None:
            return value
        if not math.isfinite(value):
            raise typer.BadParameter(f"must be a finite number, got {value}")
        if lo is not None and (value <= lo if above else value < lo) or hi is not None and value > hi:
            rng = f"> {lo}" if above and hi is None else f"in [{lo}, {hi}]" if hi is not None else f">= {lo}"
            raise typer.BadParameter(f"must be {rng}, got {value}")
        return value

    return check


def wants_json(json_flag: bool, fmt: str | None) -> bool:
    if fmt not in (None, "table", "json"):
        near = did_you_mean(fmt, ("table", "json"))
        raise typer.BadParameter(f"unknown format {fmt!r}; {near + ' ' if near else ''}use table or json",
                                 param_hint="--format")
    return json_flag or fmt == "json"


def console(stderr: bool = False):
    from rich.console import Console

    stream = sys.stderr if stderr else sys.stdout
    plain = not stream.isatty()
    # Logs and CI capture: no colour, 200 columns (tables show their wide layout) unless
    # COLUMNS says otherwise; a terminal: its own width.
    width = 200 if plain and not os.environ.get("COLUMNS", "").isdigit() else None
    return Console(file=stream, no_color=plain or "NO_COLOR" in os.environ, width=width, highlight=False,
                   soft_wrap=False)


def emit(result: Any, *, as_json: bool, report: Path | None, passed: bool = True, kind: str | None = None,
         html: Path | None = None) -> None:
    """Print the result (JSON only, or a table), write --report and --html, and exit 1 on
    a failed check (6 when the result's status is inconclusive: no check failed, a
    timing gate could not be decided on this loaded machine)."""
    from onnxforge import report as rep
    from onnxforge.report.tables import render

    if report is not None:
        rep.write_report(str(report), result, kind)
        STATE.report_written = True
    if html is not None:
        from onnxforge.report.html import write_html

        write_html(html, result)
    if as_json:
        sys.stdout.write(rep.dumps(result, kind) + "\n")
        sys.stdout.flush()
    else:
        render(result, console(), verbose=STATE.verbosity >= 1)
    if not passed:
        inconclusive = getattr(result, "status", "") == "inconclusive"
        raise typer.Exit(int(ExitCode.INCONCLUSIVE if inconclusive else ExitCode.CHECK_FAILED))


class _StderrHandler(logging.StreamHandler):
    """Writes to ``sys.stderr`` as it is when the record comes: a live progress display
    swaps it so log lines print above the status line (and pytest's capture swaps it)."""

    @property
    def stream(self):
        return sys.stderr

    @stream.setter
    def stream(self, value) -> None:  # StreamHandler.__init__ assigns it; the property decides
        pass


def setup_logging(verbosity: int, debug: bool = False) -> None:
    from onnxforge.core.logs import TRACEBACKS, set_verbosity

    set_verbosity(verbosity)
    level = logging.WARNING if verbosity <= 0 else logging.INFO if verbosity == 1 else logging.DEBUG
    if verbosity < 0:
        level = logging.ERROR
    handler = _StderrHandler()
    handler.setFormatter(logging.Formatter("%(levelname)s: %(message)s" if verbosity > 1 else "%(message)s"))
    root = logging.getLogger("onnxforge")
    root.handlers[:] = [handler]
    root.setLevel(level)
    root.propagate = False
    TRACEBACKS.setLevel(logging.DEBUG if debug or verbosity > 1 else logging.NOTSET)


# ----------------------------------------------------------------------------- exit codes


def _click_kind(exc: BaseException) -> str | None:
    # Typer may vendor its own copy of click (typer._click), so match click's
    # exception classes by name rather than by identity.
    names = {c.__name__ for c in type(exc).__mro__ if "click" in c.__module__ or c.__module__.startswith("typer")}
    for kind in ("UsageError", "Abort", "Exit"):
        if kind in names:
            return kind
    return None


def interrupted(exc: BaseException) -> bool:
    return interrupt_of(exc) is not None or _click_kind(exc) == "Abort"


def exit_code_for(exc: BaseException) -> int:
    """The one mapping from exceptions to the exit codes of ARCHITECTURE.md."""
    if isinstance(exc, Terminated):
        return int(ExitCode.TERMINATED)
    if interrupted(exc):
        return int(ExitCode.INTERRUPTED)
    if isinstance(exc, OnnxforgeError):
        return int(exc.exit_code)
    kind = _click_kind(exc)
    if kind == "UsageError":
        return int(ExitCode.USAGE)
    if kind == "Exit":
        return int(exc.exit_code)
    if isinstance(exc, SystemExit):
        return exc.code if isinstance(exc.code, int) else 1
    return int(ExitCode.INTERNAL)


def is_quiet_exit(exc: BaseException) -> bool:
    return isinstance(exc, SystemExit) or _click_kind(exc) == "Exit"


def annotate(level: str, title: str, message: str) -> None:
    """A GitHub Actions annotation (::error / ::warning) on stderr, when running there:
    the failure then shows on the run page, not only in the log."""
    if os.environ.get("GITHUB_ACTIONS") != "true":
        return

    def esc(text: str, prop: bool = False) -> str:
        text = str(text).replace("%", "%25").replace("\r", "%0D").replace("\n", "%0A")
        return text.replace(":", "%3A").replace(",", "%2C") if prop else text

    sys.stderr.write(f"::{level} title={esc(title, True)}::{esc(message)}\n")


def write_error_report(path: str, exc: BaseException, code: int) -> None:
    """--report on an exit without a result: the error envelope — only to a path that
    passed the output checks (never an input, never an existing file without --force)."""
    from onnxforge import report as rep

    p = Path(path)
    if STATE.report_ok is None or Path(STATE.report_ok).resolve() != p.resolve():
        return
    message = getattr(exc, "message", None) or f"{type(exc).__name__}: {exc}" if code not in (130,) else "interrupted"
    try:
        rep.write_report(str(p), {"exit_code": code, "error": message, "hint": getattr(exc, "hint", None)}, "error")
    except Exception:  # noqa: BLE001 - the report is a courtesy here; the exit code is the verdict
        pass


def is_stopped(code: int) -> bool:
    """Exit codes of a run stopped by a signal: main says so, once."""
    return code in (int(ExitCode.INTERRUPTED), int(ExitCode.TERMINATED))


def report_stopped(terminated: bool) -> None:
    """Ctrl-C or SIGTERM: one error line and a hint, like every other exit."""
    sys.stderr.write("error: terminated (SIGTERM)\n" if terminated else "error: interrupted (Ctrl-C)\n")
    sys.stderr.write("hint: the run stopped before its end; what it was writing was removed (a release still "
                     "writes its reports). Rerun the command to finish\n")


def report_error(exc: BaseException, debug: bool) -> None:
    err = sys.stderr
    kind = _click_kind(exc)
    if interrupted(exc) and not isinstance(exc, OnnxforgeError):
        report_stopped(isinstance(exc, Terminated) or STATE.terminated)
        return
    if isinstance(exc, OnnxforgeError):
        err.write(f"error: {exc.message}\n")
        if exc.hint:
            err.write(f"hint: {exc.hint}\n")
        annotate("error", "onnxforge", exc.message)
    elif kind == "UsageError":
        ctx = getattr(exc, "ctx", None)
        where = ctx.command_path if ctx is not None else "onnxforge"
        err.write(f"error: {exc.format_message()}\n")
        err.write(f"hint: see `{where} --help`\n")
        annotate("error", "onnxforge", exc.format_message())
    elif isinstance(exc, KeyboardInterrupt) or kind == "Abort":
        report_stopped(isinstance(exc, Terminated) or STATE.terminated)
        return
    else:
        first = (str(exc).strip().splitlines() or [""])[0][:300]
        err.write(f"internal error: {type(exc).__name__}: {first}\n")
        annotate("error", "onnxforge internal error", f"{type(exc).__name__}: {first}")
        if not debug:
            err.write("hint: rerun with --debug for the traceback, and report it\n")
    if debug and kind != "UsageError":
        import traceback

        traceback.print_exception(exc, file=err)

TrustPickleOpt = Annotated[
    bool, typer.Option("--trust-pickle", help="Allow loading pickles (runs arbitrary code from the file).")
]

PrintStepOpt = Annotated[
    bool, typer.Option("--print-step", help="Print the release.toml [[steps]] entry for this command and exit.")
]
