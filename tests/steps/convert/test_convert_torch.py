import json

import onnx
import pytest

torch = pytest.importorskip("torch")

from conftest import ROOT
from conftest import json_result as load_json  # noqa: E402

pytestmark = pytest.mark.slow  # exports torch models

M = f"{ROOT / 'tests' / 'models.py'}"




def test_mlp_factory_dynamic_batch(cli, tmp_path):
    out = tmp_path / "mlp.onnx"
    r = cli("convert", "torch", f"{M}:mlp", "-o", out, "--input", "x:float32:batchx8", "--json")
    assert r.code == 0, r.err
    res = load_json(r)
    assert res["passed"] and res["written"] and res["artifact"]["lineage"] == ["convert:torch"]
    assert [c["candidate"] for c in res["checks"]] == ["onnx (example inputs)", "onnx (batch=3)"]
    assert all(c["passed"] for c in res["checks"])
    assert res["details"]["exporter"] == "dynamo"
    m = onnx.load(str(out))
    assert m.graph.input[0].type.tensor_type.shape.dim[0].dim_param == "batch"
    assert res["artifact"]["sha256"] and not list(tmp_path.glob(".onnxforge-*"))


def test_cnn_batchnorm_exported_in_eval_mode(tmp_path):
    import importlib.util

    import onnxforge

    spec = importlib.util.spec_from_file_location("tm", M)
    tm = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(tm)
    model = tm.cnn()
    assert model.training
    res = onnxforge.convert_torch(model, tmp_path / "cnn.onnx", inputs=["x:float32:batchx3x16x16"])
    assert res.passed, res.checks
    assert any("training mode" in n for n in res.notes)
    assert not model.training
    ops = [n.op_type for n in onnx.load(str(tmp_path / "cnn.onnx")).graph.node]
    assert "Conv" in ops
    assert "BatchNormalization" not in ops  # eval mode: folded into the convolutions


@pytest.mark.parametrize("factory", ["lstm", "gru"])
def test_recurrent(cli, tmp_path, factory):
    r = cli("convert", "torch", f"{M}:{factory}", "-o", tmp_path / "rnn.onnx",
            "--input", "x:float32:batchxseqx6", "--json")
    assert r.code == 0, r.err + r.out
    res = load_json(r)
    assert [c["candidate"] for c in res["checks"]] == ["onnx (example inputs)", "onnx (batch=3)", "onnx (seq=3)"]


def test_transformer_encoder(cli, tmp_path):
    r = cli("convert", "torch", f"{M}:encoder", "-o", tmp_path / "enc.onnx",
            "--input", "x:float32:2x5x16", "--dynamic", "x:0=batch", "--dynamic", "x:1=seq", "--json")
    assert r.code == 0, r.err + r.out
    res = load_json(r)
    assert len(res["checks"]) == 3 and res["passed"]


def test_two_inputs_dict_output(cli, tmp_path):
    r = cli("convert", "torch", f"{M}:two_inputs", "-o", tmp_path / "two.onnx",
            "--input", "x:float32:batchx4", "--input", "y:float32:batchx5", "--json")
    assert r.code == 0, r.err
    res = load_json(r)
    assert res["details"]["outputs"] == ["sum", "diff"]
    m = onnx.load(str(tmp_path / "two.onnx"))
    assert [o.name for o in m.graph.output] == ["sum", "diff"]
    assert [i.name for i in m.graph.input] == ["x", "y"]


def test_baked_dynamic_axis_is_a_failed_check(cli, tmp_path):
    out = tmp_path / "baked.onnx"
    r = cli("convert", "torch", f"{M}:baked", "-o", out, "--input", "x:float32:batchx4",
            "--exporter", "torchscript", "--json")
    assert r.code == 1
    res = load_json(r)
    assert res["checks"][0]["passed"] is True
    bad = res["checks"][1]
    assert bad["passed"] is False and "batch" in bad["candidate"]
    assert not out.exists() and not res["written"]
    # --keep-failed writes it under a name that says so
    r = cli("convert", "torch", f"{M}:baked", "-o", out, "--input", "x:float32:batchx4",
            "--exporter", "torchscript", "--keep-failed")
    assert r.code == 1 and (tmp_path / "baked.failed.onnx").exists() and not out.exists()


