"""SkipLayerNormalization and BiasGelu written back as the standard ops onnxruntime runs
faster on CPU (simplify/unfuse.py): the same outputs, and ORT does not fuse them again
when it loads the model."""

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper, numpy_helper

from onnxforge.steps.simplify.unfuse import unfuse_in_file, unfuse_slow_kernels

H = 16


def _block(opset=20, *, bias=True, read_mean=False, epsilon=True, gelu=True, residual_out=True):
    """x -> MatMul -> SkipLayerNormalization(skip = x, + bias) -> MatMul -> BiasGelu: a
    post-LN BERT layer's shape, [2, 8, H] static as the exporters write it."""
    rng = np.random.default_rng(0)
    w = lambda *s: numpy_helper.from_array(rng.standard_normal(s).astype(np.float32) * 0.3, None)  # noqa: E731
    inits = []
    for name, t in (("w1", w(H, H)), ("w2", w(H, 4 * H)), ("gamma", w(H)), ("beta", w(H)), ("b", w(H)),
                    ("gb", w(4 * H))):
        t.name = name
        inits.append(t)
    sln_in = ["m1", "x", "gamma", "beta"] + (["b"] if bias else [])
    sln_out = ["ln", "mean" if read_mean else "", "", "residual" if residual_out else ""]
    nodes = [helper.make_node("MatMul", ["x", "w1"], ["m1"]),
             helper.make_node("SkipLayerNormalization", sln_in, sln_out, domain="com.microsoft", name="sln",
                              **({"epsilon": 1e-5} if epsilon else {})),
             helper.make_node("MatMul", ["ln", "w2"], ["m2"])]
    nodes.append(helper.make_node("BiasGelu", ["m2", "gb"], ["y"], domain="com.microsoft") if gelu
                 else helper.make_node("Identity", ["m2"], ["y"]))
    outs = [helper.make_tensor_value_info("y", TensorProto.FLOAT, [2, 8, 4 * H])]
    if residual_out:
        outs.append(helper.make_tensor_value_info("residual", TensorProto.FLOAT, [2, 8, H]))
    if read_mean:
        outs.append(helper.make_tensor_value_info("mean", TensorProto.FLOAT, None))
    g = helper.make_graph(nodes, "block", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [2, 8, H])], outs,
                          inits)
    return helper.make_model(g, opset_imports=[helper.make_opsetid("", opset), helper.make_opsetid("com.microsoft", 1)],
                             ir_version=9)


def _run(model, x):
    return ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"]).run(None, {"x": x})


def _ops(model):
    return sorted(n.op_type for n in model.graph.node)


@pytest.mark.parametrize("bias", [True, False])
def test_the_standard_ops_give_the_fused_outputs(bias):
    fused = _block(bias=bias)
    plain = _block(bias=bias)
    assert unfuse_slow_kernels(plain) == {"SkipLayerNormalization": 1, "BiasGelu": 1}
    assert _ops(plain) == sorted(["MatMul", "MatMul", "Sum", "LayerNormalization", "Add", "Gelu"]
                                 + (["Add"] if bias else []))
    onnx.checker.check_model(plain, full_check=True)
    x = np.random.default_rng(1).standard_normal((2, 8, H)).astype(np.float32)
    for a, b in zip(_run(fused, x), _run(plain, x)):  # y and the residual sum (SkipLayerNorm's output 3)
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-5)


def test_the_bias_goes_onto_the_matmul_output_and_epsilon_keeps_the_fused_default():
    m = _block(epsilon=False)
    unfuse_slow_kernels(m)
    by_out = {o: n for n in m.graph.node for o in n.output}
    bias_add = next(n for n in m.graph.node if n.op_type == "Add" and "b" in n.input)
    assert bias_add.input[0] == "m1"  # ORT folds a bias Add on a MatMul's output into its (int8) GEMM
    ln = next(n for n in m.graph.node if n.op_type == "LayerNormalization")
    assert helper.get_attribute_value(ln.attribute[-1]) == pytest.approx(1e-12)  # not LayerNormalization's 1e-5
    assert by_out[ln.input[0]].op_type == "Sum"


def test_ort_does_not_fuse_them_back_when_it_loads_the_model(tmp_path):
    """ORT's SkipLayerNormFusion matches Add + LayerNormalization on equal static 3-D
    shapes; the residual is a Sum so that the fast kernels are the ones that run."""
    m = _block(residual_out=False)  # a residual read elsewhere is never fused
    unfuse_slow_kernels(m)
    so = ort.SessionOptions()
    so.optimized_model_filepath = str(tmp_path / "ort_view.onnx")
    ort.InferenceSession(m.SerializeToString(), so, providers=["CPUExecutionProvider"])
    ran = {n.op_type for n in onnx.load(str(tmp_path / "ort_view.onnx")).graph.node}
    assert not ran & {"SkipLayerNormalization", "BiasGelu"}, ran
    assert {"LayerNormalization", "Gelu"} <= ran, ran
    # the same graph with an Add for the residual is fused again: the test above would mean nothing
    add = _block(residual_out=False)
    unfuse_slow_kernels(add)
    for n in add.graph.node:
        if n.op_type == "Sum":
            n.op_type = "Add"
    ort.InferenceSession(add.SerializeToString(), so, providers=["CPUExecutionProvider"])
    assert "SkipLayerNormalization" in {n.op_type for n in onnx.load(str(tmp_path / "ort_view.onnx")).graph.node}


