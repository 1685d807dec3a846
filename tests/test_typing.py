"""The top-level API is typed for a pipeline script: `mypy --strict` on
tests/data/typed_example.py finds no error and infers each call's result type, though
`import onnxforge` imports none of those modules at run time."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.slow  # mypy analyses the package: about 9 s
def test_mypy_strict_infers_the_result_types(tmp_path):
    env = {**os.environ, "MYPYPATH": str(ROOT)}  # this checkout's onnxforge, as an installed one would be found
    r = subprocess.run([sys.executable, "-m", "mypy", "--strict", "--follow-imports=silent", "--cache-dir",
                        str(tmp_path / "cache"), "tests/data/typed_example.py"],
                       cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)
    print(r.stdout)
    assert r.returncode == 0 and "Success: no issues found" in r.stdout, r.stdout + r.stderr
    revealed = re.findall(r'Revealed type is "([^"]+)"', r.stdout)
    assert revealed == [
        "onnxforge.core.types.StepResult",  # convert_torch
        "onnxforge.core.types.StepResult",  # quantize_static
        "onnxforge.core.types.SpeedCheck | None",  # q.speed (the README's example reads it)
        "onnxforge.core.types.ParityReport",  # validate
        "onnxforge.core.types.ReleaseReport",  # release of a dict
        "bool",  # release of a file, .passed
        "onnxforge.steps.package.package.PackageResult",
        "onnxforge.steps.serve_check.check.ServeCheckReport",
        "onnxforge.zoo.merge.ZooReport",  # run_zoo
    ]


def test_import_stays_light():
    """The TYPE_CHECKING imports cost nothing at run time: `import onnxforge` and
    reading its names import no submodule, numpy, onnx or pydantic."""
    code = ("import sys, onnxforge; dir(onnxforge); "
            "print(sorted(m for m in sys.modules if m.split('.')[0] in "
            "('onnxforge', 'numpy', 'onnx', 'onnxruntime', 'pydantic', 'torch')))")
    r = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=60,
                       env={**os.environ, "PYTHONPATH": str(ROOT)})
    assert r.stdout.strip() == "['onnxforge']", r.stdout + r.stderr


def test_top_level_exports():
    import onnxforge
    from onnxforge.steps.serve_check.check import serve_check
    from onnxforge.steps.package.package import package
    from onnxforge.zoo.run import ZooRun, run_zoo

    assert (onnxforge.package, onnxforge.serve_check, onnxforge.run_zoo, onnxforge.ZooRun) == \
        (package, serve_check, run_zoo, ZooRun)
    assert {"package", "serve_check", "run_zoo"} <= set(dir(onnxforge))