def test_no_check_skips(cli, tmp_path):
    r = cli("convert", "torch", f"{M}:mlp", "-o", tmp_path / "m.onnx", "--input", "x:float32:2x8", "--no-check", "--json")
    assert r.code == 0
    res = load_json(r)
    assert res["checks"] == [] and any("skipped" in n for n in res["notes"])


def test_pt2_and_torchscript_sources(cli, tmp_path):
    import importlib.util

    spec = importlib.util.spec_from_file_location("tm", M)
    tm = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(tm)
    model = tm.mlp().eval()
    x = torch.randn(2, 8)
    ep = torch.export.export(model, (x,), dynamic_shapes=({0: torch.export.Dim("batch")},))
    torch.export.save(ep, str(tmp_path / "mlp.pt2"))
    r = cli("convert", "torch", tmp_path / "mlp.pt2", "-o", tmp_path / "a.onnx", "--json")
    assert r.code == 0, r.err
    assert load_json(r)["details"]["source_kind"] == "export"

    torch.jit.save(torch.jit.trace(model, x), str(tmp_path / "mlp.ts"))
    r = cli("convert", "torch", tmp_path / "mlp.ts", "-o", tmp_path / "b.onnx", "--input", "x:float32:batchx8", "--json")
    assert r.code == 0, r.err
    assert load_json(r)["details"]["source_kind"] == "torchscript"


def test_pickles_need_trust_and_state_dicts_need_a_factory(cli, tmp_path):
    import importlib.util

    spec = importlib.util.spec_from_file_location("tm", M)
    tm = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(tm)
    model = tm.mlp()
    torch.save(model, str(tmp_path / "whole.pt"))
    r = cli("convert", "torch", tmp_path / "whole.pt", "-o", tmp_path / "w.onnx", "--input", "x:float32:2x8")
    assert r.code == 3 and "arbitrary code" in r.err and ".pt2" in r.err
    r = cli("convert", "torch", tmp_path / "whole.pt", "-o", tmp_path / "w.onnx", "--input", "x:float32:2x8", "--trust-pickle")
    assert r.code == 0, r.err

    torch.save(model.state_dict(), str(tmp_path / "sd.pt"))
    r = cli("convert", "torch", tmp_path / "sd.pt", "-o", tmp_path / "s.onnx", "--input", "x:float32:2x8")
    assert r.code == 3 and "state_dict" in r.err and "--weights" in r.err
    r = cli("convert", "torch", f"{M}:mlp", "--weights", tmp_path / "sd.pt", "-o", tmp_path / "s.onnx", "--input", "x:float32:2x8")
    assert r.code == 0, r.err
    torch.save(tm.two_inputs().state_dict(), str(tmp_path / "other.pt"))
    r = cli("convert", "torch", f"{M}:mlp", "--weights", tmp_path / "other.pt", "-o", tmp_path / "t.onnx", "--input", "x:float32:2x8")
    assert r.code == 3 and "do not match" in r.err and not (tmp_path / "t.onnx").exists()


@pytest.mark.parametrize("spec,needle", [
    ("raises", "raised RuntimeError: no such checkpoint"),
    ("not_a_module", "not a torch.nn.Module"),
    ("missing_fn", "no callable 'missing_fn'"),
])
def test_bad_factories(cli, tmp_path, spec, needle):
    r = cli("convert", "torch", f"{M}:{spec}", "-o", tmp_path / "m.onnx", "--input", "x:float32:2x8")
    assert r.code == 3 and needle in r.err and "Traceback" not in r.err
    assert not list(tmp_path.iterdir())


def test_unimportable_module(cli, tmp_path):
    r = cli("convert", "torch", "no_such_pkg.models:build", "-o", tmp_path / "m.onnx", "--input", "x:float32:2x8")
    assert r.code == 3 and "cannot import" in r.err


def test_wrong_input_rank(cli, tmp_path):
    r = cli("convert", "torch", f"{M}:mlp", "-o", tmp_path / "m.onnx", "--input", "x:float32:2x3x8x9")
    assert r.code == 3 and "fails on the example inputs" in r.err
    assert not list(tmp_path.iterdir())


