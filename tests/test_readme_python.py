"""The README's "From Python" block runs as it is, in an empty folder (it once read
`q.details["speed"]`, a KeyError: the speed is `q.speed`)."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow  # exports, quantizes, benchmarks and releases a model: about 20 s

ROOT = Path(__file__).resolve().parents[1]


def readme_python_block() -> str:
    text = (ROOT / "README.md").read_text()
    section = text[text.index("## From Python"):]
    section = section[:section.index("\n## ", 1)]
    blocks = re.findall(r"^```python\n(.*?)^```", section, re.S | re.M)
    assert len(blocks) == 1, "the From Python section should hold one python block"
    return blocks[0]


def test_readme_python_block_runs(tmp_path):
    (tmp_path / "example.py").write_text(readme_python_block())
    r = subprocess.run([sys.executable, "example.py"], cwd=tmp_path, capture_output=True, text=True, timeout=600,
                       env={**os.environ, "PYTHONPATH": str(ROOT)})
    assert r.returncode == 0, r.stderr[-4000:]
    assert r.stdout.splitlines()[-1] == "True passed", r.stdout
    assert (tmp_path / "release-out" / "report.json").is_file()
