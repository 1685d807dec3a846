"""Numerical parity: the one path every check in onnxforge takes. ``validate`` runs two
runners (ONNX models on providers, torch or sklearn sources, saved outputs) on the
same inputs and compares their outputs (compare.py); ``check_against`` is the check a
step makes of its new model against the model before it.

Inputs are named after the candidate when it declares names, generated at the
reference's float precision, and cast to each side's declared float type, so an fp32
model validates against its fp16-I/O version. Outputs pair by name; when no name
matches and the counts do, by position (the report says so); ``input_map`` pairs
inputs and outputs that are named differently.
"""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path
from typing import Any, Mapping, Sequence

from onnxforge.core.errors import BadInputError, UsageError
from onnxforge.backends import Runner, open_runner
from onnxforge.core.types import ParityReport, TensorSpec, Tolerance, Localization
from onnxforge.checks.compare import DEFAULT_TOLERANCE, Criteria, compare, criteria_of
import numpy as np
from onnxforge.backends.onnx.inspection import symbolic_dims
from onnxforge.backends.onnx.runner import onnx_runner
from onnxforge.backends.torch.hf import is_hf_source
from onnxforge.checks.generation import ATOL, TOKENS, generation_check, has_past, is_with_past
from onnxforge.checks.localize import layerwise, localize_divergence
from onnxforge.core.fileio import onnx_bytes
from onnxforge.core.memory import release_memory
from onnxforge.core.progress import task
from onnxforge.data.generate import describe_generated, generate_inputs
from onnxforge.data.samples import check_sample_fits, load_samples, save_samples
from onnxforge.data.specs import check_dims, dim_keys, numpy_dtype


def _reference_precision(cand_specs, ref_specs, c2r) -> tuple[TensorSpec, ...]:
    ref_dtype = {s.name: s.dtype for s in ref_specs}
    out = []
    for s in cand_specs:
        rd = ref_dtype.get(c2r.get(s.name, s.name))
        if rd and rd.startswith("float") and s.dtype.startswith("float") and rd != s.dtype:
            s = TensorSpec(s.name, rd, s.shape)
        out.append(s)
    return tuple(out)


def _float64_as_declared(sample: Mapping[str, object], specs: Sequence[TensorSpec]) -> dict:
    """float64 data for a torch side (it declares no input types): float32 unless the other
    side declares that input float64 (numpy makes float64; a torch model's weights are
    float32, and an input the export kept in float64 stays so)."""
    want = {s.name: s.dtype for s in specs}
    return {k: np.asarray(v).astype(np.float32) if np.asarray(v).dtype == np.float64 and want.get(k) != "float64"
            else v for k, v in sample.items()}


def cast_floats(sample: Mapping[str, object], specs: Sequence[TensorSpec]) -> dict:
    """Float inputs take the side's float type (float64 data feeds a float32 model as
    deployment would); other dtypes are left to check_sample_fits to refuse."""

    want = {s.name: s.dtype for s in specs}
    out = {}
    for k, v in sample.items():
        a = np.asarray(v)
        d = want.get(k)
        if d in ("float16", "float32", "float64", "bfloat16") and a.dtype.kind == "f" and a.dtype != numpy_dtype(d):
            a = a.astype(numpy_dtype(d))
        out[k] = a
    return out


def _input_mapping(ref: Runner, cand: Runner, user_map: Mapping[str, str]) -> dict[str, str]:
    """candidate input name -> reference input name (identity where names match)."""
    if not ref.inputs or not cand.inputs:
        return {}
    rnames = [s.name for s in ref.inputs]
    cnames = [s.name for s in cand.inputs]
    pairs = {r: c for r, c in user_map.items() if r in rnames or c in cnames}
    for r, c in pairs.items():
        if r not in rnames:
            raise BadInputError(f"--map {r}={c}: the reference has no input {r!r} (it has {', '.join(rnames)})")
        if c not in cnames:
            raise BadInputError(f"--map {r}={c}: the candidate has no input {c!r} (it has {', '.join(cnames)})")
    c2r = {c: r for r, c in pairs.items()}
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


