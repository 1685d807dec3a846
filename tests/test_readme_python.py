"""The README's "From Python" block runs as it is, in an empty folder (it once read
`q.details["speed"]`, a KeyError: the speed is `q.speed`)."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow  # exports, quantizes, benchmarks and releases a model: about 5 s

ROOT = Path(__file__).resolve().parents[1]


def readme_python_block() -> str:
    text = (ROOT / "README.md").read_text()
    section = text[text.index("## From Python"):]
    section = section[:section.index("\n## ", 1)]
    blocks = re.findall(r"^```python\n(.*?)^```", section, re.S | re.M)
    assert len(blocks) == 1, "the From Python section should hold one python block"
    return blocks[0]


def test_readme_python_block_runs(tmp_path, monkeypatch, capsys):
    """Run as a script would be (``__main__``, in its folder), in this process: a child
    would spend 4 s importing what this worker has loaded."""
    import runpy

    (tmp_path / "example.py").write_text(readme_python_block())
    monkeypatch.chdir(tmp_path)
    runpy.run_path(str(tmp_path / "example.py"), run_name="__main__")
    out = capsys.readouterr().out
    assert out.splitlines()[-1] == "True passed", out
    assert (tmp_path / "release-out" / "report.json").is_file()
