"""Small helpers shared by the benchmark scripts (timing tables, medians)."""

from __future__ import annotations

import statistics


def summarize(samples: list[float]) -> dict:
    s = sorted(samples)
    q = statistics.quantiles(s, n=10) if len(s) >= 2 else [s[0]] * 9
    return {"median": statistics.median(s), "p10": q[0], "p90": q[-1], "min": s[0], "max": s[-1], "n": len(s)}


def print_table(headers: list[str], rows: list[list], title: str = "") -> None:
    if title:
        print(title)
    widths = [max(len(str(h)), *(len(str(r[i])) for r in rows)) for i, h in enumerate(headers)]
    line = "  ".join(str(h).ljust(w) for h, w in zip(headers, widths))
    print(line)
    print("-" * len(line))
    for r in rows:
        print("  ".join(str(c).ljust(w) for c, w in zip(r, widths)))


def machine_line() -> str:
    """The CPU and runtimes a table was measured on: int8 ratios differ by ISA (VNNI, AMX)
    as much as by code, so every int8 figure is printed beside the ISA it ran on."""
    from importlib.metadata import PackageNotFoundError, version

    from onnxforge.core.system import cpu_info, cpu_quota, isa_names

    info = cpu_info()
    isa = isa_names(info) or "none of the int8/fp16 extensions"
    runtimes = []
    for pkg in ("onnxruntime", "openvino"):
        try:
            runtimes.append(f"{pkg} {version(pkg)}")
        except PackageNotFoundError:
            pass
    return f"machine: {info['model']}, {cpu_quota()} CPUs, ISA {isa}; {', '.join(runtimes)}"


# ----------------------------------------------------------------------------- a shared, noisy machine


def _cpu_ticks() -> tuple[int, int]:
    """(total, idle) jiffies of the whole machine."""
    v = [int(x) for x in open("/proc/stat").readline().split()[1:]]
    return sum(v), v[3] + v[4]


def _own_ticks() -> int:
    """utime + stime of this process and its waited-for children."""
    import os

    f = open(f"/proc/{os.getpid()}/stat").read().rsplit(")", 1)[1].split()
    return sum(int(x) for x in f[11:15])


class ForeignCpu:
    """The share of the machine's CPU time that other processes used while the block ran
    (0.0 = we had the machine; 0.5 = others used a whole core of two)."""

    def __enter__(self):
        self.t0, self.i0 = _cpu_ticks()
        self.s0 = _own_ticks()
        return self

    def __exit__(self, *exc):
        t1, i1 = _cpu_ticks()
        total = max(1, t1 - self.t0)
        busy = total - (i1 - self.i0)
        self.share = max(0.0, busy - (_own_ticks() - self.s0)) / total
        return False


def wait_quiet(threshold: float = 0.10, window: float = 5.0, max_wait: float = 900.0) -> dict:
    """Sleep until other processes use under ``threshold`` of the CPU over a window
    (others run test suites here); give up after ``max_wait`` s and say so."""
    import sys
    import time

    t0 = time.perf_counter()
    while True:
        with ForeignCpu() as f:
            time.sleep(window)
        waited = time.perf_counter() - t0
        if f.share < threshold or waited >= max_wait:
            load = open("/proc/loadavg").read().split()[:3]
            if waited >= max_wait:
                print(f"[bench] machine still busy after {waited:.0f} s (others at {f.share:.0%}); measuring anyway",
                      file=sys.stderr)
            return {"waited_s": round(waited), "foreign_share_before": round(f.share, 3), "loadavg": load}
        print(f"[bench] waiting for a quiet machine: others at {f.share:.0%} of the CPU", file=sys.stderr)


def paired_ratio(ref_ms, other_ms, seed: int = 0) -> tuple[float, float, float]:
    """Median over rounds of ref/other with its bootstrap 95% interval (rows interleaved,
    so both saw the same load in a round): the recipe chooser's own statistic."""
    from onnxforge.steps.quantize.recipes import paired_speedup

    return paired_speedup(ref_ms, other_ms, seed)