def _check_names(ref: Runner, cand: Runner, ref_out: list, cand_out: list, user_map: Mapping[str, str],
                 tolerance: Tolerance) -> None:
    """A --map pair or a per-output tolerance naming nothing either model has would be
    ignored, and the user would believe it was applied: refuse it, listing the names."""
    r_in, c_in = [s.name for s in ref.inputs], [s.name for s in cand.inputs]
    r_out = list(dict.fromkeys([*ref.outputs, *(ref_out[0] if ref_out else ())]))
    c_out = list(dict.fromkeys([*cand.outputs, *(cand_out[0] if cand_out else ())]))
    for r, c in user_map.items():
        if r in r_in or c in c_in or (r in r_out and c in c_out):
            continue
        missing = "the candidate has no output" if r in r_out else "the reference has no output" if c in c_out else \
            "neither model has an input or output"
        raise UsageError(f"--map {r}={c}: {missing} named so",
                         hint=f"reference inputs: {', '.join(r_in) or '-'}; outputs: {', '.join(r_out) or '-'}. "
                              f"Candidate inputs: {', '.join(c_in) or '-'}; outputs: {', '.join(c_out) or '-'}")
    unknown = sorted(set(tolerance.per_output) - set(r_out))
    if unknown:
        raise UsageError(f"--atol/--rtol {unknown[0]}: the reference has no output {unknown[0]!r}",
                         hint=f"its outputs: {', '.join(r_out) or '-'}")


def pair_outputs(ref_names: Sequence[str], cand_names: Sequence[str], user_map: Mapping[str, str]
                 ) -> tuple[dict[str, str], str]:
    """reference output -> candidate output, and a note when the pairing is not by name."""
    pairs = {r: c for r, c in user_map.items() if r in ref_names and c in cand_names}
    common = [n for n in ref_names if n in cand_names and n not in pairs]
    pairs.update({n: n for n in common})
    if pairs or len(ref_names) != len(cand_names):
        return pairs, ""
    pairs = dict(zip(ref_names, cand_names))
    return pairs, "outputs paired by position (no names match): " + ", ".join(f"{r}={c}" for r, c in pairs.items())


def _samples(ref: Runner, cand: Runner, specs, *, inputs, input_samples, samples, seed, dims, val_ranges,
             norms, data=None) -> tuple[list, dict]:
    """The input samples and where they came from ({"source": given | saved | generated,
    "how": ...}): every verdict says whether it was taken on the user's data."""
    names = [s.name for s in specs]
    if input_samples is not None:
        return [dict(s) for s in input_samples], dict(data or {"source": "given",
                                                              "how": f"{len(input_samples)} sample(s)"})
    if inputs:
        feeds = load_samples(inputs, names=names)
        return feeds, {"source": "given", "how": f"{inputs} ({len(feeds)} sample(s))"}
    if ref.saved_inputs or cand.saved_inputs:
        raw = ref.saved_inputs or cand.saved_inputs
        keys = list(raw[0]) if raw else []
        rename = dict(zip(keys, names)) if names and len(keys) == len(names) and not set(keys) & set(names) else {}
        return ([{rename.get(k, k): v for k, v in s.items()} for s in raw],
                {"source": "saved", "how": "the inputs saved with the outputs"})
    if ref.kind == "saved" or cand.kind == "saved":
        raise UsageError("saved outputs are compared on the inputs they were made from",
                         hint="pass --inputs with those inputs (saved with --save-inputs)")
    if not specs:
        raise UsageError("no side declares its inputs", hint="pass --input NAME:DTYPE:SHAPE or --inputs FILE")
    return ([generate_inputs(specs, seed=seed + i, dims=dims, val_ranges=val_ranges, norms=norms)
             for i in range(samples)],
            {"source": "generated", "how": describe_generated(specs, seed=seed, val_ranges=val_ranges, norms=norms)})


def _check_not_empty(feeds: list[dict]) -> None:
    if not feeds:
        raise BadInputError("no input samples", hint="give inputs with at least one sample")
    for i, sample in enumerate(feeds):
        for k, v in sample.items():
            if np.asarray(v).size == 0:
                raise BadInputError(f"input {k} of sample {i} has no elements (shape {list(np.shape(v))}): "
                                    "there is nothing to compare", hint="give inputs with at least one element")


