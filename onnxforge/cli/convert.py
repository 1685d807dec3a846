"""`onnxforge convert torch|sklearn`: commands generated from the step registry."""

from __future__ import annotations

import typer

from onnxforge.cli.stepcmd import step_command

app = typer.Typer(name="convert", add_completion=False, rich_markup_mode=None, pretty_exceptions_enable=False,
                  help="Convert a torch or scikit-learn model to ONNX, checked against the source.",
                  no_args_is_help=True)
app.command("torch")(step_command("convert.torch"))
app.command("sklearn")(step_command("convert.sklearn"))
