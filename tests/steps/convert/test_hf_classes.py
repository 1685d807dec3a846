"""Hugging Face folders load the class their config.json declares, and export the inputs
their tokenizer makes. Tiny models built from configs here, nothing downloaded: a
CLIPTextModelWithProjection (exported as CLIPTextModel, its text_embeds vanished and
every check passed on the same wrong class), a T5EncoderModel (loaded as the whole
encoder-decoder), a RoBERTa with its own tokenizer (exported with a token_type_ids
input that no RoBERTa tokenizer makes)."""

import json

import numpy as np
import pytest

from conftest import json_result as result

pytestmark = pytest.mark.slow  # builds and exports Hugging Face models

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")


@pytest.fixture(scope="module")
def folders(tmp_path_factory):
    from tokenizers import Tokenizer, models, pre_tokenizers

    T = transformers
    d = tmp_path_factory.mktemp("hf_classes")
    torch.manual_seed(0)
    T.CLIPTextModelWithProjection(T.CLIPTextConfig(
        vocab_size=100, hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=2,
        max_position_embeddings=32, projection_dim=16, bos_token_id=0, eos_token_id=2, pad_token_id=1)
    ).eval().save_pretrained(d / "clip")
    T.T5EncoderModel(T.T5Config(vocab_size=100, d_model=32, d_kv=8, d_ff=64, num_layers=2, num_heads=2)
                     ).eval().save_pretrained(d / "t5enc")
    words = ["<s>", "<pad>", "</s>", "<unk>", *"the cat sat on a mat dog ran".split()]
    tok = Tokenizer(models.WordLevel({w: i for i, w in enumerate(words)}, unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    T.RobertaModel(T.RobertaConfig(vocab_size=len(words), hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                                   intermediate_size=64, max_position_embeddings=40, type_vocab_size=1,
                                   pad_token_id=1)).eval().save_pretrained(d / "roberta")
    T.PreTrainedTokenizerFast(tokenizer_object=tok, pad_token="<pad>", unk_token="<unk>", bos_token="<s>",
                              eos_token="</s>", model_input_names=["input_ids", "attention_mask"]
                              ).save_pretrained(d / "roberta")
    return d


def test_a_head_bearing_class_keeps_every_output_it_returns(cli, folders, tmp_path):
    r = cli("convert", "torch", folders / "clip", "-o", tmp_path / "clip.onnx", "--json")
    assert r.code == 0, r.err
    res = result(r)
    assert res["details"]["outputs"] == ["text_embeds", "last_hidden_state"]
    assert any("CLIPTextModelWithProjection, the class config.json declares" in n for n in res["notes"])
    for check in res["checks"]:  # every output of the folder's class compared
        assert [o["name"] for o in check["outputs"]] == ["text_embeds", "last_hidden_state"]


def test_the_reference_is_the_declared_class_whatever_the_candidate_was_made_from(cli, folders, tmp_path):
    """An explicit --task picks the task's Auto class (with a note saying it won over the
    folder's class); validating that model against the folder loads the folder's own
    class, and the output the candidate lacks fails the check."""
    r = cli("convert", "torch", folders / "clip", "-o", tmp_path / "auto.onnx", "--task", "feature-extraction",
            "--json")
    assert r.code == 0, r.err
    res = result(r)
    assert "text_embeds" not in res["details"]["outputs"]
    assert any("--task feature-extraction: loaded with AutoModel, not the folder's CLIPTextModelWithProjection" in n
               for n in res["notes"])
    r = cli("validate", folders / "clip", tmp_path / "auto.onnx")
    assert r.code == 1 and "'text_embeds' missing from the candidate" in r.out, r.out + r.err


def test_an_encoder_only_class_exports_the_encoder(cli, folders, tmp_path):
    r = cli("convert", "torch", folders / "t5enc", "-o", tmp_path / "t5.onnx", "--json")
    assert r.code == 0, r.err
    res = result(r)
    assert res["details"]["inputs"] == ["input_ids", "attention_mask"]
    assert res["details"]["outputs"] == ["last_hidden_state"]
    assert any("loaded as T5EncoderModel" in n for n in res["notes"])


def test_an_architecture_transformers_lacks_is_refused_not_guessed(cli, folders, tmp_path):
    folder = tmp_path / "odd"
    folder.mkdir()
    for f in (folders / "t5enc").iterdir():
        (folder / f.name).write_bytes(f.read_bytes())
    cfg = json.loads((folder / "config.json").read_text())
    cfg["architectures"] = ["T5EncoderModelFromTheFuture"]
    (folder / "config.json").write_text(json.dumps(cfg))
    r = cli("convert", "torch", folder, "-o", tmp_path / "odd.onnx")
    assert r.code == 3 and "T5EncoderModelFromTheFuture" in r.err and "--task" in r.err, r.err
    assert not (tmp_path / "odd.onnx").exists()


def test_inputs_are_what_the_tokenizer_makes(cli, folders, tmp_path):
    """RoBERTa's tokenizer makes no token_type_ids: the export took one anyway, and its
    real tokenizer output was refused (exit 3)."""
    r = cli("convert", "torch", folders / "roberta", "-o", tmp_path / "r.onnx", "--json")
    assert r.code == 0, r.err
    tok = transformers.AutoTokenizer.from_pretrained(folders / "roberta", local_files_only=True)
    batch = tok(["the cat sat on the mat", "a dog ran"], padding=True, return_tensors="np")
    assert result(r)["details"]["inputs"] == list(batch)
    import onnx

    meta = {p.key: p.value for p in onnx.load(str(tmp_path / "r.onnx"), load_external_data=False).metadata_props}
    assert set(json.loads(meta["onnxforge.val_ranges"])) == set(batch)  # ranges only for the inputs it has
    np.savez(tmp_path / "tok.npz", **{k: np.asarray(v, np.int64) for k, v in batch.items()})
    r = cli("validate", folders / "roberta", tmp_path / "r.onnx", "--inputs", tmp_path / "tok.npz")
    assert r.code == 0, r.out + r.err


def test_without_a_tokenizer_the_model_types_tokenizer_class_decides(cli, folders, tmp_path):
    folder = tmp_path / "bare"
    folder.mkdir()
    for name in ("config.json", "model.safetensors"):
        (folder / name).write_bytes((folders / "roberta" / name).read_bytes())
    r = cli("convert", "torch", folder, "-o", tmp_path / "b.onnx", "--json")
    assert r.code == 0, r.err
    assert result(r)["details"]["inputs"] == ["input_ids", "attention_mask"]


def test_a_tokenizer_that_names_its_own_code_is_not_loaded(cli, folders, tmp_path):
    """tokenizer_config.json's auto_map names a module of the folder: it is never imported
    (the inputs come from the model type's tokenizer class instead)."""
    folder = tmp_path / "evil"
    folder.mkdir()
    for f in (folders / "roberta").iterdir():
        (folder / f.name).write_bytes(f.read_bytes())
    cfg = json.loads((folder / "tokenizer_config.json").read_text())
    cfg["auto_map"] = {"AutoTokenizer": ["tok_x.XTokenizer", None]}
    (folder / "tokenizer_config.json").write_text(json.dumps(cfg))
    marker = tmp_path / "PWNED"
    (folder / "tok_x.py").write_text(f"open({str(marker)!r}, 'w').write('ran')\n")
    r = cli("convert", "torch", folder, "-o", tmp_path / "e.onnx", "--json")
    assert r.code == 0, r.err
    assert result(r)["details"]["inputs"] == ["input_ids", "attention_mask"]
    assert not marker.exists()


@pytest.mark.parametrize("arch", ["PreTrainedModel", "AutoModel", "__class__", "os.system"])
def test_only_a_model_class_of_transformers_is_loaded(cli, folders, tmp_path, arch):
    folder = tmp_path / "odd"
    folder.mkdir()
    for f in (folders / "t5enc").iterdir():
        (folder / f.name).write_bytes(f.read_bytes())
    cfg = json.loads((folder / "config.json").read_text())
    cfg["architectures"] = [arch]
    (folder / "config.json").write_text(json.dumps(cfg))
    r = cli("convert", "torch", folder, "-o", tmp_path / "odd.onnx")
    assert r.code == 3 and "not a model class of transformers" in r.err, r.err
