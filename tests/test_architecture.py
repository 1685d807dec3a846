"""The structure the code promises (docs/architecture.md), checked: the layer contract,
no import cycles, small functions, step functions with few parameters, step
declarations that are complete, and steps and frameworks that are folders which
register themselves."""

import ast
import functools
import inspect
import json
import subprocess
import sys

import pytest

from conftest import ROOT

PKG = ROOT / "onnxforge"
pytestmark = pytest.mark.xdist_group("architecture")  # one worker parses the package once (_nodes)


def test_layer_contract_holds():
    """import-linter's contracts in pyproject.toml (cli > zoo > pipeline > steps > checks >
    backends > report, data > core; the frameworks independent); the library never
    imports the CLI."""
    r = subprocess.run([sys.executable, "-c", "import sys; from importlinter.cli import lint_imports_command; "
                        "sys.exit(lint_imports_command())"], cwd=ROOT, capture_output=True, text=True)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-2000:]
    assert "0 broken" in r.stdout


def test_every_module_is_in_a_layer():
    """A module the contract does not name is not checked by it (memory.py was not)."""
    import re
    import tomllib

    cfg = tomllib.loads((ROOT / "pyproject.toml").read_text())
    layers = cfg["tool"]["importlinter"]["contracts"][0]["layers"]
    named = {m.strip() for layer in layers for m in re.split(r"[:|]", layer)}
    modules = {f"onnxforge.{p.stem}" for p in PKG.iterdir()
               if (p.suffix == ".py" and p.stem not in ("__init__", "__main__")) or (p / "__init__.py").exists()}
    assert modules - named == set()


def test_no_import_cycles():
    """Not even through imports inside functions: every direct import A -> B must not
    lead back from B to A."""
    import grimp

    # __init__.py's `if TYPE_CHECKING:` imports never run: they show mypy the lazy exports
    g = grimp.build_graph("onnxforge", exclude_type_checking_imports=True)
    cycles = []
    for a in sorted(g.modules):
        for b in sorted(g.find_modules_directly_imported_by(a)):
            if b != a and g.chain_exists(importer=b, imported=a):
                cycles.append(" -> ".join(g.find_shortest_chain(importer=b, imported=a)) + f" -> {b}")
    assert not cycles, "\n".join(cycles)


@functools.cache
def _nodes() -> tuple:
    """(path, its AST nodes) for every module of the package: parsed once for the tests below
    (about 0.5 s each time; pytestmark keeps them on one xdist worker)."""
    return tuple((path.relative_to(ROOT), tuple(ast.walk(ast.parse(path.read_text()))))
                 for path in sorted(PKG.rglob("*.py")))


def _functions():
    return ((p, n) for p, nodes in _nodes() for n in nodes if isinstance(n, (ast.FunctionDef, ast.AsyncFunctionDef)))


def test_no_function_over_80_lines():
    long = [f"{p}:{n.lineno} {n.name} ({n.end_lineno - n.lineno + 1} lines)" for p, n in _functions()
            if n.end_lineno - n.lineno + 1 > 80]
    assert not long, "\n".join(long)


_HELP_MODULES = """
import json, sys
from onnxforge.cli.app import main, root_command


def paths(group, ctx, path):
    yield path
    for name in getattr(group, "list_commands", lambda ctx: [])(ctx):
        yield from paths(group.get_command(ctx, name), ctx, [*path, name])


root = root_command()
for path in list(paths(root, root.make_context("onnxforge", ["--help"], resilient_parsing=True), [])):
    try:
        main([*path, "--help"])
    except SystemExit:
        pass
print(json.dumps(sorted(m for m in sys.modules if m.startswith("onnxforge"))), file=sys.stderr)
"""


def test_onnxforge_modules_are_imported_at_the_top():
    """An onnxforge module imports onnxforge's own modules at its top; only the modules a
    command's --help loads import some inside functions, so that --help stays light
    (docs/architecture.md). 390 imports sat inside functions when #25 was filed."""
    r = subprocess.run([sys.executable, "-c", _HELP_MODULES], capture_output=True, text=True, cwd=ROOT, timeout=120)
    assert r.returncode == 0, r.stderr[-2000:]
    helped = set(json.loads(r.stderr.strip().splitlines()[-1]))
    assert {"onnxforge.cli.app", "onnxforge.steps.quantize.step"} <= helped and "onnxforge.pipeline.run" not in helped
    inside = set()
    for path, nodes in _nodes():
        if ".".join(path.with_suffix("").parts).removesuffix(".__init__") in helped:
            continue
        for fn in (n for n in nodes if isinstance(n, (ast.FunctionDef, ast.AsyncFunctionDef))):
            inside |= {f"{path}:{n.lineno}" for n in ast.walk(fn)
                       if isinstance(n, ast.ImportFrom) and (n.module or "").split(".")[0] == "onnxforge"
                       or isinstance(n, ast.Import) and any(a.name.split(".")[0] == "onnxforge" for a in n.names)}
    assert not inside, sorted(inside)


