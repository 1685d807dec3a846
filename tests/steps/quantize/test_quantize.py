
import json

import numpy as np
import onnx
import pytest

from conftest import ROOT
from conftest import json_result as result

# slow: quantizes and times models; the error paths that run no such work stay in the fast lane

M = f"{ROOT / 'tests' / 'models.py'}"




def accuracy(path, X, y) -> float:
    import onnxruntime as ort

    s = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    logits = s.run(None, {s.get_inputs()[0].name: X})[0]
    return float((logits.argmax(1) == y).mean())


@pytest.fixture(scope="module")
def digits(tmp_path_factory, torch_exports):
    """The trained digits CNN that ships with the example (no training here; exported once
    for the run), and a small MLP trained for a few epochs (a second architecture: dense
    layers only)."""
    import importlib.util

    import onnxforge

    spec = importlib.util.spec_from_file_location("tm", M)
    tm = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(tm)
    d = tmp_path_factory.mktemp("digits")
    example = ROOT / "fixtures" / "example"
    val = np.load(example / "val.npz")
    np.savez(d / "cnn_test.npz", x=val["x"])
    out = {"cnn": (torch_exports / "digits.onnx", example / "calib.npz", d / "cnn_test.npz", val["x"], val["labels"])}
    model, Xtr, Xte, ytr, yte = tm.train_digits("mlp", epochs=8)
    assert onnxforge.convert_torch(model, d / "mlp.onnx", inputs=["x:float32:batchx64"]).passed
    np.savez(d / "mlp_calib.npz", x=Xtr[:200])
    np.savez(d / "mlp_test.npz", x=Xte)
    out["mlp"] = (d / "mlp.onnx", d / "mlp_calib.npz", d / "mlp_test.npz", Xte, yte)
    return out


@pytest.mark.slow
@pytest.mark.parametrize("kind", ["mlp", "cnn"])
def test_static_qdq_keeps_digits_accuracy(cli, digits, tmp_path, kind):
    model, calib, test_npz, Xte, yte = digits[kind]
    out = tmp_path / "q.onnx"
    r = cli("quantize", "static", model, "-o", out, "--calibration", calib, "--inputs", test_npz,
            "--max-mismatch", "0.05", "--bench-seconds", "0.5", "--speed-budget", "0", "--json")
    assert r.code == 0, r.err + r.out
    res = result(r)
    fp32, int8 = accuracy(model, Xte, yte), accuracy(out, Xte, yte)
    assert fp32 > 0.9
    assert int8 >= fp32 - 0.01, (fp32, int8)
    ops = {n.op_type for n in onnx.load(str(out)).graph.node}
    assert {"QuantizeLinear", "DequantizeLinear"} <= ops
    d = res["details"]
    assert d["format"] == "qdq" and d["method"] == "minmax"
    # --speed-budget 0: nothing to decide, so nothing timed (it cost 2 s of every such run)
    assert res["speed"] is None and all(t["speedup"] is None for t in res["trials"])
    assert res["after"]["file_bytes"] < res["before"]["file_bytes"]
    assert res["checks"][0]["outputs"][0]["label_agreement"] >= 0.95
    assert res["artifact"]["lineage"][-1] == "quantize:static"


@pytest.mark.slow
def test_dynamic_transformer_encoder(cli, tmp_path, torch_exports):
    r = cli("quantize", "dynamic", "--allow-generated-data", torch_exports / "encoder.onnx", "-o", tmp_path / "q.onnx", "--dim", "batch=2",
            "--dim", "seq=8", "--bench-seconds", "0.5", "--speed-budget", "0", "--json")
    assert r.code == 0, r.err + r.out
    res = result(r)
    assert "MatMulInteger" in res["after"]["ops"] or "DynamicQuantizeMatMul" in res["after"]["ops"]
    assert res["checks"][0]["outputs"][0]["cosine"] >= 0.99
    assert res["details"]["cpu_family"].startswith(("x86", "arm"))


