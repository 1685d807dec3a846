import math

import numpy as np
import pytest

from onnxforge.core.errors import UsageError
from onnxforge.core.types import Tolerance
from onnxforge.data.specs import parse_per_output
from onnxforge.checks.compare import Criteria, compare, compare_output, make_tolerance


def parse_tolerances(atol, rtol):
    return make_tolerance(parse_per_output(atol or [], "--atol"), parse_per_output(rtol or [], "--rtol"))


def test_identical_passes_with_zero_error():
    a = np.linspace(-1, 1, 100, dtype=np.float32).reshape(10, 10)
    d = compare_output("y", [a], [a.copy()], atol=1e-6, rtol=0)
    assert d.passed and d.max_abs == 0 and d.mismatch_fraction == 0 and d.cosine == pytest.approx(1.0)


def test_statistics_on_hand_made_case():
    ref = np.array([1.0, 2.0, 4.0, 0.0], np.float32)
    cand = np.array([1.0, 2.5, 4.0, 0.1], np.float32)
    d = compare_output("y", [ref], [cand], atol=0.2, rtol=0.0)
    assert d.max_abs == pytest.approx(0.5)
    assert d.mean_abs == pytest.approx(0.15, rel=1e-6)
    assert d.max_rel == pytest.approx(0.25)  # ref 0 (within atol) has no relative error worth showing (was 1e+307)
    assert d.mismatch_fraction == pytest.approx(0.25)  # only 2.0 -> 2.5 is outside 0.2
    assert not d.passed and "1 of 4 elements" in d.message
    # the same case passes when rtol covers it: 0.5 <= 0.2 + 0.25 * 2
    assert compare_output("y", [ref], [cand], atol=0.2, rtol=0.25).passed


@pytest.mark.parametrize("stat,atol,rtol,passed", [
    ("max", 0.5, 0.0, True), ("max", 0.4, 0.0, False),
    ("mean", 0.151, 0.0, True), ("mean", 0.1, 0.0, False),
    ("p99", 0.49, 0.0, True), ("p99", 0.3, 0.0, False),
    ("median", 0.051, 0.0, True), ("median", 0.04, 0.0, False),  # errors 0, 0.5, 0, 0.1: median 0.05
    ("elemwise", 0.5, 0.0, True), ("elemwise", 0.4, 0.0, False),  # Polygraphy's name for elementwise
])
def test_check_stats(stat, atol, rtol, passed):
    ref = np.array([1.0, 2.0, 4.0, 3.0])
    cand = np.array([1.0, 2.5, 4.0, 3.1])
    assert compare_output("y", [ref], [cand], atol=atol, rtol=rtol, criteria=Criteria(stat)).passed is passed


def test_unknown_check_stat():
    with pytest.raises(UsageError) as e:
        Criteria(check_stat="quantile")
    assert "median" in e.value.hint  # the hint lists the statistics


@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
def test_nonfinite_never_passes(bad):
    ref = np.ones(4)
    cand = np.ones(4)
    cand[2] = bad
    d = compare_output("y", [ref], [cand], atol=1e9, rtol=1e9)
    assert not d.passed and "candidate has 1" in d.nonfinite
    d2 = compare_output("y", [cand], [cand.copy()], atol=1e9, rtol=1e9)  # even when both match
    assert not d2.passed and "reference has" in d2.nonfinite


def test_shape_mismatch_fails_clearly():
    d = compare_output("y", [np.zeros((2, 3))], [np.zeros((3, 2))], atol=1, rtol=1)
    assert not d.passed and "shape mismatch" in d.message and "[2, 3]" in d.message


def test_labels_exact_and_agreement():
    ref = np.array([0, 1, 2, 1, 0])
    cand = np.array([0, 1, 2, 2, 0])
    d = compare_output("label", [ref], [cand], atol=1, rtol=1)
    assert not d.passed and d.label_agreement == pytest.approx(0.8) and "[3]" in d.message
    assert compare_output("label", [ref], [cand], atol=0, rtol=0, criteria=Criteria(min_agreement=0.8)).passed
    s = compare_output("label", [np.array(["a", "b"])], [np.array(["a", "b"])], atol=0, rtol=0)
    assert s.passed and s.label_agreement == 1.0


def test_label_ties_are_counted_not_failed():
    """A label that differs where the reference's top-2 scores tie within the scores'
    tolerance is a tie; any other difference still fails."""
    ref_lab, cand_lab = np.array([0, 1, 1, 0]), np.array([0, 0, 1, 1])
    probs = np.array([[0.9, 0.1], [0.5, 0.5 + 1e-9], [0.2, 0.8], [0.7, 0.3]])
    outs = lambda lab: {"label": lab, "probabilities": probs}  # noqa: E731
    rep = compare(outs(ref_lab), outs(cand_lab), Tolerance(1e-4, 1e-3), label_scores={"label": "probabilities"})
    d = rep.outputs[0]
    assert not rep.passed and d.mismatches == 2 and d.ties == 1 and "1 of 4 labels differ beyond ties" in d.message
    cand_lab[3] = 0
    rep = compare(outs(ref_lab), outs(cand_lab), Tolerance(1e-4, 1e-3), label_scores={"label": "probabilities"})
    assert rep.passed and rep.outputs[0].ties == 1 and "counted as ties" in rep.outputs[0].message
    assert not compare(outs(ref_lab), outs(cand_lab), Tolerance(1e-4, 1e-3)).passed  # no scores named: exact


