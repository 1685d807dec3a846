"""validate --layerwise and --save-intermediates (checks/localize.layerwise): every
tensor two ONNX models share, in the reference's order, with the error each node adds;
int8 models matched through onnxruntime's quantizer names."""

from __future__ import annotations

import json
import math
import shutil

import numpy as np
import onnx
import pytest

from conftest import json_result


def _check_rows(rows: list[dict], model_path) -> None:
    """Rows in the reference's node order, each node's inputs made before it; growth finite."""
    m = onnx.load(str(model_path))
    made = {i.name for i in m.graph.input} | {t.name for t in m.graph.initializer}
    position = {}
    for k, n in enumerate(m.graph.node):
        assert all(not i or i in made for i in n.input), f"{n.name} reads a tensor made after it"
        made.update(n.output)
        for o in n.output:
            position[o] = k
    assert [r["index"] for r in rows] == sorted(r["index"] for r in rows)
    for r in rows:
        assert position[r["tensor"]] == r["index"]
        assert math.isfinite(r["growth"]) and math.isfinite(r["rel_err"]) and -1 <= r["cosine"] <= 1 + 1e-9


def test_identical_models_give_zeros(cli, fx):
    r = cli("validate", fx / "chain.onnx", fx / "chain.onnx", "--layerwise", "--json")
    assert r.code == 0, r.err
    lw = json_result(r)["layerwise"]
    assert [row["tensor"] for row in lw["rows"]] == [o for n in onnx.load(str(fx / "chain.onnx")).graph.node
                                                     for o in n.output]
    assert all(row["max_abs"] == 0 and row["rel_err"] == 0 and row["growth"] == 0 for row in lw["rows"])
    assert all(row["cosine"] == pytest.approx(1, abs=1e-12) for row in lw["rows"])
    assert lw["top"] == []  # no node adds error


def test_perturbed_node_adds_the_most_error(cli, fx, tmp_path):
    """chain_bad5 has mm_5's weight nudged: its output h5 is where error appears, and
    the table (stdout), the JSON and report.html say so."""
    html = tmp_path / "v.html"
    r = cli("validate", fx / "chain.onnx", fx / "chain_bad5.onnx", "--layerwise", "--html", html,
            "--report", tmp_path / "r.json")
    assert r.code == 1
    assert "layer-wise" in r.out and "most error added" in r.out and "h5" in r.out
    lw = json.loads((tmp_path / "r.json").read_text())["result"]["layerwise"]
    _check_rows(lw["rows"], fx / "chain.onnx")
    assert lw["top"][0] == "h5"
    before = [row for row in lw["rows"] if row["index"] < 10]
    assert before and all(row["max_abs"] == 0 for row in before)
    last = lw["rows"][-1]
    out = json.loads((tmp_path / "r.json").read_text())["result"]["outputs"][0]
    assert last["tensor"] == "y" and last["max_abs"] == pytest.approx(out["max_abs"], rel=1e-4)
    page = html.read_text()
    assert 'aria-label="error along depth"' in page and "<svg" in page and "<script" not in page


def test_save_intermediates_writes_both_sides(cli, fx, tmp_path):
    npz = tmp_path / "layers.npz"
    r = cli("validate", fx / "chain.onnx", fx / "chain_bad5.onnx", "--save-intermediates", "h2,t3",
            "--save-intermediates", "y", "--save-intermediates-to", npz, "--dim", "batch=3", "--json")
    assert r.code == 1, r.err
    assert json_result(r)["layerwise"]["saved"] == str(npz)
    with np.load(npz) as d:
        assert sorted(d.files) == sorted(f"{side}/{n}" for side in ("reference", "candidate") for n in ("h2", "t3", "y"))
        assert all(d[k].shape == (3, 16) for k in d.files)
        np.testing.assert_array_equal(d["reference/h2"], d["candidate/h2"])  # before the nudged node
    again = cli("validate", fx / "chain.onnx", fx / "chain_bad5.onnx", "--save-intermediates", "all",
                "--save-intermediates-to", npz)
    assert again.code == 3 and "--force" in again.err  # never written over without --force
    again = cli("validate", fx / "chain.onnx", fx / "chain_bad5.onnx", "--save-intermediates", "all",
                "--save-intermediates-to", npz, "--force")
    assert again.code == 1
    with np.load(npz) as d:
        assert len(d.files) == 2 * 16


def test_save_intermediates_unknown_name_lists_the_names(cli, fx, tmp_path):
    npz = tmp_path / "layers.npz"
    r = cli("validate", fx / "chain.onnx", fx / "chain_bad5.onnx", "--save-intermediates", "h2,nope",
            "--save-intermediates-to", npz, "--save-inputs", tmp_path / "in.npz")
    assert r.code == 2
    assert "nope" in r.err and "hint:" in r.err and "h0, t0, h1" in r.err
    assert not npz.exists() and not (tmp_path / "in.npz").exists()  # nothing written


def test_layerwise_needs_two_onnx_models(cli, fx, tmp_path):
    outs = tmp_path / "golden.npz"
    assert cli("validate", fx / "chain.onnx", fx / "chain.onnx", "--save-outputs", outs,
               "--save-inputs", tmp_path / "x.npz").code == 0
    r = cli("validate", outs, fx / "chain.onnx", "--inputs", tmp_path / "x.npz", "--layerwise")
    assert r.code == 2 and "two ONNX models" in r.err


# ----------------------------------------------------------------------------- int8 models (slow)


