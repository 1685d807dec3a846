"""`onnxforge zoo` with the local executor: real releases in real worker processes."""

import json
import os
import shutil
import signal
import subprocess
import sys
import time
import xml.etree.ElementTree as ET

import pytest

from conftest import ROOT, default_sigint
from zoofix import make_zoo, two_running_one_timing, verdict_view, wait_for, zoo_report

# every test runs real zoos in worker processes; one xdist worker runs them all, so the
# module's zoo (three) runs once
pytestmark = [pytest.mark.slow, pytest.mark.xdist_group("zoo_local")]

ENV = {**os.environ, "PYTHONPATH": str(ROOT)}


def zoo_cmd(*args, **kw) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "onnxforge", "zoo", *map(str, args)], capture_output=True, text=True,
                          env=ENV, **kw)


@pytest.fixture(scope="module")
def three(tmp_path_factory):
    """The 3-model zoo (gamma fails its latency gate), run once with 2 workers."""
    root = tmp_path_factory.mktemp("zoo")
    zoo = make_zoo(root, seconds=0.3, extra="keep_steps = false\n")
    out = root / "out"
    r = zoo_cmd(zoo, "-o", out, "--jobs", "2", "--json", "--report", root / "envelope.json")
    return r, out, zoo


def test_verdict_exit_code_and_every_release(three):
    r, out, _ = three
    assert r.returncode == 1, r.stderr
    rep = zoo_report(out)
    assert json.loads(r.stdout)["result"] == rep  # --json prints the same envelope (workers print nothing there)
    assert json.loads((out.parent / "envelope.json").read_text())["result"] == rep  # and --report holds it
    assert rep["status"] == "failed" and not rep["passed"] and rep["executor"] == "local" and rep["jobs"] == 2
    assert rep["counts"] == {"passed": 2, "failed": 1, "error": 0, "interrupted": 0, "inconclusive": 0, "not run": 0}
    by = {x["name"]: x for x in rep["releases"]}
    assert list(by) == ["alpha", "beta", "gamma"]
    assert by["gamma"]["status"] == "failed" and by["gamma"]["exit_code"] == 1
    assert by["gamma"]["failure"] == "gate(s) failed: max_p50_ms"
    assert [(g["name"], g["passed"]) for g in by["gamma"]["gates"]] == [("parity:simplify", True), ("max_p50_ms", False)]
    for name in ("alpha", "beta"):
        assert by[name]["status"] == "passed" and (out / name / "model.onnx").is_file()
    assert not (out / "gamma" / "model.onnx").exists()  # a failed release publishes no model
    for x in rep["releases"]:
        assert x["attempts"] == 1 and x["reported"] and x["target"] is None and x["size_bytes"] > 0
        assert x["p50_ms"] > 0 and x["provider"] == "cpu"
        assert (out / x["folder"] / "report.json").is_file() and (out / x["folder"] / "zoo-entry.json").is_file()
    assert "zoo [3/3]" in r.stderr and "error: zoo failed: 1 of 3 release(s) did not pass (gamma)" in r.stderr
    assert "hint: see" in r.stderr
    for name in ("alpha", "beta", "gamma"):  # each release's step lines while it runs, led by its folder
        assert f"{name}: release: start" in r.stderr and f"{name}:   step 1/1 simplify: done in" in r.stderr


def test_quiet_zoo_says_nothing_but_errors(tmp_path):
    zoo = make_zoo(tmp_path, names=("alpha",), failing=())
    r = zoo_cmd(zoo, "-o", tmp_path / "out", "--jobs", "1", "-q")
    assert r.returncode == 0, r.stderr
    assert "alpha:" not in r.stderr and "zoo [" not in r.stderr and "error:" not in r.stderr  # no progress lines


