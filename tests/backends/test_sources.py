"""Torch sources as people hand them over: .pt2 files saved with keyword inputs, .pt2
files of Hugging Face models, save_pretrained folders (BERT, ViT) and hub ids from the
local Hugging Face cache, with nothing downloaded."""

import json
import os
import shutil
import subprocess
import sys

import numpy as np
import pytest

from conftest import ROOT
from conftest import json_result as result

pytestmark = pytest.mark.slow  # builds and exports Hugging Face models

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")


class KwModel(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.lin = torch.nn.Linear(4, 3)

    def forward(self, x, scale):
        return {"y": self.lin(x) * scale}


@pytest.fixture(scope="module")
def hf_dirs(tmp_path_factory):
    """A tiny BERT and a tiny ViT saved with save_pretrained (random weights, nothing downloaded)."""
    from transformers import BertConfig, BertModel, ViTConfig, ViTForImageClassification

    d = tmp_path_factory.mktemp("hf")
    torch.manual_seed(0)
    BertModel(BertConfig(vocab_size=100, hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                         intermediate_size=64, max_position_embeddings=64)).eval().save_pretrained(d / "bert")
    ViTForImageClassification(ViTConfig(image_size=32, patch_size=8, hidden_size=32, num_hidden_layers=2,
                                        num_attention_heads=2, intermediate_size=64, num_labels=5)
                              ).eval().save_pretrained(d / "vit")
    return d


def test_pt2_saved_with_keyword_inputs(cli, tmp_path):
    torch.manual_seed(0)
    ep = torch.export.export(KwModel(), (), {"x": torch.randn(2, 4), "scale": torch.tensor(2.0)})
    torch.export.save(ep, tmp_path / "kw.pt2")
    r = cli("convert", "torch", tmp_path / "kw.pt2", "-o", tmp_path / "a.onnx", "--json")
    assert r.code == 0, r.err
    assert result(r)["details"]["inputs"] == ["x", "scale"]  # the ONNX inputs are the keyword names
    np.savez(tmp_path / "in.npz", scale=np.float32(3.0), x=np.ones((2, 4), np.float32))
    r = cli("convert", "torch", tmp_path / "kw.pt2", "-o", tmp_path / "b.onnx", "--inputs", tmp_path / "in.npz")
    assert r.code == 0, r.err  # fed by name, whatever the order in the file
    r = cli("convert", "torch", tmp_path / "kw.pt2", "-o", tmp_path / "c.onnx", "--input", "x:float32:2x4",
            "--input", "scale:float32:scalar")
    assert r.code == 0, r.err
    r = cli("convert", "torch", tmp_path / "kw.pt2", "-o", tmp_path / "d.onnx", "--input", "y:float32:2x4")
    assert r.code == 3 and "keyword inputs x, scale" in r.err


def test_pt2_saved_with_positional_and_keyword_inputs(cli, tmp_path):
    """forward(x, *, mask) exported with (x,) and {mask}: --input/--inputs were refused
    ('the program takes keyword inputs mask; got x, mask') with a hint no one could follow."""
    from tests.models import keyword_mask

    ep = torch.export.export(keyword_mask().eval(), (torch.randn(2, 8),), {"mask": torch.ones(2, 4)})
    torch.export.save(ep, tmp_path / "mix.pt2")
    np.savez(tmp_path / "in.npz", mask=np.ones((2, 4), np.float32), x=np.ones((2, 8), np.float32))
    for i, how in enumerate((["--inputs", tmp_path / "in.npz"], ["--input", "x:float32:2x8", "--input", "mask:float32:2x4"])):
        r = cli("convert", "torch", tmp_path / "mix.pt2", "-o", tmp_path / f"{i}.onnx", *how, "--json")
        assert r.code == 0, r.err
        assert result(r)["details"]["inputs"] == ["x", "mask"]
    r = cli("convert", "torch", tmp_path / "mix.pt2", "-o", tmp_path / "m.onnx", "--input", "mask:float32:2x4")
    assert r.code == 3 and "1 positional input(s) and keyword inputs mask" in r.err


@pytest.mark.slow  # a fresh process, so that transformers is not imported yet
@pytest.mark.long
def test_pt2_of_a_hugging_face_model(cli, hf_dirs, tmp_path):
    """Its output class must be registered with torch's pytree before it loads: the
    package that defines it is imported (it is installed) and the load retried."""
    from transformers import BertModel

    m = BertModel.from_pretrained(hf_dirs / "bert").eval()
    ids = torch.randint(0, 100, (2, 8))
    ep = torch.export.export(m, (), {"input_ids": ids, "attention_mask": torch.ones(2, 8, dtype=torch.long)})
    torch.export.save(ep, tmp_path / "bert.pt2")
    code = ("import sys; from onnxforge.cli.app import main; "
            f"sys.exit(main(['convert', 'torch', {str(tmp_path / 'bert.pt2')!r}, '-o', {str(tmp_path / 'b.onnx')!r}, "
            "'--json']))")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=tmp_path,
                       env={**os.environ, "PYTHONPATH": str(ROOT)})  # a fresh process: transformers not imported yet
    assert r.returncode == 0, r.stderr
    # torch's own log lines stay out of stderr: only onnxforge's progress lines are there
    assert [ln.split(": ")[-1].split(" in ")[0] for ln in r.stderr.splitlines()] == ["start", "done"], r.stderr
    res = json.loads(r.stdout)["result"]
    assert any("registers" in n or "register its output types" in n for n in res["notes"])
    assert res["details"]["outputs"] == ["last_hidden_state", "pooler_output"]


