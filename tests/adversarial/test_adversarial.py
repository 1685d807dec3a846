"""Hostile and careless inputs against every command (cases.py): each must end with
its own exit code, one error line and a hint, inputs untouched, nothing left behind,
and no code from a file run. The summary line counts the guarantees kept."""

import contextlib
import io

import pytest

from cases import CASES, add_torch_inputs, build_workspace, run_case

# one worker runs every case and the summary after them (split across workers, the
# summary counted one worker's share, or none and skipped); the workspace is built once
pytestmark = pytest.mark.xdist_group("adversarial")

RESULTS = []


@pytest.fixture(scope="module")
def ws(tmp_path_factory):
    return build_workspace(tmp_path_factory.mktemp("adversarial"), torch_inputs=False)


@pytest.fixture(scope="module")
def torch_inputs(ws):
    pytest.importorskip("torch")
    add_torch_inputs(ws)


def _run(argv):
    from onnxforge.cli.app import main

    err = io.StringIO()
    with contextlib.redirect_stderr(err), contextlib.redirect_stdout(io.StringIO()):
        code = main(argv)
    return code, err.getvalue()


@pytest.mark.parametrize("case", [pytest.param(c, marks=pytest.mark.slow) if c.slow else c for c in CASES],
                         ids=[c.name for c in CASES])
def test_case(case, ws, request):
    if case.slow:
        request.getfixturevalue("torch_inputs")
    out = run_case(case, ws, _run)
    RESULTS.append(out)
    assert out.right_code, f"exit {out.code}, want {case.code}: {out.err}"
    assert out.one_line, out.err
    assert out.clue, f"{case.clue!r} not in: {out.err}"
    assert out.inputs_intact, "an input changed"
    assert not out.leftovers, f"files left outside the outputs: {out.leftovers}"
    assert not out.ran_code, "a payload from a file ran"


def test_summary(capsys):
    """Printed with -s (and by benchmarks/adversarial.py): the counts of guarantees kept."""
    if not RESULTS:
        pytest.skip("run together with the cases")
    n = len(RESULTS)
    line = (f"adversarial: {n} cases, right exit code {sum(r.right_code for r in RESULTS)}, one-line error "
            f"{sum(r.one_line for r in RESULTS)}, inputs intact {sum(r.inputs_intact for r in RESULTS)}, "
            f"leftovers {sum(len(r.leftovers) for r in RESULTS)}, code run {sum(r.ran_code for r in RESULTS)}")
    with capsys.disabled():
        print("\n" + line)
    assert all(r.right_code and r.one_line and r.inputs_intact and not r.leftovers and not r.ran_code for r in RESULTS)


@pytest.mark.parametrize("coarse", [False, True])
def test_the_snapshot_sees_every_change_to_an_input(coarse, tmp_path, monkeypatch):
    """'inputs intact' compares two snapshots: a same-size rewrite microseconds later, a
    replacement by rename, a touch, a deletion and a new file must each show."""
    import os

    import cases

    if coarse:  # the hashing taken where timestamps are jiffy-grained
        monkeypatch.setattr(cases, "_coarse_timestamps", lambda ws: True)
    ws = tmp_path / "ws"
    (ws / "in").mkdir(parents=True)
    for name in "abcd":
        (ws / "in" / name).write_bytes(b"hello")
    before = cases.snapshot(ws)
    assert cases.snapshot(ws) == before  # reading changes nothing
    with open(ws / "in" / "a", "r+b") as f:
        f.write(b"HELLO")
    (ws / "in" / "b2").write_bytes(b"hello")
    os.replace(ws / "in" / "b2", ws / "in" / "b")
    os.utime(ws / "in" / "c", ns=(0, (ws / "in" / "c").stat().st_mtime_ns))
    (ws / "in" / "d").unlink()
    (ws / "in" / "e").write_bytes(b"")
    after = cases.snapshot(ws)
    assert sorted(k for k, v in before.items() if after.get(k) != v) == ["in/a", "in/b", "in/c", "in/d"]
    assert sorted(after.keys() - before.keys()) == ["in/e"]
