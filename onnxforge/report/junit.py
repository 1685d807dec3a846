"""A release report as JUnit XML (junit.xml), for CI dashboards."""

from __future__ import annotations

from onnxforge.types import ParityReport, ReleaseReport, StepResult


def junit(r: ReleaseReport) -> str:
    from xml.sax.saxutils import escape, quoteattr

    cases = []
    for i, s in enumerate(r.steps):
        msg = "" if s.passed else f'<failure message={quoteattr("step check failed")}>{escape(_step_why(s))}</failure>'
        cases.append(f'  <testcase classname="onnxforge.steps" name={quoteattr(f"{i}:{s.step}")}>{msg}</testcase>')
    for g in r.gates:
        msg = "" if g.passed else f'<failure message={quoteattr(g.name)}>{escape(g.message)}</failure>'
        cases.append(f'  <testcase classname="onnxforge.gates" name={quoteattr(g.name)}>{msg}</testcase>')
    if r.failure and not r.steps and not r.gates:
        cases.append(f'  <testcase classname="onnxforge" name="release"><error message={quoteattr(r.failure)}/></testcase>')
    failures = sum("<failure" in c or "<error" in c for c in cases)
    return (f'<?xml version="1.0" encoding="utf-8"?>\n<testsuite name="onnxforge release" tests="{len(cases)}" '
            f'failures="{failures}">\n' + "\n".join(cases) + "\n</testsuite>\n")


def _step_why(s: StepResult) -> str:
    return "; ".join(why(c) for c in s.checks if not c.passed) or "; ".join(s.notes)


def why(p: ParityReport | None) -> str:
    """A failed parity report in one line."""
    if p is None:
        return "not checked"
    bad = [f"{o.name}: {o.message}" for o in p.outputs if not o.passed]
    return "; ".join(list(p.problems) + bad)[:300]
