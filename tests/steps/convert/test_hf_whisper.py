"""A WhisperForAudioClassification folder (tiny, built from a WhisperConfig here, nothing
downloaded) converts and validates: its input is what the feature extractor makes,
input_features [batch, num_mel_bins, 2 * max_source_positions], its output the class's
logits. A folder whose inputs the config does not tell (WhisperModel: the decoder's ids
too) converts with --input specs, which were never reached before (exit 3)."""

import json

import numpy as np
import pytest

from conftest import json_result as result

pytestmark = pytest.mark.slow  # builds and exports Hugging Face models

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")


@pytest.fixture(scope="module")
def whisper(tmp_path_factory):
    T = transformers
    d = tmp_path_factory.mktemp("whisper") / "audio-cls"
    cfg = T.WhisperConfig(vocab_size=100, d_model=16, encoder_layers=1, decoder_layers=1, encoder_attention_heads=2,
                          decoder_attention_heads=2, encoder_ffn_dim=32, decoder_ffn_dim=32, num_mel_bins=8,
                          max_source_positions=16, max_target_positions=16, num_labels=3, pad_token_id=0,
                          bos_token_id=1, eos_token_id=2, decoder_start_token_id=1, suppress_tokens=[],
                          begin_suppress_tokens=[])
    torch.manual_seed(0)
    T.WhisperForAudioClassification(cfg).eval().save_pretrained(d)
    T.WhisperFeatureExtractor(feature_size=8).save_pretrained(d)
    return d


def test_whisper_audio_classification_converts_and_validates(cli, whisper, tmp_path):
    out = tmp_path / "w.onnx"
    r = cli("convert", "torch", whisper, "-o", out, "--json")
    assert r.code == 0, r.err + r.out
    res = result(r)
    assert res["details"]["inputs"] == ["input_features"] and res["details"]["outputs"] == ["logits"]
    assert any("WhisperForAudioClassification, the class config.json declares" in n for n in res["notes"])
    import onnx

    [inp] = onnx.load(str(out)).graph.input
    dims = [d.dim_value or d.dim_param for d in inp.type.tensor_type.shape.dim]
    assert dims == ["batch", 8, 32]  # num_mel_bins, 2 * max_source_positions
    np.savez(tmp_path / "x.npz", input_features=np.random.default_rng(1).normal(size=(4, 8, 32)).astype(np.float32))
    r = cli("validate", whisper, out, "--inputs", tmp_path / "x.npz", "--json")
    assert r.code == 0, r.err
    assert [o["name"] for o in result(r)["outputs"]] == ["logits"]


def test_input_specs_apply_to_a_folder(cli, whisper, tmp_path):
    """WhisperModel needs decoder ids the config cannot size: without --input it is exit 3
    naming --input; with --input specs it converts on them."""
    import shutil

    folder = tmp_path / "base"
    shutil.copytree(whisper, folder)
    cfg = json.loads((folder / "config.json").read_text())
    (folder / "config.json").write_text(json.dumps({**cfg, "architectures": ["WhisperModel"]}))
    r = cli("convert", "torch", folder, "-o", tmp_path / "b.onnx")
    assert r.code == 3 and "--input" in r.err
    r = cli("convert", "torch", folder, "-o", tmp_path / "b.onnx", "--input", "input_features:float32:batchx8x32",
            "--input", "decoder_input_ids:int64:batchx4", "--val-range", "decoder_input_ids:[0,99]", "--json")
    assert r.code == 0, r.err + r.out
    res = result(r)
    assert res["details"]["inputs"] == ["input_features", "decoder_input_ids"]
    assert any("inputs from --input" in n for n in res["notes"])
