"""The generation check's comparison (pure numpy) and how its result is shown: tokens
compared step by step, logits only while the texts agree, the figures in the table,
the HTML page and the JSON envelope. The real decoders are in
tests/steps/convert/test_with_past.py."""

import io

import numpy as np

from onnxforge.checks.generation import compare_generation
from onnxforge.core.types import ParityReport


def _side(tokens, logits):
    return np.array(tokens), [np.array(step, dtype=np.float64) for step in logits]


def test_equal_tokens_and_logits_within_atol_pass():
    ref = _side([[1, 2, 3]], [[[0, 5]], [[5, 0]], [[0, 5]]])
    g = compare_generation(ref, _side([[1, 2, 3]], [[[0, 5.0005]], [[5, 0]], [[0, 5]]]), atol=1e-3)
    assert g.passed and (g.tokens_equal, g.tokens, g.batch) == (3, 3, 1)
    assert g.step_errors[0] == g.max_logit_error and g.max_logit_error < 1e-3
    assert not compare_generation(ref, _side([[1, 2, 3]], [[[0, 5.01]], [[5, 0]], [[0, 5]]]), atol=1e-3).passed


def test_logits_are_compared_only_while_the_texts_agree():
    """After the first differing token the sides decode different texts: the count stops
    there, and later steps' logits are not compared (they would be off by whole units)."""
    ref = _side([[1, 2, 3, 4], [1, 1, 1, 1]], [[[0]] * 2] * 4)
    cand = _side([[1, 2, 9, 4], [1, 1, 1, 1]], [[[0]] * 2, [[0]] * 2, [[50]] * 2, [[99]] * 2])
    g = compare_generation(ref, cand, atol=1e-3)
    assert not g.passed and g.tokens_equal == 2 and len(g.step_errors) == 3 and g.max_logit_error == 50


def _report():
    from onnxforge.checks.generation import _why

    g = compare_generation(_side([[1, 2]], [[[0]], [[0]]]), _side([[1, 3]], [[[0]], [[0.5]]]), atol=1e-3)
    return ParityReport("hf:gpt2", "model.onnx", 1, (), g.passed, check_stat="generation", problems=(_why(g),),
                        generation=g)


def test_the_table_html_and_json_show_the_figures():
    from rich.console import Console

    from onnxforge.report import dumps
    from onnxforge.report.html import html_report
    from onnxforge.report.tables import render

    rep = _report()
    buf = io.StringIO()
    render(rep, Console(file=buf, width=160))
    text = buf.getvalue()
    assert "generation: 1/2 greedy tokens equal" in text and "greedy tokens differ at step 2 of 2" in text
    page = html_report(rep)
    assert "1/2 greedy tokens equal" in page and "candidate tokens" in page
    import json

    doc = json.loads(dumps(rep))["result"]["generation"]
    assert doc["tokens_equal"] == 1 and doc["candidate_tokens"] == [[1, 3]] and doc["step_errors"] == [0.0, 0.5]
