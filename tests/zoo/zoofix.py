"""Tiny zoos for the zoo tests: ONNX models built with onnx.helper (fixtures/make_fixtures.py),
each released with a simplify step and a latency gate timed for 0.2 s. A "failing" release
has max_p50_ms = 1e-6: no model runs in a nanosecond, so it fails its gate on any machine
(no timed assertion: the verdict is certain, the numbers are not)."""

from __future__ import annotations

import json
import time
from pathlib import Path

from fixtures import make_fixtures as mf

THREE = ("alpha", "beta", "gamma")

CRASH_ONCE = '''import os
from pathlib import Path


def build():
    """A scikit-learn model whose first build kills its process: a worker dying mid-release."""
    import numpy as np
    from sklearn.linear_model import LogisticRegression

    marker = Path(__file__).with_name("crashed-once")
    if not marker.exists():
        marker.write_text("the first worker died here\\n")
        os._exit(3)
    rng = np.random.default_rng(0)
    X = rng.standard_normal((40, 4)).astype(np.float32)
    return LogisticRegression().fit(X, (X[:, 0] > 0).astype(np.int64))
'''


def release_toml(p50: float, seconds: float = 0.2) -> str:
    return f'''[model]
source = "model.onnx"
framework = "onnx"

[[steps]]
run = "simplify"

[gates]
parity = {{ atol = 1e-4, rtol = 1e-3 }}
latency = {{ provider = "cpu", max_p50_ms = {p50}, seconds = {seconds} }}
'''


def make_zoo(root: Path, names=THREE, failing=("gamma",), seconds: float = 0.2, extra: str = "",
             crash_once: str | None = None) -> Path:
    """models/NAME/{model.onnx, release.toml} and zoo.toml listing models/*/release.toml."""
    for i, name in enumerate(names):
        d = root / "models" / name
        d.mkdir(parents=True, exist_ok=True)
        (mf.onnx_tiny if i % 2 == 0 else mf.onnx_chain)(d / "model.onnx")
        (d / "release.toml").write_text(release_toml(1e-6 if name in failing else 1000.0, seconds))
    if crash_once:
        d = root / "models" / crash_once
        d.mkdir(parents=True, exist_ok=True)
        (d / "model.py").write_text(CRASH_ONCE)
        (d / "release.toml").write_text('[model]\nsource = "model.py:build"\nframework = "sklearn"\n'
                                        'inputs = ["X:float32:batchx4"]\n\n[[steps]]\nrun = "convert"\n\n'
                                        '[gates]\nlatency = { provider = "cpu", max_p50_ms = 1000.0, seconds = 0.2 }\n')
    zoo = root / "zoo.toml"
    zoo.write_text('[zoo]\nreleases = ["models/*/release.toml"]\n' + extra)
    return zoo


def zoo_report(out: Path) -> dict:
    env = json.loads((out / "zoo-report.json").read_text())
    assert env["kind"] == "zoo" and env["schema_version"] == 1
    return env["result"]


TIMING_KEYS = {"p50_ms", "speedup", "seconds", "node", "value", "message", "config"}


def verdict_view(rep: dict) -> dict:
    """A combined report without what differs between executors and runs: timings,
    measured values (and the messages that quote them), paths, nodes, the executor."""
    def strip(x):
        if isinstance(x, dict):
            return {k: Path(v).name if k == "folder" else strip(v) for k, v in x.items() if k not in TIMING_KEYS}
        if isinstance(x, list):
            return [strip(v) for v in x]
        return x

    keep = ("passed", "status", "exit_code", "counts", "releases", "overlaps", "error", "hint")
    return strip({k: rep[k] for k in keep})


def two_running_one_timing(out: Path) -> bool:
    """Two releases started (their scratch folders hold steps/) and one past its simplify
    step, into its timing phase: neither can finish its 20-30 s gate before the signal.
    Waiting for both to be past simplify asked more than the tests need."""
    started = list(out.glob(".onnxforge-*/steps"))
    return len(started) >= 2 and any((s / "00-simplify.onnx").exists() for s in started)


def wait_for(predicate, timeout: float, every: float = 0.1) -> bool:
    """Poll ``predicate`` until it holds or ``timeout`` seconds pass."""
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if predicate():
            return True
        time.sleep(every)
    return False
