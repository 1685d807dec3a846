"""Candidate recipes for dynamic int8 on a transformer: build each, check each against
the fp32 model (padded attention masks included), time them side by side, keep the
fastest that passes.

Measured here (BERT-base, 2 threads): ORT's ``quantize_dynamic`` on the raw export is
hard to beat, and the obvious alternative, fuse-then-quantize, was a third slower,
because the fused Attention stayed fp32 (see ``attention.py``). Whether the fused
graph pays depends on the model, the sequence length and the CPU, so it is measured,
not assumed: "plain" is always a candidate, and another is kept only when the low
end of its paired speed-up over plain (95% interval, same run) is above 1, so the
recipe is never slower than plain int8 beyond the timing noise.

Candidates:
- ``plain``: the quantizer on the graph as given (after ORT's pre-processing);
- ``fused``: a graph without Attention nodes is fused (onnxscript's ``optimize_for_ort``,
  which fuses dynamo exports; ORT's transformer optimizer when onnxscript fuses
  nothing) and its Attention nodes rewritten so they quantize to QAttention;
- ``rewritten``: a graph that already has Attention nodes in a form ORT leaves fp32
  (``qkv_hidden_sizes``, ``attention_bias``) gets the rewrite alone.
A candidate's fp32 graph must match the input within the simplify tolerance on random
and padded-mask inputs, and its int8 model must pass the caller's parity budget on
both and lose at most ``MAX_COSINE_DROP`` of cosine against plain int8, else it is
dropped with the reason in the report.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Callable, Mapping, Sequence

from onnxforge.checks.compare import Criteria, DEFAULT_TOLERANCE
from onnxforge.core.types import ParityReport, Tolerance
import numpy as np
from onnxforge.backends.onnx.inspection import summary
from onnxforge.backends.onnx.runner import input_norms_of, inputs_and_ranges, onnx_runner as onnx_side
from onnxforge.checks.benchmark import benchmark
from onnxforge.checks.parity import validate
from onnxforge.core.errors import UsageError, first_line
from onnxforge.core.fileio import external_data_files, load_onnx, onnx_bytes
from onnxforge.core.stats import contention_line, paired_speedup
from onnxforge.data.generate import generate_inputs
from onnxforge.data.samples import load_samples
from onnxforge.steps.quantize.attention import padded_mask_inputs, rewrite_for_quantization
from onnxforge.steps.simplify.unfuse import unfuse_in_file
from onnxforge.steps.simplify.simplify import ATTENTION_OPS, op_count, run_onnxscript_fusions, run_transformer

log = logging.getLogger("onnxforge")

RECIPES = ("auto", "plain", "fused")
MAX_COSINE_DROP = 0.001  # a faster candidate may not be less accurate than plain int8 by more
FUSION_MAX_BYTES = 2 * 1024**3 - 1  # onnxscript's IR holds the whole model; above the protobuf limit, skip
MIN_ROUNDS = 30  # interleaved rounds the candidates' timing gets at least (BERT-base: about 15 s)


@dataclass(frozen=True)
class Candidate:
    name: str
    fp32_model: str
    int8_model: str | None = None
    passed: bool | None = False  # None: not checked here (the only candidate)
    min_cosine: float | None = None
    p50_ms: float | None = None
    speedup: float | None = None  # against the fp32 input model, same run (paired, median of per-round ratios)
    ci95: tuple[float, float] | None = None
    vs_plain: tuple[float, float, float] | None = None  # paired speed-up over plain int8: median, 95% interval
    seconds: float = 0.0  # time to build and check it
    note: str = ""
    details: Mapping[str, object] = field(default_factory=dict)


@dataclass(frozen=True)
class RecipeChoice:
    chosen: str
    fp32_model: str
    candidates: tuple[Candidate, ...]
    fp32_p50_ms: float | None = None
    notes: tuple[str, ...] = ()

    def as_dict(self) -> dict:
        return {"chosen": self.chosen, "fp32_p50_ms": self.fp32_p50_ms,
                "candidates": [{k: (list(v) if isinstance(v, tuple) else v) for k, v in c.__dict__.items()
                                if k not in ("fp32_model", "int8_model")} for c in self.candidates]}


def attention_ops(path) -> int:
    ops = summary(path).ops
    return sum(op_count(ops, op) for op in ATTENTION_OPS)


def choose_dynamic_recipe(
    src: Path,
    plain_fp32: Path,
    tmp: Path,
    *,
    quantize: Callable[[Path, Path], None],
    tolerance: Tolerance,
    criteria: Criteria | None = None,
    recipe: str = "auto",
    dims: Mapping[str, int] | None = None,
    inputs: str | None = None,
    samples: int = 4,
    seed: int = 0,
    bench_seconds: float = 2.0,
) -> RecipeChoice:
    """Pick the graph to hand to the dynamic quantizer. ``quantize(fp32, out)`` runs the
    quantizer with the step's options; ``plain_fp32`` is the pre-processed input."""
    if recipe not in RECIPES:
        raise UsageError(f"unknown recipe {recipe!r}", hint="use " + ", ".join(RECIPES))
    plain = Candidate("plain", str(plain_fp32))
    only = _replace(plain, passed=None, note="the only candidate: checked (and timed, under a speed budget) by the quantize step itself")
    if recipe == "plain":
        return RecipeChoice("plain", str(plain_fp32), (only,), notes=("recipe plain: quantized the graph as given",))
    notes: list[str] = []
    alt = _graph_candidate(src, tmp, notes)
    if alt is None:
        if recipe == "fused":
            notes.append("recipe fused: no fused candidate could be built" + (" (above)" if notes else
                         ": no attention to fuse or rewrite here") + "; quantized the graph as given")
        return RecipeChoice("plain", str(plain_fp32), (only,), notes=tuple(notes))
    cands = [plain, alt] if recipe == "auto" else [alt]
    samples_sets = _check_samples(src, alt, dims, inputs, samples, seed)
    built = []
    for c in cands:
        t0 = time.perf_counter()
        if not c.passed and c.note:  # an fp32 candidate graph that failed its own check
            built.append(c)
            continue
        q = tmp / f"recipe-{c.name}.int8.onnx"
        try:
            quantize(Path(c.fp32_model), q)
            reports = _parity(src, q, samples_sets, tolerance, criteria)
        except Exception as exc:  # the quantizer's own failure on this graph: drop it, say why
            built.append(Candidate(c.name, c.fp32_model, None, False, note=f"quantization failed: {first_line(exc, 200)}",
                                   details=c.details, seconds=round(time.perf_counter() - t0, 2)))
            continue
        cos = _min_cos(reports)
        ok = all(r.passed for r in reports)
        why = "" if ok else "parity budget missed: " + "; ".join(_why(r) for r in reports if not r.passed)[:300]
        built.append(Candidate(c.name, c.fp32_model, str(q), ok, cos, note=why, details=c.details,
                               seconds=round(time.perf_counter() - t0, 2)))
    ref = next((c for c in built if c.name == "plain" and c.passed), None)
    if ref is not None and ref.min_cosine is not None:
        for i, c in enumerate(built):
            if c.name != "plain" and c.passed and c.min_cosine is not None and c.min_cosine < ref.min_cosine - MAX_COSINE_DROP:
                built[i] = _replace(c, passed=False, note=f"min cosine {c.min_cosine:.6f} is more than {MAX_COSINE_DROP} "
                                                         f"below plain int8's {ref.min_cosine:.6f}")
    timed = [c for c in built if c.passed]
    fp32_p50, load = None, None
    if timed:
        built, fp32_p50, load = _time(src, built, dims, inputs, bench_seconds * max(1, len(timed)), seed)
    ok = [c for c in built if c.passed and c.p50_ms is not None]
    best = _unloaded_pick(ok, load, notes)
    if best is None:
        notes.append("no recipe candidate passed its checks; quantized the graph as given")
        return RecipeChoice("plain", str(plain_fp32), tuple(built), fp32_p50, tuple(notes))
    line = ", ".join(f"{c.name} {c.p50_ms:.2f} ms" if c.p50_ms is not None else f"{c.name} dropped ({c.note})"
                     for c in built)
    notes.append(f"recipe: kept {best.name} (int8 candidates, same run: {line})")
    return RecipeChoice(best.name, best.fp32_model, tuple(built), fp32_p50, tuple(notes))