def test_benchmark_phases_never_overlap(three):
    _, out, _ = three
    rep = zoo_report(out)
    phases = sorted(rep["timeline"], key=lambda p: p["start"])
    assert {p["release"] for p in phases} == {"alpha", "beta", "gamma"}
    assert all(p["end"] > p["start"] >= 0 and p["waited"] >= 0 for p in phases)
    for a, b in zip(phases, phases[1:]):
        assert a["end"] <= b["start"], (a, b)
    assert rep["overlaps"] == 0


def test_nothing_left_behind(three):
    _, out, _ = three
    assert sorted(p.name for p in out.iterdir()) == ["alpha", "beta", "gamma", "junit.xml", "report.html",
                                                     "zoo-report.json", "zoo-report.md"]
    assert not list(out.rglob(".onnxforge-incomplete"))
    assert not list(out.glob("*/steps"))  # keep_steps = false: the model and the reports only


def test_markdown_junit_and_html(three):
    _, out, _ = three
    md = (out / "zoo-report.md").read_text()
    assert md.startswith("# onnxforge zoo: FAILED")
    assert "| release | target | parity | max_p50_ms | size | p50 ms | speed-up | verdict |" in md
    assert "| gamma | - | pass | FAIL |" in md and "FAILED (exit 1) |" in md
    assert "**gamma**: gate(s) failed: max_p50_ms" in md and "0 overlapping" in md
    import xmlschema

    xmlschema.XMLSchema(str(ROOT / "tests" / "data" / "junit.xsd")).validate(str(out / "junit.xml"))
    root = ET.parse(out / "junit.xml").getroot()
    assert root.tag == "testsuites" and root.get("failures") == "1" and root.get("errors") == "0"
    suites = root.findall("testsuite")
    assert [s.get("name") for s in suites] == ["alpha", "beta", "gamma"]
    assert int(root.get("tests")) == sum(int(s.get("tests")) for s in suites) == 9
    failed = [c for c in root.iter("testcase") if c.find("failure") is not None]
    assert [(c.get("classname"), c.get("name")) for c in failed] == [("gamma.onnxforge.gates", "max_p50_ms")]
    page = (out / "report.html").read_text()
    links = [line.split('href="')[1].split('"')[0] for line in page.split("<a ")[1:]]
    assert {"alpha/report.md", "gamma/junit.xml", "beta/report.json", "zoo-report.json"} <= set(links)
    assert all((out / link).is_file() for link in links)


def test_an_existing_verdict_needs_force(three, cli):
    _, out, zoo = three
    r = cli("zoo", zoo, "-o", out)
    assert r.code == 3 and "already holds a zoo verdict" in r.err and "--force" in r.err


def test_a_release_folder_in_the_way_needs_force(cli, tmp_path, three):
    _, out, zoo = three
    fresh = tmp_path / "fresh"
    shutil.copytree(out / "beta", fresh / "beta")  # a release the zoo made
    r = cli("zoo", zoo, "-o", fresh)
    assert r.code == 3 and "beta already holds a release" in r.err and "--force" in r.err


def test_a_file_of_someone_else_in_a_release_folder_is_never_replaced(cli, tmp_path, three):
    _, out, zoo = three
    fresh = tmp_path / "fresh"
    (fresh / "beta").mkdir(parents=True)
    (fresh / "beta" / "report.json").write_text("{}")
    for force in ((), ("--force",)):
        r = cli("zoo", zoo, "-o", fresh, *force)
        assert r.code == 3 and "beta holds report.json, which is not from an onnxforge release" in r.err
        assert (fresh / "beta" / "report.json").read_text() == "{}"
        assert sorted(p.name for p in fresh.rglob("*")) == ["beta", "report.json"]  # refused: nothing written


