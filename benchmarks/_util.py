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
