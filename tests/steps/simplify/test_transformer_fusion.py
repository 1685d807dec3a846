"""simplify --transformer on a dynamo-exported GPT-2 (issue #12): each fusion engine is
tried on its own, the first that passes parity and fuses attention wins, and an engine
that fails is named in the record instead of failing the step."""

import onnx
import pytest

from conftest import json_result as load_json


@pytest.mark.slow  # two fusion engines on the run's GPT-2 export (gpt2_onnx)
def test_gpt2_fusions_pass_and_name_the_engine(cli, gpt2_onnx, tmp_path):
    out = tmp_path / "f.onnx"
    r = cli("simplify", gpt2_onnx, "-o", out, "--transformer", "gpt2", "--num-heads", "2", "--hidden-size", "32",
            "--json")  # the token range travels in the model's metadata (convert wrote it)
    assert r.code == 0, r.err + r.out
    res = load_json(r)
    step = next(e for e in res["engines"] if e["step"] == "transformer:gpt2")
    assert step["status"] == "ok"
    assert step["engine"] in ("onnxruntime.transformers", "onnxscript.ort_fusions")
    for failed in step["info"].get("engines_failed", []):  # a failing engine is named, not fatal
        assert failed.split()[0] in ("onnxruntime.transformers", "onnxscript.ort_fusions")
    ops = {n.op_type for n in onnx.load(str(out)).graph.node}
    # onnxruntime 1.2x's optimizer raises IndexError on this export; onnxscript's fusions
    # fuse both attention blocks once its Gemms are MatMuls (they left an invalid model before)
    assert ops & {"Attention", "MultiHeadAttention"}, f"attention not fused: {sorted(ops)}"
    # fused, then written back (unfuse.py): GPT-2's pre-LN residual is SkipLayerNorm's 4th output
    assert step["info"]["unfused"]["SkipLayerNormalization"] >= 4
    assert "SkipLayerNormalization" not in ops and {"Sum", "LayerNormalization"} <= ops
    assert all(c["passed"] for c in res["checks"])

