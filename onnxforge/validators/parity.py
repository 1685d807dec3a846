"""Numerical parity: the engine every command's check uses.

``compare`` is a pure function over arrays. ``validate`` runs two sides (ONNX models
on providers, torch or sklearn sources, saved outputs) on the same inputs and
compares them. ``localize`` finds the first node where two ONNX models diverge.

Check statistics (``check_stat``), after Polygraphy:
- ``elementwise`` (default): every element within ``atol + rtol * |ref|`` (numpy's
  allclose), the strictest and what torch.testing does;
- ``max`` / ``mean`` / ``p99``: that statistic of the absolute error within ``atol``,
  or of the relative error within ``rtol``.
Integer, bool and string outputs (labels) are compared exactly: ``--min-agreement``
(default 1.0) is the fraction of elements that must be equal.
Any NaN or Inf in either side fails the output and is named in the report.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass, replace
from typing import Callable, Mapping, Sequence

from onnxforge.errors import BadInputError, UsageError
from onnxforge.types import OutputDiff, ParityReport, TensorSpec, Tolerance

log = logging.getLogger("onnxforge")

CHECK_STATS = ("elementwise", "max", "mean", "p99")

# Defaults suit fp32 exports: float32 has ~7 significant digits, and exporters
# reorder reductions, so 1e-4 absolute / 1e-3 relative passes honest exports and
# catches wrong graphs (which are off by orders of magnitude more).
DEFAULT_TOLERANCE = Tolerance(atol=1e-4, rtol=1e-3)


def parse_tolerances(atol: Sequence[str] | None, rtol: Sequence[str] | None,
                     default: Tolerance = DEFAULT_TOLERANCE) -> Tolerance:
    """``--atol 1e-4 --atol logits:1e-3`` -> Tolerance with per-output overrides."""

    def split(items, what):
        glob, per = None, {}
        for item in items or ():
            name, sep, val = item.rpartition(":")
            try:
                v = float(val)
            except ValueError:
                raise UsageError(f"bad {what} {item!r}", hint=f"write {what} 1e-4 or {what} NAME:1e-3") from None
            if v < 0 or math.isnan(v):
                raise UsageError(f"bad {what} {item!r}: must be >= 0")
            if sep:
                per[name] = v
            else:
                glob = v
        return glob, per

    ga, pa = split(atol, "--atol")
    gr, pr = split(rtol, "--rtol")
    a = default.atol if ga is None else ga
    r = default.rtol if gr is None else gr
    per = {}
    for name in set(pa) | set(pr):
        per[name] = (pa.get(name, a), pr.get(name, r))
    return Tolerance(atol=a, rtol=r, per_output=per)


def _as_array(x):
    import numpy as np

    return np.asarray(x)


def _is_exact(arr) -> bool:
    return arr.dtype.kind in "iubUSO"


def compare_output(
    name: str,
    ref_list: Sequence,
    cand_list: Sequence,
    *,
    atol: float,
    rtol: float,
    check_stat: str = "elementwise",
    min_cosine: float | None = None,
    min_agreement: float | None = None,
    task: str | None = None,
    top_k: int = 5,
) -> OutputDiff:
    """Compare one output across samples (lists of arrays, one per sample)."""
    import numpy as np

    if check_stat not in CHECK_STATS:
        raise UsageError(f"unknown --check-stat {check_stat!r}", hint="use one of: " + ", ".join(CHECK_STATS))
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
        # labels: exact equality (a float label from one side is compared by value)
        if ref.dtype.kind in "fc" or cand.dtype.kind in "fc":
            eq = np.isclose(ref.astype(np.float64), cand.astype(np.float64), atol=0, rtol=0)
        else:
            eq = ref.astype(str) == cand.astype(str) if ref.dtype.kind in "USO" or cand.dtype.kind in "USO" else ref == cand
        agree = float(eq.mean()) if eq.size else 1.0
        need = 1.0 if min_agreement is None else min_agreement
        bad = np.flatnonzero(~eq)[:5].tolist()
        passed = agree >= need
        msg = "" if passed else f"{(~eq).sum()} of {eq.size} labels differ (first at flat indices {bad}); need agreement >= {need:g}"
        diff = 0.0 if passed and agree == 1.0 else 1.0
        return OutputDiff(name, diff, diff, float(1 - agree), diff, float(1 - agree), float(agree), passed,
                          shape=shape, atol=0.0, rtol=0.0, label_agreement=agree, message=msg)

    r64 = ref.astype(np.float64)
    c64 = cand.astype(np.float64)
    r_bad = ~np.isfinite(r64)
    c_bad = ~np.isfinite(c64)
    notes = []
    for side, mask, arr in (("reference", r_bad, r64), ("candidate", c_bad, c64)):
        if mask.any():
            n_nan = int(np.isnan(arr).sum())
            n_inf = int(mask.sum()) - n_nan
            parts = [f"{n_nan} NaN" if n_nan else "", f"{n_inf} Inf" if n_inf else ""]
            notes.append(f"{side} has " + " and ".join(p for p in parts if p))
    if notes:
        both = ~(r_bad | c_bad)
        rf, cf = r64[both], c64[both]
    else:  # the common case: no masking copies
        both = None
        rf, cf = r64, c64
    err = np.abs(rf - cf)
    abs_ref = np.abs(rf)
    with np.errstate(divide="ignore", invalid="ignore"):
        rel = err / np.maximum(abs_ref, np.finfo(np.float64).tiny)
    rel[err == 0] = 0.0
    within = err <= atol + rtol * abs_ref
    n = r64.size
    n_nonfinite = int((~both).sum()) if both is not None else 0
    mismatch = (int((~within).sum()) + n_nonfinite) / n if n else 0.0
    max_abs = float(err.max()) if err.size else 0.0
    max_rel = float(rel.max()) if rel.size else 0.0
    mean_abs = float(err.mean()) if err.size else 0.0
    p99_abs = float(np.quantile(err, 0.99)) if err.size else 0.0
    nr, nc = np.linalg.norm(rf), np.linalg.norm(cf)
    cosine = 1.0 if nr == 0 and nc == 0 else float(np.dot(rf, cf) / (nr * nc)) if nr and nc else 0.0

    if check_stat == "elementwise":
        passed = bool(within.all())
        why = f"{(~within).sum()} of {within.size} elements outside atol {atol:g} + rtol {rtol:g}*|ref| (max abs {max_abs:.3g})"
    else:
        stat = {"max": np.max, "mean": np.mean, "p99": lambda a: np.quantile(a, 0.99)}[check_stat]
        sa = float(stat(err)) if err.size else 0.0
        sr = float(stat(rel)) if rel.size else 0.0
        passed = sa <= atol or sr <= rtol
        why = f"{check_stat} abs error {sa:.3g} > atol {atol:g} and {check_stat} rel error {sr:.3g} > rtol {rtol:g}"
    messages = [] if passed else [why]
    if notes:
        passed = False
        messages.insert(0, "non-finite values: " + "; ".join(notes))
    if min_cosine is not None and cosine < min_cosine:
        passed = False
        messages.append(f"cosine {cosine:.6f} < {min_cosine:g}")

    label_agreement = topk = None
    if task == "classification" and len(shape) >= 1 and shape[-1] > 1:
        rl = [_as_array(r) for r in ref_list]
        cl = [_as_array(c) for c in cand_list]
        r_lab = np.concatenate([r.reshape(-1, r.shape[-1]).argmax(-1) for r in rl])
        c_lab = np.concatenate([c.reshape(-1, c.shape[-1]).argmax(-1) for c in cl])
        label_agreement = float((r_lab == c_lab).mean())
        k = min(top_k, shape[-1])
        c_top = np.concatenate([np.argsort(-c.reshape(-1, c.shape[-1]), axis=-1)[:, :k] for c in cl])
        topk = float((c_top == r_lab[:, None]).any(axis=1).mean())
        if min_agreement is not None and label_agreement < min_agreement:
            passed = False
            messages.append(f"top-1 agreement {label_agreement:.4f} < {min_agreement:g}")
    return OutputDiff(name, max_abs, max_rel, mean_abs, p99_abs, float(mismatch), cosine, bool(passed),
                      shape=shape, atol=atol, rtol=rtol, label_agreement=label_agreement,
                      topk_agreement=topk, nonfinite="; ".join(notes), message="; ".join(messages))


def compare(
    ref: Sequence[Mapping[str, object]] | Mapping[str, object],
    cand: Sequence[Mapping[str, object]] | Mapping[str, object],
    tol: Tolerance = DEFAULT_TOLERANCE,
    *,
    reference: str = "reference",
    candidate: str = "candidate",
    check_stat: str = "elementwise",
    min_cosine: float | None = None,
    min_agreement: float | None = None,
    task: str | None = None,
    top_k: int = 5,
    outputs: Sequence[str] | None = None,
) -> ParityReport:
    """Compare outputs of two runs (one dict per sample, or a single dict).

    Names first: an output the reference has and the candidate lacks is a failure.
    Outputs only the candidate has are ignored (a candidate may add outputs), unless
    ``outputs`` names them.
    """
    refs = [ref] if isinstance(ref, Mapping) else list(ref)
    cands = [cand] if isinstance(cand, Mapping) else list(cand)
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
        diffs.append(compare_output(
            name, [x[name] for x in refs], [x[name] for x in cands], atol=a, rtol=r,
            check_stat=check_stat, min_cosine=min_cosine, min_agreement=min_agreement, task=task, top_k=top_k))
    unknown = set(tol.per_output) - set(names)
    if unknown:
        problems.append(f"tolerance given for unknown output(s): {', '.join(sorted(unknown))} (outputs: {', '.join(names)})")
    passed = not problems and all(d.passed for d in diffs) and bool(diffs)
    if not diffs and not problems:
        problems.append("no outputs to compare")
    return ParityReport(reference=reference, candidate=candidate, samples=len(refs), outputs=tuple(diffs),
                        passed=passed, check_stat=check_stat, problems=tuple(problems))


# ----------------------------------------------------------------------------- sides


@dataclass(frozen=True)
class Side:
    """One side of a comparison: something that produces outputs for inputs."""

    label: str
    kind: str  # "onnx" | "torch" | "sklearn" | "saved"
    inputs: tuple[TensorSpec, ...] = ()  # empty: the side takes inputs by position
    outputs: tuple[str, ...] = ()  # empty: outputs are positional, named by the other side
    run: Callable[[Mapping[str, object]], dict] | None = None
    saved_inputs: tuple = ()
    saved_outputs: tuple = ()
    path: str | None = None
    provider: str | None = None


def onnx_side(path, provider: str = "cpu", *, label: str | None = None, threads: int | None = None,
              optimization: str = "all") -> Side:
    from onnxforge.fileio import check_readable_file, load_onnx
    from onnxforge.runtime import create_session, run_session
    from onnxforge.specs import model_io_specs

    check_readable_file(path, "model")
    model = load_onnx(path, load_external_data=False)  # clear errors before ORT's
    ins, outs = model_io_specs(model)
    sess = create_session(path, provider, threads=threads, optimization=optimization)
    names = [o.name for o in sess.get_outputs()]
    return Side(
        label=label or f"{path}@{provider}", kind="onnx", inputs=ins, outputs=tuple(names),
        run=lambda feeds: run_session(sess, feeds, names), path=str(path), provider=provider,
    )


def saved_side(path) -> Side:
    """Saved outputs: a .npz (keys = output names; ``I/NAME`` for several samples) or
    an ONNX test-data folder (``input_N.pb``/``output_N.pb``, optionally in
    ``test_data_set_N`` folders, beside or without a model.onnx)."""
    from pathlib import Path

    from onnxforge.specs import load_samples

    p = Path(path)
    if p.is_dir():
        has_outputs = any(p.glob("output_*.pb")) or any(p.glob("*/output_*.pb"))
        if not has_outputs:
            raise BadInputError(f"{p}: no output_N.pb files", hint="an ONNX test-data folder holds input_N.pb and output_N.pb")
        outs = load_samples(p, prefix="output")
        ins = load_samples(p, prefix="input") if (any(p.glob("input_*.pb")) or any(p.glob("*/input_*.pb"))) else []
        return Side(label=str(p), kind="saved", saved_inputs=tuple(ins), saved_outputs=tuple(outs), path=str(p))
    outs = load_samples(p)
    return Side(label=str(p), kind="saved", outputs=tuple(outs[0]), saved_outputs=tuple(outs), path=str(p))


def open_side(spec: str, provider: str = "cpu", *, threads: int | None = None, **source_options) -> Side:
    """A side from a command-line argument: .onnx, .npz / test-data folder, or a
    torch / sklearn source in the forms `convert` accepts."""
    from pathlib import Path

    p = Path(spec)
    if p.suffix == ".onnx" or (p.is_file() and p.suffix not in (".npz", ".npy", ".pt", ".pt2", ".pth", ".skops", ".joblib", ".pkl", ".py")):
        return onnx_side(p, provider, threads=threads)
    if p.suffix == ".npz" or p.is_dir():
        if not p.exists():
            raise BadInputError(f"not found: {p}", hint="check the path")
        return saved_side(p)
    from onnxforge.converters.loading import source_side

    return source_side(spec, **source_options)


def _reference_precision(cand_specs, ref_specs, c2r) -> tuple[TensorSpec, ...]:
    ref_dtype = {s.name: s.dtype for s in ref_specs}
    out = []
    for s in cand_specs:
        rd = ref_dtype.get(c2r.get(s.name, s.name))
        if rd and rd.startswith("float") and s.dtype.startswith("float") and rd != s.dtype:
            s = TensorSpec(s.name, rd, s.shape)
        out.append(s)
    return tuple(out)


def _cast_floats(sample: Mapping[str, object], specs: Sequence[TensorSpec]) -> dict:
    """Float inputs take the side's float precision (an fp32 reference against an
    fp16-I/O candidate sees the same values, rounded); other dtypes are left to
    check_sample_fits to refuse."""
    import numpy as np

    from onnxforge.specs import numpy_dtype

    want = {s.name: s.dtype for s in specs}
    out = {}
    for k, v in sample.items():
        a = np.asarray(v)
        d = want.get(k)
        if d in ("float16", "float32", "float64", "bfloat16") and a.dtype.kind == "f" and a.dtype != numpy_dtype(d):
            a = a.astype(numpy_dtype(d))
        out[k] = a
    return out


def _positional_names(outputs: dict, names: Sequence[str]) -> dict:
    """Name positional outputs (keys '0', '1' ... or 'output_N') by the other side's names."""
    keys = list(outputs)
    if names and len(keys) == len(names) and not set(keys) & set(names):
        return dict(zip(names, outputs.values()))
    return outputs