def test_merge_of_the_folders_gives_the_same_verdict(three, cli, tmp_path):
    """What a CI matrix's last job does, here on the local run's folders."""
    _, out, zoo = three
    r = cli("zoo", "merge", *sorted(out.glob("*/report.json")), "-o", out / "merged", "--zoo", zoo)
    assert r.code == 1, r.err
    assert "onnxforge zoo: FAILED" in r.out and "gamma" in r.out  # the table for people
    merged = zoo_report(out / "merged")
    assert merged["executor"] == "matrix"
    assert verdict_view(merged) == verdict_view(zoo_report(out))
    assert [x["folder"] for x in merged["releases"]] == [str(out / n) for n in ("alpha", "beta", "gamma")]
    page = (out / "merged" / "report.html").read_text()
    assert page.count('href="../alpha/report.md"') == 1 and page.count('href="../alpha/report.html"') == 1


def test_merge_counts_a_missing_release_as_an_error(three, cli, tmp_path):
    _, out, zoo = three
    r = cli("zoo", "merge", out / "alpha" / "report.json", out / "beta", "-o", tmp_path / "m", "--zoo", zoo)
    assert r.code == 1
    rep = zoo_report(tmp_path / "m")
    gamma = next(x for x in rep["releases"] if x["name"] == "gamma")
    assert gamma["status"] == "error" and "its job did not finish" in gamma["failure"]
    r = cli("zoo", "merge", out / "alpha" / "report.md", "-o", tmp_path / "m2")
    assert r.code == 3 and "not a release's report.json" in r.err and "hint:" in r.err
    r = cli("zoo", "merge", out / "zoo-report.json", "-o", tmp_path / "m3")
    assert r.code == 3
    twice = tmp_path / "dl" / "alpha"
    shutil.copytree(out / "alpha", twice)
    r = cli("zoo", "merge", out / "alpha", twice, "-o", tmp_path / "m4")
    assert r.code == 3 and "two release folders are both 'alpha'" in r.err


def test_inputs_of_the_releases_are_never_written(three, cli, tmp_path):
    """--report over a release's config or source, --report inside OUT, and merge -o onto
    a release folder are refused before any work, --force or not; nothing changes."""
    _, out, zoo = three
    cfg = zoo.parent / "models" / "alpha" / "release.toml"
    model = cfg.with_name("model.onnx")
    before = (cfg.read_bytes(), model.read_bytes(), (out / "alpha" / "junit.xml").read_bytes())
    r = cli("zoo", zoo, "-o", tmp_path / "o1", "--report", cfg, "--force")
    assert r.code == 3 and "is an input of this command" in r.err
    r = cli("zoo", zoo, "-o", tmp_path / "o2", "--report", model, "--force")
    assert r.code == 3 and "is an input of this command" in r.err
    r = cli("zoo", zoo, "-o", tmp_path / "o3", "--report", tmp_path / "o3" / "alpha" / "report.json")
    assert r.code == 2 and "inside the zoo's output" in r.err
    r = cli("zoo", "merge", out / "alpha", "-o", out / "alpha", "--force")
    assert r.code == 3 and "is the release folder alpha being merged" in r.err and "hint:" in r.err
    assert (cfg.read_bytes(), model.read_bytes(), (out / "alpha" / "junit.xml").read_bytes()) == before
    assert not any((tmp_path / n).exists() for n in ("o1", "o2", "o3"))


def test_a_zoo_file_that_did_not_load_does_not_block_the_next_run(cli, tmp_path):
    out = tmp_path / "out"
    r = cli("zoo", tmp_path / "typo.toml", "-o", out)
    assert r.code == 3 and "not found" in r.err
    assert r.out == ""  # no empty table: the error is all there is to say
    assert zoo_report(out)["status"] == "error"  # CI still gets a verdict
    zoo = make_zoo(tmp_path, names=("alpha",), failing=())
    r = cli("zoo", zoo, "-o", out, "--jobs", "1")  # the corrected command needs no --force
    assert r.code == 0, r.err
    r = cli("zoo", zoo, "-o", out, "--jobs", "1")  # a verdict of releases that ran still does
    assert r.code == 3 and "--force" in r.err


@pytest.mark.parametrize("sig,code,group", [(signal.SIGINT, 130, True), (signal.SIGTERM, 143, False),
                                            (signal.SIGTERM, 143, True)], ids=["ctrl-c", "sigterm", "timeout"])
