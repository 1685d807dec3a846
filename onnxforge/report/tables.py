"""Results -> rich tables for people: one renderer per result type (``_RENDERERS``)."""

from __future__ import annotations

import json
import math
from typing import Any, Callable

from onnxforge.report import to_jsonable


def _fmt_bytes(n: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB"):
        if abs(n) < 1024 or unit == "GiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n}"


def _fmt_num(x: float | None) -> str:
    if x is None:
        return "-"
    if isinstance(x, float) and (math.isnan(x) or math.isinf(x)):
        return str(x)
    if x == 0:
        return "0"
    if abs(x) >= 1e4 or abs(x) < 1e-3:
        return f"{x:.2e}"
    return f"{x:.4g}"


def _esc(x: Any) -> str:
    from rich.markup import escape

    return escape(str(x))


def _render_model_info(info, console) -> None:
    from rich.table import Table

    head = Table(show_header=False, box=None, pad_edge=False)
    head.add_column(style="bold")
    head.add_column()
    rt = info.runtime
    head.add_row("model", _esc(info.path))
    head.add_row("size", _fmt_bytes(info.file_bytes))
    head.add_row("ir_version", str(info.ir_version))
    head.add_row("opsets", ", ".join(f"{d or 'ai.onnx'}={v}" for d, v in info.opsets.items()))
    head.add_row("producer", _esc(f"{info.producer} {info.producer_version}".strip() or "-"))
    head.add_row("graph", _esc(info.graph_name or "-"))
    head.add_row("nodes", str(info.node_count))
    head.add_row(
        "parameters",
        f"{info.parameter_count:,} in {info.initializer_count} initializers "
        f"({_fmt_bytes(info.parameter_bytes)})",
    )
    if info.external_data:
        total = sum(info.external_data.values())
        head.add_row("external data", f"{len(info.external_data)} file(s), {_fmt_bytes(total)}")
    ok = rt.get("supported")
    verdict = "[green]yes[/]" if ok else f"[red]no[/]: {_esc(rt.get('reason', ''))}"
    head.add_row(
        "onnxruntime",
        f"{rt.get('version')} (IR <= {rt.get('max_ir_version')}, "
        f"ai.onnx opset <= {rt.get('max_opset')}); runs this model: {verdict}",
    )
    console.print(head)

    io = Table(title="inputs and outputs", title_justify="left")
    for col in ("", "name", "dtype", "shape"):
        io.add_column(col)
    for kind, specs in (("in", info.inputs), ("out", info.outputs)):
        for s in specs:
            shape = "[" + ", ".join("?" if d is None else str(d) for d in s.shape) + "]"
            io.add_row(kind, _esc(s.name), s.dtype, _esc(shape))
    console.print(io)

    ops = Table(title="op types", title_justify="left")
    ops.add_column("op")
    ops.add_column("count", justify="right")
    for op, n in info.op_histogram.items():
        ops.add_row(_esc(op), str(n))
    console.print(ops)
    if info.metadata:
        meta = Table(title="metadata_props", title_justify="left")
        meta.add_column("key")
        meta.add_column("value")
        for k, v in info.metadata.items():
            meta.add_row(_esc(k), _esc(v))
        console.print(meta)


def _render_parity(report, console) -> None:
    from rich.table import Table

    title = _esc(f"parity: {report.candidate} vs {report.reference} ({report.samples} sample(s), check={report.check_stat})")
    t = Table(title=title, title_justify="left")
    for col in ("output", "shape", "max abs", "max rel", "mean abs", "p99 abs", "mismatch", "cosine", "atol/rtol", ""):
        t.add_column(col, justify="right" if col not in ("output", "") else "left")
    for d in report.outputs:
        mark = "[green]pass[/]" if d.passed else "[red]FAIL[/]"
        extra = []
        if d.label_agreement is not None:
            extra.append(f"labels {d.label_agreement:.2%}")
        if d.nonfinite:
            extra.append(_esc(d.nonfinite))
        if d.message and not d.passed:
            extra.append(_esc(d.message))
        t.add_row(
            _esc(d.name),
            "x".join(map(str, d.shape)) or "scalar",
            _fmt_num(d.max_abs),
            _fmt_num(d.max_rel),
            _fmt_num(d.mean_abs),
            _fmt_num(d.p99_abs),
            f"{d.mismatch_fraction:.2%}",
            _fmt_num(d.cosine),
            f"{d.atol:g}/{d.rtol:g}",
            mark + (" " + "; ".join(extra) if extra else ""),
        )
    console.print(t)
    for p in report.problems:
        console.print(f"[red]problem:[/] {_esc(p)}")
    for n in report.notes:
        console.print(f"note: {_esc(n)}")
    loc = report.localized
    if loc is not None and loc.node:
        console.print(f"first diverging node: [bold]{_esc(loc.node)}[/] ({_esc(loc.op_type)}), "
                      f"output {_esc(loc.output)}: max abs {_fmt_num(loc.max_abs)}")
    elif loc is not None:
        console.print(f"localize: {_esc(loc.message)}")
    console.print("[green]PASSED[/]" if report.passed else "[red]FAILED[/]")


def _render_step(res, console) -> None:
    for c in res.checks:
        _render_parity(c, console)
    if res.before and res.after:
        _render_before_after(res.before, res.after, console)
    for e in res.engines:
        extra = e.reason or (f"{e.after.nodes} nodes" if e.after else "")
        engine = f" via {e.engine}" if e.engine else ""
        colour = "green" if e.status == "ok" else "yellow" if e.status in ("skipped", "reverted") else "red"
        console.print(f"step {_esc(e.step)}{_esc(engine)}: [{colour}]{e.status}[/] "
                      f"({e.seconds} s{'; ' + _esc(extra) if extra else ''})")
    sp = res.speed
    if sp:
        console.print(f"speed: fp32 p50 {sp.reference_p50_ms:.4g} ms, new p50 {sp.p50_ms:.4g} ms: "
                      f"[bold]{sp.speedup:.2f}x[/] (95% CI {sp.ci95[0]:.2f}-{sp.ci95[1]:.2f}, "
                      f"{sp.iterations} interleaved runs each)")
    if res.before and res.after and res.step.startswith("quantize"):
        ratio = res.after.file_bytes / max(1, res.before.file_bytes)
        console.print(f"size: {_fmt_bytes(res.before.file_bytes)} -> {_fmt_bytes(res.after.file_bytes)} ({ratio:.0%})")
    if len(res.trials) > 1:
        for t in res.trials:
            console.print(_esc(f"trial {t.trial}: excluded {len(t.excluded_nodes)} node(s) "
                               f"{list(t.excluded_nodes[:6])}, parity {'pass' if t.parity_passed else 'FAIL'}, "
                               f"min cosine {t.min_cosine}, speed-up {t.speedup:.2f}x"))
    for op, (b, a) in res.fusions.items():
        console.print(f"fusion {_esc(op)}: {b} -> {a}")
    for key, value in res.details.items():
        if not isinstance(value, (dict, list, tuple)):
            console.print(f"{_esc(key)}: {_esc(value)}")
    for n in res.notes:
        console.print(f"note: {_esc(n)}")
    where = res.output if res.written else f"nothing written (would be {res.output})"
    verdict = "[green]PASSED[/]" if res.passed else "[red]FAILED[/]"
    console.print(f"{_esc(res.step)}: {verdict} -> {_esc(where)}")


def _render_before_after(b, a, console) -> None:
    from rich.table import Table

    t = Table(title="before / after", title_justify="left")
    for col in ("", "before", "after"):
        t.add_column(col, justify="right" if col else "left")
    t.add_row("nodes", str(b.nodes), str(a.nodes))
    t.add_row("initializer_bytes", _fmt_bytes(b.initializer_bytes), _fmt_bytes(a.initializer_bytes))
    t.add_row("file_bytes", _fmt_bytes(b.file_bytes), _fmt_bytes(a.file_bytes))
    for op in sorted(set(b.ops) | set(a.ops)):
        nb, na = b.ops.get(op, 0), a.ops.get(op, 0)
        if nb != na:
            t.add_row(f"  {_esc(op)}", str(nb), str(na))
    console.print(t)


def _render_benchmark(rep, console, gates: bool = True) -> None:
    from pathlib import Path

    from rich.table import Table

    from onnxforge.stats import sparkline

    speed = {c.model: c for c in rep.comparisons}
    t = Table(title="latency (ms)", title_justify="left")
    for col in ("model", "provider", "batch", "thr", "n", "p50", "p90", "p99", "mean±std", "p50 95% CI", "items/s",
                "CV", "speed-up", "distribution (min..p99)"):
        t.add_column(col, justify="left" if col in ("model", "provider", "distribution (min..p99)") else "right")
    for i, r in enumerate(rep.results):
        L = r.latency
        c = speed.get(r.model) if i else None
        sp = f"{c.speedup:.2f}x [{c.ci95[0]:.2f}-{c.ci95[1]:.2f}]" if c else ("1.00x" if rep.comparisons else "-")
        cv = f"{r.cv:.1%}" if r.cv <= 0.10 else f"[yellow]{r.cv:.1%}[/]"
        t.add_row(_esc(Path(r.model).name), _esc(r.requested_provider), str(r.batch), str(r.threads), str(L.n),
                  f"{L.p50:.4g}", f"{L.p90:.4g}", f"{L.p99:.4g}", f"{L.mean:.4g}±{L.std:.2g}",
                  f"{L.ci95[0]:.4g}-{L.ci95[1]:.4g}", f"{r.throughput:.4g}", cv, sp, sparkline(r.histogram))
    console.print(t)
    for r in rep.results:
        if r.placement:
            where = ", ".join(f"{k}: {v}" for k, v in r.placement.items())
            console.print(f"placement {_esc(Path(r.model).name)} ({_esc(r.requested_provider)}): {_esc(where)} nodes")
    for g in rep.gates if gates else ():
        console.print(("[green]pass[/] " if g.passed else "[red]FAIL[/] ") + f"{g.name}: {_esc(g.message)}")
    env = rep.environment
    cpu = env.get("cpu", {})
    isa = ", ".join(k for k, v in cpu.get("isa", {}).items() if v)
    console.print(_esc(f"cpu: {cpu.get('model')} ({isa}); quota {env.get('cpu_quota')} cores; "
                       f"onnxruntime {env.get('onnxruntime')} ({env.get('device')})"))
    for n in rep.notes:
        console.print(f"note: {_esc(n)}")
    if rep.gates and gates:
        console.print("[green]PASSED[/]" if rep.passed else "[red]FAILED[/]")


def _render_release(r, console) -> None:

    from rich.table import Table

    t = Table(title="steps and parity ledger (each step against the source)", title_justify="left")
    for col in ("#", "step", "own check", "vs", "max abs", "min cosine", "accuracy", "ledger"):
        t.add_column(col, justify="right" if col in ("#", "max abs", "min cosine", "accuracy") else "left")
    for i, s in enumerate(r.steps):
        row = r.ledger[i] if i < len(r.ledger) else None
        outs = row.parity.outputs if row and row.parity else ()
        t.add_row(str(i), _esc(s.step), "[green]pass[/]" if s.passed else "[red]FAIL[/]",
                  _esc(row.against) if row else "-",
                  _fmt_num(max((o.max_abs for o in outs), default=0.0)) if outs else "-",
                  f"{min(o.cosine for o in outs):.6f}" if outs else "-",
                  f"{row.accuracy:.4f}" if row and row.accuracy is not None else "-",
                  ("[green]pass[/]" if row.passed else "[red]FAIL[/]") if row else "-")
    console.print(t)
    if r.benchmark:
        _render_benchmark(r.benchmark, console, gates=False)  # its gates are in the verdict
    g = Table(title="verdict", title_justify="left")
    g.add_column("gate")
    g.add_column("result")
    g.add_column("detail")
    for gate in r.gates:
        g.add_row(_esc(gate.name), "[green]pass[/]" if gate.passed else "[red]FAIL[/]", _esc(gate.message))
    console.print(g)
    if r.failure:
        console.print(f"[red]failure:[/] {_esc(r.failure)}")
    for k, v in r.outputs.items():
        console.print(f"{_esc(k)}  sha256 {v}")
    console.print(("[green]RELEASE PASSED[/]" if r.passed else "[red]RELEASE FAILED[/]") + f" ({r.seconds} s)")


def _render_package(res, console) -> None:
    if res.proof is not None:
        _render_parity(res.proof, console)
    for c in res.checks:
        console.print(f"[green]ok[/] {_esc(c)}")
    for p in res.problems:
        console.print(f"[red]problem:[/] {_esc(p)}")
    console.print(_esc(f"{res.target} package of {res.source}: model {res.model_name!r}, golden inputs from "
                       f"{res.inputs_from} ({res.samples} sample(s)), {len(res.files)} file(s)"))
    for k, v in res.tracking.items():
        console.print(f"mlflow {_esc(k)}: {_esc(v)}")
    for n in res.notes:
        console.print(f"note: {_esc(n)}")
    where = res.out_dir if res.written else "nothing written"
    console.print(("[green]PASSED[/]" if res.passed else "[red]FAILED[/]") + f" -> {_esc(where)}")


def _render_serve_check(rep, console) -> None:
    for protocol, p in rep.parity.items():
        console.print(f"served over {protocol}:")
        _render_parity(p, console)
    bad = [m for m in rep.malformed if not m.passed]
    console.print(f"malformed requests: {len(rep.malformed) - len(bad)} of {len(rep.malformed)} refused as they "
                  "should be" + (f"; [red]{len(bad)} not[/]" if bad else ""))
    load = rep.load
    if load is not None and load.latency is not None:
        L = load.latency
        ip = rep.in_process.p50 if rep.in_process else None
        console.print(_esc(f"load ({load.protocol}, concurrency {load.concurrency}, {load.duration_s:g} s): "
                           f"{load.requests} requests, {load.errors} errors, {load.throughput:.4g} req/s; served "
                           f"p50 {L.p50:.4g} ms, p90 {L.p90:.4g}, p99 {L.p99:.4g}"
                           + (f"; in-process p50 {ip:.4g} ms, overhead {rep.overhead_ms:.4g} ms" if ip else "")))
    console.print(_esc(f"{rep.server}, ready in {rep.startup_s} s; stopped: {'yes' if rep.stopped else 'NO'}"))
    for f in rep.failures:
        console.print(f"[red]failure:[/] {_esc(f)}")
    for n in rep.notes:
        console.print(f"note: {_esc(n)}")
    console.print("[green]PASSED[/]" if rep.passed else "[red]FAILED[/]")


def _render_generic(result, console) -> None:
    console.print_json(json.dumps(to_jsonable(result), allow_nan=False))


_RENDERERS: dict[str, Callable] = {
    "ModelInfo": _render_model_info,
    "ParityReport": _render_parity,
    "StepResult": _render_step,
    "BenchmarkReport": _render_benchmark,
    "ReleaseReport": _render_release,
    "PackageResult": _render_package,
    "ServeCheckReport": _render_serve_check,
}


def render(result: Any, console) -> None:
    _RENDERERS.get(type(result).__name__, _render_generic)(result, console)
