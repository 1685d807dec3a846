"""OpenVINO as a runtime beside ONNX Runtime (#27): validate and benchmark with
--runtime openvino, the release's latency gate on it, and exit 5 without the package.
Tests that run OpenVINO skip, saying so, only when the openvino package is absent (CI
installs the extra)."""

import importlib.util
import json
import re
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import ROOT, json_result

HAS_OV = importlib.util.find_spec("openvino") is not None
needs_ov = pytest.mark.skipif(not HAS_OV, reason="openvino is not installed (pip install 'onnxforge[openvino]')")


def _bf16_cpu() -> bool:
    import openvino as ov

    return "BF16" in ov.Core().get_property("CPU", "OPTIMIZATION_CAPABILITIES")


@needs_ov
@pytest.mark.slow
def test_validate_runtime_openvino_passes_against_ort(cli, fx):
    r = cli("validate", fx / "chain.onnx", fx / "chain.onnx", "--runtime", "openvino", "--ov-precision", "f32",
            "--samples", "3", "--dim", "batch=4", "--json")
    assert r.code == 0, r.err
    rep = json_result(r)
    assert rep["passed"] and rep["candidate"].endswith("@openvino:f32") and rep["reference"].endswith("@cpu")
    # the reference on OpenVINO too, and a model that diverges: a real comparison, not a copy
    r = cli("validate", fx / "chain.onnx", fx / "chain_bad5.onnx", "--ref-runtime", "openvino", "--runtime",
            "openvino", "--ov-precision", "f32", "--json")
    assert r.code == 1 and json_result(r)["reference"].endswith("@openvino:f32")


@needs_ov
@pytest.mark.slow
def test_openvino_default_precision_is_reported(cli, fx):
    """auto is OpenVINO's choice (bf16 on CPUs with bf16 kernels): the label says which,
    and a failure there says that fp32 is one flag away."""
    r = cli("validate", fx / "chain.onnx", fx / "chain.onnx", "--runtime", "openvino", "--dim", "batch=8",
            "--samples", "4", "--json")
    rep = json_result(r)
    if _bf16_cpu():
        assert rep["candidate"].endswith("@openvino:bf16")
        assert r.code == 1 and any("--ov-precision f32" in n for n in rep["notes"])
    else:
        assert rep["candidate"].endswith("@openvino:f32") and r.code == 0


@needs_ov
@pytest.mark.slow
def test_validate_torch_cnn_on_openvino(cli, torch_exports):
    """The digits CNN (Conv, pooling, Gemm) exported by torch: OpenVINO at f32 agrees with ORT."""
    r = cli("validate", torch_exports / "digits.onnx", torch_exports / "digits.onnx", "--runtime", "openvino",
            "--ov-precision", "f32", "--samples", "4", "--dim", "batch=2", "--json")
    assert r.code == 0, r.err
    assert json_result(r)["passed"]