def test_unsupported_op_at_opset(cli, tmp_path):
    src = tmp_path / "gs.py"
    src.write_text(
        "import torch\n"
        "class G(torch.nn.Module):\n"
        "    def forward(self, x, g):\n"
        "        return torch.nn.functional.grid_sample(x, g, align_corners=False)\n"
        "def build():\n    return G()\n")
    r = cli("convert", "torch", f"{src}:build", "-o", tmp_path / "g.onnx", "--input", "x:float32:1x1x4x4",
            "--input", "g:float32:1x2x2x2", "--opset", "15", "--exporter", "torchscript")
    assert r.code == 4 and "aten::grid_sampler" in r.err and "--opset 16" in r.err
    assert r.out == "" and not (tmp_path / "g.onnx").exists()


def test_existing_output_needs_force(cli, tmp_path):
    out = tmp_path / "m.onnx"
    out.write_bytes(b"keep me")
    r = cli("convert", "torch", f"{M}:mlp", "-o", out, "--input", "x:float32:2x8")
    assert r.code == 3 and "--force" in r.err and out.read_bytes() == b"keep me"
    r = cli("convert", "torch", f"{M}:mlp", "-o", out, "--input", "x:float32:2x8", "--force")
    assert r.code == 0 and out.read_bytes() != b"keep me"


def test_the_exporters_op_table_is_read_once_and_each_export_gets_its_own_copy(cli, tmp_path):
    """reuse_torchlib_ops: if torch or onnxscript move the table, this fails and says the
    0.5 s per export it saves is lost; the export after a caller emptied its copy is whole."""
    import importlib

    from torch.onnx._internal import _lazy_import

    from onnxforge.steps.convert.exporting import reuse_torchlib_ops

    reuse_torchlib_ops()
    apis = importlib.import_module(_lazy_import.onnxscript_apis._name)
    cached = apis.get_torchlib_ops
    assert getattr(cached, "onnxforge_once", False), "torch.onnx's op table moved: every export re-reads it"
    reuse_torchlib_ops()
    assert apis.get_torchlib_ops is cached
    first, second = cached(), cached()
    assert first is not second and first == second and len(first) > 400
    first.clear()
    r = cli("convert", "torch", f"{M}:cnn", "-o", tmp_path / "c.onnx", "--input", "x:float32:batchx3x8x8", "--json")
    assert r.code == 0 and load_json(r)["passed"], r.err


def test_the_exporters_op_listing_reads_the_dispatcher_once_whatever_torch_ops_holds(cli, tmp_path, monkeypatch):
    """list_cia_ops_once: with torch.ops holding many namespaces (importing skops.io adds
    230), one listing reads the dispatcher once and finds the same ops; if torch
    moves the listing, this fails and says the 0.5-0.9 s per export it saves is lost."""
    import torch
    import torch._export.utils as utils
    import torch.export.decomp_utils as decomp_utils
    import torch.export.exported_program as exported_program

    from onnxforge.steps.convert.exporting import prepare_dynamo_export

    for name in ("erf", "expit", "gammaln", "xlogy", *(f"onnxforge_probe_{i}" for i in range(120))):
        getattr(torch.ops, name)  # what importing skops.io does: each name looked up becomes a namespace
    assert len(torch.ops._dir) > 100
    prepare_dynamo_export()
    listing = exported_program._collect_all_valid_cia_ops
    assert getattr(listing, "onnxforge_once", False), "torch.export's op listing moved: every export re-reads it"
    assert decomp_utils._collect_all_valid_cia_ops is listing and utils._collect_all_valid_cia_ops is listing
    prepare_dynamo_export()
    assert exported_program._collect_all_valid_cia_ops is listing  # wrapped once, however often it is asked

    reads = []
    read = torch._C._dispatch_get_registrations_for_dispatch_key
    monkeypatch.setattr(torch._C, "_dispatch_get_registrations_for_dispatch_key",
                        lambda key: reads.append(key) or read(key))
    ops = listing()
    assert reads == ["CompositeImplicitAutograd"]
    reads.clear()
    assert listing.__wrapped__() == ops and len(reads) >= 100  # torch's own: once per namespace
    monkeypatch.undo()
    assert utils._materialize_cpp_cia_ops.__name__ == "_materialize_cpp_cia_ops"  # put back after the listing
    r = cli("convert", "torch", f"{M}:cnn", "-o", tmp_path / "c.onnx", "--input", "x:float32:batchx3x8x8", "--json")
    assert r.code == 0 and load_json(r)["passed"], r.err


