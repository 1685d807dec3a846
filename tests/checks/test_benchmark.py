import json

import numpy as np
import pytest


def res(r):
    assert r.out.strip().startswith("{"), r.err
    env = json.loads(r.out)
    assert env["kind"] == "benchmark"
    return env["result"]


def test_single_model(cli, fx):
    from onnxforge.core.system import cpu_quota

    r = cli("benchmark", fx / "tiny.onnx", "--iterations", "50", "--warmup", "2", "--json", "--save-latencies")
    assert r.code == 0, r.err
    out = res(r)
    [row] = out["results"]
    L = row["latency"]
    assert L["n"] == 50 and len(row["latencies_ms"]) == 50
    assert L["min"] <= L["p50"] <= L["p90"] <= L["p95"] <= L["p99"] <= L["max"]
    assert L["ci95"][0] <= L["p50"] <= L["ci95"][1]
    assert row["active_providers"][0] == "CPUExecutionProvider" and row["requested_provider"] == "cpu"
    assert row["threads"] == cpu_quota() and row["batch"] == 1
    assert row["throughput"] == pytest.approx(1000 / L["p50"])
    assert out["environment"]["cpu_quota"] == cpu_quota() and "onnxruntime" in out["environment"]
    assert sum(row["histogram"]) <= 50 and out["passed"] is True


def test_two_models_interleaved_with_speedup_gate(cli, fx):
    r = cli("benchmark", fx / "tiny.onnx", fx / "chain.onnx", "--iterations", "40", "--warmup", "1",
            "--dim", "batch=2", "--json", "--min-speedup", "0.0001")
    assert r.code == 0, r.err
    out = res(r)
    assert [x["latency"]["n"] for x in out["results"]] == [40, 40]
    [c] = out["comparisons"]
    assert c["speedup"] > 0 and c["ci95"][0] <= c["speedup"] <= c["ci95"][1]
    assert out["gates"][0]["name"] == "min_speedup" and out["gates"][0]["passed"]
    assert any("spinning off" in n for n in out["notes"])
    r = cli("benchmark", fx / "tiny.onnx", fx / "chain.onnx", "--iterations", "20", "--min-speedup", "1000", "--json")
    assert r.code == 1 and res(r)["passed"] is False


def test_latency_gates(cli, fx, tmp_path):
    rep = tmp_path / "b.json"
    r = cli("benchmark", fx / "tiny.onnx", "--iterations", "20", "--max-p50-ms", "1e-9", "--report", rep)
    assert r.code == 1 and "FAIL" in r.out
    assert json.loads(rep.read_text())["result"]["passed"] is False
    r = cli("benchmark", fx / "tiny.onnx", "--iterations", "20", "--max-p50-ms", "1e6", "--max-p99-ms", "1e6", "--json")
    assert r.code == 0 and all(g["passed"] for g in res(r)["gates"])


def test_baseline(cli, fx, tmp_path):
    base = tmp_path / "base.json"
    assert cli("benchmark", fx / "tiny.onnx", "--iterations", "30", "--report", base, "--json").code == 0
    r = cli("benchmark", fx / "tiny.onnx", "--iterations", "30", "--baseline", base, "--max-regression", "1000%", "--json")
    assert r.code == 0, r.err
    [g] = res(r)["gates"]
    assert g["name"] == "baseline" and g["passed"]
    # a baseline that is impossibly fast: this run is slower beyond its interval
    env = json.loads(base.read_text())
    env["result"]["results"][0]["latency"]["p50"] = 1e-9
    fast = tmp_path / "fast.json"
    fast.write_text(json.dumps(env))
    r = cli("benchmark", fx / "tiny.onnx", "--iterations", "30", "--baseline", fast, "--json")
    assert r.code == 1
    # another model, another schema, another kind: refused
    r = cli("benchmark", fx / "chain.onnx", "--iterations", "5", "--baseline", base)
    assert r.code == 3 and "another model" in r.err
    env["schema_version"] = 99
    (tmp_path / "v99.json").write_text(json.dumps(env))
    r = cli("benchmark", fx / "tiny.onnx", "--iterations", "5", "--baseline", tmp_path / "v99.json")
    assert r.code == 3 and "schema version 99" in r.err
    (tmp_path / "parity.json").write_text(json.dumps({"schema_version": 1, "kind": "parity", "result": {}}))
    r = cli("benchmark", fx / "tiny.onnx", "--iterations", "5", "--baseline", tmp_path / "parity.json")
    assert r.code == 3 and "not a benchmark report" in r.err