def _input_mapping(ref: Side, cand: Side, user_map: Mapping[str, str]) -> dict[str, str]:
    """candidate input name -> reference input name (identity where names match)."""
    if not ref.inputs or not cand.inputs:
        return {}
    rnames = [s.name for s in ref.inputs]
    cnames = [s.name for s in cand.inputs]
    for r, c in user_map.items():
        if r not in rnames:
            raise BadInputError(f"--map {r}={c}: the reference has no input {r!r} (it has {', '.join(rnames)})")
        if c not in cnames:
            raise BadInputError(f"--map {r}={c}: the candidate has no input {c!r} (it has {', '.join(cnames)})")
    c2r = {c: r for r, c in user_map.items()}
    for c in cnames:
        if c not in c2r and c in rnames:
            c2r[c] = c
    unpaired_c = [c for c in cnames if c not in c2r]
    unpaired_r = [r for r in rnames if r not in c2r.values()]
    if unpaired_c or unpaired_r:
        raise BadInputError(
            f"input names differ: reference has {', '.join(unpaired_r) or '-'} unpaired, "
            f"candidate has {', '.join(unpaired_c) or '-'} unpaired",
            hint="pair them with --map REF_NAME=CAND_NAME (repeatable)",
        )
    return c2r


def validate(
    reference: str | Side,
    candidate: str | Side,
    *,
    inputs: str | None = None,
    input_samples: Sequence[Mapping[str, object]] | None = None,
    samples: int = 1,
    seed: int = 0,
    dims: Mapping[str, int] | None = None,
    val_ranges: Mapping[str, tuple[float, float]] | None = None,
    provider: str = "cpu",
    ref_provider: str = "cpu",
    tolerance: Tolerance = DEFAULT_TOLERANCE,
    check_stat: str = "elementwise",
    min_cosine: float | None = None,
    min_agreement: float | None = None,
    task: str | None = None,
    top_k: int = 5,
    input_map: Mapping[str, str] | None = None,
    localize: bool = False,
    save_inputs: str | None = None,
    save_outputs: str | None = None,
    threads: int | None = None,
    source_options: Mapping[str, object] | None = None,
) -> ParityReport:
    """Run both sides on the same inputs and compare. See the module docstring."""
    from onnxforge.specs import check_sample_fits, generate_inputs, load_samples, save_samples

    ref = reference if isinstance(reference, Side) else open_side(reference, ref_provider, threads=threads, **(source_options or {}))
    cand = candidate if isinstance(candidate, Side) else open_side(candidate, provider, threads=threads, **(source_options or {}))
    if ref.kind == "saved" and cand.kind == "saved":
        raise UsageError("both sides are saved outputs; at least one side must be a model")
    c2r = _input_mapping(ref, cand, input_map or {})
    # the namespace inputs are keyed by: the candidate's when it has named inputs;
    # values are generated at the reference's precision (fp32 for an fp16 candidate)
    specs = _reference_precision(cand.inputs, ref.inputs, c2r) if cand.inputs else ref.inputs
    names = [s.name for s in specs]

    if input_samples is not None:
        feeds = [dict(s) for s in input_samples]
    elif inputs:
        feeds = load_samples(inputs, names=names)
    elif ref.saved_inputs or cand.saved_inputs:
        raw = ref.saved_inputs or cand.saved_inputs
        feeds = [_positional_names(dict(s), names) for s in raw]
    else:
        if ref.kind == "saved" or cand.kind == "saved":
            raise UsageError(
                "saved outputs are compared on the inputs they were made from",
                hint="pass --inputs with those inputs (saved with --save-inputs)",
            )
        if not specs:
            raise UsageError("no side declares its inputs", hint="pass --input NAME:DTYPE:SHAPE or --inputs FILE")
        feeds = [generate_inputs(specs, seed=seed + i, dims=dims, val_ranges=val_ranges) for i in range(samples)]
    if not feeds:
        raise BadInputError("no input samples")

    def feeds_for(side: Side, sample: Mapping[str, object]) -> dict:
        # samples are keyed by the candidate's names when it has named inputs
        out = {c2r.get(k, k): v for k, v in sample.items()} if side is ref and cand.inputs and c2r else dict(sample)
        if side.inputs:
            out = _cast_floats(out, side.inputs)
            check_sample_fits(out, side.inputs, source=f"inputs for {side.label}")
        return out

    def outputs_of(side: Side, other: Side) -> list[dict]:
        if side.kind == "saved":
            outs = [dict(o) for o in side.saved_outputs]
            if len(outs) != len(feeds):
                raise BadInputError(
                    f"{side.label} holds outputs for {len(outs)} sample(s) but there are {len(feeds)} input sample(s)",
                    hint="use the inputs the outputs were made from",
                )
        else:
            outs = [side.run(feeds_for(side, s)) for s in feeds]
        return [_positional_names(o, other.outputs) for o in outs]

    ref_out = outputs_of(ref, cand)
    cand_out = outputs_of(cand, ref)
    report = compare(
        ref_out, cand_out, tolerance, reference=ref.label, candidate=cand.label, check_stat=check_stat,
        min_cosine=min_cosine, min_agreement=min_agreement, task=task, top_k=top_k,
    )
    if save_inputs:
        save_samples(save_inputs, feeds)
    if save_outputs:
        save_samples(save_outputs, ref_out)
    if localize and not report.passed:
        if ref.kind == "onnx" and cand.kind == "onnx":
            loc = localize_divergence(ref.path, cand.path, feeds_for(ref, feeds[0]), tolerance,
                                      ref_provider=ref.provider or "cpu", provider=cand.provider or "cpu",
                                      cand_feeds=feeds_for(cand, feeds[0]))
            report = replace(report, localized=loc)
        else:
            report = replace(report, localized={"node": None, "message": "--localize needs two ONNX models"})
    return report