def test_bad_flags(cli, tmp_path):
    assert cli("convert", "torch", f"{M}:mlp", "-o", tmp_path / "m.onnx", "--input", "x:float32:2x8", "--dynamic", "x0batch").code == 2
    assert cli("convert", "torch", f"{M}:mlp", "-o", tmp_path / "m.onnx", "--input", "x:float32:2x8", "--dynamic", "y:0=batch").code == 2
    assert cli("convert", "torch", f"{M}:mlp", "-o", tmp_path / "m.onnx").code == 2  # no example inputs


def test_validate_accepts_torch_source(cli, tmp_path, torch_exports):
    out = torch_exports / "mlp.onnx"
    r = cli("validate", f"{M}:mlp", out, "--samples", "2", "--dim", "batch=5", "--json")
    assert r.code == 0, r.err
    res = load_json(r)
    assert res["reference"].startswith("torch:") and res["outputs"][0]["shape"] == [5, 4]
    r = cli("validate", f"{M}:two_inputs", out)  # another model: fails on these inputs
    assert r.code == 3 and "the torch model fails on these inputs" in r.err


@pytest.mark.slow
def test_hugging_face_bert(cli, tmp_path):
    pytest.importorskip("transformers")
    r = cli("convert", "torch", f"{M}:tiny_bert", "-o", tmp_path / "bert.onnx",
            "--input", "input_ids:int64:batchxseq", "--input", "attention_mask:int64:batchxseq",
            "--val-range", "input_ids:[0,99]", "--val-range", "attention_mask:[1,1]", "--json")
    assert r.code == 0, r.err + r.out
    res = load_json(r)
    assert res["details"]["outputs"] == ["last_hidden_state", "pooler_output"]
    assert len(res["checks"]) == 3 and res["passed"]


def test_external_data_forced(cli, tmp_path, monkeypatch):
    out = tmp_path / "sub" / "ext.onnx"
    r = cli("convert", "torch", f"{M}:mlp", "-o", out, "--input", "x:float32:batchx8", "--external-data", "--json")
    assert r.code == 0, r.err
    assert (tmp_path / "sub" / "ext.onnx.data").is_file()
    monkeypatch.chdir(tmp_path)  # the model loads from elsewhere: its data location is relative
    info = cli("inspect", out, "--json")
    ext = json.loads(info.out)["result"]["external_data"]
    assert list(ext) == ["ext.onnx.data"] and ext["ext.onnx.data"] >= 8 * 16 * 4  # the big weights at least
    assert cli("validate", f"{M}:mlp", out).code == 0


def test_dynamo_baking_a_dynamic_axis_is_named(cli, tmp_path):
    # int(x.shape[0]) makes torch.export specialize the batch: the export "succeeds" with a
    # fixed dim, and the check says which axis became fixed
    r = cli("convert", "torch", f"{M}:baked", "-o", tmp_path / "b.onnx", "--input", "x:float32:batchx4", "--json")
    res = load_json(r)
    assert r.code == 1 and res["details"]["exporter"] == "dynamo"
    assert "dynamic axis batch (x:0) was exported as a fixed size 2" in res["checks"][1]["problems"][0]


def test_auto_exporter_falls_back_to_torchscript(cli, tmp_path):
    r = cli("convert", "torch", f"{M}:data_dependent", "-o", tmp_path / "d.onnx", "--input", "x:float32:2x4", "--json")
    res = load_json(r)
    assert r.code == 0, r.err
    assert res["details"]["exporter"] == "torchscript"
    assert any("dynamo exporter failed" in n for n in res["notes"])


def test_wrong_input_dtype(cli, tmp_path):
    r = cli("convert", "torch", f"{M}:mlp", "-o", tmp_path / "m.onnx", "--input", "x:int64:2x8")
    assert r.code == 3 and "fails on the example inputs" in r.err


def test_widen_dynamic_example_keeps_values_and_shared_labels():
    from onnxforge.steps.convert.torch import Example, widen_dynamic_example

    ids = torch.arange(8).reshape(1, 8)
    mask = torch.ones(1, 8, dtype=torch.int64)
    feats = torch.rand(3, 4)
    ex = Example(("ids", "mask", "f"), (ids, mask), {"f": feats})
    out, widened = widen_dynamic_example(ex, {"ids": {0: "batch"}, "mask": {0: "batch", 1: "seq"}, "f": {0: "n"}})
    assert widened == ["batch"]  # seq (8) and n (3) are already >= 2
    assert out.args[0].shape == (2, 8) and out.args[1].shape == (2, 8) and out.kwargs["f"] is feats
    assert torch.equal(out.args[0][1], ids[0]) and out.args[0].dtype == torch.int64  # rows repeat the example
    same, none = widen_dynamic_example(Example(("ids",), (ids,), {}), {"ids": {1: "seq"}})
    assert none == [] and same.args[0] is ids