def test_batch_sweep(cli, fx):
    r = cli("benchmark", fx / "tiny.onnx", "--batch", "1,4", "--iterations", "10", "--json")
    assert r.code == 0, r.err
    out = res(r)
    assert [x["batch"] for x in out["results"]] == [1, 4]
    assert out["results"][1]["shapes"] == {"x": [4, 4]}
    r = cli("benchmark", fx / "tiny_fixed.onnx", "--batch", "8", "--iterations", "5")
    assert r.code == 3 and "fixes its first dim to 2" in r.err
    assert cli("benchmark", fx / "tiny_fixed.onnx", "--batch", "2", "--iterations", "5").code == 0
    assert cli("benchmark", fx / "tiny.onnx", "--batch", "a,b").code == 2


def test_inputs_and_shapes(cli, fx, tmp_path):
    np.savez(tmp_path / "x.npz", x=np.ones((3, 4), np.float32))
    r = cli("benchmark", fx / "tiny.onnx", "--inputs", tmp_path / "x.npz", "--iterations", "5", "--json")
    assert r.code == 0 and res(r)["results"][0]["shapes"] == {"x": [3, 4]}
    r = cli("benchmark", fx / "tiny.onnx", "--shape", "x:6x4", "--iterations", "5", "--json")
    assert r.code == 0 and res(r)["results"][0]["batch"] == 6
    np.savez(tmp_path / "bad.npz", x=np.ones((3, 5), np.float32))
    assert cli("benchmark", fx / "tiny.onnx", "--inputs", tmp_path / "bad.npz").code == 3


def test_placement(cli, fx):
    r = cli("benchmark", fx / "chain.onnx", "--iterations", "5", "--placement", "--json")
    assert r.code == 0
    placement = res(r)["results"][0]["placement"]
    assert set(placement) == {"CPUExecutionProvider"} and placement["CPUExecutionProvider"] >= 8


def test_bad_input(cli, fx, tmp_path):
    import onnxruntime as ort

    r = cli("benchmark", fx / "tiny.onnx", "--provider", "quantum")
    assert r.code == 2 and "cpu, cuda" in r.err
    if "CUDAExecutionProvider" not in ort.get_available_providers():
        r = cli("benchmark", fx / "tiny.onnx", "--provider", "cuda", "--iterations", "3")
        assert r.code == 5 and "not available" in r.err
    (tmp_path / "junk.onnx").write_bytes(b"junk")
    assert cli("benchmark", tmp_path / "junk.onnx").code == 3


def test_cuda_io_binding(cli, fx):
    import onnxruntime as ort

    if "CUDAExecutionProvider" not in ort.get_available_providers():
        pytest.skip("no CUDA execution provider active on this machine")
    r = cli("benchmark", fx / "tiny.onnx", "--provider", "cuda", "--io-binding", "--iterations", "20", "--json")
    assert r.code == 0, r.err
    row = res(r)["results"][0]
    assert row["active_providers"][0] == "CUDAExecutionProvider"
    assert row["io_binding"] and not row["copies_included"]
    r = cli("benchmark", fx / "tiny.onnx", "--provider", "cuda", "--iterations", "20", "--json")
    assert res(r)["results"][0]["copies_included"] is True


@pytest.mark.slow  # waits for a running benchmark
def test_interrupt_exits_130_and_reports_it(fx, tmp_path):
    import os
    import signal
    import subprocess
    import sys
    import time

    from conftest import default_sigint

    rep = tmp_path / "r.json"
    p = subprocess.Popen([sys.executable, "-m", "onnxforge", "benchmark", str(fx / "tiny.onnx"), "--duration", "60",
                          "--report", str(rep)], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                         preexec_fn=default_sigint)
    time.sleep(4)
    p.send_signal(signal.SIGINT)
    out, err = p.communicate(timeout=30)
    assert p.returncode == 130, err
    assert "interrupted" in err and "Traceback" not in err
    import json

    env = json.loads(rep.read_text())  # --report holds the verdict on every exit: here, interrupted
    assert env["kind"] == "error" and env["result"]["exit_code"] == 130 and out == ""
    assert not [f for f in os.listdir(tmp_path) if f.startswith(".")]


