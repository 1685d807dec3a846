"""Results -> one self-contained HTML file with figures: ``report.html`` of a release,
``benchmark --html`` and ``validate --html``.

It opens from a CI artifact with no network: no script, no CDN, no web font, the CSS
inline and every figure hand-written SVG. The parts, each where the result has it:
the verdict (gates), the parity ledger, per-output error histograms, the latency
distributions of every benchmarked model overlaid with their medians and the
speed-up intervals, and the steps' before/after nodes and sizes.

Why hand-written SVG and not a plotting library: three kinds of plot (overlaid
histograms, interval dots, bars) are ~200 lines here; matplotlib would add ~40 MB
to the install and ~0.5 s of import to every release for the same pictures, and a
JavaScript library (plotly) would put 3.5 MB of script in every report or reach for
a CDN, which a CI artifact viewer may not allow.
"""

from __future__ import annotations

import math
from html import escape
from pathlib import Path
from typing import Any, Sequence

from onnxforge.report.layout import num
from onnxforge import __version__
from onnxforge.core.fileio import atomic_write_text
from onnxforge.core.system import isa_names
from onnxforge.report.markdown import TITLES

PALETTE = ("#4269d0", "#ef8a32", "#3ca951", "#ff725c", "#a463f2", "#97bbf5", "#9c6b4e", "#6cc5b0")
W, H = 680, 260  # the viewBox of a full-width plot; CSS scales it to the page
EW, EH = 440, 230  # an error histogram (shown two or three to a row: its text must stay legible)
M = {"l": 58, "r": 16, "t": 14, "b": 42}

CSS = """
body{font:15px/1.45 system-ui,-apple-system,"Segoe UI",Roboto,sans-serif;color:#1b1f24;margin:0;background:#f6f7f9}
main{max-width:980px;margin:0 auto;padding:20px 24px 48px;background:#fff}
h1{font-size:24px;margin:8px 0 4px}h2{font-size:19px;margin:28px 0 8px;border-bottom:1px solid #e3e6ea}
h3{font-size:15px;margin:16px 0 4px}.meta{color:#57606a;font-size:13px;margin:0}
.badge{display:inline-block;padding:2px 10px;border-radius:12px;color:#fff;font-size:15px;vertical-align:middle}
.pass{background:#1a7f37}.fail{background:#cf222e}.skip{background:#8c959f}
table{border-collapse:collapse;margin:6px 0 10px;font-size:13px}
th,td{padding:4px 10px;border-bottom:1px solid #e3e6ea;text-align:left;vertical-align:top}
td.n{text-align:right;font-variant-numeric:tabular-nums;white-space:nowrap}
td.ok{color:#1a7f37;font-weight:600}td.bad{color:#cf222e;font-weight:600}
figure{margin:10px 0 18px}figure svg{width:100%;max-width:720px;height:auto;display:block}
figcaption{font-size:13px;color:#57606a}.grid{display:flex;flex-wrap:wrap;gap:8px 24px}
.grid figure{flex:1 1 400px;max-width:460px}.scroll{overflow-x:auto}
td.name{word-break:break-all;min-width:8em}details{margin:6px 0}summary{cursor:pointer;font-weight:600}svg text{font:12px system-ui,sans-serif;fill:#1b1f24}
svg .axis{stroke:#8c959f;stroke-width:1}svg .grid{stroke:#eaeef2}
"""


# ----------------------------------------------------------------------------- SVG pieces


def _nice_ticks(lo: float, hi: float, n: int = 5) -> list[float]:
    if not (math.isfinite(lo) and math.isfinite(hi)) or hi <= lo:
        return [lo]
    raw = (hi - lo) / n
    step = 10 ** math.floor(math.log10(raw))
    step *= next(m for m in (1, 2, 2.5, 5, 10) if step * m >= raw)
    first = math.ceil(lo / step) * step
    return [first + i * step for i in range(int((hi - first) / step + 1e-9) + 1)]


def _svg(body: str, label: str, height: int = H, width: int = W) -> str:
    return (f'<svg viewBox="0 0 {width} {height}" width="{width}" height="{height}" role="img" '
            f'aria-label="{escape(label)}" xmlns="http://www.w3.org/2000/svg">{body}</svg>')


def _figure(fig_id: str, svg: str, caption: str, cls: str = "plot") -> str:
    return f'<figure class="{cls}" id="{escape(fig_id)}">{svg}<figcaption>{caption}</figcaption></figure>'


