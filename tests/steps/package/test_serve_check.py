"""serve_check against real `mlserver start` subprocesses (no mocks).

Every server is started inside serve_check or `mlserver_process`, whose finally-blocks
stop the whole process group, so a failing assertion cannot leave one running."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from conftest import default_sigint
from serve_models import fp16_model, labeled_model, requires_serve, string_label_model

from onnxforge.core.errors import BadInputError, UsageError

pytestmark = requires_serve

# A runtime with a classic bug: outputs named by position after the session returned
# them in another order. The server loads it from the model folder (MLServer puts that
# folder on sys.path).
REORDERING_RUNTIME = '''
from onnxforge.steps.package.mlserver_runtime import OnnxRuntimeModel


class ReorderedOutputs(OnnxRuntimeModel):
    def _encode(self, name, arr):
        out = super()._encode(name, arr)
        if name == "scores":
            out.data = type(out.data)(root=list(reversed(out.data.root)))
        return out
'''


def _gone(pid: int) -> bool:
    try:
        os.killpg(pid, 0)
    except ProcessLookupError:
        return True
    return False


@pytest.fixture(scope="module")
def sk_folder(tmp_path_factory, sklearn_release) -> Path:
    import shutil

    from onnxforge.steps.package.package import package

    rel = tmp_path_factory.mktemp("sk") / "release"
    shutil.copytree(sklearn_release / "release", rel)  # the run's shared release stays as built
    package(rel, rel / "mlserver", target="mlserver")  # the README's layout: inside the release
    return rel / "mlserver"


@pytest.mark.slow
def test_sklearn_release_served_over_rest_and_grpc(sk_folder, tmp_path):
    from onnxforge.steps.serve_check.check import serve_check

    rep = serve_check(sk_folder, concurrency=2, duration=1.0, log_dir=tmp_path)
    assert rep.passed, rep.failures
    assert set(rep.parity) == {"rest", "grpc"}
    for proto, p in rep.parity.items():
        assert p.passed and p.samples == 1, proto
        by_name = {o.name: o for o in p.outputs}
        assert by_name["label"].label_agreement == 1.0  # int64 labels exact over V2
        assert by_name["label"].shape == (171,) and by_name["probabilities"].shape == (171, 2)
    cases = {(m.protocol, m.case): m for m in rep.malformed}
    assert len(cases) == 8 and all(m.passed and m.server_live for m in cases.values())
    assert cases[("rest", "wrong datatype")].got == "400" and "expects FP32" in cases[("rest", "wrong datatype")].message
    assert cases[("grpc", "wrong name")].got == "INVALID_ARGUMENT" and "X_wrong" in cases[("grpc", "wrong name")].message
    assert cases[("rest", "empty body")].got.startswith("4")
    load = rep.load
    assert load.errors == 0 and load.requests > 10 and load.concurrency == 2 and load.protocol == "rest"
    assert load.latency.p50 <= load.latency.p90 <= load.latency.p99
    assert rep.in_process.p50 > 0 and rep.overhead_ms == pytest.approx(load.latency.p50 - rep.in_process.p50)
    assert rep.batch == 1 and rep.stopped
    assert "127.0.0.1" in (tmp_path / "mlserver-1.log").read_text()  # kept in log_dir, loopback only


@pytest.mark.slow  # a real MLServer process
def test_string_labels_over_v2(tmp_path):
    from onnxforge.steps.package.package import package
    from onnxforge.steps.serve_check.check import serve_check

    model = string_label_model(tmp_path / "strings.onnx")
    package(model, tmp_path / "srv", target="mlserver", dims={"N": 6}, seed=3)
    from onnxforge.steps.package.package import load_package

    _, _, golden = load_package(tmp_path / "srv")
    assert golden[0]["label"].dtype.kind == "U"  # string labels, stored without pickling
    rep = serve_check(tmp_path / "srv", duration=0.5, concurrency=1, load_protocol="grpc")
    assert rep.passed, rep.failures
    for p in rep.parity.values():
        label = next(o for o in p.outputs if o.name == "label")
        assert label.label_agreement == 1.0
    assert rep.load.protocol == "grpc" and rep.load.errors == 0


@pytest.mark.slow  # a real MLServer process
def test_fp16_tensors_over_grpc_raw_contents(tmp_path):
    from onnxforge.steps.package.package import package
    from onnxforge.steps.serve_check.check import serve_check

    package(fp16_model(tmp_path / "half.onnx"), tmp_path / "srv", target="mlserver", dims={"batch": 3})
    rep = serve_check(tmp_path / "srv", duration=0.3, concurrency=1, load_protocol="grpc")
    assert rep.passed, rep.failures
    assert {o.name for o in rep.parity["grpc"].outputs} == {"y", "n"}
    assert rep.load.errors == 0


@pytest.mark.slow  # a real MLServer process
def test_reordered_outputs_fail_served_parity(tmp_path):
    from onnxforge.steps.package.package import package
    from onnxforge.steps.serve_check.check import serve_check

    package(labeled_model(tmp_path / "labeled.onnx"), tmp_path / "srv", target="mlserver", dims={"batch": 4})
    (tmp_path / "srv" / "reorder_runtime.py").write_text(REORDERING_RUNTIME)
    path = tmp_path / "srv" / "model-settings.json"
    settings = json.loads(path.read_text())
    settings["implementation"] = "reorder_runtime.ReorderedOutputs"
    path.write_text(json.dumps(settings))

    rep = serve_check(tmp_path / "srv", duration=0, trust_code=True)  # the folder's own runtime: code it ships
    assert not rep.passed and rep.stopped and rep.load is None
    for proto in ("rest", "grpc"):
        bad = [o.name for o in rep.parity[proto].outputs if not o.passed]
        assert bad == ["scores"], (proto, rep.parity[proto])
    assert any("served parity over rest failed" in f for f in rep.failures)
    assert all(m.passed for m in rep.malformed)  # the bug is in the answers, not in request handling


@pytest.mark.slow  # a real MLServer process
def test_server_stopped_on_ctrl_c(sk_folder):
    from onnxforge.steps.serve_check.check import mlserver_process

    stopped: list = []
    with pytest.raises(KeyboardInterrupt):
        with mlserver_process(sk_folder, stopped=stopped) as server:
            pid = server.pid
            raise KeyboardInterrupt
    assert stopped == [True] and _gone(pid)


def _servers_of(folder: Path) -> list[int]:
    out = subprocess.run(["pgrep", "-f", f"mlserver start {folder.resolve()}"], capture_output=True, text=True).stdout
    return [int(p) for p in out.split()]


@pytest.mark.slow
@pytest.mark.long
def test_ctrl_c_during_the_load_stops_the_server(sk_folder):
    """As a user would: serve_check in its own process, Ctrl-C (SIGINT) in the middle
    of the load; the process ends with KeyboardInterrupt and no mlserver is left. The
    signal goes as soon as the progress lines say the load started (a fixed 5 s wait
    kept two CPUs busy for nothing)."""
    import threading

    code = ("from onnxforge.cli.progress import PlainReporter; from onnxforge.core.progress import set_reporter; "
            "set_reporter(PlainReporter(verbosity=1)); from onnxforge.steps.serve_check.check import serve_check; "
            f"serve_check({str(sk_folder)!r}, duration=60, concurrency=2)")
    proc = subprocess.Popen([sys.executable, "-c", code], stderr=subprocess.PIPE, text=True, start_new_session=True,
                            preexec_fn=default_sigint)
    lines: list[str] = []
    reader = threading.Thread(target=lambda: lines.extend(proc.stderr), daemon=True)
    reader.start()
    try:
        deadline = time.monotonic() + 90
        while not any(ln.lstrip().startswith("load: ") and ln.rstrip().endswith(": start") for ln in list(lines)):
            assert time.monotonic() < deadline and proc.poll() is None, "the load never started:\n" + "".join(lines)
            time.sleep(0.1)
        assert _servers_of(sk_folder), "no server is running"
        time.sleep(0.5)  # into the load
        proc.send_signal(signal.SIGINT)
        proc.wait(timeout=60)
        reader.join(timeout=10)
        err = "".join(lines)
        assert proc.returncode != 0 and "KeyboardInterrupt" in err, err
        assert _servers_of(sk_folder) == []
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
        for pid in _servers_of(sk_folder):  # only servers of this test's folder
            os.killpg(pid, signal.SIGKILL)


@pytest.mark.slow  # a real MLServer process
def test_mlflow_folder_serves_too(tmp_path):
    from onnxforge.steps.package.package import package
    from onnxforge.steps.serve_check.check import serve_check

    package(labeled_model(tmp_path / "labeled.onnx"), tmp_path / "mlf", target="mlflow", dims={"batch": 2})
    rep = serve_check(tmp_path / "mlf", duration=0, protocols=("grpc",))
    assert rep.passed and list(rep.parity) == ["grpc"], rep.failures


def test_latency_stats_interval_holds_the_median():
    from onnxforge.steps.serve_check.check import latency_stats

    ms = list(np.random.default_rng(0).exponential(2.0, 5001))
    st = latency_stats(ms)
    assert st.n == 5001 and st.min <= st.p50 <= st.p90 <= st.p99 <= st.max
    assert st.ci95[0] < st.p50 < st.ci95[1] and st.ci95[1] - st.ci95[0] < 0.2
    assert latency_stats([]) is None


def test_what_serve_check_refuses(tmp_path):
    from onnxforge.steps.package.package import package
    from onnxforge.steps.serve_check.check import serve_check

    model = labeled_model(tmp_path / "labeled.onnx")
    package(model, tmp_path / "repo", target="triton")
    with pytest.raises(UsageError, match="Triton model repository"):
        serve_check(tmp_path / "repo")
    with pytest.raises(BadInputError, match="no model-settings.json"):
        serve_check(tmp_path)
    package(model, tmp_path / "srv", target="mlserver")
    with pytest.raises(UsageError, match="protocol"):
        serve_check(tmp_path / "srv", protocols=("soap",))


@pytest.mark.slow  # a real MLServer process
def test_a_model_that_does_not_load_is_an_error_and_nothing_is_left(tmp_path):
    from onnxforge.steps.package.package import package
    from onnxforge.steps.serve_check.check import mlserver_process

    package(labeled_model(tmp_path / "labeled.onnx"), tmp_path / "srv", target="mlserver")
    (tmp_path / "srv" / "model.onnx").write_bytes(b"not a model")
    stopped: list = []
    with pytest.raises(BadInputError, match="mlserver") as e:
        with mlserver_process(tmp_path / "srv", timeout=30, stopped=stopped, log_dir=tmp_path / "logs"):
            pass
    assert "onnxruntime cannot load" in str(e.value) and "Protobuf parsing failed" in str(e.value)  # the log's cause
    assert stopped == [True]
    assert "RuntimeError" in (tmp_path / "logs" / "mlserver-1.log").read_text()
