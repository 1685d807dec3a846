"""Verdicts that lie: `zoo merge` on release folders whose report.json or zoo-entry.json
was forged or is malformed. Each forged folder is a copy of one real release (ONNX
Runtime's offline optimizer on tiny.onnx: no onnxsim, so no torch), changed in one way."""

from __future__ import annotations

import json
import shutil
import sys
from pathlib import Path
from typing import Callable

from cases import A, Case, _i, _o

DEEP = 100_000
RELEASE = """[model]
source = "../tiny.onnx"
framework = "onnx"

[[steps]]
run = "simplify"
onnxsim = false
ort_level = "basic"

[gates]
parity = { atol = 1e-4, rtol = 1e-3 }
"""


def _release(ws: Path, name: str, extra: str = "") -> Path:
    """A real release into ws/in/verdicts/NAME, made once per workspace."""
    out = ws / "in" / "verdicts" / name
    if not (out / "report.json").exists():
        from onnxforge.pipeline.run import release

        cfg = ws / "in" / "verdicts" / f"{name}.toml"
        cfg.parent.mkdir(exist_ok=True)
        cfg.write_text(RELEASE + extra)
        release(cfg, out)
    return out


def _edit_json(path: Path, change: Callable[[dict], None]) -> None:
    env = json.loads(path.read_text())
    change(env["result"])
    path.write_text(json.dumps(env))


def _entry(**changes) -> dict:
    result = {"run": "r1", "name": "good", "target": None, "folder": "good", "config": "/c/release.toml",
              "node": "n1", "pid": 1, "attempts": 1, "reported": True,
              "timeline": [{"what": "benchmark", "start": 1.0, "end": 2.0, "waited": 0.0}],
              "status": None, "exit_code": None, "failure": None, "hint": None}
    result.update(changes)
    return {"schema_version": 1, "kind": "zoo-entry", "onnxforge_version": "0.1.0", "result": result}


def forged(name: str, change: Callable[[Path], None], base: str = "good") -> Callable[[Path], None]:
    """A setup: a copy of a real release as ws/in/verdicts/NAME, then ``change(folder)``."""

    def setup(ws: Path) -> None:
        folder = ws / "in" / "verdicts" / name
        if not folder.exists():
            shutil.copytree(_release(ws, base, _FAILING if base == "failing" else ""), folder)
            change(folder)

    return setup


_FAILING = 'latency = { provider = "cpu", max_p50_ms = 1e-6, seconds = 0.2 }\n'


def _report(change: Callable[[dict], None]) -> Callable[[Path], None]:
    return lambda folder: _edit_json(folder / "report.json", change)


def _set(**values) -> Callable[[Path], None]:
    return _report(lambda r: r.update(values))


def _deep(name: str) -> Callable[[Path], None]:
    kind = "release" if name == "report.json" else "zoo-entry"
    return lambda folder: (folder / name).write_text(
        f'{{"schema_version": 1, "kind": "{kind}", "onnxforge_version": "0.1.0", "result": '
        + "[" * DEEP + "]" * DEEP + "}")


def _gate_failed(r: dict) -> None:
    r["gates"][0]["passed"] = False


def _forge_fail(r: dict) -> None:
    r.update(exit_code=1)
    _gate_failed(r)


def _no_key(key: str) -> Callable[[Path], None]:
    return _report(lambda r: r.pop(key))


def _entry_file(**changes) -> Callable[[Path], None]:
    return lambda folder: (folder / "zoo-entry.json").write_text(json.dumps(_entry(**changes)))


def _entry_without(key: str) -> Callable[[Path], None]:
    def change(folder: Path) -> None:
        env = _entry()
        env["result"].pop(key)
        (folder / "zoo-entry.json").write_text(json.dumps(env))

    return change


def _merge(name: str, code: int, clue: str, change: Callable[[Path], None] | None, base: str = "good",
           one_line: bool = True) -> Case:
    folder = name if change is not None else base
    setup = forged(name, change, base) if change is not None else (lambda ws: _release(ws, base, _FAILING
                                                                                      if base == "failing" else ""))
    return Case(f"zoo merge: {name.replace('-', ' ')}",
                lambda ws: ["zoo", "merge", str(ws / "in" / "verdicts" / folder), "-o", str(ws / "out" / name)],
                code, clue, outputs=("out",), setup=setup, one_line=one_line)


def _copy_model(folder: Path) -> None:
    (folder / "model.onnx").write_bytes((folder.parents[1] / "chain.onnx").read_bytes())


def _edit_manifest(folder: Path) -> None:
    m = json.loads((folder / "manifest.json").read_text())
    m["opset"] = 18
    (folder / "manifest.json").write_text(json.dumps(m))