class _Scale:
    """Data -> pixels on one axis, linear or log10."""

    def __init__(self, lo: float, hi: float, a: float, b: float, log: bool = False):
        self.log = log and lo > 0
        f = math.log10 if self.log else float
        self.lo, self.hi = f(lo), f(hi) if hi > lo else f(lo) + 1
        self.a, self.b = a, b

    def __call__(self, v: float) -> float:
        v = math.log10(max(v, 1e-300)) if self.log else v
        return self.a + (v - self.lo) / (self.hi - self.lo) * (self.b - self.a)


def _x_axis(x: _Scale, ticks: Sequence[float], label: str, height: int = H) -> str:
    y0 = height - M["b"]
    out = [f'<line class="axis" x1="{x.a}" y1="{y0}" x2="{x.b}" y2="{y0}"/>']
    for t in ticks:
        px = x(t)
        out.append(f'<line class="axis" x1="{px:.1f}" y1="{y0}" x2="{px:.1f}" y2="{y0 + 4}"/>'
                   f'<text x="{px:.1f}" y="{y0 + 17}" text-anchor="middle">{escape(num(t, 3))}</text>')
    out.append(f'<text x="{(x.a + x.b) / 2}" y="{height - 6}" text-anchor="middle">{escape(label)}</text>')
    return "".join(out)


def _y_axis(y: _Scale, ticks: Sequence[float], label: str, fmt=lambda v: num(v, 3), width: int = W) -> str:
    out = [f'<line class="axis" x1="{M["l"]}" y1="{M["t"]}" x2="{M["l"]}" y2="{y.a}"/>']
    for t in ticks:
        py = y(t)
        out.append(f'<line class="grid" x1="{M["l"]}" y1="{py:.1f}" x2="{width - M["r"]}" y2="{py:.1f}"/>'
                   f'<text x="{M["l"] - 6}" y="{py + 4:.1f}" text-anchor="end">{escape(fmt(t))}</text>')
    out.append(f'<text transform="translate(14,{(M["t"] + y.a) / 2}) rotate(-90)" text-anchor="middle">'
               f'{escape(label)}</text>')
    return "".join(out)


# ----------------------------------------------------------------------------- latency


def latency_svg(results: Sequence[Any]) -> str | None:
    """Every benchmarked model's latency histogram, as a share of runs per ms, overlaid
    on one axis (log when they differ by more than 20x), with each median and its 95%
    interval shaded. None when no result carries bin edges."""
    rows = [r for r in results if len(getattr(r, "histogram_edges", ())) == len(r.histogram) + 1 and r.histogram]
    if not rows:
        return None
    lo = min(r.histogram_edges[0] for r in rows)
    hi = max(r.histogram_edges[-1] for r in rows)
    hi = hi if hi > lo else lo * 1.1 + 1e-9
    x = _Scale(lo, hi, M["l"], W - M["r"], log=hi / max(lo, 1e-12) > 20)
    dens = [[c / max(1, sum(r.histogram)) / max(b - a, 1e-12) for c, a, b in
             zip(r.histogram, r.histogram_edges, r.histogram_edges[1:])] for r in rows]
    top = max(max(d) for d in dens) * 1.08 or 1.0
    y = _Scale(0, top, H - M["b"], M["t"])
    body = [_y_axis(y, _nice_ticks(0, top, 4), "share of runs per ms"),
            _x_axis(x, _log_ticks(lo, hi) if x.log else _nice_ticks(lo, hi), "latency (ms)")]
    for i, (r, d) in enumerate(zip(rows, dens)):
        colour = PALETTE[i % len(PALETTE)]
        ci = r.latency.ci95
        body.append(f'<rect x="{x(ci[0]):.1f}" y="{M["t"]}" width="{max(1.0, x(ci[1]) - x(ci[0])):.1f}" '
                    f'height="{y.a - M["t"]}" fill="{colour}" opacity="0.18"/>')
        pts = [f"{x(r.histogram_edges[0]):.1f},{y(0):.1f}"]
        for v, a, b in zip(d, r.histogram_edges, r.histogram_edges[1:]):
            pts += [f"{x(a):.1f},{y(v):.1f}", f"{x(b):.1f},{y(v):.1f}"]
        pts.append(f"{x(r.histogram_edges[-1]):.1f},{y(0):.1f}")
        body.append(f'<polyline class="series" points="{" ".join(pts)}" fill="{colour}" fill-opacity="0.12" '
                    f'stroke="{colour}" stroke-width="2"/>')
        body.append(f'<line x1="{x(r.latency.p50):.1f}" y1="{M["t"]}" x2="{x(r.latency.p50):.1f}" y2="{y.a}" '
                    f'stroke="{colour}" stroke-dasharray="5 3" stroke-width="1.5"/>')
        body.append(f'<rect x="{W - M["r"] - 250}" y="{M["t"] + 4 + 18 * i}" width="12" height="12" '
                    f'fill="{colour}"/><text x="{W - M["r"] - 232}" y="{M["t"] + 14 + 18 * i}">'
                    f'{escape(_short(Path(r.model).name, 22))}{escape(_runtime_tag(r))}: p50 '
                    f'{escape(num(r.latency.p50))} ms</text>')
    return _svg("".join(body), "latency distributions")