# ----------------------------------------------------------------------------- localize


def _with_all_outputs(model, keep: set[str]):
    from onnx import helper

    have = {o.name for o in model.graph.output}
    for n in model.graph.node:
        for o in n.output:
            if o and o in keep and o not in have:
                model.graph.output.append(helper.make_empty_tensor_value_info(o))
                have.add(o)
    return model


def _session_for(model, provider: str, tmpdir):
    """A session over a modified model: bytes when it fits, else a temp file with
    its external data beside it."""
    from pathlib import Path

    from onnxforge.fileio import PROTOBUF_LIMIT, save_onnx
    from onnxforge.runtime import create_session

    if model.ByteSize() < PROTOBUF_LIMIT:
        return create_session(model.SerializeToString(), provider, optimization="basic")
    path = Path(tmpdir) / "model.onnx"
    save_onnx(model, path, external_data=True)
    return create_session(path, provider, optimization="basic")


def shared_intermediates(ref_path, cand_path, feeds: Mapping[str, object], *, ref_provider: str = "cpu",
                         provider: str = "cpu", cand_feeds: Mapping[str, object] | None = None):
    """Run copies of both models with every intermediate tensor they share (by name)
    marked as an output. Returns (the reference ModelProto, its (index, node, tensor)
    triples that the candidate also produces, reference values, candidate values).
    The models on disk are never modified."""
    import tempfile

    from onnxforge.fileio import load_onnx
    from onnxforge.runtime import run_session

    ref_m = load_onnx(ref_path)
    cand_m = load_onnx(cand_path)
    cand_producers = {o for n in cand_m.graph.node for o in n.output if o}
    shared = [(i, n, o) for i, n in enumerate(ref_m.graph.node) for o in n.output if o and o in cand_producers]
    if not shared:
        return ref_m, [], {}, {}
    keep = {o for _, _, o in shared}
    with tempfile.TemporaryDirectory() as tmp:
        rs = _session_for(_with_all_outputs(ref_m, keep), ref_provider, tmp)
        cs = _session_for(_with_all_outputs(cand_m, keep), provider, tmp)
        r_out = run_session(rs, feeds, [o.name for o in rs.get_outputs() if o.name in keep])
        c_out = run_session(cs, cand_feeds or feeds, [o.name for o in cs.get_outputs() if o.name in keep])
    return ref_m, shared, r_out, c_out