@pytest.mark.slow
def test_old_cnn_static_random_smoke(cli, light, tmp_path):
    r = cli("quantize", "static", "--allow-generated-data", light / "light_squeezenet.onnx", "-o", tmp_path / "q.onnx",
            "--calibration", "random", "--samples", "4", "--bench-seconds", "0.3", "--speed-budget", "0",
            "--min-cosine", "0", "--json")
    assert r.code == 0, r.err + r.out
    res = result(r)
    assert any("smoke test" in n for n in res["notes"])
    assert (tmp_path / "q.onnx").exists()


@pytest.mark.slow
def test_external_data_model(cli, fx, tmp_path):
    r = cli("quantize", "dynamic", "--allow-generated-data", fx / "ext" / "ext.onnx", "-o", tmp_path / "q.onnx", "--bench-seconds", "0.3",
            "--speed-budget", "0",
            "--json", "--external-data")
    assert r.code == 0, r.err + r.out
    assert (tmp_path / "q.onnx.data").exists() or (tmp_path / "q.onnx").stat().st_size > 16000


@pytest.mark.slow
def test_budgets_and_keep_failed(cli, fx, tmp_path):
    r = cli("quantize", "dynamic", "--allow-generated-data", fx / "chain.onnx", "-o", tmp_path / "q.onnx", "--speed-budget", "100",
            "--bench-seconds", "0.3", "--json")
    res = result(r)
    # a speed budget missed fails (1) on clean rounds, or where loaded rounds prove it; else it is undecided (6)
    sp = res["speed"]
    assert r.code == (1 if sp["contention"]["clean"] or sp["bounds"][1] < 100 else 6), r.err
    assert not (tmp_path / "q.onnx").exists()
    assert res["details"]["speed_budget"] == 100 and not res["passed"] and res["status"] in ("failed", "inconclusive")
    r = cli("quantize", "dynamic", "--allow-generated-data", fx / "chain.onnx", "-o", tmp_path / "q.onnx", "--speed-budget", "100",
            "--bench-seconds", "0.3", "--keep-failed")
    assert r.code in (1, 6) and (tmp_path / "q.failed.onnx").exists()


@pytest.mark.slow
def test_fallback_excludes_sensitive_nodes(cli, fx, tmp_path):
    common = ["--calibration", "random", "--samples", "8", "--bench-seconds", "0.2", "--speed-budget", "0", "--atol",
              "1e-3", "--json"]
    r = cli("quantize", "static", "--allow-generated-data", fx / "chain.onnx", "-o", tmp_path / "a.onnx", *common)
    assert r.code == 1  # int8 everywhere misses a 1e-3 budget
    r = cli("quantize", "static", "--allow-generated-data", fx / "chain.onnx", "-o", tmp_path / "b.onnx", *common, "--fallback", "--max-trials", "5")
    res = result(r)
    trials = res["trials"]
    assert len(trials) >= 2 and trials[-1]["excluded_nodes"]
    assert len(trials[-1]["excluded_nodes"]) > len(trials[0]["excluded_nodes"])
    assert res["details"]["sensitivity"]
    if r.code == 0:
        assert (tmp_path / "b.onnx").exists()
    else:  # the report still lists every trial, and nothing is written
        assert not (tmp_path / "b.onnx").exists()


