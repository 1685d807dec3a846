"""Static int8 with the weights left in their files (lean_static.py) against ORT's
quantize_static on the same model and data: the same nodes, the same initializers, the
same outputs."""

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper


class _Reader:
    def __init__(self, samples):
        self.it = iter(samples)

    def get_next(self):
        return next(self.it, None)


def _cnn(path):
    """Conv -> Relu -> Conv (with bias) -> Flatten -> Gemm -> Softmax, weights inline."""
    rng = np.random.default_rng(0)
    w = lambda *s: rng.standard_normal(s).astype(np.float32) * 0.3  # noqa: E731
    inits = [numpy_helper.from_array(w(8, 3, 3, 3), "c1"), numpy_helper.from_array(w(8), "b1"),
             numpy_helper.from_array(w(8, 8, 3, 3), "c2"), numpy_helper.from_array(w(8), "b2"),
             numpy_helper.from_array(w(10, 8 * 6 * 6), "fc"), numpy_helper.from_array(w(10), "fcb")]
    nodes = [helper.make_node("Conv", ["x", "c1", "b1"], ["h1"], name="conv1"),
             helper.make_node("Relu", ["h1"], ["r1"], name="relu1"),
             helper.make_node("Conv", ["r1", "c2", "b2"], ["h2"], name="conv2"),
             helper.make_node("Flatten", ["h2"], ["f"], name="flat"),
             helper.make_node("Gemm", ["f", "fc", "fcb"], ["logits"], name="fc", transB=1),
             helper.make_node("Softmax", ["logits"], ["y"], name="softmax")]
    g = helper.make_graph(nodes, "cnn", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["n", 3, 10, 10])],
                          [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["n", 10])], initializer=inits)
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)])
    m.ir_version = 8
    onnx.save(m, str(path))
    return path, [{"x": np.random.default_rng(i).random((2, 3, 10, 10), np.float32)} for i in range(4)]


def _bert(bert_onnx, tmp_path):
    src = tmp_path / "bert.onnx"
    src.write_bytes(bert_onnx.read_bytes())
    for f in bert_onnx.parent.glob(bert_onnx.name + ".data"):
        (tmp_path / f.name).write_bytes(f.read_bytes())
    rng = np.random.default_rng(0)
    samples = []
    for _ in range(4):
        mask = np.ones((2, 8), np.int64)
        mask[1, 5:] = 0
        samples.append({"input_ids": rng.integers(0, 99, (2, 8)), "attention_mask": mask})
    ins = {i.name for i in onnx.load(str(src), load_external_data=False).graph.input}
    return src, [{k: v for k, v in s.items() if k in ins} for s in samples]


def _same(a_path, b_path, samples):
    import onnxruntime as ort

    a, b = onnx.load(str(a_path)), onnx.load(str(b_path))
    key = lambda m: sorted((n.op_type, n.name, tuple(n.input), tuple(n.output)) for n in m.graph.node)  # noqa: E731
    assert key(a) == key(b)
    ia = {t.name: numpy_helper.to_array(t) for t in a.graph.initializer}
    ib = {t.name: numpy_helper.to_array(t) for t in b.graph.initializer}
    assert sorted(ia) == sorted(ib)
    for k in ia:
        assert ia[k].dtype == ib[k].dtype and np.array_equal(ia[k], ib[k]), k
    sa = ort.InferenceSession(str(a_path), providers=["CPUExecutionProvider"])
    sb = ort.InferenceSession(str(b_path), providers=["CPUExecutionProvider"])
    for s in samples:
        for x, y in zip(sa.run(None, s), sb.run(None, s)):
            assert np.array_equal(x, y)


@pytest.mark.parametrize("model,options", [
    ("cnn", dict(per_channel=False, reduce_range=False, op_types_to_quantize=None, extra_options={})),
    ("cnn", dict(per_channel=True, reduce_range=True, op_types_to_quantize=None, extra_options={}, qoperator=True)),
    pytest.param("bert", dict(per_channel=True, reduce_range=False, op_types_to_quantize=["MatMul", "Gemm"],
                              extra_options={"MatMulConstBOnly": False}), marks=pytest.mark.slow),
])
def test_the_same_model_as_quantize_static(request, tmp_path, model, options):
    from onnxruntime.quantization import CalibrationMethod, QuantFormat, QuantType, quantize_static

    from onnxforge.steps.quantize.lean_static import quantize_static_lean

    if model == "cnn":
        src, samples = _cnn(tmp_path / "m.onnx")
    else:
        src, samples = _bert(request.getfixturevalue("bert_onnx"), tmp_path)
    fmt = QuantFormat.QOperator if options.pop("qoperator", False) else QuantFormat.QDQ
    kw = dict(quant_format=fmt, activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8, nodes_to_exclude=[],
              **options)
    before = sorted(p.name for p in tmp_path.iterdir())
    quantize_static(str(src), str(tmp_path / "ort.onnx"), _Reader(samples), calibrate_method=CalibrationMethod.MinMax,
                    **kw)
    (tmp_path / "lean").mkdir()
    quantize_static_lean(src, tmp_path / "lean" / "q.onnx", _Reader(samples), tmp=tmp_path / "lean", **kw)
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(before + ["ort.onnx", "lean"])  # nothing beside src
    _same(tmp_path / "ort.onnx", tmp_path / "lean" / "q.onnx", samples)


@pytest.mark.slow
def test_quantize_static_takes_the_lean_path_for_large_models(cli, bert_onnx, tmp_path, monkeypatch):
    """Through the step (transformer recipe, mask path in fp32, unit-range probabilities):
    the same model either way; the report says which path ran; histogram methods keep
    ORT's quantize_static."""
    from conftest import json_result as result
    from onnxforge.steps.quantize import lean_quant

    src, samples = _bert(bert_onnx, tmp_path)
    np.savez(tmp_path / "calib.npz", **{k: np.concatenate([s[k] for s in samples]) for k in samples[0]})

    def run(out, *extra):
        r = cli("quantize", "static", src, "--calibration", tmp_path / "calib.npz", "-o", out, "--min-cosine", "0.9",
                "--speed-budget", "0", "--json", *extra)
        assert r.code == 0, r.err + r.out
        return result(r)["notes"]

    notes = run(tmp_path / "ort.onnx")
    assert not any("weights read from their files" in n for n in notes)
    monkeypatch.setattr(lean_quant, "LEAN_MIN_BYTES", 0)  # this tiny BERT stands in for a BERT-base
    notes = run(tmp_path / "lean.onnx")
    assert any("weights read from their files" in n for n in notes)
    _same(tmp_path / "ort.onnx", tmp_path / "lean.onnx", samples)
    notes = run(tmp_path / "entropy.onnx", "--method", "entropy")
    assert any("entropy calibration" in n for n in notes)
