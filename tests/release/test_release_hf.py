"""A release whose [model] source is a Hugging Face save_pretrained folder or hf:ID (it was
refused with "give the path of a file")."""

import shutil

import pytest

from conftest import json_result as result

pytestmark = pytest.mark.slow  # builds and exports a Hugging Face model

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")


@pytest.fixture(scope="module")
def bert(tmp_path_factory):
    from transformers import BertConfig, BertForSequenceClassification

    d = tmp_path_factory.mktemp("hf_release") / "bert"
    torch.manual_seed(0)
    BertForSequenceClassification(BertConfig(vocab_size=100, hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                                             intermediate_size=64, max_position_embeddings=64, num_labels=3)
                                  ).eval().save_pretrained(d)
    return d


def test_a_release_of_a_hugging_face_folder(cli, bert, tmp_path):
    shutil.copytree(bert, tmp_path / "bert")
    (tmp_path / "release.toml").write_text('[model]\nsource = "bert"\nframework = "torch"\n\n'
                                           '[[steps]]\nrun = "convert"\n')
    r = cli("release", tmp_path / "release.toml", "-o", tmp_path / "out", "--json")
    assert r.code == 0, r.err + r.out
    row = result(r)["ledger"][0]
    assert [o["name"] for o in row["parity"]["outputs"]] == ["logits"]
    assert (tmp_path / "out" / "model.onnx").is_file()


def test_a_release_of_a_hub_id_from_the_local_cache(cli, bert, tmp_path, monkeypatch):
    cache = tmp_path / "cache"
    snap = cache / "models--tiny--bert" / "snapshots" / ("0" * 40)
    shutil.copytree(bert, snap)
    (cache / "models--tiny--bert" / "refs").mkdir(parents=True)
    (cache / "models--tiny--bert" / "refs" / "main").write_text("0" * 40)
    monkeypatch.setenv("HF_HUB_CACHE", str(cache))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    (tmp_path / "release.toml").write_text('[model]\nsource = "hf:tiny/bert"\nframework = "torch"\n'
                                           'task = "text-classification"\n\n[[steps]]\nrun = "convert"\n')
    r = cli("release", tmp_path / "release.toml", "-o", tmp_path / "out", "--json")
    assert r.code == 0, r.err + r.out


def test_a_hugging_face_source_needs_framework_torch(cli, bert, tmp_path):
    shutil.copytree(bert, tmp_path / "bert")
    (tmp_path / "release.toml").write_text('[model]\nsource = "bert"\nframework = "sklearn"\n\n'
                                           '[[steps]]\nrun = "convert"\n')
    r = cli("release", tmp_path / "release.toml", "-o", tmp_path / "out")
    assert r.code == 2 and "model.framework" in r.err, r.err
