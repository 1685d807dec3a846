"""`onnxforge surgeon`: every result loads in ONNX Runtime and computes what the original
computes at the same tensors (#28)."""

from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper, numpy_helper

from conftest import json_result as result


def _mlp(path: Path) -> Path:
    rng = np.random.default_rng(0)
    inits = [numpy_helper.from_array(rng.standard_normal((4, 8)).astype(np.float32), "W1"),
             numpy_helper.from_array(rng.standard_normal((8, 3)).astype(np.float32), "W2"),
             numpy_helper.from_array(np.zeros(5, np.float32), "unused")]
    nodes = [helper.make_node("MatMul", ["x", "W1"], ["h"], name="mm1"), helper.make_node("Relu", ["h"], ["r"]),
             helper.make_node("Identity", ["r"], ["r2"]), helper.make_node("MatMul", ["r2", "W2"], ["y"], name="mm2")]
    g = helper.make_graph(nodes, "mlp", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", 4])],
                          [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["batch", 3])], inits)
    onnx.save(helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)]), path)
    return path


def _io(path) -> tuple[list, list]:
    s = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    return [i.name for i in s.get_inputs()], [o.name for o in s.get_outputs()]


def test_extract_a_block_of_a_real_cnn(cli, light, tmp_path):
    """ResNet-50 (onnx's light copy) cut from the first max-pool to the end of the next
    conv-bn-relu-conv-bn: the sub-graph loads and equals the full model there."""
    out = tmp_path / "block.onnx"
    r = cli("surgeon", "extract", light / "light_resnet50.onnx", "--inputs", "r3", "--outputs", "r11", "-o", out,
            "--json")
    assert r.code == 0, r.err
    res = result(r)
    assert res["passed"] and res["details"] == {"inputs": ["r3"], "outputs": ["r11"]}
    [check] = res["checks"]
    assert check["outputs"][0]["name"] == "r11" and check["outputs"][0]["max_abs"] <= 1e-5
    assert _io(out) == (["r3"], ["r11"])
    assert res["after"]["nodes"] < res["before"]["nodes"] / 10


def test_the_extract_check_catches_a_wrong_sub_graph(tmp_path):
    """The check itself: a sub-graph that computes something else (Relu made Sigmoid) fails it."""
    from onnxforge.steps.surgeon.surgeon import _fed, _tap
    from onnxforge.checks.parity import validate

    m = onnx.load(_mlp(tmp_path / "m.onnx"))
    import onnxforge

    assert onnxforge.surgeon("extract", tmp_path / "m.onnx", tmp_path / "sub.onnx", input_names=["h"],
                             output_names=["r2"]).passed
    sub = onnx.load(tmp_path / "sub.onnx")
    next(n for n in sub.graph.node if n.op_type == "Relu").op_type = "Sigmoid"
    onnx.save(sub, tmp_path / "wrong.onnx")
    rep = validate(_tap(m, ["r2"], "original"), _fed(m, tmp_path / "wrong.onnx", "wrong"))
    assert not rep.passed and rep.outputs[0].name == "r2"


def test_set_outputs_drops_what_no_output_needs(cli, tmp_path):
    m = _mlp(tmp_path / "m.onnx")
    r = cli("surgeon", "set-outputs", m, "--outputs", "r", "-o", tmp_path / "r.onnx", "--json")
    assert r.code == 0, r.err
    assert _io(tmp_path / "r.onnx") == (["x"], ["r"])
    assert [n.op_type for n in onnx.load(tmp_path / "r.onnx").graph.node] == ["MatMul", "Relu"]
    assert any("dropped" in n for n in result(r)["notes"])
    r = cli("surgeon", "set-outputs", m, "--outputs", "h,y", "-o", tmp_path / "hy.onnx", "--samples", "3")
    assert r.code == 0, r.err
    assert _io(tmp_path / "hy.onnx") == (["x"], ["h", "y"])


