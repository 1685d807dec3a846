"""`onnxforge quantize dynamic|static|int4|bf16|fp16`: commands generated from the step declarations (steps/)."""

from __future__ import annotations

import typer

from onnxforge.cli.stepcmd import mount_steps

app = typer.Typer(name="quantize", add_completion=False, rich_markup_mode=None, pretty_exceptions_enable=False,
                  help="Quantize a model: dynamic or static int8, int4 weights (CPU), bf16, or fp16 (GPU).",
                  no_args_is_help=True)
mount_steps(app, "quantize")
