"""A release report as Markdown: report.md and the GitHub Actions step summary."""

from __future__ import annotations

from pathlib import Path

from onnxforge.types import ReleaseReport


def markdown(r: ReleaseReport) -> str:
    lines = [f"# onnxforge release: {'PASSED' if r.passed else 'FAILED'}", ""]
    if r.failure:
        lines += [f"**Failure:** {r.failure}", ""]
    lines += ["## Steps", "", "| # | step | own check | output |", "|---|---|---|---|"]
    for i, s in enumerate(r.steps):
        lines.append(f"| {i} | {s.step} | {'pass' if s.passed else 'FAIL'} | {Path(s.output).name if s.written else '-'} |")
    lines += ["", "## Parity ledger (each step against the source)", "",
              "| step | against | max abs | min cosine | accuracy | result |", "|---|---|---|---|---|---|"]
    for row in r.ledger:
        outs = row.parity.outputs if row.parity else ()
        max_abs = max((o.max_abs for o in outs), default=0.0)
        cos = min((o.cosine for o in outs), default=1.0)
        acc = f"{row.accuracy:.4f}" if row.accuracy is not None else "-"
        lines.append(f"| {row.step} | {row.against} | {max_abs:.3g} | {cos:.6f} | {acc} | {'pass' if row.passed else 'FAIL'} |")
    if r.benchmark:
        lines += ["", "## Latency", "", "| model | p50 ms | p90 ms | p99 ms | speed-up |", "|---|---|---|---|---|"]
        sp = {c.model: c for c in r.benchmark.comparisons}
        for b in r.benchmark.results:
            c = sp.get(b.model)
            lines.append(f"| {Path(b.model).name} | {b.latency.p50:.4g} | {b.latency.p90:.4g} | {b.latency.p99:.4g} | "
                         f"{f'{c.speedup:.2f}x [{c.ci95[0]:.2f}-{c.ci95[1]:.2f}]' if c else '1.00x'} |")
    lines += ["", "## Gates", "", "| gate | result | detail |", "|---|---|---|"]
    for g in r.gates:
        lines.append(f"| {g.name} | {'pass' if g.passed else 'FAIL'} | {g.message} |")
    if r.outputs:
        lines += ["", "## Outputs", ""] + [f"- `{k}` sha256 `{v}`" for k, v in r.outputs.items()]
    return "\n".join(lines) + "\n"