def localize_divergence(ref_path, cand_path, feeds: Mapping[str, object], tol: Tolerance, *,
                        ref_provider: str = "cpu", provider: str = "cpu",
                        cand_feeds: Mapping[str, object] | None = None) -> dict:
    """The first node (in the reference's topological order) whose output tensor,
    shared by name with the candidate, differs past tolerance (run once on the first
    sample; see shared_intermediates)."""
    import numpy as np

    _, shared, r_out, c_out = shared_intermediates(ref_path, cand_path, feeds, ref_provider=ref_provider,
                                                   provider=provider, cand_feeds=cand_feeds)
    if not shared:
        return {"node": None, "message": "the models share no intermediate tensor names"}
    compared = 0
    for index, node, out in shared:
        if out not in r_out or out not in c_out:
            continue
        a, b = np.asarray(r_out[out]), np.asarray(c_out[out])
        if a.dtype.kind not in "fc" or b.dtype.kind not in "fc":
            continue
        compared += 1
        if a.shape != b.shape:
            return {"node": node.name or out, "op_type": node.op_type, "output": out, "index": index,
                    "max_abs": math.inf, "max_rel": math.inf, "compared": compared,
                    "message": f"shape {list(a.shape)} vs {list(b.shape)}"}
        d = compare_output(out, [a], [b], atol=tol.atol, rtol=tol.rtol)
        if not d.passed:
            return {"node": node.name or out, "op_type": node.op_type, "output": out, "index": index,
                    "max_abs": d.max_abs, "max_rel": d.max_rel, "compared": compared, "message": d.message}
    return {"node": None, "compared": compared,
            "message": f"none of {compared} shared intermediate tensors diverges; the difference arises in nodes the models do not share"}