def test_calibration_bad_input(cli, fx, tmp_path):
    base = ["quantize", "static", fx / "tiny.onnx", "-o", tmp_path / "q.onnx"]
    np.savez(tmp_path / "wrong_name.npz", y=np.zeros((4, 1, 4), np.float32))
    r = cli(*base, "--calibration", tmp_path / "wrong_name.npz")
    assert r.code == 3 and "missing input(s) x" in r.err and "x:float32:batchx4" in r.err
    np.savez(tmp_path / "no_axis.npz", x=np.zeros((2, 4), np.float32))  # the fixed-batch model needs [N, 2, 4]
    r = cli("quantize", "static", fx / "tiny_fixed.onnx", "-o", tmp_path / "q.onnx", "--calibration", tmp_path / "no_axis.npz")
    assert r.code == 3 and "leading sample axis" in r.err
    np.savez(tmp_path / "wrong_dtype.npz", x=np.zeros((4, 1, 4), np.float64))
    r = cli(*base, "--calibration", tmp_path / "wrong_dtype.npz")
    assert r.code == 3 and "expects float32" in r.err
    bad = np.zeros((4, 1, 4), np.float32)
    bad[2, 0, 1] = np.nan
    np.savez(tmp_path / "nan.npz", x=bad)
    r = cli(*base, "--calibration", tmp_path / "nan.npz")
    assert r.code == 3 and "sample 2" in r.err and "NaN" in r.err
    np.savez(tmp_path / "few.npz", x=np.zeros((3, 1, 4), np.float32))
    r = cli(*base, "--calibration", tmp_path / "few.npz", "--samples", "10")
    assert r.code == 3 and "holds 3 sample(s)" in r.err
    (tmp_path / "empty").mkdir()
    r = cli(*base, "--calibration", tmp_path / "empty")
    assert r.code == 3
    assert cli("quantize", "static", fx / "tiny.onnx", "-o", tmp_path / "q.onnx").code == 2  # no --calibration
    assert not (tmp_path / "q.onnx").exists()


def test_histogram_memory_refused(cli, fx, tmp_path):
    np.savez(tmp_path / "c.npz", x=np.random.default_rng(0).random((16, 8, 16), dtype=np.float32))
    r = cli("quantize", "static", fx / "chain.onnx", "-o", tmp_path / "q.onnx", "--calibration", tmp_path / "c.npz",
            "--method", "entropy", "--max-memory", "1KiB")
    assert r.code == 3 and "entropy calibration" in r.err and "--method minmax" in r.err


@pytest.mark.slow
def test_already_quantized(cli, fx, tmp_path):
    assert cli("quantize", "dynamic", "--allow-generated-data", fx / "chain.onnx", "-o", tmp_path / "q.onnx", "--bench-seconds", "0.2",
               "--speed-budget", "0").code == 0
    r = cli("quantize", "dynamic", "--allow-generated-data", tmp_path / "q.onnx", "-o", tmp_path / "qq.onnx")
    assert r.code == 3 and "already quantized" in r.err


@pytest.mark.slow
@pytest.mark.parametrize("io", [[], ["--fp16-io"]], ids=["fp32-io", "fp16-io"])
def test_float16_models_are_refused(cli, fx, tmp_path, io):
    """ORT's quantizer leaves fp16 weights as they are: a ViT "passed" with only its patch
    Conv in int8, a BERT failed to load with a scratch path in the error."""
    half = tmp_path / "half.onnx"
    assert cli("quantize", "fp16", fx / "tiny.onnx", "-o", half, *io).code == 0
    for mode in (["dynamic"], ["static", "--calibration", "random"]):
        r = cli("quantize", *mode, half, "-o", tmp_path / "q.onnx", "--allow-generated-data")
        assert r.code == 3 and "float16 weights" in r.err and "hint:" in r.err, r.err
        assert not (tmp_path / "q.onnx").exists()


@pytest.mark.slow
def test_float64_models_are_refused_not_passed_unquantized(cli, tmp_path):
    """ORT's quantizers and fp16 converter skip float64 weights: all three modes said
    PASSED, "int8", with the model unchanged."""
    import numpy as np
    from onnx import TensorProto, helper, numpy_helper

    w = numpy_helper.from_array(np.random.default_rng(0).standard_normal((8, 4)), "w")  # float64
    g = helper.make_graph([helper.make_node("MatMul", ["x", "w"], ["y"])], "f64",
                          [helper.make_tensor_value_info("x", TensorProto.DOUBLE, ["batch", 8])],
                          [helper.make_tensor_value_info("y", TensorProto.DOUBLE, ["batch", 4])], [w])
    model = tmp_path / "f64.onnx"
    onnx.save(helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)]), str(model))
    for mode in (["dynamic"], ["static", "--calibration", "random"], ["fp16"]):
        r = cli("quantize", *mode, model, "-o", tmp_path / "q.onnx", *([] if mode == ["fp16"] else ["--allow-generated-data"]))
        assert r.code == 3 and "float64 weights" in r.err and "hint:" in r.err, (mode, r.err)
        assert not (tmp_path / "q.onnx").exists()


