"""The published JSON Schemas (onnxforge/schemas/, docs/schemas/) are what the code
declares, change only with a version bump, and describe the files users write (the
examples) as well as the ones onnxforge writes (tests/conftest.py checks every
report.json and zoo-report.json the suite writes against them)."""

from __future__ import annotations

import copy
import difflib
import hashlib
import json
import re
import tomllib
from pathlib import Path

import pytest

from onnxforge.jsonschemas import FOLDER, NAMES, SCHEMA_VERSIONS, dumps, file_name, generate

ROOT = Path(__file__).resolve().parents[1]
REGENERATE = "regenerate with `python -m onnxforge.jsonschemas`"

# sha256 of each schema at its version. A schema that changes needs its version bumped
# (SCHEMA_VERSIONS in onnxforge/jsonschemas.py; the reports' is report.SCHEMA_VERSION, which
# readers check) and a new line here: users validate their files against a version.
PINNED = {
    ("release", 1): "f1b7b77bb419c93355ede83054ef6b3ad619fe9fe9d07aeac71455a3b6dacc98",
    ("zoo", 1): "d8e4f6923ff6c0438b239b89430bbff89bdf7f0dda0820c4dd70fb25be8133a2",
    ("report", 1): "a35f7f4f8d6535547269256cfece3be4ae4bb371ca964bacd08701b68bee67e6",
    ("zoo-report", 1): "a97e5df146bba06c1183453bf03a76408e9f8c1f22ee4883a24f3639f7ad0254",
}


def validator(name: str):
    import jsonschema

    return jsonschema.Draft202012Validator(json.loads((FOLDER / file_name(name)).read_text()))


@pytest.mark.parametrize("name", NAMES)
def test_checked_in_schema_is_what_the_code_declares(name):
    import jsonschema

    text = dumps(generate(name))
    jsonschema.Draft202012Validator.check_schema(json.loads(text))
    for folder in (FOLDER, ROOT / "docs" / "schemas"):
        path = folder / file_name(name)
        diff = "\n".join(list(difflib.unified_diff(path.read_text().splitlines() if path.is_file() else [],
                                                   text.splitlines(), "checked in", "declared", lineterm="", n=2))[:40])
        assert path.is_file() and path.read_text() == text, \
            f"{path} differs from what the code declares: bump SCHEMA_VERSIONS[{name!r}] (or report.SCHEMA_VERSION " \
            f"for a report), {REGENERATE}, and pin the new hash in tests/test_schemas.py\n{diff}"


@pytest.mark.parametrize("name", NAMES)
def test_schema_changes_only_with_a_version_bump(name):
    version = SCHEMA_VERSIONS[name]
    digest = hashlib.sha256(dumps(generate(name)).encode()).hexdigest()
    assert (name, version) in PINNED, f"schema {name} version {version} is new: pin {digest} in PINNED"
    assert PINNED[(name, version)] == digest, \
        f"schema {name} changed but is still version {version}: bump its version, {REGENERATE}, and pin {digest}"


def _toml_blocks() -> list[tuple[str, dict]]:
    out = []
    for doc in [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]:
        for m in re.finditer(r"^```toml\n(.*?)^```", doc.read_text(), re.S | re.M):
            out.append((doc.name, tomllib.loads(m.group(1))))
    return out


def test_example_configs_validate():
    """The fixtures' release.toml files and the README's/docs' release and zoo blocks."""
    checked = 0
    for path in sorted((ROOT / "fixtures").glob("*/release.toml")):
        assert list(validator("release").iter_errors(tomllib.loads(path.read_text()))) == [], path
        checked += 1
    for where, data in _toml_blocks():
        name = "release" if "model" in data else "zoo" if "zoo" in data else None
        if name:
            errors = [e.message for e in validator(name).iter_errors(data)]
            assert errors == [], f"{where}: {errors}"
            checked += 1
    assert checked >= 4


def test_schemas_refuse_what_the_loaders_refuse():
    example = tomllib.loads((ROOT / "fixtures" / "example" / "release.toml").read_text())
    for change in (lambda c: c["gates"]["latency"].update(max_p50ms=5.0),  # a typo
                   lambda c: c["steps"][2].update(method="median"),  # not a calibration method
                   lambda c: c["steps"].append({"run": "quantise.static"}),
                   lambda c: c["model"].update(framework="tf"),
                   lambda c: c["gates"]["accuracy"].update(max_drop="0.01")):  # a string for a number
        bad = copy.deepcopy(example)
        change(bad)
        assert list(validator("release").iter_errors(bad)), bad
    assert list(validator("zoo").iter_errors({"zoo": {"releases": ["a.toml"]}, "targets": [{"provider": "cpu"}]}))


def test_report_schema_takes_non_finite_floats_as_written():
    from onnxforge.report import envelope
    from onnxforge.core.types import ReleaseReport

    rep = ReleaseReport(config={}, steps=(), ledger=(), benchmark=None, gates=(), passed=False, failure="x",
                        exit_code=1, outputs={}, inputs={}, environment={}, versions={}, seconds=float("nan"))
    env = envelope(rep, "release")
    assert env["result"]["seconds"] == "NaN"
    assert list(validator("report").iter_errors(env)) == []
    env["result"]["seconds"] = "soon"
    assert list(validator("report").iter_errors(env))
    del env["result"]["status"]  # the writer writes every field; the reader requires them
    assert list(validator("report").iter_errors(env))


def test_schema_command_prints_only_the_schema(cli):
    for name in NAMES:
        r = cli("schema", name)
        assert r.code == 0 and json.loads(r.out) == generate(name), r.err
    r = cli("schema", "reprot")
    assert r.code == 2 and r.out == ""
    assert "error: no schema named 'reprot'" in r.err and "release, zoo, report, zoo-report" in r.err
    assert "did you mean 'report'" in r.err


def test_union_members_come_in_one_order():
    """typing hands a process the first spelling of a union it met (``int | str`` or
    ``str | int``): a full run once generated the release schema with max_memory's
    members swapped, and its hash changed. Generated schemas sort them."""
    from onnxforge.jsonschemas import _canonical

    a = {"properties": {"m": {"anyOf": [{"type": "integer"}, {"type": "string"}]}}}
    b = {"properties": {"m": {"anyOf": [{"type": "string"}, {"type": "integer"}]}}}
    assert _canonical(a) == _canonical(b) and dumps(_canonical(a)) == dumps(_canonical(b))
    assert dumps(generate("release")) == dumps(_canonical(generate("release")))