@pytest.mark.slow  # two timing processes
def test_exclusive_timing_hook_serializes_processes(fx, tmp_path):
    """With ONNXFORGE_BENCH_LOCK set (what `onnxforge zoo` does), timing phases of
    separate processes take turns on the lock file: their recorded phases never overlap.
    Without it nothing is locked or recorded."""
    import os
    import subprocess
    import sys

    from conftest import ROOT

    code = ("import json, sys\nfrom onnxforge.checks.benchmark import TIMED, benchmark\n"
            f"benchmark([r'{fx / 'tiny.onnx'}'], duration=0.3, warmup=1)\n"
            "print(json.dumps(TIMED))\n")
    env = {**os.environ, "ONNXFORGE_BENCH_LOCK": str(tmp_path / "bench.lock"), "PYTHONPATH": str(ROOT)}
    procs = [subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True, env=env)
             for _ in range(3)]
    phases = []
    for p in procs:
        out, _ = p.communicate(timeout=120)
        assert p.returncode == 0
        [ph] = json.loads(out)
        assert ph["what"] == "tiny.onnx" and ph["start"] < ph["end"] and ph["waited"] >= 0
        phases.append(ph)
    phases.sort(key=lambda ph: ph["start"])
    for a, b in zip(phases, phases[1:]):
        assert a["end"] <= b["start"], phases
    env.pop("ONNXFORGE_BENCH_LOCK")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env)
    assert r.returncode == 0 and json.loads(r.stdout) == []


def test_exclusive_timing_unusable_lock_is_bad_input(cli, fx, tmp_path, monkeypatch):
    monkeypatch.setenv("ONNXFORGE_BENCH_LOCK", str(tmp_path / "no" / "such" / "dir" / "bench.lock"))
    r = cli("benchmark", fx / "tiny.onnx", "--iterations", "5")
    assert r.code == 3 and "benchmark lock" in r.err and "hint:" in r.err


@pytest.fixture(scope="module")
def sklearn_onnx(tmp_path_factory):
    """A real skl2onnx model: its batch dim is dynamic and has no name."""
    pytest.importorskip("skl2onnx")
    import onnx
    from skl2onnx import convert_sklearn
    from skl2onnx.common.data_types import FloatTensorType
    from sklearn.linear_model import LinearRegression

    X = np.random.default_rng(0).normal(size=(20, 4))
    onx = convert_sklearn(LinearRegression().fit(X, X[:, 0]), initial_types=[("X", FloatTensorType([None, 4]))])
    assert not onx.graph.input[0].type.tensor_type.shape.dim[0].dim_param  # unnamed
    path = tmp_path_factory.mktemp("skl") / "lin.onnx"
    onnx.save(onx, str(path))
    return path


def test_unnamed_dynamic_dims_by_position(cli, sklearn_onnx, tmp_path):
    """--dim N=64 on a sklearn model: the hint names the positional keys; --dim 0=64 and
    --dim X:0=64 size axis 0, in benchmark and validate alike."""
    r = cli("benchmark", sklearn_onnx, "--dim", "N=64", "--iterations", "5", "--warmup", "1")
    assert r.code == 2 and "0=N" in r.err and "X:0=N" in r.err and "every dim is fixed" not in r.err
    for key in ("0", "X:0"):
        r = cli("benchmark", sklearn_onnx, "--dim", f"{key}=64", "--iterations", "5", "--warmup", "1", "--json")
        assert r.code == 0, r.err
        [row] = res(r)["results"]
        assert row["shapes"]["X"] == [64, 4] and row["batch"] == 64
    r = cli("validate", sklearn_onnx, sklearn_onnx, "--dim", "0=7", "--save-inputs", tmp_path / "in.npz")
    assert r.code == 0, r.err
    assert np.load(tmp_path / "in.npz")["X"].shape == (7, 4)
    r = cli("validate", sklearn_onnx, sklearn_onnx, "--dim", "1=7")
    assert r.code == 2 and "no such dim" in r.err  # axis 1 is fixed
