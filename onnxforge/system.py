"""What this machine gives the process: CPU quota, CPU model and ISA, memory
(the container's limit as well as the host's), read from /proc and cgroup files."""

from __future__ import annotations

import functools
import os
from pathlib import Path


def cpu_quota() -> int:
    """CPUs this process may use: the cgroup quota (cpu.max / cfs_quota) and the
    affinity mask, not the host's core count, which overcounts in containers."""
    n = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    quota = None
    try:
        text = Path("/sys/fs/cgroup/cpu.max").read_text().split()
        if text and text[0] != "max":
            quota = int(text[0]) / int(text[1])
    except (OSError, ValueError, IndexError):
        try:
            q = int(Path("/sys/fs/cgroup/cpu/cpu.cfs_quota_us").read_text())
            p = int(Path("/sys/fs/cgroup/cpu/cpu.cfs_period_us").read_text())
            if q > 0:
                quota = q / p
        except (OSError, ValueError):
            pass
    if quota is not None:
        n = min(n, max(1, int(quota)))
    return max(1, n)


ISA_FLAGS = {
    "avx2": "avx2", "avx512f": "avx512f", "avx512_vnni": "avx512_vnni", "avx_vnni": "avx_vnni",
    "avx512_bf16": "avx512_bf16", "amx_int8": "amx_int8", "asimd": "neon", "asimddp": "neon_dotprod",
    "i8mm": "neon_i8mm",
}


@functools.lru_cache(maxsize=1)
def cpu_info() -> dict:
    """CPU model and the ISA extensions that decide int8 and fp16 speed."""
    import platform

    model, flags = platform.processor() or platform.machine(), set()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            key, _, value = line.partition(":")
            key = key.strip()
            if key in ("model name", "Model", "CPU part") and model in ("", platform.machine(), platform.processor()):
                model = value.strip()
            elif key in ("flags", "Features"):
                flags.update(value.split())
    except OSError:
        pass
    return {"model": model, "machine": platform.machine(),
            "isa": {name: (flag in flags) for flag, name in ISA_FLAGS.items()}}


def proc_kib(path: str, key: str) -> int | None:
    """A 'Key:  N kB' line of a /proc file, in bytes (None where /proc has no such line)."""
    try:
        for line in Path(path).read_text().splitlines():
            if line.startswith(key + ":"):
                return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    return None


def _cgroup_bytes(*paths: str) -> int | None:
    for p in paths:
        try:
            text = Path(p).read_text().strip()
        except OSError:
            continue
        if text and text != "max" and text.isdigit() and int(text) < 2**60:
            return int(text)
    return None


def memory_limit() -> int | None:
    """The container's memory limit (cgroup v2 memory.max or v1 limit_in_bytes), if any."""
    return _cgroup_bytes("/sys/fs/cgroup/memory.max", "/sys/fs/cgroup/memory/memory.limit_in_bytes")


def available_memory() -> int:
    """Memory this process can still use: the host's MemAvailable, and within a
    container's limit what the cgroup has not used yet, whichever is smaller."""
    host = proc_kib("/proc/meminfo", "MemAvailable") or os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    limit = memory_limit()
    if limit is None:
        return host
    used = _cgroup_bytes("/sys/fs/cgroup/memory.current", "/sys/fs/cgroup/memory/memory.usage_in_bytes") or 0
    return max(0, min(host, limit - used))
