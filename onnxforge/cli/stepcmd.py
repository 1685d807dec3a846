"""CLI commands generated from the step declarations (steps/<step>/): each option field of a step becomes
a flag (its type, help, default and metavar from the declaration), values pass
through the same validation as a release TOML, and ``--print-step`` prints the
release config entry the command corresponds to."""

from __future__ import annotations

import dataclasses
import inspect
import sys
import typing
from pathlib import Path
from typing import Annotated, Any, Optional

import typer

from onnxforge.cli.common import (FormatOpt, complete_choices, JsonOpt, OutputOpt, PrintStepOpt, ReportOpt, check_outputs, emit,
                                  wants_json)
from onnxforge.core.errors import UsageError
from onnxforge.core.progress import task
from onnxforge.core.options import (Opt, base_type, choices_of, default_of, deprecated_keys, fields_of, flag_of,
                                    non_defaults, toml_key, toml_place, toml_value, upper_bound, validate_options)
from onnxforge.steps import STEPS, TOOLS, function_of
from onnxforge.steps.base import StepDef


def _ordered(cls) -> list[tuple[dataclasses.Field, Opt]]:
    """The step's own fields first, then the shared groups (checks, output)."""
    depth = {}
    for level, klass in enumerate(cls.__mro__):  # a field redeclared below stays with its group
        for name in klass.__dict__.get("__annotations__", {}):
            depth[name] = level
    return sorted(fields_of(cls), key=lambda fo: depth.get(fo[0].name, 99))


def _cli_type(cls, f: dataclasses.Field, o: Opt):
    t = base_type(cls, f.name)
    if t is bool:
        return Optional[bool]
    if o.parse is None and t in (int, float, str):
        return Optional[t]
    if o.parse is None and typing.get_origin(t) is typing.Literal:
        return Optional[str]
    if o.parse is None and typing.get_origin(t) in (tuple, list):
        return Optional[list[str]]
    if o.parse is None:
        return Optional[str]  # e.g. int | str (a size): validated after
    return Optional[list[str]]  # values with a grammar of their own, parsed by o.parse


def _metavar(cls, f: dataclasses.Field, o: Opt) -> str | None:
    if o.metavar:
        return o.metavar
    choices = choices_of(cls, f.name)
    if choices:
        return "|".join(map(str, choices))
    return {int: "N", float: "X", str: "TEXT"}.get(base_type(cls, f.name), "VALUE")


def _help(cls, f: dataclasses.Field, o: Opt) -> str:
    text = o.help
    d = default_of(f)
    if d not in (None, (), {}, [], False) and base_type(cls, f.name) is not bool and "default" not in text:
        text += f" [default: {d}]"
    hi = upper_bound(cls, f.name)
    if hi is not None:
        text += f" [at most {hi:g}]"
    return text


def _param(cls, f, o) -> inspect.Parameter:
    decl = flag_of(f, o)
    if base_type(cls, f.name) is bool and "/" not in decl:
        decl = f"{decl}/--no-{decl[2:]}"
    metavar = None if base_type(cls, f.name) is bool else _metavar(cls, f, o)
    choices = choices_of(cls, f.name)
    info = typer.Option(decl, *o.aliases, help=_help(cls, f, o), metavar=metavar, show_default=False,
                        autocompletion=complete_choices(choices) if choices else None)
    return inspect.Parameter(f.name, inspect.Parameter.KEYWORD_ONLY, default=None,
                             annotation=Annotated[_cli_type(cls, f, o), info])


def _deprecated_params(cls, f, o) -> list[inspect.Parameter]:
    """A field's former flags: hidden parameters named by their key (options_from_cli
    hands them to validate_options, which warns and renames)."""
    return [inspect.Parameter(key, inspect.Parameter.KEYWORD_ONLY, default=None,
                              annotation=Annotated[_cli_type(cls, f, o), typer.Option(flag, hidden=True)])
            for flag, key in zip(o.deprecated, deprecated_keys(o))]


def several_values_flags() -> dict[str, Any]:
    """Flags of the step commands that take several values after them (--atol 1e-5
    out0:1e-4), every spelling, with the test a following token must pass."""
    out = {}
    for step in (*STEPS.values(), *TOOLS.values()):
        for f, o in fields_of(step.options):
            if o.several is not None:
                for flag in (flag_of(f, o), *o.aliases, *o.deprecated):
                    out[flag] = o.several
    return out


def _cli_value(o: Opt, v):
    if o.parse is not None:
        return o.parse(list(v) if isinstance(v, (list, tuple)) else [v])
    return list(v) if isinstance(v, (list, tuple)) else v


def options_from_cli(step: StepDef, given: dict[str, Any]):
    """The step's options from parsed CLI values (None: not given), validated."""
    values, names = {}, {}
    for f, o in fields_of(step.options):
        v = given.get(f.name)
        if v is not None:
            values[f.name], names[f.name] = _cli_value(o, v), flag_of(f, o).split("/")[0]
        for flag, key in zip(o.deprecated, deprecated_keys(o)):
            if given.get(key) is not None:
                values[key], names[key] = _cli_value(o, given[key]), flag
    return validate_options(step.options, values, keys=names)


