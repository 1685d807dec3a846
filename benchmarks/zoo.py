"""`onnxforge zoo` against the serial loop people run today, and Ray against local.

    python benchmarks/zoo.py [--runs 3] [--models 6] [--seconds 1.0] [--no-ray] [--max-wait 900]

A zoo of small ONNX models (onnx.helper; simplify + parity + a latency gate timing
--seconds each), run interleaved per round (A B C D, A B C D, ...) so machine drift
hits every mode alike:

- serial: a shell loop, one `onnxforge release` process per model (today's way);
- zoo -j1: the local executor with one worker;
- zoo -j2: the local executor with two workers (goal: <= 0.65x the serial loop);
- ray -j2: a local Ray instance with 2 CPUs (needs the scale extra).

For each zoo run the timeline in zoo-report.json is checked: benchmark phases must
never overlap. Ray's overhead per release is (ray - ray.init - local)/models, with
ray.init timed on its own. Before timing it waits for a quiet machine (no other
pytest or benchmark, 1-minute load under --max-load) and prints the load it got.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tests" / "zoo"))
from benchmarks._util import print_table, summarize  # noqa: E402
from zoofix import make_zoo  # noqa: E402

ENV = {**os.environ, "PYTHONPATH": str(ROOT)}
CLI = [sys.executable, "-m", "onnxforge"]


def others() -> list[str]:
    """Other people's test or benchmark processes (this script's own excluded)."""
    ps = subprocess.run(["ps", "-eo", "pid,args"], capture_output=True, text=True).stdout.splitlines()[1:]
    mine = {str(os.getpid()), str(os.getppid())}
    return [line.strip() for line in ps if ("pytest" in line or "benchmark" in line)
            and line.split()[0] not in mine and "grep" not in line and "benchmarks/zoo.py" not in line]


def wait_quiet(max_load: float, max_wait: float) -> str:
    end = time.monotonic() + max_wait
    while True:
        load = os.getloadavg()[0]
        busy = others()
        if load <= max_load and not busy or time.monotonic() > end:
            up = subprocess.run(["uptime"], capture_output=True, text=True).stdout.strip()
            note = "quiet" if load <= max_load and not busy else f"NOT quiet after {max_wait:.0f} s: {busy[:3]}"
            return f"{up} ({note})"
        time.sleep(10)


def serial(zoo_root: Path, out: Path) -> float:
    t0 = time.perf_counter()
    for cfg in sorted(zoo_root.glob("models/*/release.toml")):
        subprocess.run([*CLI, "release", str(cfg), "-o", str(out / cfg.parent.name), "-q"], env=ENV,
                       stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    return time.perf_counter() - t0


def zoo(zoo_file: Path, out: Path, *args: str) -> tuple[float, dict]:
    t0 = time.perf_counter()
    r = subprocess.run([*CLI, "-q", "zoo", str(zoo_file), "-o", str(out), *args], env=ENV, capture_output=True,
                       text=True)
    wall = time.perf_counter() - t0
    rep = json.loads((out / "zoo-report.json").read_text())["result"]
    if rep["exit_code"] != 0:
        raise SystemExit(f"zoo {args} did not pass: {r.stderr[-2000:]}")
    return wall, rep


def ray_init_seconds() -> float:
    code = ("import time, ray\nt = time.perf_counter()\n"
            "ray.init(address='local', num_cpus=2, include_dashboard=False, logging_level='error')\n"
            "ray.shutdown()\nprint(time.perf_counter() - t)\n")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=ENV)
    return float(r.stdout.strip().splitlines()[-1])


def overlaps(rep: dict) -> int:
    phases = sorted(rep["timeline"], key=lambda p: p["start"])
    return sum(1 for a, b in zip(phases, phases[1:]) if b["start"] < a["end"])


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--models", type=int, default=6)
    ap.add_argument("--seconds", type=float, default=1.0, help="each latency gate's timing")
    ap.add_argument("--no-ray", action="store_true")
    ap.add_argument("--max-load", type=float, default=0.7)
    ap.add_argument("--max-wait", type=float, default=900)
    args = ap.parse_args()
    try:
        import ray  # noqa: F401

        use_ray = not args.no_ray
    except ImportError:
        use_ray = False
    tmp = Path(tempfile.mkdtemp(prefix="zoo-bench-"))
    names = tuple(f"m{i}" for i in range(args.models))
    zoo_file = make_zoo(tmp, names=names, failing=(), seconds=args.seconds)
    modes = ["serial", "zoo -j1", "zoo -j2"] + (["ray -j2"] if use_ray else [])
    times: dict[str, list[float]] = {m: [] for m in modes}
    timelines: dict[str, list[dict]] = {m: [] for m in modes if m != "serial"}
    loads = []
    for i in range(args.runs):
        loads.append(wait_quiet(args.max_load, args.max_wait))
        print(f"round {i + 1}: {loads[-1]}", flush=True)
        for m in modes:
            out = tmp / f"out-{i}-{m.replace(' ', '')}"
            if m == "serial":
                times[m].append(serial(tmp, out))
            else:
                extra = ["--executor", "ray"] if m.startswith("ray") else []
                wall, rep = zoo(zoo_file, out, *extra, "--jobs", m[-1])
                times[m].append(wall)
                timelines[m].append(rep)
            print(f"  {m}: {times[m][-1]:.1f} s", flush=True)
            shutil.rmtree(out, ignore_errors=True)
    report(args, modes, times, timelines, use_ray)
    print("machine at the start of each round:", *loads, sep="\n  ")
    shutil.rmtree(tmp, ignore_errors=True)


def report(args, modes, times, timelines, use_ray) -> None:
    base = summarize(times["serial"])["median"]
    j1 = summarize(times["zoo -j1"])["median"]
    rows = []
    for m in modes:
        s = summarize(times[m])
        ov = sum(overlaps(r) for r in timelines.get(m, []))
        rows.append([m, f"{s['median']:.1f}", f"{s['min']:.1f}-{s['max']:.1f}", f"{s['median'] / base:.2f}x",
                     f"{s['median'] / j1:.2f}x", "-" if m == "serial" else str(ov)])
    print_table(["mode", "median s", "min-max s", "vs serial", "vs zoo -j1", "overlapping timings"], rows,
                title=f"\n{args.models} models, {args.runs} interleaved rounds, latency gates timed {args.seconds} s")
    j2 = summarize(times["zoo -j2"])["median"]
    print(f"\ngoal: zoo -j2 <= 0.65x the serial loop: {j2 / base:.2f}x "
          f"({'met' if j2 / base <= 0.65 else 'NOT met'})")
    last = timelines["zoo -j2"][-1]
    print(f"timeline of the last zoo -j2 run ({len(last['timeline'])} phases, overlaps {last['overlaps']}):")
    for p in last["timeline"]:
        print(f"  {p['release']:<4} {p['start']:7.2f} -> {p['end']:7.2f} s  waited {p['waited']:.2f} s  {p['what']}")
    if use_ray:
        init = [ray_init_seconds() for _ in range(args.runs)]
        r = summarize(times["ray -j2"])["median"]
        i = summarize(init)["median"]
        print(f"\nray.init + shutdown (local, 2 CPUs): median {i:.1f} s (min-max {min(init):.1f}-{max(init):.1f})")
        print(f"Ray scheduling overhead per release vs local: ({r:.1f} - {i:.1f} - {j2:.1f}) / {args.models} = "
              f"{(r - i - j2) / args.models:+.2f} s")


if __name__ == "__main__":
    main()