@pytest.mark.parametrize("name,inputs,outputs,dynamic", [
    ("bert", ["input_ids", "attention_mask", "token_type_ids"], ["last_hidden_state", "pooler_output"],
     {"input_ids": {"0": "batch", "1": "sequence"}}),
    ("vit", ["pixel_values"], ["logits"], {"pixel_values": {"0": "batch"}}),
])
def test_save_pretrained_folders(cli, hf_dirs, tmp_path, name, inputs, outputs, dynamic):
    r = cli("convert", "torch", hf_dirs / name, "-o", tmp_path / f"{name}.onnx", "--json")
    assert r.code == 0, r.err
    res = result(r)
    assert res["details"]["inputs"] == inputs and res["details"]["outputs"] == outputs
    for k, v in dynamic.items():
        assert res["details"]["dynamic"][k] == v
    assert len(res["checks"]) == 1 + len({label for axes in res["details"]["dynamic"].values() for label in axes.values()})
    # later checks stay within valid values: validate generates masks of ones, ids below the vocabulary
    r = cli("validate", hf_dirs / name, tmp_path / f"{name}.onnx", "--samples", "2", "--json")
    assert r.code == 0, r.err


def test_task_choice_and_refusals(cli, hf_dirs, tmp_path):
    r = cli("convert", "torch", hf_dirs / "bert", "-o", tmp_path / "c.onnx", "--task", "text-classification", "--json")
    assert r.code == 0, r.err
    assert result(r)["details"]["outputs"] == ["logits"]
    r = cli("convert", "torch", hf_dirs / "bert", "-o", tmp_path / "d.onnx", "--task", "summarize-everything")
    assert r.code == 2 and "feature-extraction" in r.err
    remote = tmp_path / "remote"
    shutil.copytree(hf_dirs / "bert", remote)
    cfg = json.loads((remote / "config.json").read_text())
    cfg["auto_map"] = {"AutoModel": "modeling_evil.EvilModel"}
    (remote / "config.json").write_text(json.dumps(cfg))
    r = cli("convert", "torch", remote, "-o", tmp_path / "e.onnx")
    assert r.code == 3 and "trust_remote_code" in r.err


def test_a_folder_with_its_own_config_class_runs_no_code_even_on_yes(hf_dirs, tmp_path):
    """model_type unknown to transformers + auto_map: AutoConfig itself asked "Do you wish
    to run the custom code? [y/N]" on the terminal and imported the folder's module on "y"."""
    import subprocess
    import sys

    remote = tmp_path / "remote code"
    shutil.copytree(hf_dirs / "bert", remote)
    cfg = json.loads((remote / "config.json").read_text())
    cfg.update(model_type="xbert", auto_map={"AutoConfig": "modeling_x.XConfig", "AutoModel": "modeling_x.XModel"})
    (remote / "config.json").write_text(json.dumps(cfg))
    marker = tmp_path / "PWNED"
    (remote / "modeling_x.py").write_text(f"open({str(marker)!r}, 'w').write('ran')\n")
    r = subprocess.run([sys.executable, "-m", "onnxforge", "convert", "torch", str(remote), "-o", str(tmp_path / "r.onnx")],
                       input="y\n", capture_output=True, text=True, timeout=300)
    assert r.returncode == 3 and "trust_remote_code" in r.stderr, r.stderr
    assert not marker.exists() and "[y/N]" not in r.stdout + r.stderr


def test_hub_id_from_the_local_cache_offline(cli, hf_dirs, tmp_path, monkeypatch):
    """hf:ORG/NAME resolves in the Hugging Face cache with HF_HUB_OFFLINE=1; a model
    that is not there is exit 3 with a hint, and nothing is downloaded."""
    cache = tmp_path / "cache"
    snap = cache / "models--tiny--bert" / "snapshots" / ("0" * 40)
    shutil.copytree(hf_dirs / "bert", snap)
    (cache / "models--tiny--bert" / "refs").mkdir(parents=True)
    (cache / "models--tiny--bert" / "refs" / "main").write_text("0" * 40)
    monkeypatch.setenv("HF_HUB_CACHE", str(cache))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    r = cli("convert", "torch", "hf:tiny/bert", "-o", tmp_path / "h.onnx")
    assert r.code == 0, r.err
    r = cli("convert", "torch", "hf:tiny/absent", "-o", tmp_path / "x.onnx")
    assert r.code == 3 and "not in the local Hugging Face cache" in r.err and "--allow-download" in r.err
    assert "`hf download tiny/absent`" in r.err  # the command huggingface_hub 1.x+ ships (huggingface-cli is gone)


class _Payload:
    """Pickled, it creates a file when unpickled."""

    def __init__(self, marker: str):
        self.marker = marker

    def __reduce__(self):
        return (open, (self.marker, "w"))


def test_a_pickled_weights_file_in_a_folder_runs_nothing_and_says_why(cli, hf_dirs, tmp_path):
    folder = tmp_path / "evil"
    shutil.copytree(hf_dirs / "bert", folder)
    (folder / "model.safetensors").unlink()
    marker = tmp_path / "PWNED"
    torch.save({"x": _Payload(str(marker))}, folder / "pytorch_model.bin")
    r = cli("convert", "torch", folder, "-o", tmp_path / "e.onnx")
    assert r.code == 3 and "safetensors" in r.err and "Traceback" not in r.err, r.err
    assert not marker.exists()
