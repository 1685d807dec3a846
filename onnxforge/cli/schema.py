"""`onnxforge schema NAME`: the JSON Schema of a file onnxforge reads or writes
(onnxforge/jsonschemas.py generates them; the package ships them)."""

from __future__ import annotations

import sys
from typing import Annotated

import typer
from onnxforge.core.errors import UsageError
from onnxforge.core.options import suggest


def schema_cmd(
    name: Annotated[str, typer.Argument(help="release (release.toml), zoo (zoo.toml), report (a release's "
                                             "report.json) or zoo-report (zoo-report.json).", metavar="NAME")],
) -> None:
    """Print the JSON Schema of release.toml, zoo.toml, report.json or zoo-report.json
    (stdout holds only the schema)."""
    from onnxforge.jsonschemas import FOLDER, NAMES, file_name

    if name not in NAMES:
        close = suggest(name, NAMES)
        raise UsageError(f"no schema named {name!r}", hint=f"schemas: {', '.join(NAMES)}"
                         + (f"; {close}" if close.startswith("did you mean") else ""))
    sys.stdout.write((FOLDER / file_name(name)).read_text())