def _align_squeezed(ref_out: list[dict], cand_out: list[dict]) -> tuple[list[dict], str]:
    """Shapes that differ only by size-1 dims ([N] against [N, 1], as sklearn's predict
    and skl2onnx's regressors do) are compared in the candidate's shape, with a note."""
    changed = {}
    out = []
    for r, c in zip(ref_out, cand_out):
        r = dict(r)
        for k, v in r.items():
            a, b = np.asarray(v), np.asarray(c[k]) if k in c else None
            if b is not None and a.shape != b.shape and a.size == b.size and \
                    tuple(d for d in a.shape if d != 1) == tuple(d for d in b.shape if d != 1):
                changed[k] = (a.shape, b.shape)
                r[k] = a.reshape(b.shape)
        out.append(r)
    note = "; ".join(f"output {k}: reference {list(a)} vs candidate {list(b)}, compared as {list(b)}"
                     for k, (a, b) in changed.items())
    return out, note


def _outputs(side: Runner, feeds: list, feed_for) -> list[dict]:
    if side.kind != "saved":
        outs = []
        with task(f"run {side.label}", total=len(feeds), detail=True) as bar:  # a torch model can take minutes
            for s in feeds:
                outs.append(side(feed_for(side, s)))
                bar.advance()
        return outs
    outs = [dict(o) for o in side.saved_outputs]
    if len(outs) != len(feeds):
        raise BadInputError(f"{side.label} holds outputs for {len(outs)} sample(s) but there are {len(feeds)} input "
                            "sample(s)", hint="use the inputs the outputs were made from")
    return outs


def _open(side: str | Runner, provider: str, threads, source_options, runtime: str = "ort",
          ov_precision: str = "auto") -> Runner:
    if isinstance(side, Runner):
        return side

    with task(f"load {Path(str(side)).name}", detail=True):  # importing torch alone takes seconds
        return open_runner(side, provider, threads=threads, runtime=runtime, ov_precision=ov_precision,
                           **(source_options or {}))


def validate(
    reference: Any,
    candidate: Any,
    *,
    inputs: str | None = None,
    input_samples: Sequence[Mapping[str, object]] | None = None,
    data: Mapping[str, str] | None = None,
    samples: int = 1, seed: int = 0,
    dims: Mapping[str, int] | None = None,
    val_ranges: Mapping[str, tuple[float, float]] | None = None,
    input_norms: Mapping[str, object] | None = None,
    provider: str = "cpu",
    ref_provider: str = "cpu",
    tolerance: Tolerance = DEFAULT_TOLERANCE,
    input_map: Mapping[str, str] | None = None,
    localize: bool = False,
    layerwise: bool = False,
    save_intermediates: Sequence[str] = (),
    save_intermediates_to: str | None = None,
    save_inputs: str | None = None,
    save_outputs: str | None = None, threads: int | None = None,
    source_options: Mapping[str, object] | None = None,
    runtime: str = "ort", ref_runtime: str = "ort", ov_precision: str = "auto",  # openvino: that side on OpenVINO
    generate_tokens: int | None = None, criteria: Criteria | None = None, **keywords,
) -> ParityReport:
    """Run both sides on the same inputs and compare, by ``criteria`` (or its fields as keywords).
    ``data``: where ``input_samples`` came from. ``layerwise`` (implied by ``save_intermediates``,
    names or ``all``): checks.localize.layerwise on the first sample of two ONNX models. A
    candidate with a KV cache is judged by greedy generation (_generative)."""
    criteria = criteria_of(criteria, keywords)  # before any model loads: a bad --check-stat is a usage error
    early = _open(candidate, provider, threads, source_options, runtime, ov_precision) if _onnx_candidate(reference, candidate) else None
    if early is not None and _generative(reference, early):  # ``generate_tokens``: how many
        return _generation(reference, early, tolerance, generate_tokens, seed=seed, provider=provider)
    ref = _open(reference, ref_provider, threads, source_options, ref_runtime, ov_precision)
    cand = early or _open(candidate, provider, threads, source_options, runtime, ov_precision)
    if ref.kind == "saved" and cand.kind == "saved":
        raise UsageError("both sides are saved outputs; at least one side must be a model")
    _check_layerwise(ref, cand, layerwise, save_intermediates, save_intermediates_to)
    c2r = _input_mapping(ref, cand, input_map or {})
    # inputs are keyed by the candidate's names when it has named inputs, and
    # generated at the reference's precision (fp32 for an fp16 candidate)
    specs = _reference_precision(cand.inputs, ref.inputs, c2r) if cand.inputs else ref.inputs
    if dims and (ref.inputs or cand.inputs):
        check_dims(dims, (*ref.inputs, *cand.inputs))  # a dim either side has
    val_ranges = val_ranges or ref.val_ranges or cand.val_ranges
    norms = input_norms or ref.input_norms or cand.input_norms
    feeds, data = _samples(ref, cand, specs, inputs=inputs, input_samples=input_samples, samples=samples, seed=seed,
                           dims=dims, val_ranges=val_ranges, norms=norms, data=data)
    _check_not_empty(feeds)

    feed_for = _feeder(ref, cand, c2r)
    ref_out, cand_out = _outputs_in_turn((ref, cand), feeds, feed_for)
    _check_names(ref, cand, ref_out, cand_out, input_map or {}, tolerance)
    ref_out, cand_named, notes = _paired(ref_out, cand_out, input_map or {})
    if ref.label_scores and criteria.label_scores is None:
        criteria = replace(criteria, label_scores=ref.label_scores)
    report = compare(ref_out, cand_named, tolerance, reference=ref.label, candidate=cand.label, criteria=criteria)
    low = _reduced_precision(ref, cand, report.passed)
    report = replace(report, notes=report.notes + notes + ((low,) if low else ()), data=data)
    if layerwise or save_intermediates:  # before the other files: a bad name writes none
        report = replace(report, layerwise=_layerwise(ref, cand, feeds[0], feed_for, save_intermediates,
                                                      save_intermediates_to))
    for path, written in ((save_inputs, feeds), (save_outputs, ref_out)):
        if path:
            save_samples(path, written)
    if localize and not report.passed:
        report = replace(report, localized=_localize(ref, cand, feeds[0], feed_for, tolerance))
    return report


