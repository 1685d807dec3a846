"""masks.py on hand-made attention graphs: which nodes static int8 leaves in fp32 (the
mask path), which MatMul inputs are probabilities, what counts as a transformer."""

from pathlib import Path

import numpy as np
from onnx import TensorProto, helper, numpy_helper

from onnxforge.steps.quantize.masks import is_transformer, mask_path, probability_tensors


def _attention(fill=-3.4e38, fill_as_constant_node=False, zero_rows=0.0):
    """scores = Q·Kᵀ + Where(mask, 0, fill); P = Where(all_masked, zero_rows, Softmax(scores)); out = P·V."""
    f = helper.make_tensor_value_info
    consts = [numpy_helper.from_array(np.array(0.0, np.float32), "zero"),
              numpy_helper.from_array(np.array(zero_rows, np.float32), "row_fill"),
              numpy_helper.from_array(np.ones((4, 4), np.float32), "Wq")]
    nodes = [helper.make_node("MatMul", ["x", "Wq"], ["q"], name="proj"),
             helper.make_node("Transpose", ["q"], ["kt"], name="kt", perm=[1, 0]),
             helper.make_node("MatMul", ["q", "kt"], ["scores"], name="qk"),
             helper.make_node("Cast", ["mask"], ["valid"], name="to_bool", to=TensorProto.BOOL),
             helper.make_node("Where", ["valid", "zero", "fill"], ["bias"], name="mask_bias"),
             helper.make_node("Add", ["scores", "bias"], ["masked"], name="add_mask"),
             helper.make_node("Softmax", ["masked"], ["p"], name="softmax"),
             helper.make_node("IsNaN", ["p"], ["nan"], name="isnan"),
             helper.make_node("Where", ["nan", "row_fill", "p"], ["p0"], name="zero_rows"),
             helper.make_node("MatMul", ["p0", "q"], ["y"], name="pv")]
    if fill_as_constant_node:
        nodes.insert(0, helper.make_node("Constant", [], ["fill"], name="fill_const",
                                         value=numpy_helper.from_array(np.array(fill, np.float32))))
    else:
        consts.append(numpy_helper.from_array(np.array(fill, np.float32), "fill"))
    g = helper.make_graph(nodes, "attn", [f("x", TensorProto.FLOAT, [4, 4]), f("mask", TensorProto.INT64, [4])],
                          [f("y", TensorProto.FLOAT, [4, 4])], initializer=consts)
    return helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)])


def test_the_mask_path_runs_from_the_fill_value_to_the_softmax():
    for fill, node in ((-3.4e38, False), (-1e4, True), (float("-inf"), False)):
        nodes, inputs, unnamed = mask_path(_attention(fill, node), Path("."))
        assert nodes == ["mask_bias", "add_mask", "softmax"] and inputs == ["mask"] and unnamed == 0, fill


def test_no_fill_value_no_mask_path():
    assert mask_path(_attention(fill=-100.0), Path(".")) == ([], [], 0)  # an ordinary constant, not a mask


def test_probabilities_through_a_where_with_a_unit_constant():
    assert probability_tensors(_attention(), Path(".")) == ["p0"]
    assert probability_tensors(_attention(zero_rows=-1.0), Path(".")) == []  # -1 is no probability


def test_a_transformer_multiplies_two_activations():
    m = _attention()
    assert is_transformer(m)
    del m.graph.node[-1]  # without P·V, Q·Kᵀ still multiplies two activations
    assert is_transformer(m)
    g = helper.make_graph([helper.make_node("MatMul", ["x", "W"], ["h"]), helper.make_node("Softmax", ["h"], ["y"])],
                          "mlp", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 4])],
                          [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 4])],
                          initializer=[numpy_helper.from_array(np.ones((4, 4), np.float32), "W")])
    assert not is_transformer(helper.make_model(g))
