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


def _folds_strings(path):
    """A model onnxruntime runs whose string constant onnxsim's native folding cannot take:
    onnxsim writes its complaints to file descriptor 2 itself."""
    import numpy as np
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    nodes = [helper.make_node("StringNormalizer", ["s"], ["sn"], case_change_action="UPPER", locale="C"),
             helper.make_node("Shape", ["sn"], ["sh"]), helper.make_node("Cast", ["sh"], ["shf"], to=TensorProto.FLOAT),
             helper.make_node("ReduceSum", ["shf"], ["r"], keepdims=0), helper.make_node("Add", ["x", "r"], ["y"])]
    g = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [2, 4])],
                          [helper.make_tensor_value_info("y", TensorProto.FLOAT, [2, 4])],
                          [numpy_helper.from_array(np.array(["a", "b"], dtype=object), "s")])
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)])
    m.ir_version = 8
    onnx.save(m, str(path))


def test_onnxsim_native_output_only_with_verbose(tmp_path):
    model = tmp_path / "strings.onnx"
    _folds_strings(model)
    run = [sys.executable, "-m", "onnxforge", "simplify", str(model), "--force"]
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    quiet = subprocess.run([*run, "-o", str(tmp_path / "a.onnx")], capture_output=True, text=True, env=env)
    assert quiet.returncode == 0, quiet.stderr
    assert "failed to run" not in quiet.stderr and "Traceback" not in quiet.stderr, quiet.stderr
    loud = subprocess.run([*run, "-o", str(tmp_path / "b.onnx"), "-v"], capture_output=True, text=True, env=env)
    assert "failed to run" in loud.stderr  # onnxsim did complain: -v shows it


@pytest.mark.parametrize("write", ["python", "native"])
def test_third_party_stderr_is_kept_off_ours(capfd, write):
    """Both ways a library writes a traceback (sys.stderr, or file descriptor 2 from C++)
    stay off the command's stderr, in the process the adversarial harness runs in too."""
    import traceback

    from onnxforge.core.logs import native_stderr

    with native_stderr("a tool"):
        try:
            raise ZeroDivisionError("inside the tool")
        except ZeroDivisionError:
            if write == "python":
                traceback.print_exc()
            else:
                os.write(2, traceback.format_exc().encode())
    out, err = capfd.readouterr()
    assert "Traceback" not in err + out
