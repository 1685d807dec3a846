"""report.html: one self-contained file (no script, no network) with the verdict, the
ledger, error histograms, overlaid latency distributions with the speed-up intervals,
and the steps' table; rendered in headless Chromium to prove the figures are there and
have a size. Chromium tests skip when it is not installed."""

import json
import re
import shutil
import struct
import subprocess

import pytest

from conftest import json_result
from onnxforge.report.html import html_report, write_html
from results import benchmark, parity, release

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser") or shutil.which("google-chrome")
needs_chromium = pytest.mark.skipif(CHROMIUM is None, reason="headless Chromium is not installed "
                                                              "(Debian: apt-get install -y chromium)")

PROBE = """<script>
const figs = [...document.querySelectorAll('figure')].map(f => {
  const svg = f.querySelector('svg'); const r = svg.getBoundingClientRect();
  const folded = f.closest('details') !== null && !f.closest('details').open;
  return {id: f.id, cls: f.className, w: Math.round(r.width), h: Math.round(r.height), folded,
          series: svg.querySelectorAll('.series').length};
});
const pre = document.createElement('pre'); pre.id = 'onnxforge-probe';
pre.textContent = JSON.stringify({figures: figs, scroll: document.documentElement.scrollWidth, view: innerWidth});
document.body.appendChild(pre);
</script>"""


def chromium(*args: str, tmp_path) -> subprocess.CompletedProcess:
    flags = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
             "--disable-component-update", "--disable-sync", "--no-first-run", "--hide-scrollbars",
             f"--user-data-dir={tmp_path / 'chromium-profile'}"]
    return subprocess.run([CHROMIUM, *flags, *args], capture_output=True, text=True, timeout=120)


def layout(html: str, tmp_path, width: int = 1000) -> dict:
    """The figures as Chromium lays them out (the page itself has no script: a probe is
    added to a copy)."""
    page = tmp_path / "probe.html"
    page.write_text(html.replace("</body>", PROBE + "</body>"))
    r = chromium(f"--window-size={width},2000", "--dump-dom", page.as_uri(), tmp_path=tmp_path)
    m = re.search(r'<pre id="onnxforge-probe">(.*?)</pre>', r.stdout, re.S)
    assert m, r.stdout[-2000:] + r.stderr[-2000:]
    return json.loads(m.group(1).replace("&quot;", '"').replace("&amp;", "&"))


def test_self_contained():
    for result in (release(), benchmark(), parity()):
        html = html_report(result)
        assert "<script" not in html and not re.search(r"(?:src|href)\s*=", html)
        assert not re.search(r"https?://(?!www\.w3\.org/2000/svg)", html)  # nothing to fetch
        assert html.startswith("<!doctype html>") and html.rstrip().endswith("</html>")


def test_release_page_has_every_part():
    html = html_report(release())
    for part in ("Verdict", "Parity ledger", "Error distributions", "Latency", "Steps: before and after"):
        assert f"<h2>{part}" in html
    assert 'id="verdict-badge">FAILED<' in html and 'id="latency"' in html and 'id="speedup"' in html
    assert "gate 1.7x" in html  # the benchmark's min_speedup gate is drawn on the speed-up intervals
    assert html.count('class="plot errors"') == 12  # 3 ledger rows x 4 outputs with an error histogram


@pytest.mark.slow  # a headless browser process
@needs_chromium
def test_release_page_renders_in_chromium(tmp_path):
    got = layout(html_report(release()), tmp_path)
    figs = {f["id"]: f for f in got["figures"]}
    assert len(figs) == 14
    for fid in ("latency", "speedup"):
        assert figs[fid]["w"] >= 600 and figs[fid]["h"] >= 80 and figs[fid]["series"] >= 2, figs[fid]
    shown = [f for f in got["figures"] if "errors" in f["cls"] and not f["folded"]]
    assert len(shown) == 4  # the last step's (open); the others fold away in <details>
    assert all(300 <= f["w"] <= 470 and f["h"] >= 150 and f["series"] == 6 for f in shown), shown
    assert got["scroll"] <= got["view"]  # nothing wider than the window: wide tables scroll in their box


