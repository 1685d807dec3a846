"""A .pt2 is told by its archive's own markers, and its dynamic dims are named after
their role. A TorchScript save of a module from a ``models`` package (every torchvision
model: code/__torch__/torchvision/models/...) was refused as a "corrupted .pt2"; a .pt2's
dims came out as torch's symbols (s77, s43), and a release naming a dim the model lacks
failed only after converting, naming the CLI flag."""

import zipfile

import onnx
import pytest

from conftest import json_result as result

pytestmark = pytest.mark.slow  # imports torch, exports models

torch = pytest.importorskip("torch")

TINY = """import torch


class TinyNet(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = torch.nn.Conv2d(3, 4, 3)
        self.fc = torch.nn.Linear(4, 2)

    def forward(self, x):
        return self.fc(self.conv(x).mean(dim=(2, 3)))
"""


class Tokens(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.emb = torch.nn.Embedding(50, 8)
        self.lin = torch.nn.Linear(8, 4)

    def forward(self, ids, mask):
        return self.lin(self.emb(ids) * mask.unsqueeze(-1).float())


class Image(torch.nn.Module):
    def forward(self, x):
        return x.mean(dim=(2, 3))


def _dims(path, which="input"):
    m = onnx.load(str(path), load_external_data=False)
    return {v.name: [d.dim_param or d.dim_value for d in v.type.tensor_type.shape.dim]
            for v in getattr(m.graph, which)}


@pytest.mark.parametrize("how", ["script", "trace"])
def test_torchscript_of_a_module_from_a_models_package(cli, tmp_path, monkeypatch, how):
    pkg = tmp_path / "src" / "vision" / "models"
    pkg.mkdir(parents=True)
    (pkg.parent / "__init__.py").write_text("")
    (pkg / "__init__.py").write_text("")
    (pkg / "tiny.py").write_text(TINY)
    monkeypatch.syspath_prepend(str(tmp_path / "src"))
    from vision.models.tiny import TinyNet

    net = TinyNet().eval()
    saved = torch.jit.script(net) if how == "script" else torch.jit.trace(net, torch.randn(1, 3, 8, 8))
    torch.jit.save(saved, tmp_path / "net.pt")
    names = zipfile.ZipFile(tmp_path / "net.pt").namelist()
    assert any("/models/" in n for n in names), names  # the archive holds the module's package path
    r = cli("convert", "torch", tmp_path / "net.pt", "-o", tmp_path / "net.onnx", "--input", "x:float32:batchx3x8x8",
            "--json")
    assert r.code == 0, r.err
    assert result(r)["details"]["source_kind"] == "torchscript"


def test_pt2_dims_are_named_after_their_role(cli, tmp_path):
    batch, seq = torch.export.Dim("b"), torch.export.Dim("q")
    ep = torch.export.export(Tokens().eval(), (torch.randint(0, 50, (2, 5)), torch.ones(2, 5, dtype=torch.long)),
                             dynamic_shapes=({0: batch, 1: seq}, {0: batch, 1: seq}))
    torch.export.save(ep, tmp_path / "tok.pt2")
    r = cli("convert", "torch", tmp_path / "tok.pt2", "-o", tmp_path / "tok.onnx", "--json")
    assert r.code == 0, r.err
    assert _dims(tmp_path / "tok.onnx") == {"ids": ["batch", "sequence"], "mask": ["batch", "sequence"]}
    assert _dims(tmp_path / "tok.onnx", "output") == {"output": ["batch", "sequence", 4]}
    assert any("named after their role" in n for n in result(r)["notes"])
    h, w = torch.export.Dim("h"), torch.export.Dim("w")
    ep = torch.export.export(Image(), (torch.randn(2, 3, 8, 9),), dynamic_shapes=({0: batch, 2: h, 3: w},))
    torch.export.save(ep, tmp_path / "img.pt2")
    r = cli("convert", "torch", tmp_path / "img.pt2", "-o", tmp_path / "img.onnx")
    assert r.code == 0, r.err
    assert _dims(tmp_path / "img.onnx") == {"x": ["batch", 3, "dim2", "dim3"]}
    r = cli("benchmark", tmp_path / "img.onnx", "--dim", "batch=3", "--dim", "dim2=8", "--dim", "dim3=8",
            "--iterations", "2", "--warmup", "1")
    assert r.code == 0, r.err


def test_role_names():
    from onnxforge.steps.convert.torch import role_names

    assert role_names([("a", False, ["s1", 4]), ("b", False, ["s1", "s2"])]) == {"s1": "batch", "s2": "dim1"}
    # no dim shared by every input at axis 0: no batch; names that would repeat take their input's
    assert role_names([("a", False, ["s1", 4]), ("b", False, ["s1", "s2"]), ("c", False, ["s3", "s4"])]) == {
        "s1": "a_dim0", "s2": "b_dim1", "s3": "c_dim0", "s4": "c_dim1"}
    assert role_names([("ids", True, ["s1", "s2"]), ("other", True, ["s1", "s3"])]) == {
        "s1": "batch", "s2": "ids_sequence", "s3": "other_sequence"}
    assert role_names([("x", False, [2, "s9"]), ("k", False, [])]) == {"s9": "dim1"}


def test_a_release_naming_a_dim_the_program_lacks_fails_at_config_check(cli, tmp_path):
    batch, seq = torch.export.Dim("b"), torch.export.Dim("q")
    ep = torch.export.export(Tokens().eval(), (torch.randint(0, 50, (2, 5)), torch.ones(2, 5, dtype=torch.long)),
                             dynamic_shapes=({0: batch, 1: seq}, {0: batch, 1: seq}))
    torch.export.save(ep, tmp_path / "tok.pt2")
    (tmp_path / "release.toml").write_text('[model]\nsource = "tok.pt2"\nframework = "torch"\n\n[[steps]]\n'
                                           'run = "convert"\n\n[[steps]]\nrun = "simplify"\ndims = { N = 4 }\n')
    r = cli("release", tmp_path / "release.toml", "-o", tmp_path / "out", "--json")
    assert r.code == 2, r.err
    assert "steps[1].dims: the model has no dim N" in r.err and "--dim" not in r.err, r.err
    assert "batch, sequence" in r.err
    assert not result(r)["ledger"]  # refused before any step ran
