"""Every table fits the console: rendered at 80 and 120 columns (and narrower, and with
-v), no line is wider than the console, no '…' anywhere, and the numbers that decide
are printed whole."""

import io
import re

import pytest
from rich.console import Console

from onnxforge.report.layout import Col, choose_columns, num
from onnxforge.report.tables import render
from results import all_results, benchmark, parity, release

WIDTHS = (80, 120)


def rendered(result, width: int, verbose: bool = False) -> str:
    buf = io.StringIO()
    console = Console(file=buf, width=width, no_color=True, highlight=False, soft_wrap=False, force_terminal=False)
    render(result, console, verbose=verbose)
    return buf.getvalue()


def whole(token: str, text: str) -> bool:
    """``token`` printed as one piece (not split across lines, not glued to other digits)."""
    return re.search(rf"(?<![\d.]){re.escape(token)}(?![\d])", text) is not None


def decisive_numbers(kind: str, result) -> list[str]:
    """The numbers a reader must see at any width."""
    if kind == "benchmark":
        return [num(r.latency.p50) for r in result.results] + [num(r.latency.p99) for r in result.results] + \
            [f"{c.speedup:.2f}x" for c in result.comparisons]
    if kind == "parity":
        return [num(d.max_abs) for d in result.outputs] + [num(d.cosine, 6) for d in result.outputs]
    if kind == "release":
        return decisive_numbers("benchmark", result.benchmark) + [f"{s:.1f} s" for s in result.step_seconds]
    if kind == "serve-check":
        return [num(result.load.latency.p50), num(result.load.latency.p99), str(result.load.requests)]
    if kind == "step":
        return decisive_numbers("parity", result.checks[0]) + ["2.27x"]
    return []


@pytest.mark.parametrize("kind", list(all_results()))
@pytest.mark.parametrize("width", WIDTHS)
@pytest.mark.parametrize("verbose", [False, True])
def test_every_result_fits(kind, width, verbose):
    result = all_results()[kind]
    out = rendered(result, width, verbose)
    assert out.strip()
    long = [line for line in out.splitlines() if len(line) > width]
    assert not long, "\n".join(long)
    assert "…" not in out, out
    for token in decisive_numbers(kind, result):
        assert whole(token, out), f"{token!r} not printed whole at {width} columns:\n{out}"


@pytest.mark.parametrize("width", (40, 60, 200))
def test_narrow_and_wide_consoles(width):
    for kind, result in all_results().items():
        out = rendered(result, width)
        assert all(len(line) <= width for line in out.splitlines()), (kind, width)
        assert "…" not in out, (kind, out)


def test_wide_console_shows_more_columns():
    narrow, wide = rendered(benchmark(), 80), rendered(benchmark(), 200)
    assert "p90" not in narrow.split("\n(")[0] and "p90" in wide  # p90 only where it fits
    assert "also in -v and --json" in narrow and "p90" in narrow  # and the narrow table says where it went
    assert "also in -v" not in rendered(benchmark(), 80, verbose=True)


def test_too_narrow_for_a_table_becomes_key_value_lines():
    out = rendered(parity(), 40)
    assert "  max abs: " + num(1.2345678e-7) in out and "  cosine: " in out


def test_columns_are_dropped_by_what_they_are_worth():
    cols = [Col("name", "left", text=True), Col("a"), Col("b", keep=2), Col("c", keep=1), Col("d", verbose=True)]
    rows = [["x" * 30, "1" * 10, "2" * 10, "3" * 10, "4" * 10]]
    assert choose_columns(200, cols, rows, verbose=False) == ([0, 1, 2, 3], ["d"])
    assert choose_columns(47, cols, rows, verbose=False) == ([0, 1, 3], ["d", "b"])
    assert choose_columns(10, cols, rows, verbose=False)[0] == []  # nothing fits: key: value lines


def test_number_format_keeps_three_to_four_digits():
    assert [num(x) for x in (0.075123456, 1.2345678e-7, 61530.4, 1.5e7, 0.0, 12.3456)] == \
        ["0.07512", "1.23e-07", "61530", "1.50e+07", "0", "12.35"]
    assert num(float("nan")) == "nan" and num(None) == "-"


def test_release_hash_is_never_cut_at_80_columns():
    out = rendered(release(), 80)
    assert "f7df59406c411cd29b2f1baeffe473a5c3fc5ea9dc150b299a1991b4a25169ef" in out


def test_cli_tables_fit_at_80_columns(cli, fx, monkeypatch):
    """The real commands, with COLUMNS=80 as a CI log or a narrow terminal would have it."""
    monkeypatch.setenv("COLUMNS", "80")
    m = fx / "tiny.onnx"
    for argv in (["inspect", m], ["validate", m, m], ["benchmark", m, m, "-r", "20", "--warmup", "1"]):
        r = cli(*argv, "-q")
        assert r.code == 0, r.err
        assert all(len(line) <= 80 for line in r.out.splitlines()), r.out
        assert "…" not in r.out