@pytest.mark.slow  # a headless browser process
@needs_chromium
def test_screenshot_is_a_full_page(tmp_path):
    page = tmp_path / "report.html"
    write_html(page, release())
    shot = tmp_path / "shot.png"
    chromium("--window-size=1000,1600", f"--screenshot={shot}", page.as_uri(), tmp_path=tmp_path)
    data = shot.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n" and struct.unpack(">II", data[16:24]) == (1000, 1600)
    assert len(data) > 50_000  # text and figures, not a blank page


@pytest.mark.slow  # two real commands and two Chromium runs
@needs_chromium
def test_benchmark_and_validate_html(cli, fx, tmp_path):
    m, c = fx / "chain.onnx", fx / "chain_bad5.onnx"
    r = cli("benchmark", m, c, "-r", "200", "--warmup", "2", "--html", tmp_path / "b.html", "--json")
    assert r.code == 0, r.err
    row = json_result(r)["results"][0]
    assert len(row["histogram_edges"]) == len(row["histogram"]) + 1
    got = {f["id"]: f for f in layout((tmp_path / "b.html").read_text(), tmp_path)["figures"]}
    assert got["latency"]["series"] == 2 and got["speedup"]["series"] == 1 and got["latency"]["w"] >= 600
    r = cli("validate", m, c, "--samples", "4", "--html", tmp_path / "v.html", "--json")
    assert r.code == 1  # chain_bad5 differs: the page is written for a failed check too
    out = json_result(r)["outputs"][0]
    elements = 4 * __import__("math").prod(out["shape"])
    assert sum(out["error_histogram"]) == elements and len(out["error_edges"]) == len(out["error_histogram"]) + 1
    html = (tmp_path / "v.html").read_text()
    assert 'id="verdict-badge">FAILED<' in html
    figs = layout(html, tmp_path)["figures"]
    assert figs and all(f["w"] >= 300 and f["h"] >= 150 for f in figs)


def test_html_is_an_output_like_any_other(cli, fx, tmp_path):
    m = fx / "tiny.onnx"
    r = cli("validate", m, m, "--html", m)
    assert r.code == 3 and "input" in r.err  # never an input
    (tmp_path / "v.html").write_text("old")
    r = cli("validate", m, m, "--html", tmp_path / "v.html")
    assert r.code == 3 and "--force" in r.err and (tmp_path / "v.html").read_text() == "old"
    r = cli("validate", m, m, "--html", tmp_path / "v.html", "--force")
    assert r.code == 0 and "<svg" in (tmp_path / "v.html").read_text()


def test_degenerate_histograms_still_draw():
    """Every nonzero error the same, no error at all, every latency the same: a figure each, no crash."""
    from dataclasses import replace

    import numpy as np

    from onnxforge.report.html import error_svg, latency_svg
    from onnxforge.core.stats import histogram_with_edges
    from onnxforge.checks.compare import compare_output
    from results import bench_result

    point = compare_output("y", [np.zeros(10)], [np.r_[np.zeros(5), np.full(5, 1e-4)]], atol=2e-4, rtol=0)
    assert point.error_edges == (0.0, 1e-4, 1e-4) and error_svg(point).startswith("<svg")
    exact = compare_output("y", [np.zeros(10)], [np.zeros(10)], atol=0, rtol=0)
    assert error_svg(exact).count('class="series"') == 1
    counts, edges = histogram_with_edges([2.0] * 10)
    flat = replace(bench_result("a.onnx", 2.0), histogram=counts, histogram_edges=edges)
    assert latency_svg([flat]).count('class="series"') == 1
    assert latency_svg([replace(flat, histogram_edges=())]) is None  # an old JSON without edges: no figure