def _outputs_in_turn(sides, feeds, feed_for) -> list:
    """Each side's outputs, one after the other: a side that can (an ONNX runner made
    with hold=False) lets its session go before the next loads its own copy of the weights."""
    outs = []
    for side in sides:
        outs.append(_outputs(side, feeds, feed_for))
        if side.release:
            side.release()
    return outs


def _feeder(ref: Runner, cand: Runner, c2r: Mapping[str, str]):
    """feed_for(side, sample): one sample as that side takes it."""
    def feed_for(side: Runner, sample: Mapping[str, object]) -> dict:
        other = cand if side is ref else ref
        # a torch side cannot take float64 data for float32 weights: it gets what the ONNX side
        # takes. A scikit-learn side keeps float64, its own precision: that comparison is what
        # finds float32 threshold flips.
        if side.kind == "torch" and not side.inputs and other.inputs:
            sample = _float64_as_declared(sample, other.inputs)
        out = {c2r.get(k, k): v for k, v in sample.items()} if side is ref and cand.inputs and c2r else dict(sample)
        if side.inputs:
            out = cast_floats(out, side.inputs)
            check_sample_fits(out, side.inputs, source=f"inputs for {side.label}")
        return out

    return feed_for


def _paired(ref_out: list[dict], cand_out: list[dict], user_map: Mapping[str, str]) -> tuple[list, list, tuple]:
    """Both sides' outputs under the reference's names (pair_outputs, _align_squeezed),
    and the notes saying how they were paired."""
    pairs, note = pair_outputs(list(ref_out[0]) if ref_out else [], list(cand_out[0]) if cand_out else [], user_map)
    paired = set(pairs.values())
    cand_named = [{**{r: o[c] for r, c in pairs.items() if c in o}, **{k: v for k, v in o.items() if k not in paired}}
                  for o in cand_out]
    ref_out, squeezed = _align_squeezed(ref_out, cand_named)
    return ref_out, cand_named, tuple(n for n in (note, squeezed) if n)


def _onnx_candidate(reference, candidate) -> bool:
    """An .onnx candidate against a Hugging Face folder or an .onnx reference (told from
    the paths alone): the candidate is opened first, to see whether it has a cache."""
    paths = isinstance(reference, (str, Path)) and isinstance(candidate, (str, Path))
    return paths and str(candidate).endswith(".onnx") and (str(reference).endswith(".onnx") or is_hf_source(reference))


def _generative(reference, cand: Runner) -> bool:
    """A candidate with a key/value cache (past_key_values.* inputs) against a Hugging
    Face folder or another such model: compared by greedy generation of
    ``generate_tokens`` new tokens (checks/generation.py), logits within the atol."""
    if cand.kind != "onnx" or not has_past(cand.inputs):
        return False
    return is_with_past(reference) if str(reference).endswith(".onnx") else is_hf_source(reference)


