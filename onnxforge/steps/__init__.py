"""The steps: one folder each (steps/<step>/), holding its code, its options
(options.py) and its declaration (step.py: ``STEPS``, a tuple of ``StepDef``).

This module collects the declarations by importing each folder's step.py, on first
use of ``STEPS``, ``TOOLS`` or ``RUN_NAMES`` (so importing one step module never
imports the others, and `onnxforge --help` imports none). ``STEPS`` are the
model-producing steps a release runs; ``TOOLS`` the commands with declared options
that are not pipeline steps (package, serve-check). tests/test_architecture.py pins
that every folder here is collected and every declared step has its folder.
"""

from __future__ import annotations

import functools
from typing import Any, Callable

from onnxforge.steps.base import StepDef


@functools.cache
def _declared() -> tuple[StepDef, ...]:
    # in this order: the CLI reference, the release-toml reference and the schemas list them so
    from onnxforge.steps.convert import step as convert
    from onnxforge.steps.package import step as package
    from onnxforge.steps.quantize import step as quantize
    from onnxforge.steps.serve_check import step as serve_check
    from onnxforge.steps.simplify import step as simplify
    from onnxforge.steps.surgeon import step as surgeon

    defs = (*convert.STEPS, *simplify.STEPS, *quantize.STEPS, *package.STEPS, *serve_check.STEPS,
            *surgeon.STEPS)
    names = [d.name for d in defs]
    twice = {n for n in names if names.count(n) > 1}
    if twice:
        raise ValueError(f"step {sorted(twice)[0]!r} is declared twice")
    return defs


def __getattr__(name: str) -> Any:
    if name == "STEPS":
        return {d.name: d for d in _declared() if d.run}
    if name == "TOOLS":
        return {d.name: d for d in _declared() if not d.run}
    if name == "RUN_NAMES":
        return sorted({d.run for d in _declared() if d.run})
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def step_for(run: str, framework: str | None = None) -> StepDef:
    """The step a ``[[steps]] run = ...`` names (convert depends on the framework)."""
    steps = __getattr__("STEPS")
    if run == "convert":
        return steps[f"convert.{framework}"]
    for d in steps.values():
        if d.run == run:
            return d
    raise KeyError(run)


def function_of(step: StepDef) -> Callable:
    return step.function