def _runtime_tag(r: Any) -> str:
    """' @openvino' for a row OpenVINO ran: the same model may have a row on each runtime."""
    rt = getattr(r, "runtime", "ort")
    return "" if rt == "ort" else f" @{rt}"


def _log_ticks(lo: float, hi: float) -> list[float]:
    return [10.0 ** e for e in range(math.ceil(math.log10(lo)), math.floor(math.log10(hi)) + 1)] or [lo, hi]


def _short(text: str, n: int) -> str:
    return text if len(text) <= n else text[: n - 3] + "..."


def speedup_svg(comparisons: Sequence[Any], min_speedup: float | None = None) -> str | None:
    """Each model's speed-up over the first (ratio of medians) with its 95% interval, the
    line at 1x, and the gate's minimum when there is one."""
    if not comparisons:
        return None
    height = M["t"] + M["b"] + 34 * len(comparisons) + 10
    vals = [v for c in comparisons for v in (c.ci95[0], c.ci95[1], c.speedup)] + [1.0] + \
        ([min_speedup] if min_speedup else [])
    lo, hi = min(vals), max(vals)
    pad = (hi - lo) * 0.12 or 0.1
    left = 200
    x = _Scale(lo - pad, hi + pad, left, W - M["r"])
    y0 = height - M["b"]
    body = [_x_axis(x, _nice_ticks(lo - pad, hi + pad), "speed-up over the first model (x, higher is faster)",
                    height)]
    for v, style, name in ((1.0, 'stroke="#8c959f"', "1x"), (min_speedup, 'stroke="#cf222e" stroke-dasharray="6 4"',
                                                              f"gate {num(min_speedup or 0, 3)}x")):
        if v:
            body.append(f'<line x1="{x(v):.1f}" y1="{M["t"]}" x2="{x(v):.1f}" y2="{y0}" {style}/>'
                        f'<text x="{x(v) + 4:.1f}" y="{y0 - 4}">{escape(name)}</text>')
    for i, c in enumerate(comparisons):
        cy = M["t"] + 24 + 34 * i
        colour = PALETTE[(i + 1) % len(PALETTE)]
        right = x(c.ci95[1]) < W - 170  # the numbers beside the interval, on the side with room
        tx, anchor = (x(c.ci95[1]) + 10, "start") if right else (x(c.ci95[0]) - 10, "end")
        body.append(f'<text x="{left - 8}" y="{cy + 4}" text-anchor="end">{escape(_short(Path(c.model).name, 26))}'
                    f'</text><line x1="{x(c.ci95[0]):.1f}" y1="{cy}" x2="{x(c.ci95[1]):.1f}" y2="{cy}" '
                    f'stroke="{colour}" stroke-width="3"/><circle class="series" cx="{x(c.speedup):.1f}" cy="{cy}" '
                    f'r="6" fill="{colour}"/><text x="{tx:.1f}" y="{cy + 4}" text-anchor="{anchor}">'
                    f'{c.speedup:.2f}x [{c.ci95[0]:.2f}-{c.ci95[1]:.2f}]</text>')
    return _svg("".join(body), "speed-up intervals", height)


# ----------------------------------------------------------------------------- errors