def _command_functions():
    """The hand-written CLI commands: ``*_cmd`` functions and those under ``@app.command``."""
    for path, node in _functions():
        decorated = any(isinstance(d, ast.Call) and getattr(d.func, "attr", "") == "command"
                        for d in node.decorator_list)
        if path.parts[1] == "cli" and (node.name.endswith("_cmd") or decorated):
            yield path, node


def test_command_functions_take_at_most_8_parameters():
    """Flags come in option groups (cli/groups.py), not one parameter each: validate took 30."""
    args = {f"{p}:{n.name}": len(n.args.args) + len(n.args.kwonlyargs) for p, n in _command_functions()}
    assert len(args) >= 12 and "onnxforge/cli/validate.py:validate_cmd" in args, args
    assert max(args.values()) <= 8, {k: v for k, v in args.items() if v > 8}


def test_command_help_has_one_source():
    """Each command's help is written once, where the command is defined (a docstring, a
    Typer app's help=, a StepDef's summary): no table or test keeps a copy."""
    from onnxforge.cli.app import COMMANDS, command_help

    def norm(text):
        return " ".join(text.split())

    texts = [norm(n.value) for _, nodes in _nodes() for n in nodes
             if isinstance(n, ast.Constant) and isinstance(n.value, str)]
    for name in COMMANDS:
        help_ = norm(command_help(name))
        assert len(help_) > 20 and texts.count(help_) == 1, (name, help_, texts.count(help_))


def test_step_functions_take_their_options_as_one_object():
    from onnxforge.steps import STEPS, function_of

    for step in STEPS.values():
        params = inspect.signature(function_of(step)).parameters
        assert len(params) <= 4, (step.name, list(params))


def test_every_step_folder_is_registered_and_every_step_has_its_folder():
    """A step is a folder, steps/<step>/: its code, options.py and step.py (its StepDefs),
    collected by steps/__init__.py. A folder it does not collect would be a step no
    command, release or schema knows; a step whose function or options live outside
    its folder would be one a contributor cannot find."""
    import importlib

    from onnxforge import steps

    folders = {p.name for p in (PKG / "steps").iterdir() if (p / "__init__.py").is_file()}
    collected = {*steps.STEPS.values(), *steps.TOOLS.values()}
    homes = {}
    for d in collected:
        folder = d.function.__module__.split(".")[2]
        homes.setdefault(folder, set()).add(d)
        assert d.function.__module__.startswith(f"onnxforge.steps.{folder}."), d.name
        assert d.options.__module__ == f"onnxforge.steps.{folder}.options", (d.name, d.options.__module__)
    assert set(homes) == folders, f"folders not collected: {folders - set(homes)}; steps without a folder: " \
                                  f"{set(homes) - folders}"
    for folder in folders:
        declared = set(importlib.import_module(f"onnxforge.steps.{folder}.step").STEPS)
        assert declared == homes[folder], folder


def test_every_backend_folder_is_a_registered_framework():
    """A framework is a folder, backends/<framework>/, whose package declares RUNNERS and
    SUFFIXES; backends.frameworks() must import every such folder, and each runner it
    registers must live in it."""
    from onnxforge import backends

    folders = {p.name for p in (PKG / "backends").iterdir() if (p / "__init__.py").is_file()}
    registered = backends.frameworks()
    assert set(registered) == folders
    for name, fw in registered.items():
        assert set(fw.SUFFIXES) <= set(fw.RUNNERS), name
        for kind, make in fw.RUNNERS.items():
            assert make.__module__.startswith(f"onnxforge.backends.{name}."), (name, kind, make.__module__)


def test_step_declarations_are_complete():
    """Every option has help, unique CLI flags (aliases too), and an example that sets a non-default value."""
    from onnxforge.core.options import fields_of, flag_of
    from onnxforge.steps import STEPS

    for step in STEPS.values():
        flags = {}
        for f, o in fields_of(step.options):
            assert o.help, (step.name, f.name)
            for flag in (*flag_of(f, o).split("/"), *o.aliases):
                assert flag not in flags, (step.name, flag, f.name, flags.get(flag))
                flags[flag] = f.name
            assert o.example or f.name in ("inputs", "example_inputs", "weights", "sample"), (step.name, f.name)


def test_public_functions_are_not_shadowed_by_submodules():
    # `import onnxforge.x` sets onnxforge.x to the module: a public function of that
    # name would then stop being callable for anyone who imported the module first
    import importlib
    import pkgutil

    import onnxforge

    subs = {m.name for m in pkgutil.iter_modules(onnxforge.__path__)}
    assert not subs & set(onnxforge._API), subs & set(onnxforge._API)
    importlib.import_module("onnxforge.pipeline.run")
    importlib.import_module("onnxforge.backends.environment")
    assert callable(onnxforge.release) and callable(onnxforge.doctor)
