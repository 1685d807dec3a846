import shutil

import onnx
import pytest

from conftest import json_result
from onnxforge.core.errors import BadInputError
from onnxforge.backends.onnx.inspection import inspect_model


def test_resnet50_light(light):
    info = inspect_model(light / "light_resnet50.onnx")
    assert info.node_count == 415
    assert info.opsets == {"": 9}
    assert info.ir_version == 3
    # initializers listed as graph inputs (old exporters) are not real inputs
    assert [s.name for s in info.inputs] == ["gpu_0/data_0"]
    assert info.inputs[0].shape == (1, 3, 224, 224)
    assert sum(info.op_histogram.values()) == 415
    assert info.runtime["supported"] is True


@pytest.mark.parametrize("name", sorted(p.name for p in __import__("conftest").light_dir().glob("*.onnx")))
def test_every_light_model(light, name):
    info = inspect_model(light / name)
    m = onnx.load(str(light / name))
    assert info.node_count == len(m.graph.node)
    assert info.initializer_count == len(m.graph.initializer)
    assert len(info.outputs) == len(m.graph.output)
    assert all(s.dtype == "float32" for s in info.inputs)


def test_tiny_model_details(fx):
    info = inspect_model(fx / "tiny.onnx")
    assert info.inputs[0].shape == ("batch", 4)
    assert [o.name for o in info.outputs] == ["logits", "probs"]
    assert info.parameter_count == 15 and info.parameter_bytes == 60
    assert info.metadata == {"author": "fixtures"}
    assert info.producer == "onnxforge-fixtures"
    assert info.op_histogram == {"Add": 1, "MatMul": 1, "Relu": 1, "Softmax": 1}


def test_external_data_in_another_folder(fx, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # not the model's folder
    info = inspect_model(fx / "ext" / "ext.onnx")
    assert info.external_data == {"ext.onnx.data": 128 * 128 * 4}
    assert info.parameter_count == 128 * 128


def test_missing_external_data(fx, tmp_path):
    shutil.copy(fx / "ext" / "ext.onnx", tmp_path / "ext.onnx")
    with pytest.raises(BadInputError, match="external data file.*missing.*ext.onnx.data"):
        inspect_model(tmp_path / "ext.onnx")


def test_api_is_lazy_and_public(fx):
    import onnxforge

    assert onnxforge.inspect(fx / "tiny.onnx").node_count == 4


def test_every_public_name_resolves_without_importing_torch():
    import subprocess
    import sys

    code = ("import sys, onnxforge\n"
            "[getattr(onnxforge, n) for n in onnxforge.__all__]\n"
            "print(sorted(m for m in ('torch', 'sklearn', 'skl2onnx', 'onnxsim') if m in sys.modules))\n")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip() == "[]"


@pytest.mark.parametrize("domain,op,clue", [("com.foo", "Frobnicate", "custom-op library"),
                                            ("", "NoSuchOp", "not an ONNX operator")])
def test_ops_onnxruntime_cannot_load_are_not_supported(cli, tmp_path, domain, op, clue):
    """inspect said 'runs this model: yes' (exit 0) for ops no onnxruntime can load."""
    from onnx import TensorProto, helper

    g = helper.make_graph([helper.make_node(op, ["x"], ["y"], domain=domain)], "g",
                          [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 3])],
                          [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 3])])
    imports = [helper.make_opsetid("", 17)] + ([helper.make_opsetid(domain, 1)] if domain else [])
    m = helper.make_model(g, opset_imports=imports)
    m.ir_version = 8
    onnx.save(m, str(tmp_path / "m.onnx"))
    r = cli("inspect", tmp_path / "m.onnx", "--json")
    rt = json_result(r)["runtime"]
    assert r.code == 1 and rt["supported"] is False and clue in rt["reason"], r.out


def _with_external(fx, tmp_path, **changes):
    m = onnx.load(str(fx / "ext" / "ext.onnx"), load_external_data=False)
    for t in m.graph.initializer:
        for e in t.external_data:
            if e.key in changes:
                e.value = str(changes[e.key])
    shutil.copy(fx / "ext" / "ext.onnx.data", tmp_path / "ext.onnx.data")
    onnx.save(m, str(tmp_path / "m.onnx"))


def _with_tensor(tmp_path, **fields):
    from onnx import TensorProto, helper

    w = TensorProto(name="W", data_type=TensorProto.FLOAT, **fields)
    g = helper.make_graph([helper.make_node("MatMul", ["x", "W"], ["y"])], "g",
                          [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 4])],
                          [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 3])], [w])
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)])
    m.ir_version = 8
    onnx.save(m, str(tmp_path / "m.onnx"))