def error_svg(d: Any) -> str | None:
    """One output's |reference - candidate| histogram: bars between log-spaced edges (the
    first bin holds the exact matches), the output's atol marked."""
    counts, edges = tuple(getattr(d, "error_histogram", ())), tuple(getattr(d, "error_edges", ()))
    if not counts or len(edges) != len(counts) + 1:
        return None
    n = len(counts)
    x = _Scale(0, n, M["l"], EW - M["r"])
    top = max(counts) * 1.1 or 1
    y = _Scale(0, top, EH - M["b"], M["t"])
    body = [_y_axis(y, _nice_ticks(0, top, 4), "elements", fmt=lambda v: f"{v:.0f}", width=EW)]
    for i, c in enumerate(counts):
        body.append(f'<rect class="series" x="{x(i) + 1:.1f}" y="{y(c):.1f}" width="{x(1) - x(0) - 2:.1f}" '
                    f'height="{y.a - y(c):.1f}" fill="{PALETTE[0] if i else "#8c959f"}"><title>'
                    f'{escape(f"[{num(edges[i], 3)}, {num(edges[i + 1], 3)}): {c}")}</title></rect>')
    y0 = EH - M["b"]
    every = max(1, math.ceil((n + 1) / 5))
    for i in range(0, n + 1, every):
        anchor = "end" if i == n else "start" if i == 0 else "middle"  # the outer labels stay inside the figure
        body.append(f'<text x="{x(i):.1f}" y="{y0 + 17}" text-anchor="{anchor}">{escape(num(edges[i], 2))}</text>')
    body.append(f'<line class="axis" x1="{M["l"]}" y1="{y0}" x2="{EW - M["r"]}" y2="{y0}"/>'
                f'<text x="{(M["l"] + EW - M["r"]) / 2}" y="{EH - 6}" text-anchor="middle">|reference - candidate| '
                f'(grey: exact matches)</text>')
    atol = getattr(d, "atol", 0.0)
    if atol and math.isfinite(atol) and n > 1 and 0 < edges[1] < edges[-1] and edges[1] < atol < edges[-1] * 10:
        pos = 1 + (math.log10(atol) - math.log10(edges[1])) / (math.log10(edges[-1]) - math.log10(edges[1])) * (n - 1)
        px = x(min(pos, n))
        tx, anchor = (px + 4, "start") if px < EW - 90 else (px - 4, "end")
        body.append(f'<line x1="{px:.1f}" y1="{M["t"]}" x2="{px:.1f}" y2="{y0}" stroke="#cf222e" '
                    f'stroke-dasharray="6 4"/><text x="{tx:.1f}" y="{M["t"] + 10}" text-anchor="{anchor}">'
                    f'atol {num(atol, 2)}</text>')
    return _svg("".join(body), f"error histogram of {d.name}", EH, EW)


def layerwise_svg(lw: Any) -> str | None:
    """The relative error of every shared tensor along the reference's depth (log scale
    when it spans more than 20x), the tensors whose nodes add the most error in red."""
    rows = list(getattr(lw, "rows", ()))
    vals = [r.rel_err for r in rows if math.isfinite(r.rel_err)]
    if not vals:
        return None
    positive = [v for v in vals if v > 0]
    lo, hi = (min(positive), max(positive)) if positive else (0.0, 1.0)
    log = bool(positive) and hi / lo > 20
    lo = lo / 1.5 if log else 0.0
    hi = hi * (1.5 if log else 1.1) or 1.0
    x = _Scale(0, max(1, len(rows) - 1), M["l"], W - M["r"])
    y = _Scale(lo, hi, H - M["b"], M["t"], log=log)
    ticks = _log_ticks(lo, hi) if log else _nice_ticks(lo, hi, 4)
    body = [_y_axis(y, ticks, "relative error"),
            _x_axis(x, _nice_ticks(0, max(1, len(rows) - 1)), "shared tensor, in the reference's order")]
    clamp = (lambda v: min(max(v, lo), hi)) if log else (lambda v: v)
    pts = [f"{x(i):.1f},{y(clamp(r.rel_err)):.1f}" for i, r in enumerate(rows) if math.isfinite(r.rel_err)]
    body.append(f'<polyline class="series" points="{" ".join(pts)}" fill="none" stroke="{PALETTE[0]}" '
                f'stroke-width="1.5"/>')
    top = set(getattr(lw, "top", ()))
    for i, r in enumerate(rows):
        if not math.isfinite(r.rel_err):
            continue
        colour, radius = ("#cf222e", 4.5) if r.tensor in top else (PALETTE[0], 2.5)
        body.append(f'<circle cx="{x(i):.1f}" cy="{y(clamp(r.rel_err)):.1f}" r="{radius}" fill="{colour}"><title>'
                    f'{escape(f"{r.tensor} ({r.op_type}): rel err {num(r.rel_err)}, growth {num(r.growth)}")}'
                    f'</title></circle>')
    return _svg("".join(body), "error along depth")


