"""`onnxforge convert torch|sklearn`: commands generated from the step declarations (steps/)."""

from __future__ import annotations

import typer

from onnxforge.cli.stepcmd import mount_steps

app = typer.Typer(name="convert", add_completion=False, rich_markup_mode=None, pretty_exceptions_enable=False,
                  help="Convert a torch or scikit-learn model to ONNX, checked against the source.",
                  no_args_is_help=True)
mount_steps(app, "convert")
