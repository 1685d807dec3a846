"""`onnxforge doctor` on this machine's CPU provider, and its parts."""

import os
import sys
import tomllib

import onnx
import onnxruntime as ort
import pytest

from conftest import ROOT, json_result
from onnxforge.backends.environment import EXTRAS, check_provider, gpus, runtime_build


def test_doctor_json_on_this_machine(cli):
    r = cli("doctor", "--json")
    assert r.code == 0, r.err
    d = json_result(r)
    assert d["passed"] is True and d["python"] == sys.version.split()[0]
    assert d["packages"]["onnx"] == onnx.__version__ and d["packages"]["onnxruntime"] == ort.__version__
    provs = {p["provider"]: p for p in d["providers"]}
    assert set(provs) >= set(ort.get_available_providers())
    cpu = provs["CPUExecutionProvider"]
    assert cpu["available"] and cpu["initialises"] and cpu["error"] == ""
    assert d["onnxruntime_packages"] and d["onnxruntime_build"] != "not installed"
    assert {"avx2", "avx512f", "avx512_vnni", "amx_int8"} <= set(d["cpu"]["isa"])
    assert d["cpus"]["threads"] >= 1 and d["memory"]["available"] > 0
    assert {e["name"] for e in d["extras"]} == set(EXTRAS)


def test_require_a_provider(cli):
    r = cli("doctor", "--require", "cpu", "--json")
    assert r.code == 0 and json_result(r)["required"] == ["cpu"]
    if check_provider("CUDAExecutionProvider").initialises:
        pytest.skip("CUDA initialises here; this checks the machine without it")
    r = cli("doctor", "--require", "cuda", "--json")
    assert r.code == 5
    assert json_result(r)["passed"] is False  # the report is still printed for the CI log
    lines = r.err.splitlines()
    assert sum(ln.startswith("error: cuda") for ln in lines) == 1 and any(ln.startswith("hint: ") for ln in lines)
    r = cli("doctor", "--require", "gpu2000")
    assert r.code == 2 and "unknown execution provider" in r.err


def test_doctor_table_fits_80_columns(cli, monkeypatch):
    monkeypatch.setenv("COLUMNS", "80")
    r = cli("doctor", "-q")
    assert r.code == 0 and "CPUExecutionProvider" in r.out and "extras" in r.out
    assert all(len(line) <= 80 for line in r.out.splitlines()) and "…" not in r.out


def test_extras_table_matches_pyproject():
    extras = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["optional-dependencies"]

    def names(reqs):
        import re

        return {re.split(r"[\s<>=!~;\[]", r, maxsplit=1)[0].lower() for r in reqs}

    declared = {k: names(v) for k, v in extras.items() if k not in ("dev", "all")}
    assert declared == {k: set(v[0]) for k, v in EXTRAS.items()}


def test_a_provider_not_in_this_build():
    missing = next(p for p in ("CUDAExecutionProvider", "OpenVINOExecutionProvider", "DmlExecutionProvider")
                   if p not in ort.get_available_providers())
    c = check_provider(missing)
    assert not c.available and not c.initialises and "not in this" in c.error


def test_build_names():
    assert runtime_build(["onnxruntime"]) == "CPU"
    assert runtime_build(["onnxruntime", "onnxruntime-gpu"]) == "CPU + GPU (CUDA, TensorRT)"
    assert runtime_build([]) == "not installed"


def test_gpus_from_nvidia_smi(tmp_path, monkeypatch):
    """nvidia-smi's CSV as onnxforge reads it (a stand-in script prints what the real one does)."""
    smi = tmp_path / "nvidia-smi"
    smi.write_text("#!/bin/sh\necho 'NVIDIA H100 80GB HBM3, 550.54.15, 81559 MiB'\n"
                   "echo 'NVIDIA H100 80GB HBM3, 550.54.15, 81559 MiB'\n")
    smi.chmod(0o755)
    monkeypatch.setenv("PATH", f"{tmp_path}{os.pathsep}{os.environ['PATH']}")
    assert gpus() == ({"name": "NVIDIA H100 80GB HBM3", "driver": "550.54.15", "memory": "81559 MiB"},) * 2
    monkeypatch.setenv("PATH", str(tmp_path / "empty"))
    assert gpus() == ()