def layerwise_section(lw: Any, fig_id: str = "layerwise") -> str:
    """validate --layerwise (or a release's failing step): the error along depth, the
    tensors whose nodes add the most, and every row a click away."""
    by_name = {r.tensor: r for r in lw.rows}
    out = ["<h3>Layer-wise error (first sample)</h3>"]
    svg = layerwise_svg(lw)
    if svg:
        out.append(_figure(fig_id, svg, "Relative error ||ref - cand|| / ||ref|| of every tensor both models "
                                             "compute, in the reference's order; red: the 5 whose nodes add the "
                                             "most error."))

    def row(r) -> tuple:
        return (r.index, (r.tensor, "name"), r.op_type, (r.node, "name"), "x".join(map(str, r.shape)) or "scalar",
                num(r.max_abs), num(r.mean_abs), num(r.cosine, 6), num(r.rel_err), num(r.growth))

    headers = ("#", "tensor", "op", "node", "shape", "max abs", "mean abs", "cosine", "rel err", "growth")
    if lw.top:
        out.append("<p><strong>Most error added</strong></p>" + _table(headers, [row(by_name[t]) for t in lw.top],
                                                        numeric=(0, 5, 6, 7, 8, 9)))
    out.append(f"<details><summary>all {len(lw.rows)} shared tensors</summary>"
               f"{_table(headers, [row(r) for r in lw.rows], numeric=(0, 5, 6, 7, 8, 9))}</details>")
    out += [f'<p class="meta">{escape(m)}</p>' for m in (lw.message, f"saved: {lw.saved}" if lw.saved else "") if m]
    return "".join(out)


# ----------------------------------------------------------------------------- tables and sections


def _table(headers: Sequence[str], rows: Sequence[Sequence[Any]], numeric: Sequence[int] = ()) -> str:
    """Cells are escaped; a (text, css class) pair gives a cell its class."""
    head = "".join(f"<th>{escape(h)}</th>" for h in headers)
    body = []
    for r in rows:
        cells = []
        for i, c in enumerate(r):
            text, cls = c if isinstance(c, tuple) else (c, "n" if i in numeric else "")
            cells.append(f'<td class="{cls}">{escape(str(text))}</td>' if cls else f"<td>{escape(str(text))}</td>")
        body.append("<tr>" + "".join(cells) + "</tr>")
    return f'<div class="scroll"><table><thead><tr>{head}</tr></thead><tbody>{"".join(body)}</tbody></table></div>'


def _ok(passed: bool | None) -> tuple[str, str]:
    return ("pass", "ok") if passed else ("FAIL", "bad") if passed is not None else ("-", "")


def _gates(gates: Sequence[Any]) -> str:
    return _table(("gate", "result", "value", "limit", "detail"),
                  [(g.name, ("inconclusive", "bad") if getattr(g, "status", "") == "inconclusive" else _ok(g.passed),
                    num(g.value), num(g.limit), g.message) for g in gates], numeric=(2, 3))


def parity_section(rep: Any, heading: str | None = None) -> str:
    """A parity report: its table and one error histogram per output."""
    rows = [((d.name, "name"), "x".join(map(str, d.shape)) or "scalar", num(d.max_abs), num(d.max_rel), num(d.p99_abs),
             f"{d.mismatch_fraction:.2%}", num(d.cosine, 6), f"{d.atol:g} / {d.rtol:g}", _ok(d.passed),
             d.message or d.nonfinite) for d in rep.outputs]
    out = [f"<h3>{escape(heading or f'{rep.candidate} vs {rep.reference}')}</h3>",
           f'<p class="meta">{rep.samples} sample(s), check {escape(rep.check_stat)}</p>']
    if rows or rep.generation is None:
        out.append(_table(("output", "shape", "max abs", "max rel", "p99 abs", "mismatch", "cosine", "atol / rtol",
                           "result", "why"), rows, numeric=(2, 3, 4, 5, 6)))
    if rep.generation is not None:
        out.append(_generation_table(rep.generation))
    out += [f"<p>problem: {escape(p)}</p>" for p in rep.problems]
    figs = []
    for i, d in enumerate(rep.outputs):
        svg = error_svg(d)
        if svg:
            figs.append(_figure(f"errors-{_slug(heading or 'parity')}-{i}", svg,
                                f"{escape(d.name)}: max abs {escape(num(d.max_abs))}, cosine {escape(num(d.cosine, 6))}",
                                cls="plot errors"))
    if figs:
        out.append('<div class="grid">' + "".join(figs) + "</div>")
    if getattr(rep, "layerwise", None) is not None:
        out.append(layerwise_section(rep.layerwise, f"layerwise-{_slug(heading or 'parity')}"))
    return "".join(out)


