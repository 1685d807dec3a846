"""A release report as Markdown: report.md and the GitHub Actions step summary."""

from __future__ import annotations

from pathlib import Path

from onnxforge.core.types import ReleaseReport


TITLES = {"passed": "PASSED", "failed": "FAILED", "inconclusive": "INCONCLUSIVE", "error": "ERROR", "interrupted": "INTERRUPTED"}


def markdown(r: ReleaseReport) -> str:
    # the status right after the prefix: CI jobs grep the step summary for it
    named = f" ({r.name})" if r.name else ""
    lines = [f"# onnxforge release: {TITLES.get(r.status, r.status.upper())}{named}", ""]
    if r.failure:
        lines += [f"**Failure:** {_cell(r.failure)} (exit {r.exit_code})", ""]
    if r.hint:
        lines += [f"**Hint:** {_cell(r.hint)}", ""]
    lines += ["## Steps", "", "| # | step | own check | output |", "|---|---|---|---|"]
    for i, run in enumerate(r.planned_steps or [s.step for s in r.steps]):
        if i < len(r.steps):
            s = r.steps[i]
            lines.append(f"| {i} | {_cell(s.step)} | {'pass' if s.passed else 'FAIL'} | "
                         f"{_cell(Path(s.output).name) if s.written else '-'} |")
        else:
            lines.append(f"| {i} | {_cell(run)} | {'ERROR' if r.raised_at == i else 'not run'} | - |")
    lines += ["", "## Parity ledger (each step against the source)", "",
              "| step | against | max abs | min cosine | accuracy | result |", "|---|---|---|---|---|---|"]
    for row in r.ledger:
        outs = row.parity.outputs if row.parity else ()
        max_abs = max((o.max_abs for o in outs), default=0.0)
        cos = min((o.cosine for o in outs), default=1.0)
        acc = f"{row.accuracy:.4f}" if row.accuracy is not None else "-"
        lines.append(f"| {_cell(row.step)} | {_cell(row.against)} | {max_abs:.3g} | {cos:.6f} | {acc} | {'pass' if row.passed else 'FAIL'} |")
    if r.benchmark:
        lines += ["", "## Latency", "", "| model | p50 ms | p90 ms | p99 ms | speed-up |", "|---|---|---|---|---|"]
        sp = {c.model: c for c in r.benchmark.comparisons}
        for b in r.benchmark.results:
            c = sp.get(b.model)
            lines.append(f"| {_cell(Path(b.model).name)} | {b.latency.p50:.4g} | {b.latency.p90:.4g} | {b.latency.p99:.4g} | "
                         f"{f'{c.speedup:.2f}x [{c.ci95[0]:.2f}-{c.ci95[1]:.2f}]' if c else '1.00x'} |")
    lines += ["", "## Gates", "", "| gate | result | detail |", "|---|---|---|"]
    for g in r.gates:
        mark = "pass" if g.passed else "INCONCLUSIVE" if g.status == "inconclusive" else "FAIL"
        lines.append(f"| {_cell(g.name)} | {mark} | {_cell(g.message)} |")
    for name in [n for n in r.planned_gates if n not in {g.name for g in r.gates}]:
        lines.append(f"| {_cell(name)} | not evaluated | - |")
    if r.outputs:
        lines += ["", "## Outputs", ""] + [f"- `{k}` sha256 `{v}`" for k, v in r.outputs.items()]
    return "\n".join(lines) + "\n"


def _cell(text: str) -> str:
    """Text in a table cell or line: a file named ``a|b <x>.onnx`` must not add a column,
    nor be read as HTML (GitHub's step summary drops unknown tags)."""
    text = str(text).replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")
    return text.replace("|", "\\|").replace("\n", " ")
