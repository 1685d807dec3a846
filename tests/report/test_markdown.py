"""report.md is read as GitHub Markdown (the step summary): names from the user's files
must not add table columns or turn into HTML."""

import dataclasses
import re

from results import release

from onnxforge.report.markdown import markdown
from onnxforge.core.types import StepResult


def test_odd_file_names_stay_in_their_cell():
    base = release()
    odd = StepResult("convert:torch", "/r/steps/a|b <x>&.onnx", True, True, None)
    text = markdown(dataclasses.replace(base, steps=(base.steps[0], odd, *base.steps[2:])))
    rows = [ln for ln in text.splitlines() if ln.startswith("| 1 |")]
    assert rows and "a\\|b &lt;x&gt;&amp;.onnx" in rows[0]
    for table in re.split(r"\n\n", text):
        lines = [ln for ln in table.splitlines() if ln.startswith("|")]
        widths = {len(re.findall(r"(?<!\\)\|", ln)) for ln in lines}
        assert len(widths) <= 1, table  # every row of a table has the same number of columns
