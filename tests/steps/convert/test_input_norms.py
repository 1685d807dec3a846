"""#24: a Hugging Face image model's processor constants (preprocessor_config.json) are
recorded in the ONNX at convert time, and every later check generates pixel_values as
the processor makes them: (U[0, 1) - image_mean) / image_std per channel."""

import json

import numpy as np
import onnx
import pytest

from conftest import json_result as result

pytestmark = pytest.mark.slow  # builds and exports a Hugging Face model

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")

MEAN, STD = [0.5, 0.4, 0.3], [0.2, 0.25, 0.3]


@pytest.fixture(scope="module")
def vit(tmp_path_factory):
    """A tiny ViT folder (random weights, nothing downloaded) with its image processor's config."""
    from transformers import ViTConfig, ViTForImageClassification

    d = tmp_path_factory.mktemp("hf") / "vit"
    torch.manual_seed(0)
    ViTForImageClassification(ViTConfig(image_size=32, patch_size=8, hidden_size=32, num_hidden_layers=1,
                                        num_attention_heads=2, intermediate_size=64, num_labels=5)
                              ).eval().save_pretrained(d)
    (d / "preprocessor_config.json").write_text(json.dumps({
        "image_processor_type": "ViTImageProcessor", "do_resize": True, "size": {"height": 32, "width": 32},
        "do_rescale": True, "rescale_factor": 1 / 255, "do_normalize": True, "image_mean": MEAN, "image_std": STD}))
    return d


def test_hf_image_processor_constants_are_recorded_and_used(cli, vit, tmp_path):
    m = tmp_path / "vit.onnx"
    r = cli("convert", "torch", vit, "-o", m, "--json")
    assert r.code == 0, r.err
    assert any("preprocessor_config.json" in n for n in result(r)["notes"])
    assert {c["data"]["source"] for c in result(r)["checks"]} == {"generated"}  # convert's checks say theirs too
    props = {p.key: p.value for p in onnx.load(m, load_external_data=False).metadata_props}
    assert json.loads(props["onnxforge.input_norms"]) == {"pixel_values": {"mean": MEAN, "std": STD, "label": ""}}
    # validate generates pixel_values from the recorded constants, and says so
    r = cli("validate", m, m, "--dim", "batch=32", "--save-inputs", tmp_path / "in.npz", "--json")
    assert r.code == 0, r.err
    px = np.load(tmp_path / "in.npz")["pixel_values"]
    np.testing.assert_allclose(px.mean(axis=(0, 2, 3)), (0.5 - np.array(MEAN)) / STD, atol=0.02)
    np.testing.assert_allclose(px.std(axis=(0, 2, 3)), np.sqrt(1 / 12) / np.array(STD), rtol=0.02)
    assert "images normalised with mean 0.5,0.4,0.3, std 0.2,0.25,0.3" in result(r)["data"]["how"]
    # and so does quantize's check (with --allow-generated-data: no real images here)
    r = cli("quantize", "dynamic", m, "-o", tmp_path / "q.onnx", "--allow-generated-data", "--bench-seconds", "0.2", "--speed-budget", "0",
            "--min-cosine", "0", "--json")
    assert r.code == 0, r.err
    assert "images normalised with mean 0.5,0.4,0.3" in result(r)["checks"][0]["data"]["how"]
