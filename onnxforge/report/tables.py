"""Results -> rich tables for people: one renderer per result type (``_RENDERERS``).

Every table fits the console (report/layout.py): at 80 columns it shows the columns
that decide (p50, p99, the speed-up and its interval; max abs error, cosine, the
verdict), wider consoles get more, ``-v`` shows all (as ``key: value`` lines when
they cannot fit) and ``--json`` has everything. Numbers are rounded to 3-4
significant digits and never cut.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Callable

from onnxforge.report import to_jsonable
from onnxforge.report.layout import Col, fit_table, key_values, num
from onnxforge.core.stats import contention_line, sparkline
from onnxforge.core.system import isa_names


def _fmt_bytes(n: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB"):
        if abs(n) < 1024 or unit == "GiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n}"


def _esc(x: Any) -> str:
    from rich.markup import escape

    return escape(str(x))


def _mark(passed: bool, status: str = "") -> str:
    if status == "inconclusive":
        return "[yellow]inconclusive[/]"
    return "[green]pass[/]" if passed else "[red]FAIL[/]"


def _verdict(passed: bool, status: str = "") -> str:
    if status == "inconclusive":
        return "[yellow]INCONCLUSIVE[/]"
    return "[green]PASSED[/]" if passed else "[red]FAILED[/]"


def _render_model_info(info, console, verbose: bool = False) -> None:
    rt = info.runtime
    ok = rt.get("supported")
    verdict = "[green]yes[/]" if ok else f"[red]no[/]: {_esc(rt.get('reason', ''))}"
    pairs = [
        ("model", _esc(info.path)), ("size", _fmt_bytes(info.file_bytes)), ("ir_version", str(info.ir_version)),
        ("opsets", ", ".join(f"{d or 'ai.onnx'}={v}" for d, v in info.opsets.items())),
        ("producer", _esc(f"{info.producer} {info.producer_version}".strip() or "-")),
        ("graph", _esc(info.graph_name or "-")), ("nodes", str(info.node_count)),
        ("parameters", f"{info.parameter_count:,} in {info.initializer_count} initializers "
                       f"({_fmt_bytes(info.parameter_bytes)})"),
    ]
    if info.external_data:
        pairs.append(("external data", f"{len(info.external_data)} file(s), "
                                       f"{_fmt_bytes(sum(info.external_data.values()))}"))
    pairs.append(("onnxruntime", f"{rt.get('version')} (IR <= {rt.get('max_ir_version')}, ai.onnx opset <= "
                                 f"{rt.get('max_opset')}); runs this model: {verdict}"))
    key_values(console, pairs)
    rows = []
    for kind, specs in (("in", info.inputs), ("out", info.outputs)):
        for s in specs:
            rows.append([kind, _esc(s.name), s.dtype, _esc("[" + ", ".join("?" if d is None else str(d)
                                                                             for d in s.shape) + "]")])
    fit_table(console, "inputs and outputs", [Col("", "left"), Col("name", "left", text=True), Col("dtype", "left"),
                                              Col("shape", "left", text=True)], rows, verbose=verbose)
    _render_ops(info.op_histogram, console)
    if info.metadata:
        key_values(console, [(_esc(k), _esc(v)) for k, v in info.metadata.items()], title="metadata_props")


def _render_ops(hist, console) -> None:
    """The op histogram in as many (op, count) column pairs as the width holds."""
    from rich import box
    from rich.table import Table

    items = list(hist.items())
    if not items:
        return
    cell = max(len(op) for op, _ in items) + max(len(str(n)) for _, n in items) + 4
    per_row = max(1, min(4, (console.width + 2) // (cell + 2)))
    t = Table(box=box.SIMPLE_HEAD, show_edge=False, pad_edge=False, highlight=False)
    for _ in range(per_row):
        t.add_column("op", overflow="fold")
        t.add_column("count", justify="right", no_wrap=True)
    height = -(-len(items) // per_row)
    for r in range(height):
        cells = []
        for c in range(per_row):
            i = c * height + r
            cells += [_esc(items[i][0]), str(items[i][1])] if i < len(items) else ["", ""]
        t.add_row(*cells)
    console.print("op types", highlight=False)
    console.print(t)


PARITY_COLS = [Col("output", "left", text=True), Col("shape", keep=6), Col("max abs"), Col("max rel", keep=3),
               Col("mean abs", verbose=True), Col("p99 abs", keep=4), Col("mismatch"), Col("cosine"),
               Col("labels", keep=2), Col("atol/rtol", keep=5), Col("result", "left")]


def _render_parity(report, console, verbose: bool = False) -> None:
    rows = []
    for d in report.outputs:
        if d.mismatches is not None:  # labels compare as labels: how many differ, no error sizes
            ties = f" ({d.ties} tie{'s' * (d.ties != 1)})" if d.ties else ""
            rows.append([_esc(d.name), "x".join(map(str, d.shape)) or "scalar", "-", "-", "-", "-",
                         f"{d.mismatches}{ties}", "-", f"{d.label_agreement:.2%}", "exact", _mark(d.passed)])
            continue
        rows.append([_esc(d.name), "x".join(map(str, d.shape)) or "scalar", num(d.max_abs), num(d.max_rel),
                     num(d.mean_abs), num(d.p99_abs), f"{d.mismatch_fraction:.2%}", num(d.cosine, 6),
                     f"{d.label_agreement:.2%}" if d.label_agreement is not None else "-",
                     f"{d.atol:g}/{d.rtol:g}", _mark(d.passed)])
    title = _esc(f"parity: {report.candidate} vs {report.reference} ({report.samples} sample(s), "
                 f"check={report.check_stat})")
    gen = report.generation
    if gen is None or rows:
        fit_table(console, title, PARITY_COLS, rows, verbose=verbose)
    else:
        console.print(f"[bold]{title}[/]", overflow="fold")
    if gen is not None:
        console.print(f"generation: {gen.tokens_equal}/{gen.tokens} greedy tokens equal ({gen.batch} prompts of "
                      f"{gen.prompt_length} tokens), max logit error {num(gen.max_logit_error)} over "
                      f"{len(gen.step_errors)} step(s) (atol {gen.atol:g}) {_mark(gen.passed)}", overflow="fold",
                      highlight=False)
    if report.data:
        console.print(f"data: {_esc(report.data.get('how', report.data.get('source', '')))}", overflow="fold",
                      highlight=False)
    for d in report.outputs:
        for why in (d.nonfinite, d.message if not d.passed or d.ties else ""):
            if why:
                console.print(f"  {_esc(d.name)}: {_esc(why)}", overflow="fold", highlight=False)
    for p in report.problems:
        console.print(f"[red]problem:[/] {_esc(p)}", overflow="fold")
    for n in report.notes:
        console.print(f"note: {_esc(n)}", overflow="fold")
    loc = report.localized
    if loc is not None and loc.node:
        console.print(f"first diverging node: [bold]{_esc(loc.node)}[/] ({_esc(loc.op_type)}), "
                      f"output {_esc(loc.output)}: max abs {num(loc.max_abs)}", overflow="fold")
    elif loc is not None:
        console.print(f"localize: {_esc(loc.message)}", overflow="fold")
    if report.layerwise is not None:
        _render_layerwise(report.layerwise, console, verbose)
    console.print(_verdict(report.passed))


LAYER_COLS = [Col("#"), Col("tensor", "left", text=True), Col("op", "left", keep=2), Col("shape", keep=4),
              Col("max abs"), Col("mean abs", keep=3), Col("cosine", keep=1), Col("rel err"), Col("growth"),
              Col("candidate tensor", "left", text=True, verbose=True)]


def _render_layerwise(lw, console, verbose: bool = False) -> None:
    top = set(lw.top)
    rows = [[str(r.index), _esc(r.tensor) + (" [bold]*[/]" if r.tensor in top else ""), _esc(r.op_type),
             "x".join(map(str, r.shape)) or "scalar", num(r.max_abs), num(r.mean_abs), num(r.cosine, 6),
             num(r.rel_err), f"{'+' if r.growth > 0 else ''}{num(r.growth)}", _esc(r.candidate_tensor or "-")]
            for r in lw.rows]
    fit_table(console, f"layer-wise, first sample ({len(lw.rows)} shared tensors, reference order)", LAYER_COLS,
              rows, verbose=verbose)
    by_name = {r.tensor: r for r in lw.rows}
    if lw.top:
        console.print("most error added (* above): " + ", ".join(
            f"{_esc(t)} ({_esc(by_name[t].op_type)} {_esc(by_name[t].node or '-')}, +{num(by_name[t].growth)})"
            for t in lw.top), overflow="fold", highlight=False)
    for line in (lw.message, f"saved: {lw.saved}" if lw.saved else ""):
        if line:
            console.print(f"layer-wise: {_esc(line)}", overflow="fold", highlight=False)


def _render_step(res, console, verbose: bool = False) -> None:
    for c in res.checks:
        _render_parity(c, console, verbose)
    if res.before and res.after:
        _render_before_after(res.before, res.after, console, verbose)
    for e in res.engines:
        extra = e.reason or (f"{e.after.nodes} nodes" if e.after else "")
        engine = f" via {e.engine}" if e.engine else ""
        colour = "green" if e.status == "ok" else "yellow" if e.status in ("skipped", "reverted") else "red"
        console.print(f"step {_esc(e.step)}{_esc(engine)}: [{colour}]{e.status}[/] "
                      f"({e.seconds} s{'; ' + _esc(extra) if extra else ''})", overflow="fold")
    sp = res.speed
    if sp:
        console.print(f"speed: fp32 p50 {num(sp.reference_p50_ms)} ms, new p50 {num(sp.p50_ms)} ms: "
                      f"[bold]{sp.speedup:.2f}x[/] (95% CI {sp.ci95[0]:.2f}-{sp.ci95[1]:.2f}, "
                      f"{sp.iterations} interleaved runs each{', on OpenVINO' if sp.runtime == 'openvino' else ''})")
        if sp.contention and sp.contention.judged != "none":
            console.print(f"timing: {_esc(contention_line(sp.contention))}", overflow="fold")
    elif res.step.startswith("quantize") and res.step != "quantize:fp16":  # fp16 has no speed budget
        console.print("speed: not timed (no speed budget; --speed-budget sets one)")
    if res.before and res.after and res.step.startswith("quantize"):
        ratio = res.after.file_bytes / max(1, res.before.file_bytes)
        console.print(f"size: {_fmt_bytes(res.before.file_bytes)} -> {_fmt_bytes(res.after.file_bytes)} ({ratio:.0%})")
    t = getattr(res, "timings", None)
    if t:
        console.print(f"time: {t.total_s:.1f} s, of which work {t.work_s:.1f} s, checks {t.checks_s:.1f} s")
    if len(res.trials) > 1:
        _render_trials(res.trials, console, verbose)
    for op, (b, a) in res.fusions.items():
        console.print(f"fusion {_esc(op)}: {b} -> {a}")
    for key, value in res.details.items():
        if not isinstance(value, (dict, list, tuple)):
            console.print(f"{_esc(key)}: {_esc(value)}", overflow="fold")
    for n in res.notes:
        console.print(f"note: {_esc(n)}", overflow="fold")
    where = res.output if res.written else f"nothing written (would be {res.output})"
    console.print(f"{_esc(res.step)}: {_verdict(res.passed, res.status)} -> {_esc(where)}", overflow="fold")


def _render_trials(trials, console, verbose: bool) -> None:
    cols = [Col("trial"), Col("fp32 nodes"), Col("parity", "left"), Col("min cosine"), Col("speed-up"),
            Col("95% CI", keep=1), Col("seconds", keep=2)]
    rows = [[str(t.trial), str(len(t.excluded_nodes)), _mark(t.parity_passed), num(t.min_cosine, 6),
             f"{t.speedup:.2f}x" if t.speedup is not None else "-",
             f"{t.speedup_ci95[0]:.2f}-{t.speedup_ci95[1]:.2f}" if t.speedup_ci95 else "-", f"{t.seconds:.1f}"]
            for t in trials]
    fit_table(console, "fallback trials", cols, rows, verbose=verbose)
    for t in trials:  # node names are long: listed under the table, where they can wrap
        if t.excluded_nodes:
            shown = t.excluded_nodes if verbose else t.excluded_nodes[:6]
            more = f" and {len(t.excluded_nodes) - len(shown)} more (-v)" if len(shown) < len(t.excluded_nodes) else ""
            console.print(_esc(f"  trial {t.trial} kept in fp32: {', '.join(shown)}{more}"), overflow="fold")


def _render_before_after(b, a, console, verbose: bool = False) -> None:
    rows = [["nodes", str(b.nodes), str(a.nodes)],
            ["initializers", _fmt_bytes(b.initializer_bytes), _fmt_bytes(a.initializer_bytes)],
            ["file", _fmt_bytes(b.file_bytes), _fmt_bytes(a.file_bytes)]]
    for op in sorted(set(b.ops) | set(a.ops)):
        nb, na = b.ops.get(op, 0), a.ops.get(op, 0)
        if nb != na:
            rows.append([f"  {_esc(op)}", str(nb), str(na)])
    fit_table(console, "before / after", [Col("", "left", text=True), Col("before"), Col("after")], rows,
              verbose=verbose)


BENCH_COLS = [Col("model", "left", text=True), Col("provider", "left", keep=5), Col("batch", keep=4),
              Col("thr", keep=9), Col("n", keep=8), Col("p50"), Col("p90", keep=6), Col("p99"),
              Col("mean±std", verbose=True), Col("p50 95% CI", keep=2), Col("items/s", keep=7), Col("CV", keep=10),
              Col("speed-up"), Col("its 95% CI", keep=1), Col("min..p99", "left", keep=11)]


def _render_benchmark(rep, console, gates: bool = True, verbose: bool = False) -> None:
    rows = []
    for i, r in enumerate(rep.results):
        L = r.latency
        c = rep.comparisons[i - 1] if i else None  # one per row after the first, in order (a model may have several rows)
        cv = f"{r.cv:.1%}" if r.cv <= 0.10 else f"[yellow]{r.cv:.1%}[/]"
        rows.append([_esc(Path(r.model).name), _esc(r.target), str(r.batch), str(r.threads), str(L.n),
                     num(L.p50), num(L.p90), num(L.p99), f"{num(L.mean)}±{num(L.std, 2)}",
                     f"{num(L.ci95[0])}-{num(L.ci95[1])}", num(r.throughput), cv,
                     f"{c.speedup:.2f}x" if c else ("1.00x" if rep.comparisons else "-"),
                     f"{c.ci95[0]:.2f}-{c.ci95[1]:.2f}" if c else "-", sparkline(r.histogram)])
    fit_table(console, "latency (ms)", BENCH_COLS, rows, verbose=verbose)
    for r in rep.results:
        if r.placement:
            where = ", ".join(f"{k}: {v}" for k, v in r.placement.items())
            console.print(f"placement {_esc(Path(r.model).name)} ({_esc(r.requested_provider)}): {_esc(where)} nodes",
                          overflow="fold")
    if len(rep.results) > len(rep.fastest):  # some target has several models to choose from
        for f in rep.fastest:
            console.print(_esc(f"fastest on {f.runtime if f.runtime != 'ort' else 'ort:' + f.provider}, batch {f.batch}: "
                               f"{Path(f.model).name} (p50 {num(f.p50_ms)} ms)"), overflow="fold")
    for g in rep.gates if gates else ():
        console.print(f"{_mark(g.passed, g.status)} {_esc(g.name)}: {_esc(g.message)}", overflow="fold")
    if rep.contention and rep.contention.judged != "none":
        console.print(f"timing: {_esc(contention_line(rep.contention))}", overflow="fold")
    env = rep.environment
    cpu = env.get("cpu", {})
    isa = isa_names(cpu)
    console.print(_esc(f"cpu: {cpu.get('model')} ({isa}); quota {env.get('cpu_quota')} cores; "
                       f"onnxruntime {env.get('onnxruntime')} ({env.get('device')})"), overflow="fold")
    for n in rep.notes:
        console.print(f"note: {_esc(n)}", overflow="fold")
    if rep.gates and gates:
        console.print(_verdict(rep.passed, rep.status))


LEDGER_COLS = [Col("#"), Col("step", "left", text=True), Col("time", keep=3), Col("check", "left"),
               Col("vs", "left", keep=5), Col("max abs"), Col("min cos", keep=2), Col("accuracy", keep=1),
               Col("ledger", "left")]


def _ledger_rows(r) -> list[list[str]]:
    rows = []
    for i, s in enumerate(r.steps):
        row = r.ledger[i] if i < len(r.ledger) else None
        outs = row.parity.outputs if row and row.parity else ()
        secs = r.step_seconds[i] if i < len(r.step_seconds) else None
        rows.append([str(i), _esc(s.step), f"{secs:.1f} s" if secs is not None else "-", _mark(s.passed, s.status),
                     _esc(row.against) if row else "-", num(max(o.max_abs for o in outs)) if outs else "-",
                     num(min(o.cosine for o in outs), 6) if outs else "-",
                     f"{row.accuracy:.4f}" if row and row.accuracy is not None else "-",
                     _mark(row.passed) if row else "-"])
    return rows


def _render_release(r, console, verbose: bool = False) -> None:
    fit_table(console, "steps and parity ledger (each step against the source)", LEDGER_COLS, _ledger_rows(r),
              verbose=verbose)
    for row in r.ledger:  # layerwise_on_failure
        if row.parity is not None and row.parity.layerwise is not None:
            console.print(f"step {_esc(row.step)} failed its parity check; tensor by tensor against its input:")
            _render_layerwise(row.parity.layerwise, console, verbose)
    if r.benchmark:
        _render_benchmark(r.benchmark, console, gates=False, verbose=verbose)  # its gates are in the verdict
    for p in r.packages:
        console.print(f"package {_esc(p.target)}: {_verdict(p.passed)} -> {_esc(p.out_dir)}", overflow="fold")
    fit_table(console, "verdict", [Col("gate", "left", text=True), Col("result", "left"),
                                   Col("detail", "left", text=True)],
              [[_esc(g.name), _mark(g.passed, g.status), _esc(g.message)] for g in r.gates], verbose=verbose)
    if r.failure:
        console.print(f"[red]failure:[/] {_esc(r.failure)}", overflow="fold")
    for k, v in r.outputs.items():  # a hash on its own line when the width cannot hold both
        sep = "  " if console.width >= len(k) + len(v) + 10 else "\n  "
        console.print(f"{_esc(k)}{sep}sha256 {v}", overflow="fold", highlight=False)
    head = ("[green]RELEASE PASSED[/]" if r.passed else "[yellow]RELEASE INCONCLUSIVE[/]"
            if r.status == "inconclusive" else "[red]RELEASE FAILED[/]")
    console.print(head + f" ({r.seconds} s)")


def _render_package(res, console, verbose: bool = False) -> None:
    if res.proof is not None:
        _render_parity(res.proof, console, verbose)
    for c in res.checks:
        console.print(f"[green]ok[/] {_esc(c)}", overflow="fold")
    for p in res.problems:
        console.print(f"[red]problem:[/] {_esc(p)}", overflow="fold")
    console.print(_esc(f"{res.target} package of {res.source}: model {res.model_name!r}, golden inputs from "
                       f"{res.inputs_from} ({res.samples} sample(s)), {len(res.files)} file(s)"), overflow="fold")
    for k, v in res.tracking.items():
        console.print(f"mlflow {_esc(k)}: {_esc(v)}", overflow="fold")
    for n in res.notes:
        console.print(f"note: {_esc(n)}", overflow="fold")
    where = res.out_dir if res.written else "nothing written"
    console.print(f"{_verdict(res.passed)} -> {_esc(where)}", overflow="fold")


def _render_serve_check(rep, console, verbose: bool = False) -> None:
    for protocol, p in rep.parity.items():
        console.print(f"served over {protocol}:")
        _render_parity(p, console, verbose)
    bad = [m for m in rep.malformed if not m.passed]
    console.print(f"malformed requests: {len(rep.malformed) - len(bad)} of {len(rep.malformed)} refused as they "
                  "should be" + (f"; [red]{len(bad)} not[/]" if bad else ""))
    load = rep.load
    if load is not None and load.latency is not None:
        L = load.latency
        ip = rep.in_process.p50 if rep.in_process else None
        cols = [Col("protocol", "left"), Col("clients"), Col("requests"), Col("errors"), Col("req/s"), Col("p50"),
                Col("p90", keep=2), Col("p99"), Col("in-process p50", keep=1), Col("overhead", keep=1)]
        fit_table(console, _esc(f"served latency (ms) over {load.duration_s:g} s"), cols,
                  [[load.protocol, str(load.concurrency), str(load.requests), str(load.errors), num(load.throughput),
                    num(L.p50), num(L.p90), num(L.p99), num(ip), num(rep.overhead_ms)]], verbose=verbose)
    console.print(_esc(f"{rep.server}, ready in {rep.startup_s} s; stopped: {'yes' if rep.stopped else 'NO'}"),
                  overflow="fold")
    for f in rep.failures:
        console.print(f"[red]failure:[/] {_esc(f)}", overflow="fold")
    for n in rep.notes:
        console.print(f"note: {_esc(n)}", overflow="fold")
    console.print(_verdict(rep.passed))


def _gib(n) -> str:
    return "-" if n is None else _fmt_bytes(n)


def _render_doctor(d, console, verbose: bool = False) -> None:
    versions = [("onnxforge", d.onnxforge), ("python", f"{d.python} ({_esc(d.platform)})"),
                ("onnxruntime build", _esc(f"{d.onnxruntime_build} ({', '.join(d.onnxruntime_packages) or '-'})"))]
    versions += [(name, v or "[dim]not installed[/]") for name, v in d.packages.items()]
    key_values(console, versions, title="versions")
    rows = [[p.name, _esc(p.provider) if p.provider != p.name else "-", "yes" if p.available else "no",
             _mark(p.initialises) if p.available else "-",
             f"{p.seconds:.2f} s" if p.available else "-", _esc(p.error) or "-"] for p in d.providers]
    fit_table(console, "execution providers (a one-node session on each)",
              [Col("provider", "left"), Col("name", "left", text=True, keep=2), Col("listed", "left"),
               Col("initialises", "left"), Col("time", keep=1), Col("why not", "left", text=True)], rows,
              verbose=verbose)
    isa = isa_names(d.cpu) or "none of the int8/fp16 extensions"
    quota = d.cpus.get("cgroup_quota")
    key_values(console, [
        ("cpu", _esc(f"{d.cpu.get('model')} ({d.cpu.get('machine')})")), ("isa", isa),
        ("cpus", f"{d.cpus.get('affinity')} in the affinity mask; cgroup quota "
                 f"{'none' if quota is None else f'{quota:g}'}; onnxforge uses {d.cpus.get('threads')} thread(s)"),
        ("memory", f"cgroup limit {_gib(d.memory.get('cgroup_limit')) if d.memory.get('cgroup_limit') else 'none'}; "
                   f"available {_gib(d.memory.get('available'))} (host {_gib(d.memory.get('host_available'))})"),
        ("gpus", "; ".join(_esc(f"{g['name']} (driver {g['driver']}, {g['memory']})") for g in d.gpus)
         or "none (no nvidia-smi)")], title="machine")
    fit_table(console, "extras (pip install 'onnxforge[NAME]')",
              [Col("extra", "left"), Col("installed", "left"), Col("missing", "left", text=True, keep=1),
               Col("without it, off", "left", text=True)],
              [[e.name, "[green]yes[/]" if e.installed else "[red]no[/]",
                _esc(", ".join(e.missing)) or "-", _esc(e.disables)] for e in d.extras], verbose=verbose)
    for p in d.problems:
        console.print(f"[red]problem:[/] {_esc(p)}", overflow="fold")
    for n in d.notes:
        console.print(f"note: {_esc(n)}", overflow="fold")


def _render_generic(result, console, verbose: bool = False) -> None:
    console.print_json(json.dumps(to_jsonable(result), allow_nan=False))


_RENDERERS: dict[str, Callable] = {
    "ModelInfo": _render_model_info,
    "ParityReport": _render_parity,
    "StepResult": _render_step,
    "BenchmarkReport": _render_benchmark,
    "ReleaseReport": _render_release,
    "PackageResult": _render_package,
    "ServeCheckReport": _render_serve_check,
    "DoctorReport": _render_doctor,
}


def render(result: Any, console, verbose: bool = False) -> None:
    """Print ``result`` for people; ``verbose`` (-v) shows every column."""
    _RENDERERS.get(type(result).__name__, _render_generic)(result, console, verbose=verbose)
