import gc
import weakref

import numpy as np
import pytest


@pytest.mark.slow  # imports onnxscript's rewriter
def test_rewriter_caches_let_the_last_graph_go(tmp_path):
    """onnxscript's module-level rules keep the graph they last matched; after
    drop_rewriter_caches nothing holds the model's initializers any more."""
    pytest.importorskip("onnxscript")
    import onnx_ir as ir
    from onnx import TensorProto, helper, numpy_helper
    from onnxscript.rewriter import ort_fusions

    from onnxforge.core.memory import RELEASE_MIN_BYTES, drop_rewriter_caches, release_memory

    w = numpy_helper.from_array(np.ones((64, 64), np.float32), "w")
    g = helper.make_graph([helper.make_node("MatMul", ["x", "w"], ["h"]), helper.make_node("Relu", ["h"], ["y"])],
                          "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [2, 64])],
                          [helper.make_tensor_value_info("y", TensorProto.FLOAT, [2, 64])], [w])
    model = ir.serde.deserialize_model(helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)]))
    ort_fusions.optimize_for_ort(model)
    graph = weakref.ref(model.graph)
    del model
    gc.collect()
    if graph() is None:
        pytest.skip("this onnxscript no longer keeps the last matched graph: drop_rewriter_caches is moot")
    # kept alive by the rules' matchers: the leak this module is for
    assert drop_rewriter_caches() > 0
    gc.collect()
    assert graph() is None
    release_memory(RELEASE_MIN_BYTES)  # and again with nothing to clear: harmless


@pytest.mark.slow  # imports onnxscript's rewriter
def test_a_dead_weak_proxy_does_not_stop_the_sweep():
    """gc.get_objects() hands back weak proxies too; one whose referent is gone raised
    ReferenceError from isinstance() and failed the release that was cleaning up."""
    pytest.importorskip("onnxscript")
    import onnxscript.rewriter._matcher  # noqa: F401  (the sweep only looks when it is imported)

    from onnxforge.core.memory import drop_rewriter_caches

    class Gone:
        pass

    obj = Gone()
    proxy = weakref.proxy(obj)
    del obj
    gc.collect()
    assert drop_rewriter_caches() >= 0
    assert type(proxy) is weakref.ProxyType


def _inline_model(path, mib: int = 16):
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    side = int((mib * 2**20 // 4) ** 0.5)
    w = numpy_helper.from_array(np.random.default_rng(0).random((side, side), np.float32), "w")
    g = helper.make_graph([helper.make_node("MatMul", ["x", "w"], ["y"])], "g",
                          [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", side])],
                          [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["batch", side])], [w])
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)])
    m.metadata_props.add(key="onnxforge.val_ranges", value='{"x": [0, 1]}')
    onnx.save(m, str(path))
    return m


def _bytes_read() -> int:
    return next(int(l.split()[1]) for l in open("/proc/self/io") if l.startswith("rchar"))


@pytest.mark.skipif(not __import__("os").path.exists("/proc/self/io"), reason="needs /proc/self/io")
def test_a_graph_only_load_never_reads_inline_weights(tmp_path):
    """Reading a model's graph, inputs or metadata used to parse the whole file: a
    BERT-base with inline weights cost 2x its 418 MiB on each of a dozen such loads in
    one quantize. graph_only skips their bytes, and leaves the rest as the full load."""
    from onnxforge.core.fileio import load_onnx

    full = _inline_model(tmp_path / "m.onnx")
    before = _bytes_read()
    graph = load_onnx(tmp_path / "m.onnx", graph_only=True)
    assert _bytes_read() - before < 2**20  # of a 16 MiB file
    for t in full.graph.initializer:
        t.ClearField("raw_data")
    assert graph.SerializeToString() == full.SerializeToString()


def test_a_load_by_reference_points_each_weight_at_its_bytes_in_the_model_file(tmp_path):
    """Lean quantization and onnxscript's fusions read weights one at a time from files;
    an inline BERT-base used to be loaded whole first (3.6x its weights at the peak).
    Inline weights become external references into the model file itself, which onnx's
    own loader reads back to the same model; small tensors and the rest stay as they are."""
    import onnx
    from onnx import numpy_helper
    from onnx.external_data_helper import load_external_data_for_model

    from onnxforge.core.fileio import REF_MIN_BYTES, load_onnx

    full = _inline_model(tmp_path / "m.onnx")
    full.graph.initializer.append(numpy_helper.from_array(np.arange(4, dtype=np.int64), "small"))
    full.graph.initializer.append(numpy_helper.from_array(np.zeros((0, 3), np.float32), "empty"))
    onnx.save(full, str(tmp_path / "m.onnx"))
    before = _bytes_read()
    ref = load_onnx(tmp_path / "m.onnx", weights_by_reference=True)
    assert _bytes_read() - before < 2**20  # of a 16 MiB file
    by_name = {t.name: t for t in ref.graph.initializer}
    assert {e.key: e.value for e in by_name["w"].external_data}["location"] == "m.onnx"
    assert by_name["small"].raw_data and by_name["small"].ByteSize() < REF_MIN_BYTES + 64  # stays in the message
    assert not by_name["empty"].external_data
    load_external_data_for_model(ref, str(tmp_path))
    for t in ref.graph.initializer:
        t.ClearField("data_location")  # onnx's loader sets it to DEFAULT, which the file left unset
    assert ref.SerializeToString() == full.SerializeToString()