def _generation_table(g: Any) -> str:
    """Greedy decoding step by step: each side's tokens (one per prompt) and the logit error."""
    rows = []
    for i in range(g.tokens):
        ref = " ".join(str(t[i]) for t in g.reference_tokens)
        cand = " ".join(str(t[i]) for t in g.candidate_tokens)
        err = g.step_errors[i] if i < len(g.step_errors) else None
        rows.append((i + 1, ref, cand, num(err) if err is not None else "-", _ok(ref == cand and (err or 0) <= g.atol)))
    head = (f"<p>generation: {g.tokens_equal}/{g.tokens} greedy tokens equal ({g.batch} prompts of "
            f"{g.prompt_length} tokens), max logit error {escape(num(g.max_logit_error))} (atol {g.atol:g})</p>")
    return head + _table(("step", "reference tokens", "candidate tokens", "logit error", "result"), rows, numeric=(3,))


def _slug(text: str) -> str:
    return "".join(ch if ch.isalnum() else "-" for ch in text.lower()).strip("-")


def benchmark_section(rep: Any, min_speedup: float | None = None) -> str:
    """Latency: the overlaid distributions, the speed-up intervals, the numbers."""
    rows = []
    for i, r in enumerate(rep.results):
        L, c = r.latency, rep.comparisons[i - 1] if i else None  # one per row after the first, in order
        rows.append(((Path(r.model).name, "name"), r.target, r.batch, r.threads, L.n, num(L.p50), num(L.p90),
                     num(L.p99), f"{num(L.ci95[0])} - {num(L.ci95[1])}", num(r.throughput),
                     f"{c.speedup:.2f}x [{c.ci95[0]:.2f} - {c.ci95[1]:.2f}]" if c else "1.00x"))
    out = ["<h2>Latency</h2>"]
    svg = latency_svg(rep.results)
    if svg:
        out.append(_figure("latency", svg, "Latency distributions (min to p99; the slowest 1% in the last bin), "
                                           "dashed: median, shaded: its 95% interval."))
    gate = min_speedup if min_speedup is not None else next(
        (g.limit for g in rep.gates if g.kind == "speedup" or g.name == "min_speedup"), None)
    svg = speedup_svg(rep.comparisons, gate)
    if svg:
        out.append(_figure("speedup", svg, "Speed-up over the first model (ratio of medians) with its 95% interval."))
    out.append(_table(("model", "provider", "batch", "threads", "n", "p50 ms", "p90 ms", "p99 ms", "p50 95% CI",
                       "items/s", "speed-up"), rows, numeric=(2, 3, 4, 5, 6, 7, 8, 9, 10)))
    env = rep.environment or {}
    cpu = env.get("cpu", {})
    isa = isa_names(cpu)
    out.append(f'<p class="meta">{escape(str(cpu.get("model")))} ({escape(isa)}); quota {env.get("cpu_quota")} '
               f'cores; onnxruntime {escape(str(env.get("onnxruntime")))}</p>')
    out += [f'<p class="meta">note: {escape(n)}</p>' for n in rep.notes]
    return "".join(out)


def steps_section(r: Any) -> str:
    """The release's steps: time, nodes and file size before and after each."""
    def size(g) -> str:
        return f"{g.file_bytes / 2**20:.2f} MiB" if g else "-"

    rows = []
    for i, s in enumerate(r.steps):
        secs = r.step_seconds[i] if i < len(r.step_seconds) else None
        rows.append((i, s.step, f"{secs:.1f} s" if secs is not None else "-", _ok(s.passed),
                     s.before.nodes if s.before else "-", s.after.nodes if s.after else "-", size(s.before),
                     size(s.after)))
    return "<h2>Steps: before and after</h2>" + _table(
        ("#", "step", "time", "own check", "nodes before", "nodes after", "size before", "size after"), rows,
        numeric=(0, 2, 4, 5, 6, 7))