def test_interrupt_stops_every_release_and_leaves_no_half_written_folder(tmp_path, sig, code, group):
    """Ctrl-C (the terminal signals the whole process group) or SIGTERM (CI cancels:
    only the zoo process gets it): every release stops, those that ran say
    'interrupted', the others 'not run', and no scratch or half-moved folder stays."""
    zoo = make_zoo(tmp_path, names=("a1", "a2", "a3", "a4"), failing=(), seconds=20)
    out = tmp_path / "out"
    p = subprocess.Popen([sys.executable, "-m", "onnxforge", "zoo", str(zoo), "-o", str(out), "--jobs", "2"],
                         env=ENV, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True,
                         preexec_fn=default_sigint)
    try:
        # both workers running, one in its 20-second timing phase (zoofix.two_running_one_timing)
        assert wait_for(lambda: two_running_one_timing(out), 120)
        time.sleep(1.0)
        if group:  # a terminal's Ctrl-C, or `timeout`, which signals the process and then its group
            if sig == signal.SIGTERM:
                p.send_signal(sig)
            os.killpg(p.pid, sig)
        else:
            p.send_signal(sig)
        _, err = p.communicate(timeout=120)
    finally:
        if p.poll() is None:
            os.killpg(p.pid, signal.SIGKILL)
    assert p.returncode == code, err
    assert "Traceback" not in err, err  # a repeated signal is absorbed, not reported as a race
    rep = zoo_report(out)
    assert rep["status"] == "interrupted" and rep["exit_code"] == code  # what the process exits with
    statuses = sorted(x["status"] for x in rep["releases"])
    assert statuses == ["interrupted", "interrupted", "not run", "not run"], rep["releases"]
    for x in rep["releases"]:
        if x["status"] == "interrupted":  # a complete folder holding the interrupted verdict
            res = json.loads((out / x["folder"] / "report.json").read_text())["result"]
            assert res["status"] == "interrupted" and res["exit_code"] == code
        else:
            assert not (out / x["folder"]).exists()
    assert not list(out.glob(".onnxforge-*")) and not list(out.rglob(".onnxforge-incomplete"))
    assert wait_for(lambda: not group_alive(p.pid), 10)  # no worker outlived the zoo (zombies get reaped)


def group_alive(pgid: int) -> bool:
    try:
        os.killpg(pgid, 0)
        return True
    except ProcessLookupError:
        return False


def test_a_worker_that_dies_is_replaced_and_its_release_retried(tmp_path):
    pytest.importorskip("sklearn")
    zoo = make_zoo(tmp_path, names=("alpha",), failing=(), crash_once="crashy")
    out = tmp_path / "out"
    r = zoo_cmd(zoo, "-o", out, "--jobs", "2")
    assert r.returncode == 0, r.stderr
    assert "the worker running crashy died (exit code 3); running it again (attempt 2 of 3)" in r.stderr
    rep = zoo_report(out)
    crashy = next(x for x in rep["releases"] if x["name"] == "crashy")
    assert crashy["status"] == "passed" and crashy["attempts"] == 2
    assert not list(out.glob(".onnxforge-*"))  # the dead attempt's scratch folder is gone


def test_a_worker_that_keeps_dying_is_an_error_not_a_hang(tmp_path):
    pytest.importorskip("sklearn")
    zoo = make_zoo(tmp_path, names=("alpha",), failing=(), crash_once="crashy",
                   extra="max_retries = 0\n")
    out = tmp_path / "out"
    r = zoo_cmd(zoo, "-o", out)
    assert r.returncode == 1, r.stderr
    rep = zoo_report(out)
    by = {x["name"]: x for x in rep["releases"]}
    assert by["alpha"]["status"] == "passed"  # the others go on
    assert by["crashy"]["status"] == "error" and "worker process died (exit code 3)" in by["crashy"]["failure"]
    assert 'errors="1"' in (out / "junit.xml").read_text()
