"""A run stopped by Ctrl-C or SIGTERM says so like every other exit: one `error:` line
and a `hint:`, exit 130 / 143, no traceback."""

import os
import signal
import subprocess
import sys
import time

import pytest

from conftest import ROOT

pytestmark = pytest.mark.slow  # starts processes and waits for them to be working


def _default_sigint():  # a parent that ignores SIGINT (a background job) would pass SIG_IGN on
    signal.signal(signal.SIGINT, signal.SIG_DFL)


@pytest.mark.parametrize("sig, code, line", [(signal.SIGINT, 130, "error: interrupted"),
                                             (signal.SIGTERM, 143, "error: terminated (SIGTERM)")])
def test_stopped_run_says_error_and_hint(tmp_path, sig, code, line):
    sys.path.insert(0, str(ROOT))
    from fixtures import make_fixtures as mf

    model = tmp_path / "tiny.onnx"
    mf.onnx_tiny(model)
    p = subprocess.Popen([sys.executable, "-m", "onnxforge", "benchmark", str(model), "--duration", "60"],
                         cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                         env={**os.environ, "PYTHONPATH": str(ROOT)}, preexec_fn=_default_sigint)
    time.sleep(5)  # past start-up: in the timing loop
    p.send_signal(sig)
    _, err = p.communicate(timeout=60)
    lines = [ln for ln in err.splitlines() if ln.strip()]
    assert p.returncode == code, err
    assert "Traceback" not in err
    assert [ln for ln in lines if ln.startswith("error: ")] == [ln for ln in lines if ln.startswith(line)], err
    assert len([ln for ln in lines if ln.startswith("error: ")]) == 1, err
    assert any(ln.startswith("hint: ") for ln in lines), err