def step_toml(step: StepDef, source: str | None, options) -> str:
    """The release config entry (and [model] / [data] tables) for these options;
    options left at their defaults are omitted."""
    tables: dict[str, dict] = {"model": {}, "data": {}, "": {}}
    if step.source == "source":
        tables["model"].update(source=source, framework=step.name.split(".")[1])
    changed = non_defaults(options)
    for f, o in fields_of(step.options):
        place = toml_place(f, o)
        if place is None or f.name not in changed:
            continue
        tables.setdefault(place[0], {})[place[1]] = changed[f.name]
    lines = []
    for name in ("model", "data"):
        if tables[name]:
            lines += [f"[{name}]", *(f"{toml_key(k)} = {toml_value(v)}" for k, v in tables[name].items()), ""]
    lines += ["[[steps]]", f'run = "{step.run}"', *(f"{toml_key(k)} = {toml_value(v)}" for k, v in tables[""].items())]
    return "\n".join(lines) + "\n"


def _inputs_of(source: str, options) -> list:
    """Every file a step reads: its source or model and its path options."""
    return [source, *(getattr(options, f.name) for f, o in fields_of(type(options)) if o.path)]


ARGUMENTS = {  # what the positional argument is, per StepDef.source
    "source": ("SOURCE", "The model source: a .pt2, a Hugging Face folder or hf:ID, TorchScript, .skops, a factory "
                         "module:function (runs its code), or a pickle with --trust-pickle."),
    "model": ("IN.onnx", "The ONNX model."),
    "package": ("MODEL_OR_RELEASE", "An ONNX model, or a folder written by `onnxforge release`."),
    "folder": ("DIR", "A folder written by `onnxforge package` (target mlserver or mlflow)."),
}


def _fixed_params(step: StepDef) -> list[inspect.Parameter]:
    what, arg_help = ARGUMENTS[step.source]
    out = [inspect.Parameter("source", inspect.Parameter.POSITIONAL_OR_KEYWORD,
                             annotation=Annotated[str, typer.Argument(help=arg_help, metavar=what, show_default=False)])]
    if step.output:
        out.append(inspect.Parameter("output", inspect.Parameter.KEYWORD_ONLY, annotation=OutputOpt))
    return out


def _tail_params(step: StepDef) -> list[inspect.Parameter]:
    out = [inspect.Parameter("print_step", inspect.Parameter.KEYWORD_ONLY, default=False, annotation=PrintStepOpt)] \
        if step.run else []
    return out + [
        inspect.Parameter("json_", inspect.Parameter.KEYWORD_ONLY, default=False, annotation=JsonOpt),
        inspect.Parameter("fmt", inspect.Parameter.KEYWORD_ONLY, default="table", annotation=FormatOpt),
        inspect.Parameter("report", inspect.Parameter.KEYWORD_ONLY, default=None, annotation=ReportOpt),
    ]


def step_command(name: str):
    """A Typer command function for a registered step (or tool: package, serve-check)."""
    step = STEPS[name] if name in STEPS else TOOLS[name]
    cls = step.options
    params = [*_fixed_params(step), *(_param(cls, f, o) for f, o in _ordered(cls)),
              *(p for f, o in _ordered(cls) for p in _deprecated_params(cls, f, o)), *_tail_params(step)]

    def command(source: str, **kw) -> None:
        as_json = wants_json(kw.pop("json_"), kw.pop("fmt"))
        output, print_step, report = kw.pop("output", None), kw.pop("print_step", False), kw.pop("report")
        options = options_from_cli(step, kw)
        if print_step:
            sys.stdout.write(step_toml(step, source, options))
            return
        check_outputs(getattr(options, "force", False), _inputs_of(source, options), report=report)
        if report is not None and output is not None and Path(report).resolve() == Path(output).resolve():
            raise UsageError(f"--report and --output name the same file {output}", hint="give each its own path")
        fn = function_of(step)
        with task(name.replace(".", " ")):  # "convert torch", "quantize static", "serve-check"
            res = fn(source, Path(output), options) if step.output else fn(source, options)
        emit(res, as_json=as_json, report=report, passed=res.passed)

    command.__signature__ = inspect.Signature(params)
    command.__annotations__ = {p.name: p.annotation for p in params}
    command.__doc__ = step.summary
    command.__name__ = name.replace(".", "_").replace("-", "_")
    return command


def mount_steps(app: typer.Typer, group: str) -> None:
    """One subcommand per declared step named GROUP.MODE (``quantize.static`` ->
    ``onnxforge quantize static``): a new mode or framework needs no edit here."""
    for name in STEPS:
        head, _, leaf = name.partition(".")
        if head == group and leaf:
            app.command(leaf)(step_command(name))
