"""`onnxforge quantize dynamic|static|fp16`: commands generated from the step registry."""

from __future__ import annotations

import typer

from onnxforge.cli.stepcmd import step_command

app = typer.Typer(name="quantize", add_completion=False, rich_markup_mode=None, pretty_exceptions_enable=False,
                  help="Quantize a model: dynamic or static int8 (CPU), or fp16 (GPU).", no_args_is_help=True)
app.command("fp16")(step_command("quantize.fp16"))
app.command("dynamic")(step_command("quantize.dynamic"))
app.command("static")(step_command("quantize.static"))