def ledger_section(r: Any) -> str:
    rows = []
    for row in r.ledger:
        outs = row.parity.outputs if row.parity else ()
        rows.append((row.step, row.against, num(max((o.max_abs for o in outs), default=0.0)),
                     num(min((o.cosine for o in outs), default=1.0), 6),
                     f"{row.accuracy:.4f}" if row.accuracy is not None else "-", _ok(row.passed)))
    out = ["<h2>Parity ledger (each step against the source)</h2>",
           _table(("step", "against", "max abs", "min cosine", "accuracy", "result"), rows, numeric=(2, 3, 4))]
    out.append("<h2>Error distributions</h2>")
    for i, row in enumerate(r.ledger):  # the model that ships (the last step) open, the others a click away
        if row.parity is not None:
            outs = row.parity.outputs
            summary = (f"step {i} {row.step} vs {row.against}: max abs {num(max((o.max_abs for o in outs), default=0))}"
                       f", min cosine {num(min((o.cosine for o in outs), default=1), 6)}")
            is_open = " open" if i == len(r.ledger) - 1 else ""
            out.append(f'<details{is_open}><summary>{escape(summary)}</summary>'
                       f'{parity_section(row.parity, f"step {i} {row.step} vs {row.against}")}</details>')
    return "".join(out)


def _page(title: str, passed: bool, status: str, meta: str, sections: Sequence[str]) -> str:
    badge = "pass" if passed else "fail"
    return ("<!doctype html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">"
            "<meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">"
            f"<title>{escape(title)}: {escape(status)}</title><style>{CSS}</style></head><body><main>"
            f'<header><h1>{escape(title)} <span class="badge {badge}" id="verdict-badge">{escape(status)}</span></h1>'
            f'<p class="meta">{meta} &middot; onnxforge {escape(__version__)}</p></header>'
            + "".join(sections) + "</main></body></html>\n")


def html_report(result: Any) -> str:
    """The HTML page for a ReleaseReport, a BenchmarkReport or a ParityReport."""
    kind = type(result).__name__
    if kind == "ReleaseReport":
        return _release_page(result)
    if kind == "BenchmarkReport":
        sections = [_verdict_section(result.gates, result.passed), benchmark_section(result)]
        return _page("onnxforge benchmark", result.passed, result.status.upper(),
                     f"{len(result.results)} row(s)", sections)
    if kind == "ParityReport":
        sections = ["<h2>Parity</h2>", parity_section(result)]
        return _page("onnxforge validate", result.passed, "PASSED" if result.passed else "FAILED",
                     escape(f"{result.candidate} vs {result.reference}"), sections)
    raise TypeError(f"no HTML report for a {kind}")


def _verdict_section(gates: Sequence[Any], passed: bool, failure: str | None = None) -> str:
    out = ["<h2>Verdict</h2>"]
    if failure:
        out.append(f'<p class="bad"><strong>failure:</strong> {escape(failure)}</p>')
    out.append(_gates(gates) if gates else f"<p>{'every check passed' if passed else 'a check failed'}</p>")
    return "".join(out)


def _release_page(r: Any) -> str:
    sections = [_verdict_section(r.gates, r.passed, r.failure), ledger_section(r)]
    if r.benchmark is not None:
        lat = next((g.limit for g in r.gates if g.name == "min_speedup"), None)
        sections.append(benchmark_section(r.benchmark, lat))
    sections.append(steps_section(r))
    if r.outputs:
        sections.append("<h2>Outputs</h2>" + _table(("file", "sha256"), list(r.outputs.items())))
    status = TITLES.get(r.status, r.status.upper())
    title = f"{r.name}: onnxforge release" if r.name else "onnxforge release"
    return _page(title, r.passed, status, f"{len(r.steps)} step(s) in {r.seconds} s", sections)


def write_html(path: str | Path, result: Any) -> None:
    """Write ``html_report(result)`` atomically (a temporary file, then renamed)."""
    atomic_write_text(str(path), html_report(result))