def test_batch_one_example_with_dynamic_batch(cli, tmp_path):
    # GPT-2's export bakes batch=1 in when the example has batch 1 (torch.export specializes
    # sizes 0 and 1); the converter exports at 2 and still checks at the user's size
    pytest.importorskip("transformers")
    r = cli("convert", "torch", f"{M}:tiny_gpt2", "-o", tmp_path / "g.onnx", "--input", "input_ids:int64:1x16",
            "--dynamic", "input_ids:0=batch", "--val-range", "input_ids:[0,99]", "--json")
    assert r.code == 0, r.err + r.out
    res = load_json(r)
    assert [c["candidate"] for c in res["checks"]] == ["onnx (example inputs)", "onnx (batch=3)"]
    assert res["checks"][0]["outputs"][0]["shape"][0] == 1  # the check at the user's batch of 1
    assert any("exported with batch=2" in n for n in res["notes"])
    dim0 = onnx.load(str(tmp_path / "g.onnx")).graph.input[0].type.tensor_type.shape.dim[0]
    assert dim0.dim_param and not dim0.dim_value


def test_generated_attention_masks_are_padding_masks(cli, tmp_path):
    """No ranges given: a random 0..10 'mask' masked whole rows, where torch and ORT
    differ, and a correct BERT export failed its own check. Masks are now ones with
    trailing zeros, never an all-zero row, at the example size and the second size."""
    pytest.importorskip("transformers")
    r = cli("convert", "torch", f"{M}:tiny_bert", "-o", tmp_path / "b.onnx", "--input", "input_ids:int64:batchxseq",
            "--input", "attention_mask:int64:batchxseq", "--json")
    assert r.code == 0, r.err + r.out
    assert [c["passed"] for c in load_json(r)["checks"]] == [True, True, True]


def test_padding_mask_rows():
    import numpy as np

    from onnxforge.data.generate import generate_inputs, looks_like_mask, padding_mask
    from onnxforge.core.types import TensorSpec

    m = padding_mask((4, 8))
    assert m[0].sum() == 8 and (m.sum(axis=1) >= 1).all() and (np.diff(m, axis=1) <= 0).all()  # trailing zeros only
    assert (padding_mask((3, 2), start=1).sum(axis=1) == 1).all()
    feeds = generate_inputs([TensorSpec("attention_mask", "int64", (3, 5)), TensorSpec("ids", "int64", (3, 5))])
    assert set(np.unique(feeds["attention_mask"])) <= {0, 1} and feeds["attention_mask"].sum(axis=1).min() >= 1
    assert feeds["ids"].max() > 1  # other ints stay as they were
    assert not looks_like_mask("pixel_mask", (1, 3, 8, 8), np.float32) and looks_like_mask("input_mask", (2, 4), bool)


def test_a_forward_that_needs_batch_one_says_the_example_was_widened(cli, tmp_path):
    r = cli("convert", "torch", f"{M}:batch_of_one", "-o", tmp_path / "b.onnx", "--input", "x:float32:1x8",
            "--dynamic", "x:0=batch")
    assert r.code == 4, r.err
    assert "widened from 1 to 2" in r.err and "drop --dynamic for batch" in r.err
    assert "_guards.py" not in r.err and ".onnxforge-" not in r.err  # no torch log lines, no scratch paths
    assert not (tmp_path / "b.onnx").exists()
    r = cli("convert", "torch", f"{M}:batch_of_one", "-o", tmp_path / "b.onnx", "--input", "x:float32:1x8")
    assert r.code == 0, r.err  # the same model at its one batch size converts