def _unloaded_pick(ok: list[Candidate], load, notes: list) -> Candidate | None:
    """_pick, except that rounds timed on a busy machine choose nothing: they favour
    whichever candidate needs fewer CPUs, so plain int8 is kept."""
    best = _pick(ok)
    plain = next((c for c in ok if c.name == "plain"), None)
    if load is None or load.clean or plain is None or best is plain:
        return best

    notes.append(f"recipe: timed on a busy machine ({contention_line(load)}): kept plain int8 rather than {best.name}")
    return plain


def _pick(ok: list[Candidate]) -> Candidate | None:
    """Plain int8 unless another candidate is faster than it beyond the noise: the low
    end of its paired speed-up over plain (95% interval) above 1. Without a passing
    plain, the fastest by median."""
    plain = next((c for c in ok if c.name == "plain"), None)
    if plain is None:
        return min(ok, key=lambda c: c.p50_ms, default=None)
    faster = [c for c in ok if c is not plain and (c.vs_plain or (0, 0, 0))[1] > 1.0]
    return max(faster, key=lambda c: c.vs_plain[0], default=plain)


def _replace(c: Candidate, **kw) -> Candidate:
    return replace(c, **kw)


def _graph_candidate(src: Path, tmp: Path, notes: list) -> Candidate | None:
    """The fused or rewritten fp32 graph, checked against ``src``; None when there is
    nothing to fuse or no Attention that would quantize."""
    t0 = time.perf_counter()
    size = onnx_bytes(src)
    has_attention = attention_ops(src) > 0
    if not has_attention and not _has_softmax(src):
        return None  # no attention anywhere: nothing to fuse (and no fusion pass to pay for)
    if has_attention:
        name, fused = "rewritten", src
        info: dict = {}
    else:
        if size > FUSION_MAX_BYTES:
            notes.append("recipe: fusions not tried on a model over 2 GB (onnxscript holds the whole model)")
            return None
        name, fused = "fused", tmp / "recipe-fused.onnx"
        try:
            info = fuse_attention(src, fused)
        except Exception as exc:
            notes.append(f"recipe: transformer fusions failed ({type(exc).__name__}: {first_line(exc, 160)})")
            return None
        if not info.get("attention"):
            return None
    rewritten = tmp / f"recipe-{name}.onnx"
    rep = rewrite_for_quantization(fused, rewritten)
    details = {**info, "attention_nodes": len(rep.nodes), "quantizable_attention": rep.quantizable,
               "mask_inputs": list(rep.mask_inputs),
               "kept": sorted({f"{n.node}: {n.reason}" for n in rep.nodes if not n.quantizable})[:5]}
    if not rep.nodes:
        notes.append("recipe: the fusions made no com.microsoft.Attention (MultiHeadAttention, if any, stays fp32 "
                     "under ORT's quantizer): nothing to gain over plain int8")
        return None
    if rep.quantizable == 0:
        notes.append(f"recipe: none of the {len(rep.nodes)} Attention node(s) can take the form ORT quantizes "
                     f"({rep.nodes[0].reason})")
        return None
    details["unfused"] = unfuse_in_file(rewritten)  # simplify/unfuse.py: before the parity check below
    checks = _parity(src, rewritten, _check_samples(src, None, None, None, 1, 0, mask_inputs=rep.mask_inputs),
                     DEFAULT_TOLERANCE)
    secs = round(time.perf_counter() - t0, 2)
    if not all(c.passed for c in checks):
        return Candidate(name, str(rewritten), passed=False, seconds=secs, details=details,
                         note="fp32 graph differs from the input: " + "; ".join(_why(c) for c in checks if not c.passed)[:300])
    return Candidate(name, str(rewritten), details={**details, "mask_inputs": list(rep.mask_inputs),
                                                    "fp32_check_max_abs": max((o.max_abs for c in checks for o in c.outputs),
                                                                              default=0.0)},
                     seconds=secs)


