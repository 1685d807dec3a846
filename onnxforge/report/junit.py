"""A release report as JUnit XML (junit.xml) for CI dashboards: one testsuite per
release, one testcase per step (its own check) and per gate. A check or gate that
failed is a <failure> with the numbers in its message and the detail in system-out;
a step that raised, or a timing gate left inconclusive by the machine's load (its
message says how much CPU the timing got), is an <error>; a step or gate that never ran because something
before it failed is <skipped>. The suite carries tests, failures, errors, skipped and
time, as the JUnit schema requires (tests/data/junit.xsd)."""

from __future__ import annotations

from xml.sax.saxutils import escape, quoteattr

from onnxforge.core.types import ParityReport, ReleaseReport, StepResult


def why(p: ParityReport | None) -> str:
    """A failed parity report in one line."""
    if p is None:
        return "not checked"
    bad = [f"{o.name}: {o.message}" for o in p.outputs if not o.passed]
    return "; ".join(list(p.problems) + bad)[:300]


def _step_why(s: StepResult) -> str:
    return "; ".join(why(c) for c in s.checks if not c.passed) or "; ".join(s.notes) or "the step's check failed"


def _case(classname: str, name: str, seconds: float, body: str = "") -> str:
    return f'  <testcase classname="{classname}" name={quoteattr(name)} time="{seconds:.3f}">{body}</testcase>'


def _outcome(kind: str, message: str, detail: str = "") -> str:
    out = f"<system-out>{escape(detail)}</system-out>" if detail else ""
    return f"<{kind} message={quoteattr(message[:500])} type={quoteattr(kind)}>{escape(message)}</{kind}>{out}"


def _step_cases(r: ReleaseReport) -> list[tuple[str, str]]:
    cases = []
    planned = r.planned_steps or tuple(s.step for s in r.steps)
    for i, run in enumerate(planned):
        secs = r.step_seconds[i] if i < len(r.step_seconds) else 0.0
        if i < len(r.steps):
            s = r.steps[i]
            body = "" if s.passed else _outcome("failure", f"{s.step}: {_step_why(s)}", "; ".join(s.notes))
            cases.append(("failure" if not s.passed else "", _case("onnxforge.steps", f"{i}:{run}", secs, body)))
        elif r.raised_at == i:
            cases.append(("error", _case("onnxforge.steps", f"{i}:{run}", secs,
                                         _outcome("error", r.error or r.failure or "error", r.hint or ""))))
        else:
            cases.append(("skipped", _case("onnxforge.steps", f"{i}:{run}", 0.0,
                                           _outcome("skipped", "not run: an earlier step or the config failed"))))
    return cases


def _suite(r: ReleaseReport) -> str:
    return f"onnxforge release {r.name}" if r.name else "onnxforge release"


def junit(r: ReleaseReport) -> str:
    cases = _step_cases(r)
    done = {g.name for g in r.gates}
    for g in r.gates:
        # a timing gate the machine's load left undecided is no failure of the model: an error, with the load
        kind = "" if g.passed else "error" if g.status == "inconclusive" else "failure"
        body = _outcome(kind, g.message, f"value {g.value:g}, limit {g.limit:g}") if kind else ""
        cases.append((kind, _case("onnxforge.gates", g.name, 0.0, body)))
    for name in r.planned_gates:
        if name not in done:
            cases.append(("skipped", _case("onnxforge.gates", name, 0.0,
                                           _outcome("skipped", "not evaluated: the release stopped before the gates"))))
    kinds = {kind for kind, _ in cases}
    # A CI dashboard is green when no case failed: a release that did not pass always has
    # one. An error no step case shows (a config error, one in the parity ledger after its
    # step was recorded, one outside the steps) makes the release itself the case.
    if r.status in ("error", "interrupted") and "error" not in kinds:
        cases.append(("error", _case("onnxforge", "release", r.seconds,
                                     _outcome("error", r.error or r.failure or r.status, r.hint or ""))))
    elif not r.passed and not kinds & {"failure", "error"}:
        cases.append(("failure", _case("onnxforge", "release", r.seconds,
                                       _outcome("failure", r.failure or r.status or "failed"))))
    count = {k: sum(1 for kind, _ in cases if kind == k) for k in ("failure", "error", "skipped")}
    return (f'<?xml version="1.0" encoding="utf-8"?>\n<testsuite name={quoteattr(_suite(r))} tests="{len(cases)}" '
            f'failures="{count["failure"]}" errors="{count["error"]}" skipped="{count["skipped"]}" '
            f'time="{r.seconds:.3f}">\n' + "\n".join(c for _, c in cases) + "\n</testsuite>\n")