def test_inputs_reach_forward_by_name_whatever_their_order(cli, tmp_path):
    """`--input b ... --input a ...` and an npz holding b before a used to reach forward(a, b)
    by position: the model shipped with its inputs swapped and every check passed."""
    import numpy as np
    import onnxruntime as ort

    rng = np.random.default_rng(0)
    a, b = rng.standard_normal((2, 3)).astype(np.float32), rng.standard_normal((2, 3)).astype(np.float32)
    np.savez(tmp_path / "ba.npz", b=b, a=a)
    np.savez(tmp_path / "ab.npz", a=a, b=b)
    for i, how in enumerate((["--input", "b:float32:2x3", "--input", "a:float32:2x3"], ["--inputs", tmp_path / "ba.npz"])):
        out = tmp_path / f"d{i}.onnx"
        r = cli("convert", "torch", f"{M}:difference", "-o", out, *how)
        assert r.code == 0, r.err
        s = ort.InferenceSession(str(out), providers=["CPUExecutionProvider"])
        assert [x.name for x in s.get_inputs()] == ["a", "b"]  # forward's order
        np.testing.assert_allclose(s.run(None, {"a": a, "b": b})[0], a - 2 * b, rtol=1e-6)
        for feeds in ("ab.npz", "ba.npz"):  # the torch side takes them by name too
            r = cli("validate", f"{M}:difference", out, "--inputs", tmp_path / feeds)
            assert r.code == 0, r.err


def test_a_keyword_only_input_is_passed_by_keyword(cli, tmp_path):
    import numpy as np
    import onnxruntime as ort

    out = tmp_path / "kw.onnx"
    r = cli("convert", "torch", f"{M}:keyword_mask", "-o", out, "--input", "mask:float32:batchx4",
            "--input", "x:float32:batchx8")
    assert r.code == 0, r.err
    s = ort.InferenceSession(str(out), providers=["CPUExecutionProvider"])
    assert [x.name for x in s.get_inputs()] == ["x", "mask"]
    x, mask = np.ones((3, 8), np.float32), np.zeros((3, 4), np.float32)
    assert not s.run(None, {"x": x, "mask": mask})[0].any()  # the mask is applied, not ignored


def test_a_trusted_pickle_finds_its_classes_in_the_current_directory(cli, tmp_path, monkeypatch):
    """`python -m onnxforge` has the current directory on sys.path, the `onnxforge` script
    does not: the same command failed with 'No module named ...' under the script."""
    import subprocess
    import sys

    (tmp_path / "pickled_here.py").write_text(
        "import torch\n\nclass M(torch.nn.Module):\n    def __init__(self):\n        super().__init__()\n"
        "        self.lin = torch.nn.Linear(8, 4)\n\n    def forward(self, x):\n        return self.lin(x)\n")
    subprocess.run([sys.executable, "-c", "import torch, pickled_here; torch.save(pickled_here.M().eval(), 'full.pt')"],
                   cwd=tmp_path, check=True)
    monkeypatch.chdir(tmp_path)
    assert "" not in sys.path and str(tmp_path) not in sys.path and "pickled_here" not in sys.modules
    r = cli("convert", "torch", "full.pt", "--trust-pickle", "--input", "x:float32:batchx8", "-o", "full.onnx")
    assert r.code == 0, r.err
    assert str(tmp_path) not in sys.path  # put there for the load only


def test_float64_inputs_feed_the_torch_side_too(cli, tmp_path):
    """numpy makes float64; the ONNX side cast it, the torch side failed ('mat1 and mat2
    must have the same dtype') with exit 3."""
    import numpy as np

    out = tmp_path / "kw.onnx"
    assert cli("convert", "torch", f"{M}:keyword_mask", "-o", out, "--input", "x:float32:batchx8",
               "--input", "mask:float32:batchx4").code == 0
    rng = np.random.default_rng(0)
    np.savez(tmp_path / "in64.npz", x=rng.standard_normal((2, 8)), mask=(rng.random((2, 4)) > 0.5).astype(np.float64))
    r = cli("validate", f"{M}:keyword_mask", out, "--inputs", tmp_path / "in64.npz")
    assert r.code == 0, r.err


def test_a_legacy_torch_save_is_a_pickle_not_an_unknown_file(cli, tmp_path):
    """torch.save(..., _use_new_zipfile_serialization=False) was 'not a torch file' even
    with --trust-pickle; it is the pickle refusal without, a model with."""
    import importlib.util

    spec = importlib.util.spec_from_file_location("tm_legacy", M)
    tm = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(tm)
    torch.save(tm.mlp(), tmp_path / "legacy.pt", _use_new_zipfile_serialization=False)
    r = cli("convert", "torch", tmp_path / "legacy.pt", "--input", "x:float32:batchx8", "-o", tmp_path / "a.onnx")
    assert r.code == 3 and "pickled model" in r.err and "--trust-pickle" in r.err, r.err
    r = cli("convert", "torch", tmp_path / "legacy.pt", "--trust-pickle", "--input", "x:float32:batchx8",
            "-o", tmp_path / "b.onnx")
    assert r.code == 0, r.err