@pytest.mark.slow
def test_folder_of_samples(cli, fx, tmp_path):
    for i in range(5):
        (tmp_path / "cal" / str(i)).mkdir(parents=True)
        np.save(tmp_path / "cal" / str(i) / "x.npy", np.random.default_rng(i).random((2, 16), dtype=np.float32))
    r = cli("quantize", "static", fx / "chain.onnx", "-o", tmp_path / "q.onnx", "--calibration", tmp_path / "cal",
            "--bench-seconds", "0.2", "--speed-budget", "0", "--json")
    assert r.code == 0, r.err


@pytest.mark.slow
def test_int8_larger_than_fp32_says_why(cli, fx, tmp_path):
    r = cli("quantize", "dynamic", "--allow-generated-data", fx / "tiny.onnx", "-o", tmp_path / "q.onnx", "--bench-seconds", "0.2",
            "--speed-budget", "0", "--json")
    assert r.code == 0, r.err
    res = result(r)
    assert res["after"]["file_bytes"] > res["before"]["file_bytes"]  # 12 weights: the quantization overhead wins
    assert any("larger than fp32" in n and "scales, zero points" in n for n in res["notes"])


@pytest.mark.slow
def test_generated_inputs_keep_the_ranges_the_converter_recorded(cli, tmp_path):
    """A BERT export records token_type_ids in [0, 1] (onnxforge.val_ranges); benchmark,
    quantize's speed check and random calibration drew ints in [0, 10] and failed on
    onnxforge's own export (Gather index out of range)."""
    import json

    import numpy as np
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(0)
    table = numpy_helper.from_array(rng.standard_normal((2, 16)).astype(np.float32), "table")
    w = numpy_helper.from_array(rng.standard_normal((16, 16)).astype(np.float32), "w")
    g = helper.make_graph([helper.make_node("Gather", ["table", "ids"], ["e"]), helper.make_node("MatMul", ["e", "w"], ["y"])],
                          "types", [helper.make_tensor_value_info("ids", TensorProto.INT64, ["batch", 8])],
                          [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["batch", 8, 16])], [table, w])
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)])
    helper.set_model_props(m, {"onnxforge.val_ranges": json.dumps({"ids": [0, 1]})})
    model = tmp_path / "types.onnx"
    onnx.save(m, str(model))
    for extra in ([], ["--placement"]):
        r = cli("benchmark", model, "--duration", "0.2", *extra)
        assert r.code == 0, r.err
    r = cli("quantize", "dynamic", "--allow-generated-data", model, "-o", tmp_path / "d.onnx", "--bench-seconds", "0.2", "--speed-budget", "0")
    assert r.code == 0, r.err
    r = cli("quantize", "static", "--allow-generated-data", model, "-o", tmp_path / "s.onnx", "--calibration", "random", "--bench-seconds",
            "0.2", "--speed-budget", "0",
            "--min-cosine", "0")
    assert r.code == 0, r.err


