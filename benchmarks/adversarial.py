"""The adversarial cases (tests/adversarial/cases.py and cases_*.py) against the CLI, in
one table: each case runs as its own process (``python -m onnxforge ...``, the current
directory an empty folder, $TMPDIR an empty folder of its own), and the table gives its
exit code, whether the error was one `error:` line with a `hint:`, whether the inputs
stayed byte-identical, what it left outside its outputs (in $TMPDIR too), whether code
from a file ran, its peak RSS, and whether it hung; then the counts. Exit 0 only when
every count is right.

A case that runs past LIMIT_S is a hang: its process group is killed and the run goes
on. The peak RSS is the child's own (os.wait4), over RSS_BUDGET is counted.

    nice python benchmarks/adversarial.py [--limit SECONDS] [-k SUBSTRING]
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT), str(ROOT / "tests" / "adversarial")]

LIMIT_S = 120.0  # a case's wall-clock limit: the slowest honest case (a torch export) takes ~20 s
RSS_BUDGET = 2 << 30  # bytes: what a CI runner must survive on a hostile file
# The children's environment is this process's as it started: building the workspace
# imports torch, which records its cache folder in os.environ.
ENV0 = dict(os.environ)


def run_child(argv: list[str], cwd: str, tmpdir: str, stderr_file: str, limit: float) -> dict:
    """Run ``python -m onnxforge ARGV`` in ``cwd`` with $TMPDIR ``tmpdir``; the child
    leads its own process group, killed as a whole on a hang or when it ends."""
    env = {**ENV0, "PYTHONPATH": str(ROOT), "TMPDIR": tmpdir}
    t0 = time.monotonic()
    with open(stderr_file, "w+") as err:
        p = subprocess.Popen([sys.executable, "-m", "onnxforge", *argv], cwd=cwd, env=env, stdin=subprocess.DEVNULL,
                             stdout=subprocess.DEVNULL, stderr=err, start_new_session=True)
        hung = False
        while True:
            pid, status, usage = os.wait4(p.pid, os.WNOHANG)
            if pid:
                break
            if time.monotonic() - t0 > limit:
                hung = True
                os.killpg(p.pid, signal.SIGKILL)
                pid, status, usage = os.wait4(p.pid, 0)
                break
            time.sleep(0.05)
        p.returncode = os.waitstatus_to_exitcode(status)  # reaped here: Popen must not wait again
        try:
            os.killpg(p.pid, signal.SIGKILL)  # what the child left running (a server, a worker)
        except (ProcessLookupError, PermissionError):
            pass
        err.seek(0)
        text = err.read()
    return {"code": p.returncode, "err": text, "rss": usage.ru_maxrss * 1024, "hung": hung,
            "seconds": time.monotonic() - t0}


def launcher() -> None:
    """``--launcher``: starts each case's process, one request (a JSON line) at a time.
    A child's peak RSS counts the memory of the process it was forked from (Linux keeps
    the high-water mark across exec), so children are forked from this small process,
    started before the main one loads numpy, onnx and torch."""
    for line in sys.stdin:
        print(json.dumps(run_child(**json.loads(line))), flush=True)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--limit", type=float, default=LIMIT_S, help=f"seconds before a case is a hang ({LIMIT_S:.0f})")
    ap.add_argument("-k", default="", help="only the cases whose name holds this")
    ap.add_argument("--launcher", action="store_true", help=argparse.SUPPRESS)
    opts = ap.parse_args()
    if opts.launcher:
        launcher()
        return 0
    spawner = subprocess.Popen([sys.executable, __file__, "--launcher"], stdin=subprocess.PIPE,
                               stdout=subprocess.PIPE, text=True)

    from benchmarks._util import print_table
    from cases import CASES, MARKER, build_workspace, run_case

    cases = [c for c in CASES if opts.k in c.name]
    with tempfile.TemporaryDirectory(prefix="onnxforge-adversarial-") as tmp:
        os.environ["TORCHINDUCTOR_CACHE_DIR"] = str(Path(tmp) / "inductor")  # the workspace's exports, not $TMPDIR
        os.environ.setdefault("ORT_DISABLE_TELEMETRY", "1")
        ws = build_workspace(Path(tmp) / "ws")
        results = []
        for i, c in enumerate(cases, 1):
            child: dict = {}

            def run(argv, _child=child):
                spawner.stdin.write(json.dumps({"argv": argv, "cwd": os.getcwd(), "tmpdir": os.environ["TMPDIR"],
                                                "stderr_file": str(Path(tmp) / "stderr.txt"),
                                                "limit": opts.limit}) + "\n")
                spawner.stdin.flush()
                _child.update(json.loads(spawner.stdout.readline()))
                return _child["code"], _child["err"]

            print(f"[{i}/{len(cases)}] {c.name}", file=sys.stderr, flush=True)
            r = run_case(c, ws, run)
            (ws / MARKER).unlink(missing_ok=True)  # a payload that ran counts once, for its own case
            results.append((c, r, child))
    spawner.stdin.close()
    spawner.wait()

    rows = [[c.name[:60], f"{r.code} (want {c.code})" + ("" if r.clue else ", no clue"),
             "yes" if r.one_line else "NO", "yes" if r.inputs_intact else "NO", len(r.leftovers),
             "YES" if r.ran_code else "no", f"{ch['rss'] / 2**20:.0f}", f"{ch['seconds']:.1f}",
             "HUNG" if ch["hung"] else "no"] for c, r, ch in results]
    print_table(["case", "exit", "error+hint", "inputs intact", "leftovers", "payload ran", "peak RSS MiB",
                 "seconds", "hang"], rows, title="adversarial inputs against every command, one process each")
    bad = [(c, r) for c, r, _ in results
           if not (r.right_code and r.one_line and r.clue and r.inputs_intact and not r.leftovers and not r.ran_code)]
    for c, r in bad:
        lines = [ln for ln in r.err.splitlines() if ln.strip()]
        first = next((ln for ln in lines if ln.startswith("error: ")), lines[-1] if lines else "")
        print(f"\n{c.name}: exit {r.code}; {first[:200]}" + (f"; left {r.leftovers}" if r.leftovers else ""))
    n = len(results)
    counts = {
        "cases": n,
        "right exit code": sum(r.right_code for _, r, _ in results),
        "clue in the error": sum(r.clue for _, r, _ in results),
        "one error: line + hint:": sum(r.one_line for _, r, _ in results),
        "inputs intact": sum(r.inputs_intact for _, r, _ in results),
        "leftovers (incl. $TMPDIR)": sum(len(r.leftovers) for _, r, _ in results),
        "payloads run": sum(r.ran_code for _, r, _ in results),
        f"peak RSS over {RSS_BUDGET >> 30} GiB": sum(ch["rss"] > RSS_BUDGET for _, _, ch in results),
        f"hangs (over {opts.limit:.0f} s)": sum(ch["hung"] for _, _, ch in results),
    }
    print("\n" + ", ".join(f"{k} {v}" for k, v in counts.items()))
    want_all = ("right exit code", "clue in the error", "one error: line + hint:", "inputs intact")
    ok = all(counts[k] == n for k in want_all) and all(v == 0 for k, v in counts.items() if k not in want_all + ("cases",))
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
