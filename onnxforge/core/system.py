"""What this machine gives the process: CPU quota, CPU model and ISA, memory
(the container's limit as well as the host's), read from /proc and cgroup files.

The cgroup files are read under ``cgroup_root()``: /sys/fs/cgroup, or the folder
``ONNXFORGE_CGROUP_ROOT`` names (the cgroup namespace can mount it elsewhere, and a
test can lay out a v1 or v2 hierarchy in a temporary folder).

And what third-party libraries would leave on the machine after a run (run_caches)."""

from __future__ import annotations

import contextlib
import functools
import os
from pathlib import Path
from typing import Iterator
import platform
import secrets


def cgroup_root(root: str | os.PathLike | None = None) -> Path:
    """Where the cgroup files are: ``root``, else $ONNXFORGE_CGROUP_ROOT, else /sys/fs/cgroup."""
    return Path(root or os.environ.get("ONNXFORGE_CGROUP_ROOT") or "/sys/fs/cgroup")


def affinity_cpus() -> int:
    """CPUs in this process's affinity mask (taskset, cpusets)."""
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)


def busy_and_steal_seconds(cpus) -> tuple[float, float] | None:
    """Seconds the CPUs ``cpus`` (ids) have been busy since boot, and of those the steal,
    from /proc/stat: busy is user, nice, system, irq, softirq and steal (time a hypervisor
    gave another guest is time this one did not get); None where /proc/stat is not
    readable. Counted in clock ticks (10 ms each, USER_HZ), so a caller compares readings
    a few hundred ms apart. The steal alone matters beside run_queue_seconds: a thread
    the hypervisor stopped does not wait on this kernel's run queue."""
    want = {f"cpu{c}" for c in cpus}
    try:
        with open("/proc/stat") as f:
            lines = [ln.split() for ln in f if ln.startswith("cpu")]
    except OSError:
        return None
    busy = steal = 0
    for parts in lines:
        if parts[0] in want:
            v = [int(x) for x in parts[1:9]] + [0] * (8 - len(parts[1:9]))
            busy += v[0] + v[1] + v[2] + v[5] + v[6] + v[7]  # user nice system (idle iowait) irq softirq steal
            steal += v[7]
    hz = os.sysconf("SC_CLK_TCK")
    return busy / hz, steal / hz


def run_queue_seconds() -> float | None:
    """Seconds this process's threads have spent runnable but waiting for a CPU, summed
    over its live threads (/proc/self/task/*/schedstat, second field, in ns); None where
    the kernel does not keep schedstats. Exact, unlike /proc/stat's tick sampling: an
    ORT pool whose workers sleep between calls (spinning off) reads there as 0.6 CPU of
    other load on a quiet machine, while its threads waited 0.012 s a second."""
    total = 0
    try:
        tasks = os.listdir("/proc/self/task")
    except OSError:
        return None
    for tid in tasks:
        try:
            with open(f"/proc/self/task/{tid}/schedstat") as f:
                total += int(f.read().split()[1])
        except FileNotFoundError:  # the thread ended between the listing and the read
            continue
        except (OSError, ValueError, IndexError):
            return None
    return total / 1e9


def cgroup_cpu_limit(root: str | os.PathLike | None = None) -> float | None:
    """The cgroup's CPU quota in CPUs (v2 cpu.max, v1 cfs_quota_us / cfs_period_us), or None."""
    base = cgroup_root(root)
    try:
        text = (base / "cpu.max").read_text().split()
        return int(text[0]) / int(text[1]) if text and text[0] != "max" else None
    except (OSError, ValueError, IndexError, ZeroDivisionError):
        pass
    try:
        q = int((base / "cpu" / "cpu.cfs_quota_us").read_text())
        p = int((base / "cpu" / "cpu.cfs_period_us").read_text())
        return q / p if q > 0 and p > 0 else None
    except (OSError, ValueError):
        return None


def cpu_quota(root: str | os.PathLike | None = None) -> int:
    """CPUs this process may use: the cgroup quota (cpu.max / cfs_quota) and the
    affinity mask, not the host's core count, which overcounts in containers."""
    n = affinity_cpus()
    quota = cgroup_cpu_limit(root)
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


def isa_names(cpu: dict) -> str:
    """The ISA extensions a ``cpu_info()`` record (or a report's copy of one) has, as printed
    beside every int8 figure: "avx2, avx512_vnni, amx_int8" ("" when none of them)."""
    return ", ".join(name for name, present in cpu.get("isa", {}).items() if present)


def proc_kib(path: str, key: str) -> int | None:
    """A 'Key:  N kB' line of a /proc file, in bytes (None where /proc has no such line)."""
    try:
        for line in Path(path).read_text().splitlines():
            if line.startswith(key + ":"):
                return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    return None


def _cgroup_bytes(root: str | os.PathLike | None, *names: str) -> int | None:
    """The first of ``names`` (relative to the cgroup root) that holds a byte count;
    "max" and v1's "no limit" (a number near 2**63) are no limit."""
    for name in names:
        try:
            text = (cgroup_root(root) / name).read_text().strip()
        except OSError:
            continue
        if text and text != "max" and text.isdigit() and int(text) < 2**60:
            return int(text)
    return None


def memory_limit(root: str | os.PathLike | None = None) -> int | None:
    """The container's memory limit (cgroup v2 memory.max or v1 limit_in_bytes), if any."""
    return _cgroup_bytes(root, "memory.max", "memory/memory.limit_in_bytes")


def host_available_memory() -> int:
    """The host's MemAvailable (all of RAM where /proc has no such line)."""
    return proc_kib("/proc/meminfo", "MemAvailable") or os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")


def available_memory(root: str | os.PathLike | None = None) -> int:
    """Memory this process can still use: the host's MemAvailable, and within a
    container's limit what the cgroup has not used yet, whichever is smaller (a 4 GiB
    container on a 64 GiB host must not plan for 32 GiB: it would be OOM-killed)."""
    host = host_available_memory()
    limit = memory_limit(root)
    if limit is None:
        return host
    used = _cgroup_bytes(root, "memory.current", "memory/memory.usage_in_bytes") or 0
    return max(0, min(host, limit - used))


@contextlib.contextmanager
def run_caches() -> Iterator[None]:
    """A run leaves nothing in $TMPDIR: torch's inductor cache (``torchinductor_USER``,
    made when torch._dynamo is imported) goes into a folder of this run's own, removed at
    the end; ONNX Runtime's telemetry is off, since importing onnxruntime writes a ``.ses``
    session file in $TMPDIR (and a database under ~/.cache). A value the user set for
    TORCHINDUCTOR_CACHE_DIR or ORT_DISABLE_TELEMETRY is kept. Child processes (zoo
    workers, MLServer) inherit both settings; the folder outlives them."""
    import shutil
    import tempfile

    folder = os.path.join(tempfile.gettempdir(), f"onnxforge-run-{os.getpid()}-{secrets.token_hex(4)}")
    ours = {k: v for k, v in (("ORT_DISABLE_TELEMETRY", "1"),
                              ("TORCHINDUCTOR_CACHE_DIR", os.path.join(folder, "torchinductor")))
            if k not in os.environ}
    os.environ.update(ours)
    try:
        yield
    finally:
        for k in ours:
            os.environ.pop(k, None)
        shutil.rmtree(folder, ignore_errors=True)  # made only if torch ran