@pytest.mark.slow
def test_a_float64_table_beside_float32_weights_does_not_block_quantization(cli, tmp_path):
    """Only a model with nothing float32 to quantize is refused: a float64 lookup table
    (Gather) beside float32 MatMuls stays as it is, as ORT leaves it."""
    import numpy as np
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(0)
    table = numpy_helper.from_array(rng.random((10, 16)), "table")  # float64
    w = numpy_helper.from_array(rng.standard_normal((16, 16)).astype(np.float32), "w")
    g = helper.make_graph([helper.make_node("Gather", ["table", "idx"], ["e64"]),
                           helper.make_node("Cast", ["e64"], ["e"], to=TensorProto.FLOAT),
                           helper.make_node("MatMul", ["e", "w"], ["y"])], "t",
                          [helper.make_tensor_value_info("idx", TensorProto.INT64, ["batch"])],
                          [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["batch", 16])], [table, w])
    model = tmp_path / "t.onnx"
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)])
    helper.set_model_props(m, {"onnxforge.val_ranges": '{"idx": [0, 9]}'})
    onnx.save(m, str(model))
    r = cli("quantize", "dynamic", "--allow-generated-data", model, "-o", tmp_path / "q.onnx", "--bench-seconds", "0.2", "--speed-budget", "0",
            "--min-cosine", "0.9")
    assert r.code == 0, r.err
    assert any(n.op_type == "MatMulInteger" for n in onnx.load(str(tmp_path / "q.onnx")).graph.node)


@pytest.mark.slow
def test_int8_on_generated_data_alone_is_refused(cli, fx, tmp_path):
    """#24: an int8 verdict on [0, 1) noise passed where real images failed. Without real
    data (--inputs, or real calibration for static) quantize is a usage error, before any
    work, unless --allow-generated-data; the verdict then says its data was generated."""
    out = tmp_path / "q.onnx"
    for argv in (("dynamic",), ("static", "--calibration", "random")):
        r = cli("quantize", *argv, fx / "tiny.onnx", "-o", out)
        assert r.code == 2 and r.err.count("error:") == 1, r.err
        assert "needs real input data" in r.err and "--allow-generated-data" in r.err and "--inputs" in r.err
        assert not out.exists()
    r = cli("quantize", "dynamic", fx / "tiny.onnx", "-o", out, "--allow-generated-data", "--bench-seconds", "0.2",
            "--speed-budget", "0")  # int8 of 12 weights is slower than fp32: not this test's subject
    assert r.code == 0, r.err
    assert "data: generated (uniform [0,1) noise, seed 0)" in r.out
    assert "speed: not timed (no speed budget" in r.out  # --speed-budget 0: nothing timed, and it says so
    np.savez(tmp_path / "in.npz", x=np.random.default_rng(0).random((2, 4), dtype=np.float32))
    r = cli("quantize", "dynamic", fx / "tiny.onnx", "-o", tmp_path / "q2.onnx", "--inputs", tmp_path / "in.npz",
            "--bench-seconds", "0.2", "--speed-budget", "0", "--json")
    assert r.code == 0, r.err
    assert result(r)["checks"][0]["data"]["source"] == "given"


@pytest.mark.slow
def test_static_with_real_calibration_is_checked_on_it(cli, fx, tmp_path):
    """Real calibration data is real data: the check runs on it (and says so), not on noise."""
    np.savez(tmp_path / "cal.npz", x=np.random.default_rng(0).random((8, 1, 4), dtype=np.float32))
    r = cli("quantize", "static", fx / "tiny.onnx", "-o", tmp_path / "q.onnx", "--calibration", tmp_path / "cal.npz",
            "--bench-seconds", "0.2", "--speed-budget", "0", "--json")
    assert r.code == 0, r.err
    data = result(r)["checks"][0]["data"]
    assert data["source"] == "given" and "calibration data" in data["how"] and "first 4 sample(s)" in data["how"]


@pytest.mark.slow
def test_python_api_refuses_generated_data_too(fx, tmp_path):
    from onnxforge import quantize_dynamic
    from onnxforge.core.errors import UsageError

    with pytest.raises(UsageError, match="needs real input data"):
        quantize_dynamic(fx / "tiny.onnx", tmp_path / "q.onnx")
    res = quantize_dynamic(fx / "tiny.onnx", tmp_path / "q.onnx", allow_generated_data=True, bench_seconds=0.2,
                           speed_budget=0)
    assert res.passed and res.checks[0].data["source"] == "generated"