def test_rename_inputs_outputs_and_inner_tensors_everywhere(cli, tmp_path):
    """Including a subgraph (an If branch) that reads a renamed outer tensor."""
    rng = np.random.default_rng(0)
    branch = lambda name, op: helper.make_graph(  # noqa: E731
        [helper.make_node(op, ["h"], [f"{name}_out"])], name, [],
        [helper.make_tensor_value_info(f"{name}_out", TensorProto.FLOAT, [4])])
    nodes = [helper.make_node("MatMul", ["x", "W"], ["h"]),
             helper.make_node("ReduceSum", ["x"], ["s"], keepdims=0),
             helper.make_node("Constant", [], ["zero"], value=numpy_helper.from_array(np.array(0, np.float32))),
             helper.make_node("Greater", ["s", "zero"], ["cond"]),
             helper.make_node("If", ["cond"], ["y"], then_branch=branch("then", "Relu"),
                              else_branch=branch("else", "Neg"))]
    g = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [4])],
                          [helper.make_tensor_value_info("y", TensorProto.FLOAT, [4])],
                          [numpy_helper.from_array(rng.standard_normal((4, 4)).astype(np.float32), "W")])
    onnx.save(helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)]), tmp_path / "if.onnx")
    r = cli("surgeon", "rename", tmp_path / "if.onnx", "--map", "x=pixels", "--map", "y=logits", "--map",
            "h=hidden", "-o", tmp_path / "rn.onnx", "--json")
    assert r.code == 0, r.err
    assert _io(tmp_path / "rn.onnx") == (["pixels"], ["logits"])
    body = next(n for n in onnx.load(tmp_path / "rn.onnx").graph.node if n.op_type == "If").attribute[0].g
    assert list(body.node[0].input) == ["hidden"]
    assert {o["name"] for o in result(r)["checks"][0]["outputs"]} == {"logits", "pixels", "hidden"}


def test_sanitize_cleans_and_infers_shapes(cli, tmp_path):
    m = _mlp(tmp_path / "m.onnx")
    r = cli("surgeon", "sanitize", m, "-o", tmp_path / "s.onnx", "--json")
    assert r.code == 0, r.err
    s = onnx.load(tmp_path / "s.onnx")
    assert [n.op_type for n in s.graph.node] == ["MatMul", "Relu", "MatMul"]
    assert "unused" not in {t.name for t in s.graph.initializer}
    assert {v.name for v in s.graph.value_info} >= {"h"}  # shapes inferred
    assert result(r)["checks"][0]["passed"]


@pytest.mark.parametrize("argv, code, clue", [
    (["extract", "{m}", "--inputs", "hh", "--outputs", "y"], 2, "did you mean 'h'?"),
    (["extract", "{m}", "--outputs", "y"], 2, "--inputs names no tensor"),
    (["set-outputs", "{m}", "--outputs", "nope"], 2, "has no tensor 'nope'"),
    (["rename", "{m}", "--map", "h=r"], 2, "already has a tensor named 'r'"),
    (["frobnicate", "{m}"], 2, "No such command"),
])
def test_bad_surgery_is_one_line_and_writes_nothing(cli, tmp_path, argv, code, clue):
    m = _mlp(tmp_path / "m.onnx")
    before = m.read_bytes()
    r = cli("surgeon", *[a.format(m=m) for a in argv], "-o", tmp_path / "out.onnx")
    assert r.code == code and clue in r.err and r.err.count("error:") == 1 and "Traceback" not in r.err, r.err
    assert not (tmp_path / "out.onnx").exists() and m.read_bytes() == before


def test_a_cut_that_needs_another_input_names_it(cli, tmp_path):
    """y = (x @ W1) + z: cutting from h alone leaves z unfed."""
    rng = np.random.default_rng(0)
    nodes = [helper.make_node("MatMul", ["x", "W1"], ["h"]), helper.make_node("Add", ["h", "z"], ["y"])]
    g = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 4]),
                                       helper.make_tensor_value_info("z", TensorProto.FLOAT, [1, 8])],
                          [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 8])],
                          [numpy_helper.from_array(rng.standard_normal((4, 8)).astype(np.float32), "W1")])
    onnx.save(helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)]), tmp_path / "two.onnx")
    r = cli("surgeon", "extract", tmp_path / "two.onnx", "--inputs", "h", "--outputs", "y", "-o", tmp_path / "s.onnx")
    assert r.code == 3 and "add z to --inputs" in r.err, r.err
    r = cli("surgeon", "extract", tmp_path / "two.onnx", "--inputs", "h,z", "--outputs", "y", "-o", tmp_path / "s.onnx")
    assert r.code == 0, r.err


def test_an_existing_output_needs_force(cli, tmp_path):
    m = _mlp(tmp_path / "m.onnx")
    (tmp_path / "s.onnx").write_bytes(b"mine")
    r = cli("surgeon", "sanitize", m, "-o", tmp_path / "s.onnx")
    assert r.code == 3 and (tmp_path / "s.onnx").read_bytes() == b"mine"
    assert cli("surgeon", "sanitize", m, "-o", tmp_path / "s.onnx", "--force").code == 0