def _generation(reference, candidate, tolerance: Tolerance, tokens: int | None, **kw) -> ParityReport:
    atol = ATOL if tolerance == DEFAULT_TOLERANCE else tolerance.for_output("logits")[0]
    return generation_check(reference, candidate, tokens=tokens or TOKENS, atol=atol, **kw)


def _reduced_precision(ref: Runner, cand: Runner, passed: bool) -> str:
    """OpenVINO picks bf16 by itself on CPUs that have it: a failure may be that alone."""
    low = [s.label for s in (ref, cand) if s.kind == "openvino" and not str(s.provider).endswith("f32")]
    if passed or not low:
        return ""
    return (f"{' and '.join(low)} ran below fp32 (OpenVINO's own choice on this CPU): compare at --ov-precision f32, "
            "or give a tolerance for the lower precision")


def _localize(ref: Runner, cand: Runner, sample, feed_for, tolerance):
    if ref.kind != "onnx" or cand.kind != "onnx":
        return Localization(None, "--localize needs two ONNX models")
    return localize_divergence(ref.path, cand.path, feed_for(ref, sample), tolerance,
                               ref_provider=ref.provider or "cpu", provider=cand.provider or "cpu",
                               cand_feeds=feed_for(cand, sample))


def _check_layerwise(ref: Runner, cand: Runner, layerwise: bool, names: Sequence[str], to: str | None) -> None:
    flag = "--layerwise" if layerwise else "--save-intermediates"
    if (layerwise or names) and (ref.kind != "onnx" or cand.kind != "onnx"):
        raise UsageError(f"{flag} needs two ONNX models (it reads their intermediate tensors)",
                         hint="convert the source first, then compare the two .onnx files")
    if bool(names) != bool(to):
        raise UsageError("--save-intermediates NAMES and --save-intermediates-to PATH go together",
                         hint="e.g. --save-intermediates all --save-intermediates-to layers.npz")


def _layerwise(ref: Runner, cand: Runner, sample, feed_for, names: Sequence[str], to: str | None):
    return layerwise(ref.path, cand.path, feed_for(ref, sample), ref_provider=ref.provider or "cpu",
                     provider=cand.provider or "cpu", cand_feeds=feed_for(cand, sample), save=names, save_to=to)


def check_against(before, after, *, tolerance: Tolerance, inputs: str | None = None, samples: int = 1, seed: int = 0,
                  dims: Mapping[str, int] | None = None, label: str = "", second_shape: bool = True,
                  input_norms: Mapping[str, object] | None = None,
                  criteria: Criteria | None = None) -> list[ParityReport]:
    """Parity of ``after`` against ``before`` (two ONNX files) on the given inputs (or
    seeded random ones), and, for models with symbolic dims, again at another size of
    each, which proves that the dims stayed dynamic."""

    # what the step's engine freed goes back before two sessions load the weights again
    release_memory(onnx_bytes(before))
    # one session at a time: each holds its own copy of the weights
    ref = onnx_runner(before, "cpu", label=Path(before).name, hold=False)
    cand = onnx_runner(after, "cpu", label=label or Path(after).name, hold=False)
    if has_past(ref.inputs) and has_past(cand.inputs):  # a decoder with its cache: greedy generation
        return [generation_check(ref, replace(cand, label=f"{cand.label} (greedy, with its cache)"), seed=seed,
                                 atol=tolerance.for_output("logits")[0])]
    # a step checks its dims against its input once; an intermediate model may have pinned some
    dims = {k: v for k, v in (dims or {}).items() if k in dim_keys(ref.inputs)}
    sym = [d for d in symbolic_dims(before) if d not in dims]
    base = {**{d: 2 for d in sym}, **dims}
    reports = [validate(ref, cand, inputs=inputs, samples=samples, seed=seed, dims=base, tolerance=tolerance,
                        input_norms=input_norms, criteria=criteria)]
    if second_shape and sym and not inputs:
        second = {**base, **{d: 3 for d in sym}}
        where = ", ".join(f"{d}=3" for d in sym)
        try:
            rep = validate(ref, cand, samples=1, seed=seed + 1, dims=second, tolerance=tolerance,
                           input_norms=input_norms, criteria=criteria)
            rep = replace(rep, candidate=f"{rep.candidate} ({where})")
        except BadInputError as exc:
            rep = ParityReport(ref.label, f"{cand.label} ({where})", 1, (), False,
                               problems=(f"the new model does not run with {', '.join(sym)} changed: {exc.message}; "
                                         "a dynamic dim became fixed",))
        reports.append(rep)
    return reports