def _with_opset(tmp_path, version):
    from onnx import TensorProto, helper

    g = helper.make_graph([helper.make_node("Relu", ["x"], ["y"])], "g",
                          [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 4])],
                          [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 4])])
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", version)] if version is not None else [])
    m.ir_version = 8
    onnx.save(m, str(tmp_path / "m.onnx"))


@pytest.mark.parametrize("make, clue", [
    (lambda fx, d: _with_external(fx, d, offset=1 << 30), "lie beyond the end of ext.onnx.data (65,536 bytes)"),
    (lambda fx, d: _with_external(fx, d, offset=-16), "negative offset"),
    (lambda fx, d: _with_external(fx, d, length=1 << 30), "lie beyond the end"),
    (lambda fx, d: _with_external(fx, d, length=-4), "negative offset or length"),
    (lambda fx, d: _with_external(fx, d, length=1024), "its external data holds 1,024 bytes"),
    (lambda fx, d: _with_external(fx, d, offset="abc"), "not a number"),
    (lambda fx, d: _with_tensor(d, dims=[1_000_000, 1_000_000]), "declares 1,000,000,000,000 element(s)"),
    (lambda fx, d: _with_tensor(d, dims=[4, 3], float_data=[1.0] * 5), "declares 12 element(s) (48 bytes) but holds 5"),
    (lambda fx, d: _with_tensor(d, dims=[4, 3], raw_data=b"\0" * 8), "but holds 8 bytes"),
    (lambda fx, d: _with_opset(d, 0), "ai.onnx opset 0 does not exist"),
    (lambda fx, d: _with_opset(d, None), "no opset_import for the domain ai.onnx"),
    (lambda fx, d: _with_opset(d, 1), "no kernel"),  # ORT's own verdict: found by loading it
])
def test_what_onnxruntime_would_not_load_does_not_run(cli, fx, tmp_path, make, clue):
    """inspect said 'runs this model: yes' (exit 0) for all of these, and validate failed
    on them: now 'no' with the reason (exit 1, as for an op ORT lacks), from declared
    sizes alone (the 10^12-element claim is never allocated)."""
    make(fx, tmp_path)
    r = cli("inspect", tmp_path / "m.onnx", "--json")
    rt = json_result(r)["runtime"]
    assert r.code == 1 and rt["supported"] is False and clue in rt["reason"], (r.code, rt.get("reason"))


def test_a_model_that_loads_still_runs(cli, fx):
    r = cli("inspect", fx / "ext" / "ext.onnx", "--json")
    assert r.code == 0 and json_result(r)["runtime"]["supported"] is True


def test_inspection_has_a_budget_for_control_flow(cli, tmp_path):
    """20 If levels took inspect and simplify past 90 s (ORT alone: 246 s for a 2 MB model
    nested 14 deep in both branches); past the documented budget they are refused."""
    from fixtures.make_fixtures import onnx_nested_if as nested_if
    from onnxforge.core.fileio import MAX_GRAPH_DEPTH, MAX_SUBGRAPHS

    onnx.save(nested_if(MAX_GRAPH_DEPTH), str(tmp_path / "deep_ok.onnx"))
    assert cli("inspect", tmp_path / "deep_ok.onnx").code == 0
    onnx.save(nested_if(MAX_GRAPH_DEPTH + 1), str(tmp_path / "deep.onnx"))
    r = cli("inspect", tmp_path / "deep.onnx")
    assert r.code == 3 and f"nested more than {MAX_GRAPH_DEPTH} levels" in r.err and "hint:" in r.err
    onnx.save(nested_if(9, both=True), str(tmp_path / "wide_ok.onnx"))  # 511 Ifs: 1022 subgraphs
    assert cli("inspect", tmp_path / "wide_ok.onnx").code == 0
    onnx.save(nested_if(10, both=True), str(tmp_path / "wide.onnx"))
    r = cli("inspect", tmp_path / "wide.onnx")
    assert r.code == 3 and f"more than {MAX_SUBGRAPHS} subgraphs" in r.err


def test_the_budget_counts_attributes_that_declare_no_type(cli, tmp_path):
    """Old exporters leave AttributeProto.type unset: a subgraph there is still a subgraph."""
    from fixtures.make_fixtures import onnx_nested_if
    from onnxforge.core.fileio import MAX_GRAPH_DEPTH

    m = onnx_nested_if(MAX_GRAPH_DEPTH + 1)
    stack = [m.graph]
    while stack:
        for n in stack.pop().node:
            for a in n.attribute:
                if a.HasField("g"):
                    stack.append(a.g)
                a.type = 0
    onnx.save(m, str(tmp_path / "untyped.onnx"))
    r = cli("inspect", tmp_path / "untyped.onnx")
    assert r.code == 3 and "nested more than" in r.err