def test_criteria_come_as_one_object_or_as_keywords_not_both():
    """The library API keeps its keywords (compare(..., min_cosine=0.99)); inside, the
    criteria travel as one Criteria, built once."""
    ref, cand = {"y": np.array([1.0, 0.0])}, {"y": np.array([0.0, 1.0])}
    by_keyword = compare(ref, cand, Tolerance(10, 0), min_cosine=0.99)
    assert by_keyword == compare(ref, cand, Tolerance(10, 0), criteria=Criteria(min_cosine=0.99))
    assert not by_keyword.passed
    with pytest.raises(UsageError, match="not both"):
        compare(ref, cand, criteria=Criteria(), min_cosine=0.5)
    assert Criteria("elemwise").check_stat == "elementwise"
    assert Criteria.budget(0.99, 0.01) == Criteria(min_cosine=0.99, min_agreement=0.99, task="classification")


def test_classification_agreement_and_topk():
    ref = np.array([[0.1, 0.9, 0.0], [0.8, 0.1, 0.1], [0.2, 0.3, 0.5]])
    cand = np.array([[0.1, 0.8, 0.1], [0.1, 0.8, 0.1], [0.2, 0.3, 0.5]])  # sample 1 flips
    d = compare_output("probs", [ref], [cand], atol=1.0, rtol=0,
                       criteria=Criteria(task="classification", top_k=2, min_agreement=0.9))
    assert d.label_agreement == pytest.approx(2 / 3)
    assert d.topk_agreement == pytest.approx(1.0)  # class 0 is second in sample 1
    assert not d.passed and "top-1 agreement" in d.message


def test_min_cosine():
    ref = np.array([1.0, 0.0])
    cand = np.array([0.0, 1.0])
    d = compare_output("y", [ref], [cand], atol=10, rtol=0, criteria=Criteria(min_cosine=0.99))
    assert not d.passed and d.cosine == pytest.approx(0.0)


def test_compare_names_and_per_output_tolerance():
    ref = {"a": np.ones(3), "b": np.ones(3)}
    cand = {"a": np.ones(3) + 1e-3, "b": np.ones(3) + 1e-3}
    tol = parse_tolerances(["1e-4", "b:1e-2"], ["0"])
    assert tol == Tolerance(1e-4, 0.0, {"b": (1e-2, 0.0)})
    r = compare(ref, cand, tol)
    assert [d.passed for d in r.outputs] == [False, True] and not r.passed
    r2 = compare(ref, {"a": np.ones(3)}, Tolerance())
    assert not r2.passed and any("'b' missing from the candidate" in p for p in r2.problems)
    r3 = compare(ref, ref, parse_tolerances(["nope:1e-3"], None))
    assert not r3.passed and "unknown output" in r3.problems[0]


def test_multi_sample_with_different_shapes():
    ref = [{"y": np.zeros((1, 2))}, {"y": np.zeros((3, 2))}]
    cand = [{"y": np.zeros((1, 2))}, {"y": np.full((3, 2), 1e-5)}]
    r = compare(ref, cand, Tolerance(1e-4, 0))
    assert r.passed and r.samples == 2 and r.outputs[0].max_abs == pytest.approx(1e-5)


def test_parse_tolerances_rejects_garbage():
    with pytest.raises(UsageError):
        parse_tolerances(["abc"], None)
    with pytest.raises(UsageError):
        parse_tolerances(["-1"], None)
    assert math.isinf(parse_tolerances(["inf"], None).atol)


def test_error_histogram_per_output():
    """Log-spaced edges over the abs error; the first bin [0, smallest error) holds the exact matches."""
    ref = np.zeros(1000)
    cand = np.r_[np.zeros(100), np.logspace(-9, -2, 900)]
    d = compare_output("y", [ref], [cand], atol=1e-4, rtol=0)
    assert len(d.error_edges) == len(d.error_histogram) + 1 and sum(d.error_histogram) == 1000
    assert d.error_edges[0] == 0 and d.error_histogram[0] == 100
    assert d.error_edges[1] == pytest.approx(1e-9) and d.error_edges[-1] == pytest.approx(1e-2)
    ratios = np.diff(np.log10(d.error_edges[1:]))
    assert np.allclose(ratios, ratios[0])  # equal widths on a log axis
    same = compare_output("y", [ref], [ref], atol=0, rtol=0)
    assert same.error_histogram == (1000,) and same.error_edges == (0.0, 0.0)
    labels = compare_output("y", [np.arange(4)], [np.arange(4)], atol=0, rtol=0)
    assert labels.error_histogram == ()  # labels are compared exactly: no error distribution