def test_an_input_the_model_takes_as_float64_stays_float64(cli, tmp_path):
    import numpy as np

    rng = np.random.default_rng(0)
    np.savez(tmp_path / "xt.npz", x=rng.random((2, 4)).astype(np.float32), t=1.7e9 + rng.random((2, 4)) * 1000)
    out = tmp_path / "t.onnx"
    r = cli("convert", "torch", f"{M}:float64_offset", "--inputs", tmp_path / "xt.npz", "-o", out)
    assert r.code == 0, r.err
    r = cli("validate", f"{M}:float64_offset", out, "--inputs", tmp_path / "xt.npz")
    assert r.code == 0, r.err


def test_torchscript_binds_inputs_by_name_too(cli, tmp_path):
    """A scripted forward(s, a, b) has no Python signature; its names are in the schema."""
    import importlib.util

    import numpy as np

    spec = importlib.util.spec_from_file_location("tm_ts", M)
    tm = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(tm)
    torch.jit.script(tm.difference()).save(str(tmp_path / "d.pt"))
    rng = np.random.default_rng(0)
    np.savez(tmp_path / "ba.npz", b=rng.random((2, 3)).astype(np.float32), a=rng.random((2, 3)).astype(np.float32))
    r = cli("convert", "torch", tmp_path / "d.pt", "--inputs", tmp_path / "ba.npz", "-o", tmp_path / "d.onnx", "--json")
    assert r.code == 0, r.err
    assert load_json(r)["details"]["inputs"] == ["a", "b"]
    r = cli("validate", tmp_path / "d.pt", tmp_path / "d.onnx", "--inputs", tmp_path / "ba.npz")
    assert r.code == 0, r.err


def test_a_skipped_positional_only_parameter_is_a_clear_error(cli, tmp_path):
    import numpy as np

    np.savez(tmp_path / "ac.npz", a=np.ones((2, 3), np.float32), c=np.ones((2, 3), np.float32))
    r = cli("convert", "torch", f"{M}:positional_only", "--inputs", tmp_path / "ac.npz", "-o", tmp_path / "p.onnx")
    assert r.code == 3 and "positional-only" in r.err and "hint:" in r.err and "TypeError" not in r.err, r.err


def test_the_module_is_let_go_before_onnxruntime_loads_the_export(tmp_path, monkeypatch):
    """convert's checks held the torch module (its weights) and the ORT session (a
    second copy) at once: BERT-base peaked at 3.1x its weights. The module now runs on
    every check input first and is gone, weights and all, when the session is made."""
    import sys
    import types

    import onnxforge
    from onnxforge.core import memory

    # this module's 0.5 KB stands in for a BERT's weights (below the limit nothing is swept)
    monkeypatch.setattr(memory, "RELEASE_MIN_BYTES", 1)
    made = types.ModuleType("made_by_factory")  # where the factory leaves a weak reference to its module
    made.MADE = []
    sys.modules["made_by_factory"] = made
    (tmp_path / "factory.py").write_text(
        "import weakref, torch, made_by_factory\n"
        "def build():\n"
        "    m = torch.nn.Sequential(torch.nn.Linear(8, 16), torch.nn.ReLU(), torch.nn.Linear(16, 4))\n"
        "    made_by_factory.MADE.append(weakref.ref(m))\n"
        "    return m\n")
    alive_at_load = []

    def watch(frame, event, arg):
        if event == "call" and frame.f_code.co_name == "create_session" and "onnxforge" in frame.f_code.co_filename:
            alive_at_load.append(bool(made.MADE) and made.MADE[0]() is not None)

    sys.setprofile(watch)
    try:
        res = onnxforge.convert_torch(f"{tmp_path / 'factory.py'}:build", tmp_path / "m.onnx",
                                      inputs=["x:float32:batchx8"], dynamic=["x:0=batch"])
    finally:
        sys.setprofile(None)
        sys.modules.pop("made_by_factory", None)
    assert res.passed and len(res.checks) == 2 and len(made.MADE) == 1
    assert alive_at_load == [False]  # one session, made once the module was gone