@needs_ov
@pytest.mark.slow
def test_benchmark_rows_on_ort_and_openvino(cli, fx, tmp_path, monkeypatch):
    r = cli("benchmark", fx / "tiny.onnx", fx / "chain.onnx", "--runtime", "ort", "--runtime", "openvino",
            "--iterations", "20", "--warmup", "1", "--dim", "batch=2", "--ov-precision", "f32", "--json")
    assert r.code == 0, r.err
    out = json_result(r)
    rows = [(x["model"].rsplit("/", 1)[-1], x["runtime"], x["requested_provider"]) for x in out["results"]]
    assert rows == [("tiny.onnx", "ort", "cpu"), ("tiny.onnx", "openvino", "CPU"),
                    ("chain.onnx", "ort", "cpu"), ("chain.onnx", "openvino", "CPU")]
    for x in out["results"]:
        L = x["latency"]
        assert L["n"] == 20 and L["ci95"][0] <= L["p50"] <= L["ci95"][1] and x["batch"] == 2
    ov = out["results"][1]
    assert ov["active_providers"] == ["OpenVINO CPU f32"] and ov["inference_precision"] == "f32"
    assert len(out["comparisons"]) == 3 and out["contention"]["rounds"] >= 20
    fastest = {f["runtime"]: f for f in out["fastest"]}
    assert set(fastest) == {"ort", "openvino"}
    for rt, f in fastest.items():
        mine = [x for x in out["results"] if x["runtime"] == rt]
        assert f["p50_ms"] == min(x["latency"]["p50"] for x in mine)
    monkeypatch.setenv("COLUMNS", "250")  # every column of the table (a narrow one drops some)
    html, rep = tmp_path / "b.html", tmp_path / "b.json"
    r = cli("benchmark", fx / "tiny.onnx", fx / "chain.onnx", "--runtime", "ort", "--runtime", "openvino",
            "--iterations", "10", "--warmup", "0", "--dim", "batch=2", "--html", html, "--report", rep)
    assert r.code == 0 and "openvino:CPU" in r.out and "fastest on openvino" in r.out
    # each row's speed-up is its own (a model has two rows: they were once looked up by model),
    # and the figure tells the rows apart
    lines = [ln.split() for ln in r.out.splitlines() if ln.startswith(("tiny.onnx", "chain.onnx"))]
    assert [ln[1] for ln in lines] == ["cpu", "openvino:CPU", "cpu", "openvino:CPU"]
    comps = json.loads(rep.read_text())["result"]["comparisons"]
    assert [next(c for c in ln if re.fullmatch(r"\d+\.\d+x", c)) for ln in lines] == ["1.00x"] + [f"{c['speedup']:.2f}x" for c in comps]
    assert "tiny.onnx @openvino: p50" in html.read_text() and "tiny.onnx: p50" in html.read_text()


def test_runtime_flags_refused(cli, fx):
    r = cli("benchmark", fx / "tiny.onnx", "--runtime", "tvm")
    assert r.code == 2 and "unknown runtime 'tvm'" in r.err
    r = cli("benchmark", fx / "tiny.onnx", "--runtime", "openvino", "--provider", "cuda")
    assert r.code == 2 and "--runtime ort" in r.err
    r = cli("validate", fx / "tiny.onnx", fx / "tiny.onnx", "--ov-precision", "int4")
    assert r.code == 2 and "--ov-precision" in r.err


@needs_ov
@pytest.mark.slow
def test_openvino_refuses_what_it_cannot_run(cli, fx, tmp_path):
    """A source that is not an ONNX file is a usage error; an op OpenVINO has no
    conversion for (ai.onnx.ml's, which skl2onnx writes) is a conversion failure."""
    from onnx import TensorProto, helper, save

    r = cli("validate", fx / "tiny.onnx", f"{ROOT / 'tests' / 'models.py'}:mlp", "--runtime", "openvino")
    assert r.code == 2 and "runs ONNX models" in r.err
    node = helper.make_node("LinearClassifier", ["x"], ["label", "scores"], domain="ai.onnx.ml",
                            coefficients=[1.0, 0.0, -1.0, 0.0, 1.0, 0.0], intercepts=[0.0, 0.1], classlabels_ints=[0, 1])
    g = helper.make_graph([node], "ml", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [2, 3])],
                          [helper.make_tensor_value_info("label", TensorProto.INT64, [2]),
                           helper.make_tensor_value_info("scores", TensorProto.FLOAT, [2, 2])])
    save(helper.make_model(g, opset_imports=[helper.make_opsetid("", 17), helper.make_opsetid("ai.onnx.ml", 1)]),
         tmp_path / "ml.onnx")
    r = cli("benchmark", tmp_path / "ml.onnx", "--runtime", "openvino", "--iterations", "3")
    assert r.code == 4 and "OpenVINO cannot compile" in r.err and "LinearClassifier" in r.err
    # beside ORT it is no candidate on OpenVINO: its ORT row is timed, the note says why no OpenVINO row
    # (quantize dynamic's fused recipe writes QAttention, which OpenVINO cannot run either)
    r = cli("benchmark", fx / "tiny.onnx", tmp_path / "ml.onnx", "--runtime", "ort", "--runtime", "openvino",
            "--iterations", "3", "--json")
    assert r.code == 0, r.err
    res = json_result(r)
    assert [(Path(x["model"]).name, x["runtime"]) for x in res["results"]] == [
        ("tiny.onnx", "ort"), ("tiny.onnx", "openvino"), ("ml.onnx", "ort")]
    assert any("no OpenVINO row" in n and "LinearClassifier" in n for n in res["notes"]), res["notes"]