CASES = [
    # the genuine releases merge to their own verdicts
    _merge("good", 0, "", None, one_line=False),
    _merge("failing", 1, "", None, base="failing", one_line=False),
    # forged verdicts: refused (exit 3), naming the folder and what disagrees
    _merge("passed-with-exit-1-and-a-failed-gate", 3, "exits 0", _report(_forge_fail)),
    _merge("passed-without-its-model", 3, "model.onnx is missing", lambda f: (f / "model.onnx").unlink()),
    _merge("passed-with-another-model", 3, "model.onnx is not the file", _copy_model),
    _merge("passed-with-an-edited-manifest", 3, "manifest.json is not the file", _edit_manifest),
    _merge("passed-with-a-failed-gate", 3, "gate parity:simplify failed", _report(_gate_failed)),
    _merge("passed-without-its-gates", 3, "gate parity:simplify never ran", _set(gates=[])),
    _merge("passed-with-passed-false", 3, "passed is False", _set(passed=False)),
    _merge("failed-with-exit-0", 3, "a failed release exits 1", _set(exit_code=0),
           base="failing"),
    _merge("passed-from-a-failed-release", 3, "gate max_p50_ms failed",
           _set(status="passed", passed=True, exit_code=0, failure=None), base="failing"),
    # malformed files: exit 3 naming the file and the key
    _merge("exit-code-as-a-string", 3, "report.json: key result.exit_code", _set(exit_code="0")),
    _merge("status-as-a-number", 3, "report.json: key result.status", _set(status=0)),
    _merge("passed-as-a-string", 3, "report.json: key result.passed", _set(passed="yes")),
    _merge("gates-not-a-list", 3, "report.json: key result.gates", _set(gates={"parity": True})),
    _merge("gate-without-passed", 3, "report.json: key result.gates.0.passed",
           _report(lambda r: r["gates"][0].pop("passed"))),
    _merge("report-without-status", 3, "report.json: key result.status is missing", _no_key("status")),
    _merge("report-result-a-list", 3, "report.json: key result:",
           lambda f: (f / "report.json").write_text('{"schema_version": 1, "kind": "release", "result": []}')),
    _merge("report-nested-100000-deep", 3, "report.json: JSON nested too deep", _deep("report.json")),
    _merge("benchmark-results-a-number", 3, "report.json: key result.benchmark", _set(benchmark={"results": 5}),
           base="failing"),
    _merge("entry-timeline-start-as-text", 3, "zoo-entry.json: key result.timeline.0.start",
           _entry_file(timeline=[{"what": "benchmark", "start": "soon", "end": 2.0, "waited": 0.0}])),
    _merge("entry-attempts-as-text", 3, "zoo-entry.json: key result.attempts", _entry_file(attempts="1")),
    _merge("entry-without-run", 3, "zoo-entry.json: key result.run is missing", _entry_without("run")),
    _merge("entry-nested-100000-deep", 3, "zoo-entry.json: JSON nested too deep", _deep("zoo-entry.json")),
]


# ----------------------------------------------------------------------------- zoo files that plan what is no release


def _zoo(name: str, releases: list[str], extra: Callable[[Path], None] | None = None) -> Callable[[Path], None]:
    """ws/in/NAME/zoo.toml listing ``releases``, beside one real release config (alpha.toml)."""

    def setup(ws: Path) -> None:
        d = ws / "in" / name
        if d.exists():
            return
        d.mkdir()
        (d / "model.onnx").write_bytes((ws / "in" / "tiny.onnx").read_bytes())
        (d / "alpha.toml").write_text(RELEASE.replace("../tiny.onnx", "model.onnx"))
        (d / "zoo.toml").write_text("[zoo]\nreleases = [" + ", ".join(json.dumps(r) for r in releases) + "]\n")
        if extra is not None:
            extra(d)

    return setup


def _matrix(name: str, releases: list[str], clue: str, extra: Callable[[Path], None] | None = None) -> Case:
    return Case(f"zoo --executor matrix: {name.replace('-', ' ')}",
                lambda ws: ["zoo", str(ws / "in" / name / "zoo.toml"), "--executor", "matrix"], 3, clue,
                setup=_zoo(name, releases, extra))


def _link_out(d: Path) -> None:
    outside = d.parent / "outside-release.toml"
    outside.write_text((d / "alpha.toml").read_text())
    (d / "linked.toml").symlink_to(outside)


