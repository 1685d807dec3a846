"""What the machine gives the process, read from cgroup files laid out in a temporary
folder (v1 and v2 hierarchies), and the calibration memory guard reading them."""

import numpy as np
import pytest

from onnxforge.core.system import (affinity_cpus, available_memory, cgroup_cpu_limit, cpu_quota, host_available_memory,
                              memory_limit)

GiB = 2**30


def _v2(root, **files):
    root.mkdir(parents=True, exist_ok=True)
    for name, text in files.items():
        (root / name.replace("_", ".")).write_text(text + "\n")
    return root


def test_v2_memory_limit_and_what_is_left(tmp_path):
    root = _v2(tmp_path / "v2", memory_max=str(4 * GiB), memory_current=str(1 * GiB))
    assert memory_limit(root) == 4 * GiB
    assert available_memory(root) == min(host_available_memory(), 3 * GiB)


def test_v2_no_limit(tmp_path):
    root = _v2(tmp_path / "v2", memory_max="max", memory_current=str(GiB))
    assert memory_limit(root) is None
    assert available_memory(root) == host_available_memory()


def test_v1_limit_and_its_no_limit_value(tmp_path):
    mem = tmp_path / "v1" / "memory"
    mem.mkdir(parents=True)
    (mem / "memory.limit_in_bytes").write_text(f"{2 * GiB}\n")
    (mem / "memory.usage_in_bytes").write_text(f"{GiB // 2}\n")
    assert memory_limit(tmp_path / "v1") == 2 * GiB
    assert available_memory(tmp_path / "v1") == min(host_available_memory(), 2 * GiB - GiB // 2)
    (mem / "memory.limit_in_bytes").write_text("9223372036854771712\n")  # v1 writes this for "no limit"
    assert memory_limit(tmp_path / "v1") is None


def test_a_cgroup_over_its_limit_has_nothing_left(tmp_path):
    root = _v2(tmp_path / "v2", memory_max=str(GiB), memory_current=str(2 * GiB))
    assert available_memory(root) == 0


def test_missing_or_garbled_files_are_no_limit(tmp_path):
    assert memory_limit(tmp_path / "nothing-here") is None
    root = _v2(tmp_path / "v2", memory_max="lots")
    assert memory_limit(root) is None


def test_cpu_quota_v2_and_v1(tmp_path):
    root = _v2(tmp_path / "v2", cpu_max="150000 100000")
    assert cgroup_cpu_limit(root) == 1.5
    assert cpu_quota(root) == 1  # a fraction of a CPU above 1 is not a second thread
    assert cgroup_cpu_limit(_v2(tmp_path / "v2max", cpu_max="max 100000")) is None
    assert cpu_quota(tmp_path / "v2max") == affinity_cpus()
    cpu = tmp_path / "v1" / "cpu"
    cpu.mkdir(parents=True)
    (cpu / "cpu.cfs_quota_us").write_text("300000\n")
    (cpu / "cpu.cfs_period_us").write_text("100000\n")
    assert cgroup_cpu_limit(tmp_path / "v1") == 3.0
    assert cpu_quota(tmp_path / "v1") == min(3, affinity_cpus())


def test_environment_variable_moves_the_root(tmp_path, monkeypatch):
    root = _v2(tmp_path / "v2", memory_max=str(3 * GiB), memory_current="0")
    monkeypatch.setenv("ONNXFORGE_CGROUP_ROOT", str(root))
    assert memory_limit() == 3 * GiB


def test_calibration_guard_reads_the_container_limit(cli, fx, tmp_path, monkeypatch):
    """Histogram calibration's default --max-memory is half of what the container has
    left, not half of the host's memory: in a 64 KiB cgroup entropy calibration of a
    few samples is refused with the numbers, before any work."""
    root = _v2(tmp_path / "cg", memory_max=str(64 * 1024), memory_current="0")
    monkeypatch.setenv("ONNXFORGE_CGROUP_ROOT", str(root))
    np.savez(tmp_path / "c.npz", x=np.random.default_rng(0).random((16, 8, 16), dtype=np.float32))
    r = cli("quantize", "static", fx / "chain.onnx", "-o", tmp_path / "q.onnx", "--calibration", tmp_path / "c.npz",
            "--method", "entropy")
    assert r.code == 3, r.err
    assert "entropy calibration" in r.err and "over the limit of 0.00 GiB" in r.err
    assert not (tmp_path / "q.onnx").exists()


@pytest.mark.slow  # quantizes for real
def test_calibration_runs_in_a_container_without_a_limit(cli, fx, tmp_path, monkeypatch):
    monkeypatch.setenv("ONNXFORGE_CGROUP_ROOT", str(_v2(tmp_path / "big", memory_max="max")))
    if host_available_memory() < GiB:
        pytest.skip("the host itself has under 1 GiB free")
    np.savez(tmp_path / "c.npz", x=np.random.default_rng(0).random((16, 8, 16), dtype=np.float32))
    r = cli("quantize", "static", fx / "chain.onnx", "-o", tmp_path / "q.onnx", "--calibration", tmp_path / "c.npz",
            "--method", "entropy", "--bench-seconds", "0.2", "--speed-budget", "0")
    assert r.code == 0 and "over the limit" not in r.err, r.err