def _digit_images(n: int, start: int = 0) -> np.ndarray:
    """sklearn's 8x8 digits upsampled to 3x32x32 and normalised: real images, no download."""
    from sklearn.datasets import load_digits

    x = np.kron(load_digits().images[start:start + n] / 16.0, np.ones((4, 4)))
    return np.repeat(((x - 0.3) / 0.4)[:, None], 3, axis=1).astype(np.float32)


pytestmark = pytest.mark.xdist_group("layerwise")  # resnet_int8: exported and quantized once, on one worker


@pytest.fixture(scope="module")
def resnet_int8(tmp_path_factory):
    """The ResNet-18-like CNN exported, and quantized static int8 (QDQ and QOperator)
    on 64 digit images; a 65th image to validate on."""
    import onnxforge

    d = tmp_path_factory.mktemp("resnet")
    assert onnxforge.convert_torch("models:resnet_like", d / "resnet.onnx", inputs=["x:float32:batchx3x32x32"]).passed
    np.savez(d / "calib.npz", x=_digit_images(64))
    np.savez(d / "val.npz", x=_digit_images(1, start=100))
    for fmt in ("qdq", "qoperator"):
        res = onnxforge.quantize_static(d / "resnet.onnx", d / f"resnet_{fmt}.onnx", calibration=str(d / "calib.npz"),
                                        quant_format=fmt, speed_budget=0, min_cosine=0.9)
        assert res.written, res
    return d


@pytest.mark.slow
@pytest.mark.parametrize("fmt", ["qdq", "qoperator"])
def test_int8_resnet_table(cli, resnet_int8, fmt):
    d = resnet_int8
    r = cli("validate", d / "resnet.onnx", d / f"resnet_{fmt}.onnx", "--inputs", d / "val.npz", "--layerwise",
            "--json")
    assert r.code in (0, 1), r.err
    res = json_result(r)
    lw = res["layerwise"]
    _check_rows(lw["rows"], d / "resnet.onnx")
    convs = sum(n.op_type == "Conv" for n in onnx.load(str(d / "resnet.onnx")).graph.node)
    # every conv's result is compared: as the conv's tensor, or as the ReLU the quantizer folded into it
    assert len(lw["rows"]) >= convs
    renamed = [row for row in lw["rows"] if row["candidate_tensor"]]
    assert renamed, "nothing matched through the quantizer's names"
    assert len(lw["top"]) == 5 and all(row["growth"] > 0 for row in lw["rows"] if row["tensor"] in lw["top"])
    assert all(0.9 < row["cosine"] for row in lw["rows"])
    final = lw["rows"][-1]
    out = res["outputs"][0]
    assert final["tensor"] == out["name"]
    # the same error validate reports (the run with every tensor an output is not fused: float rounding apart)
    assert final["max_abs"] == pytest.approx(out["max_abs"], rel=1e-3)
    assert final["cosine"] == pytest.approx(out["cosine"], abs=1e-6)


@pytest.mark.slow
def test_int8_bert_dynamic_table(cli, bert_onnx, tmp_path):
    import onnxforge

    q = tmp_path / "bert_int8.onnx"
    # recipe plain: the table is under test, not the recipe search (12-15 s of timing candidates)
    assert onnxforge.quantize_dynamic(bert_onnx, q, allow_generated_data=True, speed_budget=0, recipe="plain").written
    html = tmp_path / "v.html"
    r = cli("validate", bert_onnx, q, "--layerwise", "--json", "--html", html,
            "--save-intermediates", "last_hidden_state", "--save-intermediates-to", tmp_path / "i.npz")
    assert r.code in (0, 1), r.err
    res = json_result(r)
    lw = res["layerwise"]
    _check_rows(lw["rows"], bert_onnx)
    assert {"MatMul", "Add", "LayerNormalization"} <= {row["op_type"] for row in lw["rows"]}
    assert len(lw["top"]) == 5
    assert any(row["op_type"] == "MatMul" and row["growth"] > 0 for row in lw["rows"])  # int8 matmuls add error
    by_name = {row["tensor"]: row for row in lw["rows"]}
    for out in res["outputs"]:
        assert by_name[out["name"]]["max_abs"] == pytest.approx(out["max_abs"], rel=1e-3)
    with np.load(tmp_path / "i.npz") as z:
        shape = tuple(by_name["last_hidden_state"]["shape"])
        assert z["reference/last_hidden_state"].shape == z["candidate/last_hidden_state"].shape == shape
    assert 'aria-label="error along depth"' in html.read_text()


@pytest.mark.slow
def test_release_layerwise_on_failure(cli, resnet_int8, tmp_path):
    """A quantize step failing its ledger check gets the layer-wise table against the
    model it was given, in report.json and report.html."""
    for f in ("resnet.onnx", "calib.npz"):
        shutil.copy(resnet_int8 / f, tmp_path / f)
    (tmp_path / "release.toml").write_text(
        '[model]\nsource = "resnet.onnx"\nframework = "onnx"\n\n[data]\ncalibration = "calib.npz"\n\n'
        '[[steps]]\nrun = "quantize.static"\nmin_speedup = 0\n\n'
        '[gates]\nparity = { atol = 1e-5, rtol = 1e-4, layerwise_on_failure = true }\n')
    r = cli("release", tmp_path / "release.toml", "-o", tmp_path / "out", "--json")
    assert r.code == 1, r.err
    row = json_result(r)["ledger"][0]
    assert not row["passed"] and len(row["parity"]["layerwise"]["top"]) == 5
    assert any("layer-wise" in n for n in row["parity"]["notes"])
    assert 'aria-label="error along depth"' in (tmp_path / "out" / "report.html").read_text()
