"""release(provider=...): a zoo target benchmarks the same release on its own provider;
the report's resolved config says which, and an inactive provider is the same error as
in the file."""

import json

import pytest

from fixtures import make_fixtures as mf

CONFIG = '''[model]
source = "model.onnx"
framework = "onnx"

[[steps]]
run = "simplify"

[gates]
latency = { provider = "cpu", max_p50_ms = 1000.0, seconds = 0.2 }
'''


@pytest.fixture
def config(tmp_path):
    mf.onnx_tiny(tmp_path / "model.onnx")
    (tmp_path / "release.toml").write_text(CONFIG)
    return tmp_path / "release.toml"


def test_same_provider_changes_nothing(config, tmp_path):
    from onnxforge.pipeline.run import release

    rep = release(config, tmp_path / "out", provider="cpu")
    assert rep.passed and rep.config["gates"]["latency"]["provider"] == "cpu"


def test_another_provider_is_used_and_reported(config, tmp_path):
    import onnxruntime as ort

    from onnxforge.pipeline.run import release

    if "CUDAExecutionProvider" in ort.get_available_providers():
        pytest.skip("this machine has CUDA: the override would pass, which proves less")
    rep = release(config, tmp_path / "out", provider="cuda")
    assert rep.exit_code == 5 and rep.status == "error" and "CUDA" in rep.error  # the benchmark asked for CUDA
    env = json.loads((tmp_path / "out" / "report.json").read_text())
    assert env["result"]["config"]["gates"]["latency"]["provider"] == "cuda"
    rep = release(config, tmp_path / "out2", provider="nope")
    assert rep.exit_code == 2 and "unknown execution provider 'nope'" in rep.error
