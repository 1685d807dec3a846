"""A run leaves nothing behind outside its outputs: not in $TMPDIR (torch's inductor
cache, ONNX Runtime's telemetry session file) and not under ~/.cache."""

import os
import subprocess
import sys

import pytest

from conftest import ROOT

pytestmark = pytest.mark.slow  # a real torch conversion in its own process


def test_torch_convert_leaves_nothing_in_tmpdir(tmp_path):
    pytest.importorskip("torch")
    (tmp_path / "model.py").write_text("import torch\n\ndef build():\n    torch.manual_seed(0)\n"
                                       "    return torch.nn.Sequential(torch.nn.Linear(4, 3))\n")
    tmp, cache = tmp_path / "tmp", tmp_path / "cache"
    tmp.mkdir()
    cache.mkdir()
    env = {k: v for k, v in os.environ.items() if k not in ("TORCHINDUCTOR_CACHE_DIR", "ORT_DISABLE_TELEMETRY")}
    env.update(PYTHONPATH=str(ROOT), TMPDIR=str(tmp), XDG_CACHE_HOME=str(cache))
    r = subprocess.run([sys.executable, "-m", "onnxforge", "convert", "torch", "model.py:build", "--input",
                        "x:float32:2x4", "-o", "m.onnx"], cwd=tmp_path, env=env, capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    assert (tmp_path / "m.onnx").exists()
    assert sorted(p.name for p in tmp.rglob("*")) == []  # was: torchinductor_<user>/ and .ses
    assert sorted(p.name for p in cache.rglob("*")) == []  # was: ORT's telemetry database
