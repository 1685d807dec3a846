"""The combined verdict's files, written into OUT on every exit:

- zoo-report.json: the JSON envelope (kind "zoo") of the ZooReport, with the timeline;
- zoo-report.md: one table (release, target, each gate, size, p50, speed-up, verdict),
  the failures with their hints and the timeline's summary; also appended to
  $GITHUB_STEP_SUMMARY;
- junit.xml: a <testsuites> root holding each release's own junit.xml (what
  onnxforge.report.junit wrote in its folder) as one <testsuite> named after the
  release, its classnames prefixed with it so dashboards keep releases apart; a
  release that wrote none is one <error> or <skipped> case;
- report.html: an index page linking each release's report.html, report.md, report.json and junit.xml
  (those it wrote).
"""

from __future__ import annotations

import html
import os
import xml.etree.ElementTree as ET
from pathlib import Path

from onnxforge.zoo.merge import NOT_RUN, ZooRelease, ZooReport
from onnxforge.core.fileio import atomic_write_text
from onnxforge.report import dumps

TITLES = {"passed": "PASSED", "failed": "FAILED", "error": "ERROR", "interrupted": "INTERRUPTED"}
GATE_COLUMNS = ("parity", "accuracy", "max_p50_ms", "max_p99_ms", "min_speedup", "serving")


def _in_column(gate: str, column: str) -> bool:
    if column == "parity":
        return gate.startswith("parity:")
    if column == "serving":  # [package] targets and [serve_check]
        return gate.startswith("package:") or gate == "serve_check"
    return gate == column


def gate_cell(r: ZooRelease, column: str) -> str:
    """pass / FAIL / not run / - (the release has no such gate) for a gate column;
    the parity column holds every parity:STEP gate, serving every package and serve-check."""
    mine = [g for g in r.gates if _in_column(g.name, column)]
    if mine:
        return "pass" if all(g.passed for g in mine) else "FAIL"
    planned = [n for n in r.planned_gates if _in_column(n, column)]
    return "not run" if planned else "-"


def gate_columns(rep: ZooReport) -> list[str]:
    return [c for c in GATE_COLUMNS if any(gate_cell(r, c) != "-" for r in rep.releases)]


def _size(n: int | None) -> str:
    if n is None:
        return "-"
    return f"{n / 1024:.1f} KiB" if n < 1024**2 else f"{n / 1024**2:.1f} MiB"


def _num(x: float | None, fmt: str) -> str:
    return "-" if x is None else format(x, fmt)


def row_cells(r: ZooRelease, columns) -> list[str]:
    verdict = TITLES.get(r.status, r.status.upper()) + (f" (exit {r.exit_code})" if r.exit_code else "")
    return [r.name, r.target or "-", *(gate_cell(r, c) for c in columns), _size(r.size_bytes),
            _num(r.p50_ms, ".4g"), _num(r.speedup, ".2f") + ("x" if r.speedup is not None else ""), verdict]


def headers(columns) -> list[str]:
    return ["release", "target", *columns, "size", "p50 ms", "speed-up", "verdict"]


def timeline_summary(rep: ZooReport) -> str:
    if not rep.timeline:
        return "no timing phases recorded"
    nodes = {p.node for p in rep.timeline}
    timed = sum(p.end - p.start for p in rep.timeline)
    waited = max(p.waited for p in rep.timeline)
    return (f"{len(rep.timeline)} timing phase(s) on {len(nodes)} node(s), {timed:.1f} s timed in all, "
            f"{rep.overlaps} overlapping (0: each timing had its node's cores to itself among timings), "
            f"longest wait for the lock {waited:.1f} s")


def _cell(text) -> str:
    return str(text).replace("|", "\\|").replace("\n", " ")


def markdown(rep: ZooReport) -> str:
    counts = ", ".join(f"{n} {s}" for s, n in rep.counts.items() if n)
    lines = [f"# onnxforge zoo: {TITLES.get(rep.status, rep.status.upper())}", "",
             f"{len(rep.releases)} release(s): {counts or 'none'} — executor {rep.executor}, {rep.seconds:.1f} s", ""]
    if rep.error:
        lines += [f"**Error:** {_cell(rep.error)} (exit {rep.exit_code})", ""]
        lines += [f"**Hint:** {_cell(rep.hint)}", ""] if rep.hint else []
    cols = gate_columns(rep)
    head = headers(cols)
    lines += ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    lines += ["| " + " | ".join(_cell(c) for c in row_cells(r, cols)) + " |" for r in rep.releases]
    bad = [r for r in rep.releases if not r.passed]
    if bad:
        lines += ["", "## Not passed", ""]
        for r in bad:
            hint = f" — hint: {_cell(r.hint)}" if r.hint else ""
            link = f" ([report]({r.folder}/report.md))" if r.reported else ""  # a release that never finished has none
            lines.append(f"- **{r.folder}**: {_cell(r.failure or r.status)}{hint}{link}")
    lines += ["", "## Timing", "", timeline_summary(rep)]
    return "\n".join(lines) + "\n"


# ----------------------------------------------------------------------------- junit


