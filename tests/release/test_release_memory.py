"""The release holds the source model once, and lets it go after the ledger has its
outputs (for GPT-2-large each copy is 3.1 GB)."""

import pytest


def test_memo_run_caches_per_input_and_reloads_after_drop():
    import numpy as np

    from onnxforge.pipeline.run import _Memo

    calls = []

    def run(feeds):
        calls.append("run")
        return {"y": feeds["x"] * 2}

    def reload():
        calls.append("reload")
        return run

    memo = _Memo(run, reload)
    x = {"x": np.arange(3)}
    assert memo(x)["y"].tolist() == [0, 2, 4] and memo({"x": np.arange(3)})["y"].tolist() == [0, 2, 4]
    assert calls == ["run"]  # the same input (by value) runs once
    memo.drop()
    assert memo(x)["y"].tolist() == [0, 2, 4] and calls == ["run"]  # still cached, nothing reloaded
    memo({"x": np.arange(4)})
    assert calls == ["run", "reload", "run"]  # a new input after drop() reloads the model


@pytest.mark.slow
def test_release_builds_a_torch_factory_once(tmp_path):
    pytest.importorskip("torch")
    import onnxforge

    (tmp_path / "factory.py").write_text(
        "import torch\n"
        "from pathlib import Path\n"
        "def build():\n"
        "    p = Path(__file__).with_name('calls.txt')\n"
        "    p.write_text(p.read_text() + 'x' if p.exists() else 'x')\n"
        "    torch.manual_seed(0)\n"
        "    return torch.nn.Sequential(torch.nn.Linear(8, 16), torch.nn.ReLU(), torch.nn.Linear(16, 4)).train()\n")
    (tmp_path / "release.toml").write_text(
        '[model]\nsource = "factory.py:build"\nframework = "torch"\ninputs = ["x:float32:batchx8"]\n\n'
        '[[steps]]\nrun = "convert"\n[[steps]]\nrun = "simplify"\n')
    rep = onnxforge.release(tmp_path / "release.toml", tmp_path / "out")
    assert rep.passed, rep.failure
    assert (tmp_path / "calls.txt").read_text() == "x"  # built once: the ledger's source and convert share it
    assert any("training mode" in n for n in rep.steps[0].notes)  # convert still says how the factory left it
    assert [r.against for r in rep.ledger] == ["source", "source"] and all(r.passed for r in rep.ledger)