def test_nodes_the_standard_ops_cannot_replace_are_left_fused():
    read = _block(read_mean=True)  # its mean output is a graph output
    assert unfuse_slow_kernels(read) == {"SkipLayerNormalization": 0, "BiasGelu": 1}
    old = _block(opset=17)  # LayerNormalization (17) but no Gelu (20)
    assert unfuse_slow_kernels(old) == {"SkipLayerNormalization": 1, "BiasGelu": 0}
    older = _block(opset=16)
    assert unfuse_slow_kernels(older) == {"SkipLayerNormalization": 0, "BiasGelu": 0}
    assert "SkipLayerNormalization" in _ops(older)


def test_in_file_the_weights_stay_in_their_data_file(tmp_path):
    from onnxforge.core.fileio import external_data_files

    p = tmp_path / "m.onnx"
    onnx.save(_block(), str(p), save_as_external_data=True, location="m.onnx.data", size_threshold=0)
    data = (tmp_path / "m.onnx.data").read_bytes()
    assert unfuse_in_file(p) == {"SkipLayerNormalization": 1, "BiasGelu": 1}
    assert (tmp_path / "m.onnx.data").read_bytes() == data
    m = onnx.load(str(p), load_external_data=False)
    assert external_data_files(m) and "SkipLayerNormalization" not in _ops(m)
    assert unfuse_in_file(p) == {}  # nothing left: the file is not rewritten


def test_ort_extended_output_is_written_back_too(tmp_path):
    """simplify --ort extended: ORT's offline optimizer fuses Add + LayerNormalization of a
    static shape into SkipLayerNormalization; the saved model has the standard ops."""
    import onnxforge

    rng = np.random.default_rng(0)
    inits = [numpy_helper.from_array(rng.standard_normal(s).astype(np.float32), n)
             for n, s in (("w", (H, H)), ("gamma", (H,)), ("beta", (H,)))]
    nodes = [helper.make_node("MatMul", ["x", "w"], ["m"]), helper.make_node("Add", ["m", "x"], ["s"]),
             helper.make_node("LayerNormalization", ["s", "gamma", "beta"], ["y"], axis=-1),
             helper.make_node("Relu", ["y"], ["z"])]
    g = helper.make_graph(nodes, "ln", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [2, 8, H])],
                          [helper.make_tensor_value_info("z", TensorProto.FLOAT, [2, 8, H])], inits)
    src = tmp_path / "ln.onnx"
    onnx.save(helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)], ir_version=9), str(src))
    r = onnxforge.simplify(src, tmp_path / "out.onnx", onnxsim=False, ort_level="extended")
    assert r.passed
    [ort_run] = [e for e in r.engines if e.step == "ort:extended"]
    assert ort_run.info["unfused"] == {"SkipLayerNormalization": 1}
    ops = {n.op_type for n in onnx.load(str(tmp_path / "out.onnx")).graph.node}
    assert "SkipLayerNormalization" not in ops and {"Sum", "LayerNormalization"} <= ops


def test_a_model_with_subgraphs_is_left_as_it_is():
    """An If body may read the node's mean output or define a name the rewrite would
    take (both broke the model); cleanup.py leaves such models alone too."""
    m = _block(residual_out=False)
    then = helper.make_graph([helper.make_node("Identity", ["ln"], ["t"])], "then", [],
                             [helper.make_tensor_value_info("t", TensorProto.FLOAT, None)])
    other = helper.make_graph([helper.make_node("Identity", ["ln"], ["sln/residual"])], "else", [],
                              [helper.make_tensor_value_info("sln/residual", TensorProto.FLOAT, None)])
    cond = numpy_helper.from_array(np.array(True), "cond")
    m.graph.initializer.append(cond)
    m.graph.node.append(helper.make_node("If", ["cond"], ["branch"], then_branch=then, else_branch=other))
    m.graph.output.append(helper.make_tensor_value_info("branch", TensorProto.FLOAT, None))
    assert unfuse_slow_kernels(m) == {"SkipLayerNormalization": 0, "BiasGelu": 0}


def test_names_declared_only_as_value_info_or_unread_inputs_are_not_reused():
    m = _block(residual_out=False)
    m.graph.value_info.append(helper.make_tensor_value_info("sln/biased", TensorProto.INT64, None))
    m.graph.input.append(helper.make_tensor_value_info("sln/residual", TensorProto.FLOAT, [1]))
    unfuse_slow_kernels(m)
    made = {o for n in m.graph.node for o in n.output}
    assert not made & {"sln/biased", "sln/residual"} and {"sln_1/biased", "sln_1/residual"} <= made
    onnx.checker.check_model(m, full_check=True)
    x = np.random.default_rng(1).standard_normal((2, 8, H)).astype(np.float32)
    s = ort.InferenceSession(m.SerializeToString(), providers=["CPUExecutionProvider"])
    s.run(None, {"x": x, "sln/residual": np.zeros(1, np.float32)})
