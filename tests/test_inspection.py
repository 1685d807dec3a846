import shutil

import onnx
import pytest

from conftest import json_result
from onnxforge.errors import BadInputError
from onnxforge.inspection import inspect_model


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