CASES += [
    _matrix("etc-passwd", ["alpha.toml", "../" * 40 + "etc/passwd"], "outside the zoo file's folder"),
    _matrix("the-zoo-file-itself", ["*.toml"], "the zoo file itself"),
    _matrix("a-text-file", ["alpha.toml", "notes.txt"], "not a release config",
            lambda d: (d / "notes.txt").write_text("not a release\n")),
    _matrix("a-toml-that-is-no-release", ["alpha.toml", "pyproject.toml"], "not a release config",
            lambda d: (d / "pyproject.toml").write_text('[project]\nname = "x"\n')),
    _matrix("a-link-out-of-the-folder", ["alpha.toml", "linked.toml"], "outside the zoo file's folder", _link_out),
    Case("zoo --executor matrix: a release config inside the folder is planned",
         lambda ws: ["zoo", str(ws / "in" / "matrix-ok" / "zoo.toml"), "--executor", "matrix"], 0,
         setup=_zoo("matrix-ok", ["alpha.toml"]), one_line=False),
]


# ----------------------------------------------------------------------------- models ORT would not load


def _ext_model(name: str, **changes) -> Callable[[Path], None]:
    """ws/in/ext/NAME.onnx: the external-data fixture with its offset/length changed."""

    def setup(ws: Path) -> None:
        import onnx

        target = ws / "in" / "ext" / f"{name}.onnx"
        if target.exists():
            return
        m = onnx.load(str(ws / "in" / "ext" / "ext.onnx"), load_external_data=False)
        for t in m.graph.initializer:
            for e in t.external_data:
                if e.key in changes:
                    e.value = str(changes[e.key])
        onnx.save(m, str(target))

    return setup


def _model(name: str, build: Callable[[], object]) -> Callable[[Path], None]:
    def setup(ws: Path) -> None:
        import onnx

        if not (ws / "in" / name).exists():
            onnx.save(build(), str(ws / "in" / name))

    return setup


def claims_1e12_elements():
    from onnx import TensorProto, helper

    w = TensorProto(name="W", data_type=TensorProto.FLOAT, dims=[1_000_000, 1_000_000])  # no data at all
    g = helper.make_graph([helper.make_node("MatMul", ["x", "W"], ["y"])], "g",
                          [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 1_000_000])],
                          [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 1_000_000])], [w])
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)])
    m.ir_version = 8
    return m


def opset(version: int):
    from onnx import TensorProto, helper

    g = helper.make_graph([helper.make_node("Relu", ["x"], ["y"])], "g",
                          [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 4])],
                          [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 4])])
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", version)])
    m.ir_version = 8
    return m


def nested_if(depth: int, both: bool = False):
    from cases import ROOT

    sys.path.insert(0, str(ROOT))
    from fixtures.make_fixtures import onnx_nested_if

    return onnx_nested_if(depth, both)


def _runs_no(name: str, setup, model: str) -> Case:
    """inspect's verdict on a model ORT refuses: 'runs this model: no' (exit 1, as for an op ORT lacks)."""
    return Case(f"inspect: {name}", lambda ws: ["inspect", str(ws / "in" / model)], 1, setup=setup, one_line=False)


CASES += [
    _runs_no("external data offset beyond its file", _ext_model("off_beyond", offset=1 << 30), "ext/off_beyond.onnx"),
    _runs_no("external data at a negative offset", _ext_model("off_neg", offset=-16), "ext/off_neg.onnx"),
    _runs_no("external data length beyond its file", _ext_model("len_beyond", length=1 << 30), "ext/len_beyond.onnx"),
    _runs_no("an initializer claiming 10^12 elements", _model("huge.onnx", claims_1e12_elements), "huge.onnx"),
    _runs_no("opset 0", _model("opset0.onnx", lambda: opset(0)), "opset0.onnx"),
    Case("validate: an initializer claiming 10^12 elements", lambda ws: ["validate", str(ws / "in" / "huge.onnx"),
                                                                         str(ws / "in" / "huge.onnx")], 3,
         "onnxruntime cannot load", setup=_model("huge.onnx", claims_1e12_elements)),
    # control flow past the budget: refused before any tool walks it (fileio.walk_graphs)
    Case("inspect: If nested 20 deep", lambda ws: ["inspect", str(ws / "in" / "if20.onnx")], 3,
         "nested more than 16 levels", setup=_model("if20.onnx", lambda: nested_if(20))),
    Case("inspect: If nested 12 deep in both branches", lambda ws: ["inspect", str(ws / "in" / "if12b.onnx")], 3,
         "more than 1024 subgraphs", setup=_model("if12b.onnx", lambda: nested_if(12, both=True))),
    Case("simplify: If nested 20 deep", A("simplify", _i("if20.onnx"), "-o", _o("s.onnx")), 3,
         "nested more than 16 levels", setup=_model("if20.onnx", lambda: nested_if(20))),
    Case("simplify: If nested 12 deep in both branches", A("simplify", _i("if12b.onnx"), "-o", _o("s.onnx")), 3,
         "more than 1024 subgraphs", setup=_model("if12b.onnx", lambda: nested_if(12, both=True))),
]