def _has_softmax(path) -> bool:
    return any(n.op_type == "Softmax" for n in load_onnx(path, graph_only=True).graph.node)


def fuse_attention(src: Path, dst: Path) -> dict:
    """Transformer fusions that produce Attention: onnxscript's (dynamo exports), then
    ORT's BERT optimizer if onnxscript fused no attention (TorchScript exports)."""
    info = run_onnxscript_fusions(src, dst)
    n = attention_ops(dst)
    if not n:
        alt = dst.with_name(dst.stem + "-ort.onnx")
        info = run_transformer(src, alt, model_type="bert")
        n = attention_ops(alt)
        if n:
            dst.unlink()
            alt.rename(dst)
            _rename_data(dst, alt.name)
    return {**info, "attention": n}


def _rename_data(model_path: Path, old_model_name: str) -> None:
    """save_scratch names the data file after the model; keep it consistent after a rename."""
    import onnx

    m = onnx.load(str(model_path), load_external_data=False)
    files = external_data_files(m)
    for f in files:
        if f.startswith(old_model_name):
            new = model_path.name + f[len(old_model_name):]
            (model_path.parent / f).rename(model_path.parent / new)
            for t in onnx.external_data_helper._get_all_tensors(m):
                for e in t.external_data:
                    if e.key == "location" and e.value == f:
                        e.value = new
    onnx.save_model(m, str(model_path))


