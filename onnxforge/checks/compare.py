"""Comparing outputs: a pure function over arrays (no models, no runtime).

Check statistics (``check_stat``), after Polygraphy:
- ``elementwise`` (default): every element within ``atol + rtol * |ref|`` (numpy's
  allclose), the strictest and what torch.testing does;
- ``max`` / ``mean`` / ``median`` / ``p99``: that statistic of the absolute error
  within ``atol``, or of the relative error within ``rtol``. Polygraphy's
  ``elemwise`` is accepted for ``elementwise`` (and its ``--check-error-stat`` for
  ``--check-stat``).
Integer, bool and string outputs (labels) are compared exactly: ``min_agreement``
(default 1.0) is the fraction of elements that must be equal.
Any NaN or Inf in either side fails the output and is named in the report.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace
from typing import Any, Mapping, Sequence

from onnxforge.core.errors import UsageError
from onnxforge.core.types import OutputDiff, ParityReport, Tolerance
import numpy as np

CHECK_STATS = ("elementwise", "max", "mean", "median", "p99")
CHECK_STAT_ALIASES = {"elemwise": "elementwise"}  # Polygraphy's spelling

# Defaults suit fp32 exports: float32 has ~7 significant digits, and exporters
# reorder reductions, so 1e-4 absolute / 1e-3 relative passes honest exports and
# catches wrong graphs (which are off by orders of magnitude more).
DEFAULT_TOLERANCE = Tolerance(atol=1e-4, rtol=1e-3)
# No elementwise bound at all: a step judged on cosine and labels only (quantization)
LOOSE = Tolerance(atol=math.inf, rtol=math.inf)


def check_stat_name(name: str) -> str:
    """The statistic's name in onnxforge's spelling, or a UsageError listing them."""
    canon = CHECK_STAT_ALIASES.get(name, name)
    if canon not in CHECK_STATS:
        raise UsageError(f"unknown --check-stat {name!r}",
                         hint="use one of: " + ", ".join(CHECK_STATS) + " (elemwise = elementwise)")
    return canon


@dataclass(frozen=True)
class Criteria:
    """What must hold, beside the tolerance, for two runs to agree. Built once per command
    or step (validate's flags, a step's budget, a release's parity gate) and passed down
    to every output's comparison."""

    check_stat: str = "elementwise"
    min_cosine: float | None = None
    min_agreement: float | None = None  # labels (and top-1 with task classification) that must agree; None: all
    task: str | None = None  # "classification": also the top-1 / top-k agreement of score outputs
    top_k: int = 5
    label_scores: Mapping[str, str] | None = None  # {label output: the reference's score output}: ties (_label_ties)

    def __post_init__(self):
        object.__setattr__(self, "check_stat", check_stat_name(self.check_stat))

    @classmethod
    def budget(cls, min_cosine: float | None = None, max_mismatch: float | None = None,
               check_stat: str = "elementwise") -> "Criteria":
        """A step's budget: a cosine, and at most ``max_mismatch`` of the top-1 labels changed."""
        return cls(check_stat, min_cosine, None if max_mismatch is None else 1 - max_mismatch,
                   None if max_mismatch is None else "classification")


def criteria_of(criteria: Criteria | None, keywords: Mapping[str, Any]) -> Criteria:
    """The caller's Criteria, or one built from the public API's keywords
    (``validate(..., check_stat="max", min_cosine=0.99)``)."""
    if criteria is None:
        return Criteria(**keywords)
    if keywords:
        raise UsageError(f"give criteria or {', '.join(keywords)}, not both")
    return criteria


def make_tolerance(atol=None, rtol=None, default: Tolerance = DEFAULT_TOLERANCE) -> Tolerance:
    """A Tolerance from option values: a number, or {"*": default, output: value}."""

    def split(v, fallback):
        if v is None:
            return fallback, {}
        if isinstance(v, Mapping):
            return _bound(v.get("*", fallback)), {k: _bound(x) for k, x in v.items() if k != "*"}
        return _bound(v), {}

    a, pa = split(atol, default.atol)
    r, pr = split(rtol, default.rtol)
    per = {name: (pa.get(name, a), pr.get(name, r)) for name in set(pa) | set(pr)}
    return Tolerance(atol=a, rtol=r, per_output=per)


def _bound(v) -> float:
    v = float(v)
    if math.isnan(v) or v < 0:
        raise UsageError(f"bad tolerance {v}: must be a number >= 0", hint="write --atol 1e-4 or --atol NAME:1e-3")
    return v


def _as_array(x):
    return np.asarray(x)


def _is_exact(arr) -> bool:
    return arr.dtype.kind in "iubUSO"


def labels_equal(ref, cand):
    """Element-wise equality of two label arrays (a float label from one side is compared by value)."""
    if ref.dtype.kind in "fc" or cand.dtype.kind in "fc":
        return np.isclose(ref.astype(np.float64), cand.astype(np.float64), atol=0, rtol=0)
    if ref.dtype.kind in "USO" or cand.dtype.kind in "USO":
        return ref.astype(str) == cand.astype(str)
    return ref == cand


def _labels(name, ref, cand, shape, min_agreement) -> OutputDiff:
    """Labels: exact equality (a float label from one side is compared by value)."""
    eq = labels_equal(ref, cand)
    agree = float(eq.mean()) if eq.size else 1.0
    need = 1.0 if min_agreement is None else min_agreement
    bad = np.flatnonzero(~eq)[:5].tolist()
    passed = agree >= need
    msg = "" if passed else f"{(~eq).sum()} of {eq.size} labels differ (first at flat indices {bad}); need agreement >= {need:g}"
    diff = 0.0 if passed and agree == 1.0 else 1.0
    return OutputDiff(name, diff, diff, float(1 - agree), diff, float(1 - agree), float(agree), passed,
                      shape=shape, atol=0.0, rtol=0.0, label_agreement=agree, message=msg, mismatches=int((~eq).sum()))


def _label_ties(d: OutputDiff, ref_list, cand_list, scores_list, atol: float, rtol: float,
                min_agreement) -> OutputDiff:
    """Labels that differ on rows where the reference's two highest scores are within the
    scores' tolerance of each other are ties: which class wins there is rounding, not a
    wrong model. They are counted and named, and only the other differences are judged."""
    ref = np.concatenate([_as_array(r).reshape(-1) for r in ref_list])
    cand = np.concatenate([_as_array(c).reshape(-1) for c in cand_list])
    scores = [_as_array(x) for x in scores_list]
    if any(x.ndim != 2 or x.shape[1] < 2 for x in scores) or sum(x.shape[0] for x in scores) != ref.size:
        return d  # not one row of scores per label
    top2 = np.sort(np.concatenate(scores).astype(np.float64), axis=1)[:, -2:]
    tied = np.abs(top2[:, 1] - top2[:, 0]) <= atol + rtol * np.abs(top2[:, 1])
    differ = ~labels_equal(ref, cand)
    ties = int((differ & tied).sum())
    if not ties:
        return d
    real = int((differ & ~tied).sum())
    agree = 1 - real / ref.size
    need = 1.0 if min_agreement is None else min_agreement
    passed = agree >= need
    tie_note = (f"{ties} of {ref.size} labels differ on rows where the reference's top-2 scores tie (within "
                f"atol {atol:g} + rtol {rtol:g}): counted as ties")
    msg = tie_note if passed else f"{real} of {ref.size} labels differ beyond ties (need agreement >= {need:g}); {tie_note}"
    return replace(d, passed=passed, ties=ties, message=msg)


def _nonfinite(r64, c64) -> tuple[list[str], object]:
    """Notes naming NaN/Inf on each side, and the mask of elements finite on both (or None)."""
    r_bad, c_bad = ~np.isfinite(r64), ~np.isfinite(c64)
    notes = []
    for side, mask, arr in (("reference", r_bad, r64), ("candidate", c_bad, c64)):
        if mask.any():
            n_nan = int(np.isnan(arr).sum())
            n_inf = int(mask.sum()) - n_nan
            parts = [f"{n_nan} NaN" if n_nan else "", f"{n_inf} Inf" if n_inf else ""]
            notes.append(f"{side} has " + " and ".join(p for p in parts if p))
    return notes, (~(r_bad | c_bad) if notes else None)


def _within(err, abs_ref, atol: float, rtol: float):
    if math.isinf(atol) or math.isinf(rtol):
        return np.ones(err.shape, dtype=bool)  # no bound (inf * 0 would be NaN)
    return err <= atol + rtol * abs_ref


def _verdict(err, rel, within, check_stat, atol, rtol, max_abs) -> tuple[bool, str]:
    if check_stat == "elementwise":
        return bool(within.all()), (f"{(~within).sum()} of {within.size} elements outside atol {atol:g} + "
                                    f"rtol {rtol:g}*|ref| (max abs {max_abs:.3g})")
    stat = {"max": np.max, "mean": np.mean, "median": np.median, "p99": lambda a: np.quantile(a, 0.99)}[check_stat]
    sa = float(stat(err)) if err.size else 0.0
    sr = float(stat(rel)) if rel.size else 0.0
    return sa <= atol or sr <= rtol, (f"{check_stat} abs error {sa:.3g} > atol {atol:g} and {check_stat} rel error "
                                      f"{sr:.3g} > rtol {rtol:g}")


ERROR_BINS = 12


def error_histogram(err, bins: int = ERROR_BINS) -> tuple[tuple[int, ...], tuple[float, ...]]:
    """Counts of absolute errors between log-spaced edges: errors span decades (1e-9 from
    reordered sums, 1e-2 from quantization), so equal-width bins would put all but the
    largest in the first. The first bin, [0, smallest nonzero error), holds the exact
    matches. Small on purpose: 12 bins per output in every parity report."""
    if err.size == 0:
        return (), ()
    pos = err[err > 0]
    if pos.size == 0:
        return (int(err.size),), (0.0, 0.0)
    lo, hi = float(pos.min()), float(pos.max())
    if hi <= lo:  # every nonzero error is the same value
        return (int(err.size - pos.size), int(pos.size)), (0.0, lo, hi)
    edges = np.concatenate([[0.0], np.logspace(np.log10(lo), np.log10(hi), bins)])
    edges[-1] = hi  # logspace may land a hair below the largest error
    counts, _ = np.histogram(err, bins=edges)
    return tuple(int(c) for c in counts), tuple(float(e) for e in edges)


def _top_k(ref_list, cand_list, top_k: int) -> tuple[float, float]:
    """(top-1 agreement, top-k agreement) of score outputs, over the last axis."""
    rl = [_as_array(r) for r in ref_list]
    cl = [_as_array(c) for c in cand_list]
    r_lab = np.concatenate([r.reshape(-1, r.shape[-1]).argmax(-1) for r in rl])
    c_lab = np.concatenate([c.reshape(-1, c.shape[-1]).argmax(-1) for c in cl])
    k = min(top_k, rl[0].shape[-1])
    c_top = np.concatenate([np.argsort(-c.reshape(-1, c.shape[-1]), axis=-1)[:, :k] for c in cl])
    return float((r_lab == c_lab).mean()), float((c_top == r_lab[:, None]).any(axis=1).mean())


def compare_output(
    name: str,
    ref_list: Sequence,
    cand_list: Sequence,
    *,
    atol: float,
    rtol: float,
    criteria: Criteria = Criteria(),
) -> OutputDiff:
    """Compare one output across samples (lists of arrays, one per sample)."""
    shape = tuple(_as_array(ref_list[0]).shape) if ref_list else ()
    for i, (r, c) in enumerate(zip(ref_list, cand_list)):
        r, c = _as_array(r), _as_array(c)
        if r.shape != c.shape:
            return OutputDiff(name, math.inf, math.inf, math.inf, math.inf, 1.0, 0.0, False, shape=shape,
                              atol=atol, rtol=rtol,
                              message=f"shape mismatch in sample {i}: reference {list(r.shape)}, candidate {list(c.shape)}")
    ref = np.concatenate([_as_array(r).reshape(-1) for r in ref_list]) if ref_list else np.zeros(0)
    cand = np.concatenate([_as_array(c).reshape(-1) for c in cand_list]) if cand_list else np.zeros(0)
    if _is_exact(ref) or _is_exact(cand):
        return _labels(name, ref, cand, shape, criteria.min_agreement)

    r64, c64 = ref.astype(np.float64), cand.astype(np.float64)
    notes, both = _nonfinite(r64, c64)
    rf, cf = (r64[both], c64[both]) if both is not None else (r64, c64)
    err = np.abs(rf - cf)
    abs_ref = np.abs(rf)
    with np.errstate(divide="ignore", invalid="ignore"):
        rel = err / np.maximum(abs_ref, np.finfo(np.float64).tiny)
    rel[err == 0] = 0.0
    # the reported max rel leaves out references within atol of 0: there the absolute
    # bound governs, and an error relative to ~0 (1e+307) says nothing
    shown_rel = rel[abs_ref > atol] if 0 < atol < math.inf else rel
    within = _within(err, abs_ref, atol, rtol)
    n_nonfinite = int((~both).sum()) if both is not None else 0
    mismatch = (int((~within).sum()) + n_nonfinite) / r64.size if r64.size else 0.0
    max_abs = float(err.max()) if err.size else 0.0
    nr, nc = np.linalg.norm(rf), np.linalg.norm(cf)
    cosine = 1.0 if nr == 0 and nc == 0 else float(np.dot(rf, cf) / (nr * nc)) if nr and nc else 0.0

    passed, why = _verdict(err, rel, within, criteria.check_stat, atol, rtol, max_abs)
    messages = [] if passed else [why]
    if notes:
        passed = False
        messages.insert(0, "non-finite values: " + "; ".join(notes))
    if criteria.min_cosine is not None and cosine < criteria.min_cosine:
        passed = False
        messages.append(f"cosine {cosine:.6f} < {criteria.min_cosine:g}")
    label_agreement = topk = None
    if criteria.task == "classification" and len(shape) >= 1 and shape[-1] > 1:
        label_agreement, topk = _top_k(ref_list, cand_list, criteria.top_k)
        if criteria.min_agreement is not None and label_agreement < criteria.min_agreement:
            passed = False
            messages.append(f"top-1 agreement {label_agreement:.4f} < {criteria.min_agreement:g}")
    counts, edges = error_histogram(err)
    return OutputDiff(name, max_abs, float(shown_rel.max()) if shown_rel.size else 0.0, float(err.mean()) if err.size else 0.0,
                      float(np.quantile(err, 0.99)) if err.size else 0.0, float(mismatch), cosine, bool(passed),
                      shape=shape, atol=atol, rtol=rtol, label_agreement=label_agreement, topk_agreement=topk,
                      nonfinite="; ".join(notes), message="; ".join(messages), error_histogram=counts,
                      error_edges=edges)


def compare(
    ref: Sequence[Mapping[str, object]] | Mapping[str, object],
    cand: Sequence[Mapping[str, object]] | Mapping[str, object],
    tol: Tolerance = DEFAULT_TOLERANCE,
    *,
    reference: str = "reference",
    candidate: str = "candidate",
    outputs: Sequence[str] | None = None,
    criteria: Criteria | None = None,
    **keywords,
) -> ParityReport:
    """Compare outputs of two runs (one dict per sample, or a single dict).

    Names first: an output the reference has and the candidate lacks is a failure.
    Outputs only the candidate has are ignored (a candidate may add outputs), unless
    ``outputs`` names them. ``criteria`` (or its fields as keywords: check_stat,
    min_cosine, min_agreement, task, top_k, label_scores) says what else must hold.
    """
    refs = [ref] if isinstance(ref, Mapping) else list(ref)
    cands = [cand] if isinstance(cand, Mapping) else list(cand)
    criteria = criteria_of(criteria, keywords)
    label_scores = dict(criteria.label_scores or {})
    problems = []
    if len(refs) != len(cands):
        problems.append(f"reference has {len(refs)} sample(s), candidate {len(cands)}")
    names = list(outputs) if outputs else list(refs[0]) if refs else []
    diffs = []
    for name in names:
        missing = [side for side, runs in (("reference", refs), ("candidate", cands)) if any(name not in r for r in runs)]
        if missing:
            problems.append(f"output {name!r} missing from the {' and '.join(missing)}"
                            + (f" (candidate has: {', '.join(cands[0])})" if "candidate" in missing and cands else ""))
            continue
        a, r = tol.for_output(name)
        d = compare_output(name, [x[name] for x in refs], [x[name] for x in cands], atol=a, rtol=r, criteria=criteria)
        scores = label_scores.get(name)
        if d.mismatches and scores in refs[0] and all(scores in x for x in refs):
            sa, sr = tol.for_output(scores)
            d = _label_ties(d, [x[name] for x in refs], [x[name] for x in cands], [x[scores] for x in refs], sa, sr,
                            criteria.min_agreement)
        diffs.append(d)
    unknown = set(tol.per_output) - set(names)
    if unknown:
        problems.append(f"tolerance given for unknown output(s): {', '.join(sorted(unknown))} (outputs: {', '.join(names)})")
    passed = not problems and all(d.passed for d in diffs) and bool(diffs)
    if not diffs and not problems:
        problems.append("no outputs to compare")
    return ParityReport(reference=reference, candidate=candidate, samples=len(refs), outputs=tuple(diffs),
                        passed=passed, check_stat=criteria.check_stat, problems=tuple(problems))
