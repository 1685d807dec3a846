"""Code execution and resources that need a real process: a module the archive names
imported from the current directory, a memory budget read from the cgroup."""

import json
import os
import subprocess
import sys

import pytest

from conftest import ROOT
from cases import MARKER
from cases_code import dynamic_pt2, edit_program

pytestmark = pytest.mark.slow  # exports torch models, starts onnxforge processes


def _onnxforge(args, cwd, **env):
    return subprocess.run([sys.executable, "-m", "onnxforge", *map(str, args)], cwd=cwd, capture_output=True,
                          text=True, timeout=600, env={**os.environ, "PYTHONPATH": str(ROOT), **env})


@pytest.fixture(scope="module")
def dyn(tmp_path_factory):
    pytest.importorskip("torch")
    p = tmp_path_factory.mktemp("pt2") / "dyn.pt2"
    dynamic_pt2(p)
    return p


def test_pt2_cannot_import_a_module_from_the_current_directory(dyn, tmp_path):
    """A pytree type `setup.Evil` once made onnxforge import setup.py from the cwd
    (``python -m`` puts the cwd first on sys.path)."""
    def edit(program):
        sig = program["graph_module"]["module_call_graph"][0]["signature"]
        spec = json.loads(sig["out_spec"])
        spec[1]["type"] = "setup.Evil"
        sig["out_spec"] = json.dumps(spec)

    evil = tmp_path / "in" / "outs.pt2"
    evil.parent.mkdir()
    edit_program(dyn, evil, edit)
    cwd = tmp_path / "cwd"
    cwd.mkdir()
    (cwd / "setup.py").write_text(f"open({str(tmp_path / MARKER)!r}, 'w').close()\n")
    r = _onnxforge(["convert", "torch", evil, "-o", tmp_path / "out" / "m.onnx"], cwd)
    assert not (tmp_path / MARKER).exists(), "setup.py from the current directory ran"
    assert r.returncode == 3, r.stderr
    assert "setup.Evil" in r.stderr and "hint: " in r.stderr and "--trust-pickle" in r.stderr
    assert not (tmp_path / "out").exists()


def test_pt2_declared_sizes_over_the_cgroup_limit_are_refused_before_reading(dyn, tmp_path):
    """The members' declared sizes are checked against the memory the container has left."""
    cg = tmp_path / "cgroup"
    cg.mkdir()
    (cg / "memory.max").write_text(f"{16 * 1024}\n")
    (cg / "memory.current").write_text("0\n")
    r = _onnxforge(["convert", "torch", dyn, "-o", tmp_path / "m.onnx"], tmp_path, ONNXFORGE_CGROUP_ROOT=str(cg))
    assert r.returncode == 3, r.stderr
    assert "of memory available" in r.stderr and "hint: " in r.stderr
    assert not (tmp_path / "m.onnx").exists()
