"""The packaged folders where onnxforge is not installed, the way a user deploys them.

Each environment is a fresh venv (no system site-packages) holding only
what the test names: the MLServer folder's own requirements.txt, or mlflow-skinny,
onnxruntime and pandas for the MLflow folder. The servers and loaders run there; the reference is
ONNX Runtime in this process. Installing needs the package index (PyPI or a mirror);
where it cannot be reached the tests skip and say so (tests/venvs.py). This process never
imports mlserver."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import numpy as np
import pytest
from serve_models import labeled_model, requires_serve, wide_model
from venvs import clean_env as _clean_env, install, make_venv

pytestmark = [requires_serve, pytest.mark.slow, pytest.mark.long]  # builds virtual environments, starts servers


def _venv(root: Path, pip_args: list[str]) -> Path:
    """A fresh venv with ``pip install pip_args``; its python. Prints how long it took."""
    py = make_venv(root)
    took = install(py, pip_args)
    print(f"\n{root.name}: install {' '.join(pip_args)}: {took:.0f} s")
    return py


def _no_onnxforge(py: Path, cwd: Path) -> None:
    r = subprocess.run([str(py), "-c", "import importlib.util as u; print(u.find_spec('onnxforge'))"],
                       capture_output=True, text=True, cwd=cwd, env=_clean_env(), timeout=120)
    assert r.returncode == 0 and r.stdout.strip() == "None", r.stdout + r.stderr


def _ort(model: Path, feeds: dict) -> dict:
    import onnxruntime as ort

    s = ort.InferenceSession(str(model), providers=["CPUExecutionProvider"])
    return dict(zip([o.name for o in s.get_outputs()], s.run(None, feeds)))


@pytest.fixture(scope="session")
def mlserver_deploy(tmp_path_factory):
    """(the packaged MLServer folder, the source model, the venv's python) with only the
    folder's requirements.txt installed."""
    from onnxforge.steps.package.package import package

    d = tmp_path_factory.mktemp("deploy-mlserver")
    src = labeled_model(d / "labeled.onnx")
    folder = d / "labeled-mlserver"
    assert package(src, folder, target="mlserver", dims={"batch": 3}).passed
    py = _venv(d / "venv", ["-r", str(folder / "requirements.txt")])
    return folder, src, py


@pytest.fixture(scope="session")
def mlflow_venv(tmp_path_factory) -> Path:
    """A venv with mlflow-skinny, onnxruntime and pandas at the versions installed here
    (mlflow.pyfunc imports pandas, which mlflow-skinny does not require)."""
    from importlib.metadata import version

    d = tmp_path_factory.mktemp("deploy-mlflow")
    return _venv(d / "venv", [f"{p}=={version(p)}" for p in ("mlflow-skinny", "onnxruntime", "pandas")])


def test_mlserver_folder_serves_rest_and_grpc_without_onnxforge(mlserver_deploy, tmp_path):
    """`mlserver start FOLDER` from the venv: the runtime the folder ships answers V2 REST
    and gRPC like ORT in this process, and refuses a malformed request with a 400."""
    from onnxforge.steps.serve_check.check import GrpcClient, RestClient, Server, _wait_ready, free_ports, stop_group
    from onnxforge.steps.package.package import load_package

    folder, src, py = mlserver_deploy
    _no_onnxforge(py, folder)
    _, inputs, _ = load_package(folder)
    expect = _ort(src, inputs[0])
    http_port, grpc_port, metrics_port = free_ports(3)
    log = tmp_path / "mlserver.log"
    env = _clean_env(MLSERVER_HOST="127.0.0.1", MLSERVER_HTTP_PORT=str(http_port), MLSERVER_GRPC_PORT=str(grpc_port),
                     MLSERVER_METRICS_PORT=str(metrics_port), PYTHONDONTWRITEBYTECODE="1")
    with open(log, "wb") as logf:
        proc = subprocess.Popen([str(py.parent / "mlserver"), "start", str(folder)], cwd=folder, env=env,
                                stdin=subprocess.DEVNULL, stdout=logf, stderr=subprocess.STDOUT,
                                start_new_session=True)
    server = Server(proc.pid, http_port, grpc_port, metrics_port, "labeled", log)
    try:
        _wait_ready(proc, server, 120)
        for client in (RestClient(server), GrpcClient(server)):
            got = client.infer(inputs[0])
            client.close()
            assert set(got) == {"scores", "label"}
            np.testing.assert_allclose(got["scores"], expect["scores"], rtol=1e-6, atol=0)
            np.testing.assert_array_equal(got["label"], expect["label"])
        bad = {"inputs": [{"name": "x", "shape": [3, 5], "datatype": "FP32", "data": [0.0] * 15}]}
        rest = RestClient(server)
        status, body = rest.post(json.dumps(bad).encode())
        rest.close()
        assert status == 400 and b"the model expects [-1, 4]" in body, (status, body)
    finally:
        assert stop_group(proc)
    assert "Traceback" not in log.read_text(errors="replace")


def test_mlflow_folder_loads_without_onnxforge(mlflow_venv, tmp_path):
    """mlflow.pyfunc.load_model(folder).predict in a venv with only mlflow-skinny,
    onnxruntime and pandas: the same outputs as ORT here. The model has a weight over 1 KB, which
    mlflow.onnx would have written as external data (mode 0600)."""
    from onnxforge.steps.package.package import package

    src = wide_model(tmp_path / "wide.onnx")
    folder = tmp_path / "wide-mlflow"
    assert package(src, folder, target="mlflow", dims={"batch": 2}).passed
    assert sorted(p.name for p in folder.iterdir() if p.suffix in ("", ".data") and p.is_file()) == ["MLmodel"]
    x = np.random.default_rng(1).standard_normal((2, 256)).astype(np.float32)
    np.save(tmp_path / "x.npy", x)
    script = ("import sys, numpy as np, mlflow.pyfunc\n"
              "m = mlflow.pyfunc.load_model(sys.argv[1])\n"
              "out = m.predict({'x': np.load(sys.argv[2])})\n"
              "np.savez(sys.argv[3], **dict(out))\n")
    _no_onnxforge(mlflow_venv, tmp_path)
    r = subprocess.run([str(mlflow_venv), "-c", script, str(folder), str(tmp_path / "x.npy"), str(tmp_path / "y.npz")],
                       capture_output=True, text=True, cwd=tmp_path, env=_clean_env(), timeout=600)
    assert r.returncode == 0, r.stderr[-3000:]
    got = np.load(tmp_path / "y.npz")
    np.testing.assert_allclose(got["y"], _ort(src, {"x": x})["y"], rtol=1e-6, atol=0)