@pytest.mark.parametrize("dtype", ["float32", "int64", "bfloat16", "int4"])
def test_an_initializer_value_reads_its_own_bytes_of_any_type(tmp_path, dtype):
    """One reader for a tensor's value wherever it lies (lean_quant, attention, masks):
    numpy's own types straight from the file, packed and exotic ones through onnx."""
    import ml_dtypes
    import onnx
    from onnx import helper, numpy_helper

    from onnxforge.core.fileio import initializer_value, load_onnx

    np_type = getattr(ml_dtypes, dtype, None) or np.dtype(dtype)
    want = (np.arange(8 * 63, dtype=np.float32) % 16 - 8).astype(np_type).reshape(8, 63)  # int4: -8..7
    t = numpy_helper.from_array(want, "t")
    g = helper.make_graph([helper.make_node("Identity", ["t"], ["y"])], "g", [],
                          [helper.make_tensor_value_info("y", t.data_type, [8, 63])], [t])
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", 21)])
    onnx.save_model(m, str(tmp_path / "ext.onnx"), save_as_external_data=True, location="ext.onnx.data",
                    size_threshold=0)
    onnx.save_model(m, str(tmp_path / "inline.onnx"))
    for model in (load_onnx(tmp_path / "ext.onnx", load_external_data=False),
                  load_onnx(tmp_path / "inline.onnx", weights_by_reference=True),
                  load_onnx(tmp_path / "inline.onnx")):
        got = initializer_value(model.graph.initializer[0], tmp_path)
        assert got.dtype == want.dtype and np.array_equal(got, want)


def test_a_load_by_reference_keeps_external_weights_and_refuses_what_the_full_load_refuses(tmp_path):
    import onnx

    from onnxforge.core.errors import BadInputError
    from onnxforge.core.fileio import load_onnx

    m = _inline_model(tmp_path / "x.onnx", mib=1)
    onnx.save_model(m, str(tmp_path / "ext.onnx"), save_as_external_data=True, location="ext.onnx.data")
    ref = load_onnx(tmp_path / "ext.onnx", weights_by_reference=True)
    assert {e.key: e.value for e in ref.graph.initializer[0].external_data}["location"] == "ext.onnx.data"
    data = (tmp_path / "x.onnx").read_bytes()
    (tmp_path / "cut.onnx").write_bytes(data[: len(data) // 2])
    with pytest.raises(BadInputError, match="not a valid ONNX model"):
        load_onnx(tmp_path / "cut.onnx", weights_by_reference=True)


@pytest.mark.parametrize("content", [b"", b"not an onnx model at all", b"\x3a\xff\xff\xff\x0f\x2a"])
def test_a_graph_only_load_refuses_bad_files_as_the_full_load_does(tmp_path, content):
    from onnxforge.core.errors import BadInputError
    from onnxforge.core.fileio import load_onnx

    (tmp_path / "bad.onnx").write_bytes(content)
    errors = []
    for graph_only in (False, True):
        with pytest.raises(BadInputError) as exc:
            load_onnx(tmp_path / "bad.onnx", graph_only=graph_only)
        errors.append(exc.value.message)
    assert errors[0] == errors[1]


def test_a_graph_only_load_of_a_truncated_file_says_it_is_not_onnx(tmp_path):
    from onnxforge.core.errors import BadInputError
    from onnxforge.core.fileio import load_onnx

    _inline_model(tmp_path / "m.onnx", mib=1)
    data = (tmp_path / "m.onnx").read_bytes()
    (tmp_path / "cut.onnx").write_bytes(data[: len(data) // 2])
    with pytest.raises(BadInputError, match="not a valid ONNX model"):
        load_onnx(tmp_path / "cut.onnx", graph_only=True)


@pytest.mark.slow  # imports onnxscript's rewriter
def test_rule_objects_let_the_last_graph_go():
    """onnxscript's MultiHeadAttention fusion keeps the last mask Value it matched on
    itself, and a Value reaches its graph, weights and all: 840 MB of a BERT-base stayed
    after a fusion pass. Rule objects' onnx_ir state is dropped too."""
    pytest.importorskip("onnxscript")
    import onnx_ir as ir
    from onnx import TensorProto, helper, numpy_helper
    from onnxscript.rewriter._rewrite_rule import RewriteRuleClassBase

    from onnxforge.core.memory import RELEASE_MIN_BYTES, drop_rewriter_caches, release_memory

    class KeepsState(RewriteRuleClassBase):  # as mha.MultiHeadAttention keeps self.mask
        def pattern(self, op, x):
            return op.Relu(x)

        def rewrite(self, op, x):
            return op.Relu(x)

    w = numpy_helper.from_array(np.ones((64, 64), np.float32), "w")
    g = helper.make_graph([helper.make_node("MatMul", ["x", "w"], ["y"])], "g",
                          [helper.make_tensor_value_info("x", TensorProto.FLOAT, [2, 64])],
                          [helper.make_tensor_value_info("y", TensorProto.FLOAT, [2, 64])], [w])
    model = ir.serde.deserialize_model(helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)]))
    rule = KeepsState()
    rule.mask = model.graph.node(0).outputs[0]
    graph = weakref.ref(model.graph)
    del model
    gc.collect()
    assert graph() is not None  # held through the rule's Value
    # a caller done with a small model skips the sweep (it cost 1 s a call, ten calls a release)
    release_memory(RELEASE_MIN_BYTES - 1)
    assert graph() is not None and rule.mask is not None
    assert drop_rewriter_caches() >= 1 and rule.mask is None
    gc.collect()
    assert graph() is None