@pytest.mark.slow
def test_quantize_checks_on_the_recorded_norm(cli, tmp_path):
    """A model that recorded its image normalisation is quantized and checked on images
    normalised that way (--input-norm overrides it)."""
    factory = tmp_path / "net.py"
    factory.write_text("import torch\n\ndef build():\n    torch.manual_seed(0)\n    return torch.nn.Sequential("
                       "torch.nn.Conv2d(3, 4, 3), torch.nn.ReLU(), torch.nn.Flatten(), torch.nn.Linear(144, 5))\n")
    m = tmp_path / "m.onnx"
    r = cli("convert", "torch", f"{factory}:build", "--input", "x:float32:batchx3x8x8", "--input-norm", "x:imagenet",
            "-o", m)
    assert r.code == 0, r.err
    props = {p.key: p.value for p in onnx.load(m).metadata_props}
    assert json.loads(props["onnxforge.input_norms"])["x"]["mean"] == [0.485, 0.456, 0.406]
    r = cli("quantize", "dynamic", m, "-o", tmp_path / "q.onnx", "--allow-generated-data", "--bench-seconds", "0.2",
            "--speed-budget", "0")  # speed is not this test's subject
    assert r.code == 0, r.err
    assert "data: generated (ImageNet-normalised images, seed 0)" in r.out
    r = cli("quantize", "dynamic", m, "-o", tmp_path / "q2.onnx", "--allow-generated-data", "--bench-seconds", "0.2",
            "--input-norm", "x:clip", "--speed-budget", "0", "--json")
    assert r.code == 0, r.err
    assert "CLIP-normalised" in result(r)["checks"][0]["data"]["how"]


def test_min_speedup_is_the_deprecated_spelling_of_speed_budget(cli, fx, tmp_path):
    """--min-speedup means the latency gate (benchmark, release); quantize's budget is
    --speed-budget. The old flag, TOML key and keyword still work, each with a warning."""
    import logging

    from onnxforge.core.options import resolve
    from onnxforge.pipeline.config import load_config
    from onnxforge.steps.quantize.options import DynamicOptions

    args = ("quantize", "dynamic", fx / "tiny.onnx", "-o", tmp_path / "q.onnx")
    r = cli(*args, "--min-speedup", "0.5", "--print-step")
    assert r.code == 0 and "speed_budget = 0.5" in r.out and "min_speedup" not in r.out, r.err
    assert "warning: --min-speedup is deprecated here: use --speed-budget" in r.err, r.err
    r = cli(*args, "--speed-budget", "0.5", "--print-step")
    assert r.code == 0 and "speed_budget = 0.5" in r.out and r.err == "", r.err
    r = cli(*args, "--min-speedup", "0.5", "--speed-budget", "1", "--print-step")
    assert r.code == 2 and "--speed-budget and --min-speedup set the same option" in r.err, r.err
    assert "--min-speedup" not in cli("quantize", "dynamic", "--help").out
    seen: list[logging.LogRecord] = []
    handler = logging.Handler()
    handler.emit = seen.append
    logging.getLogger("onnxforge").addHandler(handler)
    try:
        assert resolve(DynamicOptions, kwargs={"min_speedup": 0}).speed_budget == 0
        cfg = load_config({"model": {"source": str(fx / "tiny.onnx"), "framework": "onnx"},
                           "steps": [{"run": "quantize.dynamic", "min_speedup": 1.5, "allow_generated_data": True}]})
    finally:
        logging.getLogger("onnxforge").removeHandler(handler)
    assert cfg.steps[0].options.speed_budget == 1.5
    assert [r.getMessage() for r in seen] == ["warning: min_speedup is deprecated here: use speed_budget",
                                              "warning: steps[0].min_speedup is deprecated here: use speed_budget"]