def _chain_release(cli, fx, tmp_path, gates: str):
    """A release of the chain model (one simplify step) with these [gates] lines, into out/."""
    import shutil

    shutil.copy(fx / "chain.onnx", tmp_path / "chain.onnx")
    (tmp_path / "release.toml").write_text(
        '[model]\nsource = "chain.onnx"\nframework = "onnx"\n\n[[steps]]\nrun = "simplify"\n\n'
        f'[gates]\n{gates}\n')
    return cli("release", tmp_path / "release.toml", "-o", tmp_path / "out", "--json")


@needs_ov
@pytest.mark.slow
def test_release_latency_gate_on_openvino(cli, fx, tmp_path):
    r = _chain_release(cli, fx, tmp_path, 'latency = { runtime = "openvino", ov_precision = "f32", seconds = 0.5, '
                                          'dims = { batch = 4 }, max_p50_ms = 1000.0 }')
    assert r.code == 0, r.err
    bench = json.loads((tmp_path / "out" / "report.json").read_text())["result"]["benchmark"]
    assert {x["runtime"] for x in bench["results"]} == {"openvino"}
    assert all(x["inference_precision"] == "f32" for x in bench["results"])
    gates = {g["name"]: g for g in json_result(r)["gates"]}
    assert gates["max_p50_ms"]["passed"] and "openvino:CPU" in gates["max_p50_ms"]["message"]
    # the model timed on OpenVINO is checked on OpenVINO too: the final ledger row again
    ov = gates["parity:openvino"]
    assert ov["passed"] and ov["kind"] == "parity" and "simplify on openvino:f32 vs the source" in ov["message"]


@needs_ov
@pytest.mark.slow
def test_release_fails_when_openvino_computes_the_model_differently(cli, fx, tmp_path):
    """OpenVINO's bf16 (its default on a CPU with bf16 kernels) against fp32's 1e-4: the
    latency would be measured on a model that does not compute what was released."""
    if not _bf16_cpu():
        pytest.skip("this CPU has no bf16 kernels: OpenVINO runs f32 by default here")
    r = _chain_release(cli, fx, tmp_path, 'parity = { atol = 1e-5, rtol = 1e-5 }\n'
                                          'latency = { runtime = "openvino", seconds = 0.3, dims = { batch = 8 } }')
    assert r.code == 1, r.err
    gates = {g["name"]: g for g in json_result(r)["gates"]}
    assert gates["parity:simplify"]["passed"] and not gates["parity:openvino"]["passed"]
    assert "openvino:bf16" in gates["parity:openvino"]["message"]


def test_release_latency_gate_openvino_takes_no_provider(cli, fx, tmp_path):
    (tmp_path / "release.toml").write_text(
        f'[model]\nsource = "{fx / "tiny.onnx"}"\nframework = "onnx"\n\n[[steps]]\nrun = "simplify"\n\n'
        '[gates]\nlatency = { runtime = "openvino", provider = "cuda" }\n')
    r = cli("release", tmp_path / "release.toml", "-o", tmp_path / "out")
    assert r.code == 2 and "runtime = \"ort\"" in r.err


@pytest.mark.slow
@pytest.mark.parametrize("argv", [["validate", "{m}", "{m}", "--runtime", "openvino"],
                                  ["benchmark", "{m}", "--runtime", "openvino", "--iterations", "3"]])
def test_missing_openvino_exits_5(fx, argv):
    """The package absent (None in sys.modules makes its import fail, as when it is not
    installed): exit 5 with the extra to install."""
    code = ("import sys; sys.modules['openvino'] = None; from onnxforge.cli.app import main; "
            f"sys.exit(main({[a.format(m=fx / 'tiny.onnx') for a in argv]!r}))")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT)
    assert r.returncode == 5, r.stderr
    assert "openvino is not installed" in r.stderr and "pip install 'onnxforge[openvino]'" in r.stderr
    assert "Traceback" not in r.stderr