def _check_samples(src, alt: Candidate | None, dims, inputs, samples, seed, mask_inputs=()) -> list[dict]:
    """The step's check inputs (its --inputs, or seeded random ones) plus padded-mask
    samples for every input the attention rewrite reads as a mask."""
    specs, ranges = inputs_and_ranges(src)
    norms = None if inputs else input_norms_of(src)
    sym = {d for s in specs for d in s.shape if isinstance(d, str)}
    d = {**{k: 2 for k in sym}, **dict(dims or {})}
    if inputs:
        feeds = load_samples(inputs, names=[s.name for s in specs])
    else:
        feeds = [generate_inputs(specs, seed=seed + i, dims=d, val_ranges=ranges, norms=norms) for i in range(samples)]
    masks = tuple(mask_inputs) or tuple((alt.details.get("mask_inputs") if alt else ()) or ())
    if masks:
        pd = {**{k: max(v, 3) for k, v in d.items()}}  # room for rows with different padding
        feeds += padded_mask_inputs(specs, masks, dims=pd, seed=seed, val_ranges=ranges)
    return feeds


def _parity(ref: Path, cand: Path, feeds: Sequence[dict], tolerance: Tolerance,
            criteria: Criteria | None = None) -> list[ParityReport]:
    # one session at a time (validate lets each go once its outputs are in): the fused fp32
    # graph's check held BERT-base's weights twice, the step's peak (2.6x the weights)
    r, c = onnx_side(ref, "cpu", hold=False), onnx_side(cand, "cpu", hold=False)
    # one report per batch shape (padded-mask samples may use other dims than the rest)
    groups: dict[tuple, list[dict]] = {}
    for f in feeds:
        groups.setdefault(tuple(sorted((k, v.shape) for k, v in f.items())), []).append(f)
    return [validate(r, c, input_samples=g, tolerance=tolerance, criteria=criteria) for g in groups.values()]


def _min_cos(reports: Sequence[ParityReport]) -> float | None:
    vals = [o.cosine for r in reports for o in r.outputs if o.label_agreement is None]
    return min(vals) if vals else None


def _why(r: ParityReport) -> str:
    bad = [f"{o.name}: {o.message}" for o in r.outputs if not o.passed]
    return "; ".join(list(r.problems) + bad)


def _time(src: Path, built: list[Candidate], dims, inputs, seconds: float, seed: int):
    """fp32 and every passing int8 candidate in one interleaved benchmark."""

    timed = [c for c in built if c.passed]
    models = [str(src)] + [c.int8_model for c in timed]
    ranges = inputs_and_ranges(src)[1]  # every row: the source's valid inputs
    rep = benchmark(models, dims=dims, inputs=inputs, duration=seconds, warmup=5, seed=seed, save_latencies=True,
                    val_ranges=ranges)
    lat = [list(r.latencies_ms) for r in rep.results]
    if len(lat[0]) < MIN_ROUNDS:  # a slow model: more rounds, else the interval cannot separate a few percent
        more = benchmark(models, dims=dims, inputs=inputs, iterations=MIN_ROUNDS - len(lat[0]), warmup=2, seed=seed,
                         save_latencies=True, val_ranges=ranges)
        lat = [a + list(r.latencies_ms) for a, r in zip(lat, more.results)]
    by_model = dict(zip(models, lat))
    plain = next((by_model[c.int8_model] for c in timed if c.name == "plain"), None)
    out = []
    for c in built:
        ms = by_model.get(c.int8_model) if c.passed else None
        if ms is None:
            out.append(c)
            continue
        s = paired_speedup(lat[0], ms, seed)
        vs = paired_speedup(plain, ms, seed) if plain is not None else None
        out.append(_replace(c, p50_ms=round(float(np.median(ms)), 4), speedup=round(s[0], 4),
                            ci95=(round(s[1], 4), round(s[2], 4)),
                            vs_plain=tuple(round(v, 4) for v in vs) if vs else None))
    return out, round(float(np.median(lat[0])), 4), rep.contention
