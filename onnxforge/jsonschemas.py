"""JSON Schemas of the files onnxforge reads and writes, generated from the declarations
that read and write them, so they cannot drift:

- ``release`` (release.toml): the steps' options in the tables they live in,
  the gates and the package/serve_check sections (pipeline/config.py reads them through
  the same dataclasses, with pydantic);
- ``zoo`` (zoo.toml): zoo/config.py's ZooSection and Target;
- ``report`` (a release's report.json) and ``zoo-report`` (zoo-report.json): the JSON
  envelope around types.ReleaseReport / zoo.merge.ZooReport, as report.read_report reads
  them back (every field present, non-finite floats as "NaN", "Infinity", "-Infinity").

pydantic writes each dataclass's schema (``TypeAdapter.json_schema()``, the dataclass form
of ``model_json_schema()``); this module places the fields under the keys a file uses.
The generated files ship in the package (onnxforge/schemas/) and in docs/schemas/;
``python -m onnxforge.jsonschemas`` rewrites both after a change, which also needs the
name's ``SCHEMA_VERSIONS`` entry bumped (tests/test_schemas.py pins a hash per version).
``onnxforge schema NAME`` prints the packaged file without importing any of this.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from onnxforge.report import SCHEMA_VERSION
from onnxforge.core.fileio import atomic_write_text
from onnxforge.core.options import _adapter, alias_keys, deprecated_keys, fields_of, toml_place
from onnxforge.core.types import ReleaseReport
from onnxforge.pipeline.config import DataSection, FRAMEWORKS, GATES, PackageSection, ServeCheckSection, StepParity
from onnxforge.steps import STEPS
from onnxforge.steps.package.options import PackageOptions
from onnxforge.steps.serve_check.options import ServeCheckOptions
from onnxforge.zoo.config import Target, ZooSection
from onnxforge.zoo.merge import ZooReport

NAMES = ("release", "zoo", "report", "zoo-report")
# a schema's version: the report envelopes carry theirs (schema_version); the TOML
# files have none of their own, so their schemas are numbered here
SCHEMA_VERSIONS = {"release": 1, "zoo": 1, "report": SCHEMA_VERSION, "zoo-report": SCHEMA_VERSION}
FOLDER = Path(__file__).parent / "schemas"
DIALECT = "https://json-schema.org/draft/2020-12/schema"
NON_FINITE = ["NaN", "Infinity", "-Infinity"]


def file_name(name: str) -> str:
    return f"{name}.schema.json"


def dumps(schema: dict) -> str:
    return json.dumps(schema, indent=2, sort_keys=True) + "\n"


def generate(name: str) -> dict:
    """The schema of ``name`` (one of NAMES), as the code declares it now."""
    build = {"release": _release, "zoo": _zoo, "report": _release_report, "zoo-report": _zoo_report}[name]
    defs: dict[str, Any] = {}
    body = build(defs)
    head = {"$schema": DIALECT, "x-schema-version": SCHEMA_VERSIONS[name]}
    return _canonical({**head, **body, **({"$defs": dict(sorted(defs.items()))} if defs else {})})


def _canonical(s: Any) -> Any:
    """Union members in one order: typing caches ``int | str`` and ``str | int`` as one
    object, so the order pydantic sees is whichever the process spelled first (a full
    test run flipped the release schema's hash)."""
    if isinstance(s, list):
        return [_canonical(v) for v in s]
    if not isinstance(s, dict):
        return s
    s = {k: _canonical(v) for k, v in s.items()}
    for key in ("anyOf", "oneOf"):
        if key in s:
            s[key] = sorted(s[key], key=lambda v: json.dumps(v, sort_keys=True))
    return s


# ----------------------------------------------------------------------------- TOML files


def _fields(cls, defs: dict, table: str = "") -> dict[str, dict]:
    """key -> schema of ``cls``'s fields that a TOML file sets in ``table`` ("" the
    section's own), aliases included; help as the description. TOML has no null."""
    schema = _adapter(cls).json_schema()
    defs.update(schema.get("$defs", {}))
    out = {}
    for f, o in fields_of(cls):
        place = toml_place(f, o)
        if place is None or place[0] != table:
            continue
        s = _no_null({**schema["properties"][f.name], "description": o.help})
        for key in (place[1], *alias_keys(f, o)):
            out[key] = {**s, "deprecated": True} if key in deprecated_keys(o) else s
    return out


def _no_null(s: Any) -> Any:
    if isinstance(s, list):
        return [_no_null(v) for v in s]
    if not isinstance(s, dict):
        return s
    s = {k: _no_null(v) for k, v in s.items() if k != "title" and not (k == "default" and v is None)}
    if "anyOf" in s:
        rest = [v for v in s["anyOf"] if v != {"type": "null"}]
        s.pop("anyOf")
        s = {**rest[0], **s} if len(rest) == 1 else {**s, "anyOf": rest}
    return s


def _table(props: dict, required: tuple[str, ...] = (), **extra) -> dict:
    return {"type": "object", "properties": dict(sorted(props.items())), "additionalProperties": False,
            **({"required": list(required)} if required else {}), **extra}


def _model(defs: dict) -> dict:
    """[model]: source and framework, and the convert options placed there (per framework)."""
    variants = []
    for fw in FRAMEWORKS:
        classes = [STEPS[f"convert.{fw}"].options] if fw != "onnx" else \
            [d.options for d in STEPS.values() if d.run != "convert"]
        props: dict[str, dict] = {}
        for cls in classes:
            props.update(_fields(cls, defs, "model"))
        props["source"] = {"type": "string", "description": "A .pt2 / .skops / .onnx path, a Hugging Face folder "
                           "or hf:ID, or a factory module:function (paths relative to the config file)."}
        props["framework"] = {"const": fw}
        variants.append(_table(props, ("source", "framework")))
    return {"oneOf": variants}


def _steps(defs: dict) -> dict:
    parity = _table(_fields(StepParity, defs), description="This step's own ledger criteria.")
    variants = [_table({**_fields(d.options, defs), "run": {"const": d.run}, "parity": parity}, ("run",),
                       title=d.name, description=d.summary) for d in STEPS.values()]
    return {"type": "array", "minItems": 1, "items": {"anyOf": variants}}


def _release(defs: dict) -> dict:
    props = {
        "model": _model(defs),
        "data": _table(_fields(DataSection, defs)),
        "steps": _steps(defs),
        "gates": _table({name: _table(_fields(cls, defs)) for name, cls in GATES.items()}),
        "package": _table({**_fields(PackageOptions, defs), **_fields(PackageSection, defs)}),
        "serve_check": _table({**_fields(ServeCheckOptions, defs), **_fields(ServeCheckSection, defs)}),
    }
    return _table(props, ("model", "steps"), title="onnxforge release config (release.toml)")


def _zoo(defs: dict) -> dict:
    props = {"zoo": _table(_fields(ZooSection, defs)),
             "targets": {"type": "array", "items": _table(_fields(Target, defs), ("name",))}}
    return _table(props, ("zoo",), title="onnxforge zoo file (zoo.toml)")


# ----------------------------------------------------------------------------- reports


def _envelope(cls, kind: str, defs: dict, title: str) -> dict:
    from pydantic import TypeAdapter

    schema = TypeAdapter(cls).json_schema()
    defs.update(schema.pop("$defs", {}))
    defs[cls.__name__] = schema
    for k, v in list(defs.items()):
        defs[k] = _as_written(v)
    props = {"schema_version": {"const": SCHEMA_VERSION}, "kind": {"const": kind},
             "onnxforge_version": {"type": "string"}, "result": {"$ref": f"#/$defs/{cls.__name__}"}}
    return _table(props, tuple(props), title=title)


def _as_written(s: Any) -> Any:
    """A dataclass's schema as report.write_report writes it: every field (required), no
    other key, and a float may be one of the strings standing for NaN and infinities."""
    if isinstance(s, list):
        return [_as_written(v) for v in s]
    if not isinstance(s, dict):
        return s
    s = {k: _as_written(v) for k, v in s.items() if k != "title"}
    if "properties" in s:
        s["required"] = list(s["properties"])
        s["additionalProperties"] = False
    if s.get("type") == "number":
        s = {"anyOf": [s, {"enum": NON_FINITE}]}
    return s


def _release_report(defs: dict) -> dict:
    return _envelope(ReleaseReport, "release", defs, "onnxforge release report (report.json)")


def _zoo_report(defs: dict) -> dict:
    return _envelope(ZooReport, "zoo", defs, "onnxforge zoo report (zoo-report.json)")


def write_all(folders: list[Path]) -> None:
    for name in NAMES:
        text = dumps(generate(name))
        for folder in folders:
            folder.mkdir(parents=True, exist_ok=True)
            atomic_write_text(folder / file_name(name), text)


if __name__ == "__main__":  # regenerate: the package's copies, and docs/schemas/ in a checkout
    docs = Path(__file__).resolve().parents[1] / "docs"
    write_all([FOLDER, *([docs / "schemas"] if docs.is_dir() else [])])
    print("wrote", ", ".join(file_name(n) for n in NAMES))