def _suite_of(r: ZooRelease, out: Path) -> ET.Element:
    path = Path(r.folder) if Path(r.folder).is_absolute() else out / r.folder
    suite = None
    if r.reported:  # its junit.xml was written with the report.json this verdict was read from
        try:
            suite = ET.parse(path / "junit.xml").getroot()
        except (OSError, ET.ParseError):
            pass
    if suite is None or suite.tag != "testsuite":  # a release that wrote no verdict in this run
        suite = ET.Element("testsuite", tests="1", failures="0", errors="0", skipped="0", time="0.000")
        case = ET.SubElement(suite, "testcase", classname="onnxforge", name="release", time="0.000")
        kind = "skipped" if r.status == NOT_RUN else "error"
        ET.SubElement(case, kind, message=(r.failure or r.status)[:500], type=kind).text = r.failure or r.status
        suite.set("errors" if kind == "error" else "skipped", "1")
    suite.set("name", r.folder)
    for case in suite.iter("testcase"):
        case.set("classname", f"{r.folder}.{case.get('classname', 'onnxforge')}")
    return suite


def junit(rep: ZooReport, out: Path) -> str:
    suites = [_suite_of(r, out) for r in rep.releases]
    total = {k: sum(int(s.get(k, 0)) for s in suites) for k in ("tests", "failures", "errors", "skipped")}
    root = ET.Element("testsuites", name="onnxforge zoo", **{k: str(v) for k, v in total.items()},
                      time=f"{rep.seconds:.3f}")
    root.extend(suites)
    if rep.error:  # the zoo itself could not run: CI must see an error, not zero tests
        suite = ET.SubElement(root, "testsuite", name="zoo", tests="1", failures="0", errors="1", skipped="0",
                              time="0.000")
        case = ET.SubElement(suite, "testcase", classname="onnxforge.zoo", name="zoo", time="0.000")
        ET.SubElement(case, "error", message=rep.error[:500], type="error").text = f"{rep.error}\nhint: {rep.hint}"
        for k in ("tests", "errors"):
            root.set(k, str(int(root.get(k)) + 1))
    ET.indent(root)
    return '<?xml version="1.0" encoding="utf-8"?>\n' + ET.tostring(root, encoding="unicode") + "\n"


# ----------------------------------------------------------------------------- html


def _exists(r: ZooRelease, name: str, out: Path) -> bool:
    folder = Path(r.folder)
    return ((folder if folder.is_absolute() else out / folder) / name).is_file()


def _link(r: ZooRelease, name: str, out: Path) -> str:
    target = Path(r.folder) / name if not Path(r.folder).is_absolute() else Path(os.path.relpath(Path(r.folder) / name,
                                                                                                  out))
    return f'<a href="{html.escape(target.as_posix(), quote=True)}">{html.escape(name)}</a>'


def page(rep: ZooReport, out: Path) -> str:
    cols = gate_columns(rep)
    head = "".join(f"<th>{html.escape(h)}</th>" for h in [*headers(cols), "reports"])
    rows = []
    for r in rep.releases:
        cells = "".join(f"<td>{html.escape(c)}</td>" for c in row_cells(r, cols))
        links = " ".join(_link(r, n, out) for n in ("report.html", "report.md", "report.json", "junit.xml")
                         if _exists(r, n, out)) or "no report (the release never finished)"
        rows.append(f'<tr class="{html.escape(r.status.replace(" ", "-"))}">{cells}<td>{links}</td></tr>')
    title = f"onnxforge zoo: {TITLES.get(rep.status, rep.status.upper())}"
    err = f"<p><b>Error:</b> {html.escape(rep.error)}<br><b>Hint:</b> {html.escape(rep.hint or '')}</p>" \
        if rep.error else ""
    return ("<!doctype html>\n<html><head><meta charset=\"utf-8\"><title>" + html.escape(title) + "</title>\n"
            "<style>body{font-family:sans-serif}table{border-collapse:collapse}td,th{border:1px solid #ccc;"
            "padding:2px 8px}.passed td:last-child{background:#dfd}.failed,.error,.interrupted{background:#fdd}"
            "</style></head><body>\n"
            f"<h1>{html.escape(title)}</h1>\n{err}<p>{html.escape(markdown(rep).splitlines()[2])}</p>\n"
            f"<table><tr>{head}</tr>\n" + "\n".join(rows) + "\n</table>\n"
            f"<h2>Timing</h2><p>{html.escape(timeline_summary(rep))}</p>\n"
            '<p><a href="zoo-report.json">zoo-report.json</a> <a href="zoo-report.md">zoo-report.md</a> '
            '<a href="junit.xml">junit.xml</a></p>\n</body></html>\n')


def write_all(rep: ZooReport, out: Path) -> None:
    """All four files, each atomically; zoo-report.json last (the verdict CI reads)."""
    out = Path(out)
    md = markdown(rep)
    atomic_write_text(out / "zoo-report.md", md)
    atomic_write_text(out / "junit.xml", junit(rep, out))
    atomic_write_text(out / "report.html", page(rep, out))
    atomic_write_text(out / "zoo-report.json", dumps(rep, "zoo") + "\n")
    summary = os.environ.get("GITHUB_STEP_SUMMARY")
    if summary:
        with open(summary, "a") as f:
            f.write(md + "\n")
