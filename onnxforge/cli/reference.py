"""The reference pages that are generated, so they cannot drift from the code:
docs/cli-reference.md (every command's --help, from Typer) and docs/release-toml.md
(every release.toml key, from the declarations the config loader validates with).

``python -m onnxforge.cli.reference`` rewrites both; tests/test_docs.py fails when a
checked-in page differs from what this module writes now.
"""

from __future__ import annotations

import sys
from pathlib import Path
from onnxforge.cli.app import root_command
from onnxforge.core.options import default_of, fields_of, toml_place, type_text
from onnxforge.pipeline.config import DataSection, GATES, PackageSection, ServeCheckSection, StepParity
from onnxforge.steps import STEPS, TOOLS

PAGES = ("cli-reference.md", "release-toml.md")
_WIDTH = 100


def _help_text(command, path: list[str]) -> str:
    root = root_command()
    ctx = root.make_context("onnxforge", ["--help"], resilient_parsing=True)
    for name in path:
        sub = command.get_command(ctx, name) if hasattr(command, "get_command") else None
        ctx = sub.make_context(name, [], parent=ctx, resilient_parsing=True)
        command = sub
    ctx.terminal_width = ctx.max_content_width = _WIDTH
    return command.get_help(ctx)


def _commands(group, ctx, prefix: list[str]):
    """(path, command) for every command and sub-command, in --help order."""
    for name in group.list_commands(ctx):
        cmd = group.get_command(ctx, name)
        yield [*prefix, name], cmd
        if hasattr(cmd, "list_commands"):
            sub_ctx = cmd.make_context(name, [], parent=ctx, resilient_parsing=True)
            yield from _commands(cmd, sub_ctx, [*prefix, name])


def cli_reference() -> str:
    root = root_command()
    ctx = root.make_context("onnxforge", [], resilient_parsing=True)
    out = ["# Command reference", "",
           "Generated from the commands themselves (`python -m onnxforge.cli.reference`): each section is",
           "that command's `--help`. How the commands behave, with examples: [commands.md](commands.md).", ""]
    for path, _ in [([], root), *_commands(root, ctx, [])]:
        title = " ".join(["onnxforge", *path])
        out += [f"## `{title}`", "", "```text", _help_text(root, path).rstrip(), "```", ""]
    return "\n".join(out)


def _default_text(f) -> str:
    d = default_of(f)
    if d in (None, (), {}, []):
        return "—"
    if isinstance(d, bool):
        return "`true`" if d else "`false`"
    return f"`{d!r}`" if isinstance(d, str) else f"`{d}`"


def _rows(cls, table: str | None = None) -> list[str]:
    """One row per key of ``cls`` that a TOML sets in ``table`` ("" the step's own;
    None: every field, for the config's own sections)."""
    rows = []
    for f, o in fields_of(cls):
        place = toml_place(f, o) if table is not None else ("", f.name)
        if place is None or (table is not None and place[0] != table):
            continue
        rows.append(f"| `{place[1]}` | {type_text(cls, f.name).replace('|', '&#124;')} | {_default_text(f)} | "
                    f"{o.help.replace('|', '&#124;')} |")
    return rows


def _table(title: str, intro: str, rows: list[str], level: int = 2) -> list[str]:
    head = ["| key | type | default | meaning |", "|---|---|---|---|"]
    return ["#" * level + f" {title}", "", *([intro, ""] if intro else []), *(head + rows if rows else ["(no keys)"]), ""]


def toml_reference() -> str:
    out = ["# release.toml reference", "",
           "Generated from the declarations the config loader validates with (`python -m "
           "onnxforge.cli.reference`). A guide with a full example: [commands.md](commands.md#release).", ""]
    intro = ("`source` (a factory `file.py:function` or `module:function`, a `.pt2`, TorchScript, `.skops`, `.onnx`, "
             "a Hugging Face folder or `hf:ID`; paths relative to the config) and `framework` (`torch`, `sklearn` or "
             "`onnx`) are required; `val_ranges` works for every framework. The other keys set the convert step's "
             "options, per framework:")
    out += ["## `[model]`", "", intro, ""]
    for fw in ("torch", "sklearn"):
        out += _table(f"`framework = \"{fw}\"`", "", _rows(STEPS[f"convert.{fw}"].options, "model"), level=3)
    out += _table("`[data]`", "Files relative to the config.", _rows(DataSection))
    for name, step in STEPS.items():
        out += _table(f"`[[steps]] run = \"{step.run}\"`" + (f" ({name.split('.')[1]})" if step.run == "convert" else ""),
                      step.summary, _rows(step.options, ""))
    out += _table("A step's `parity = { ... }`", "The step's own ledger criteria, replacing the parity gate's for "
                  "its row.", _rows(StepParity))
    gate_intros = {"parity": "Every step's output against the source (the parity ledger).",
                   "accuracy": "Accuracy on data.validation's labels against the source's.",
                   "latency": "The final model benchmarked against the first ONNX model."}
    for name, cls in GATES.items():
        out += _table(f"`[gates] {name} = {{ ... }}`", gate_intros.get(name, ""), _rows(cls))
    out += _table("`[package]`", "Deployable folders written after the gates pass; the other keys are "
                  "`onnxforge package`'s options.", _rows(PackageSection) + _rows(TOOLS["package"].options, ""))
    out += _table("`[serve_check]`", "A gate on the packaged model served by MLServer; the other keys are "
                  "`onnxforge serve-check`'s options.", _rows(ServeCheckSection) + _rows(TOOLS["serve-check"].options, ""))
    return "\n".join(out)


def render(name: str) -> str:
    return {"cli-reference.md": cli_reference, "release-toml.md": toml_reference}[name]()


def main(argv: list[str] | None = None) -> int:
    docs = Path(__file__).resolve().parents[2] / "docs"
    for name in PAGES:
        (docs / name).write_text(render(name), encoding="utf-8")
        print(f"wrote docs/{name}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
