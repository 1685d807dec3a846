"""`onnxforge release`: the whole pipeline from one TOML file, with gates.

Steps run in order, each writing its model under OUT_DIR/steps/ and running its own
check. Every step's output is then checked against the ORIGINAL source model on the
validation inputs (the parity ledger), so error that accumulates across steps is
caught, not only each step against the one before. The final model is benchmarked
against the first ONNX model, the gates are evaluated, and OUT_DIR receives
model.onnx (only when every gate passes), manifest.json, report.json, report.md
(also appended to $GITHUB_STEP_SUMMARY), report.html and junit.xml (publish.py). Seeds are fixed
and nothing time-dependent goes into the model, so the same inputs give the same
model bytes.
"""

from __future__ import annotations

import dataclasses
import logging
import math
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping

from onnxforge.core.errors import BadInputError, OnnxforgeError, Terminated, UsageError, interrupt_of
from onnxforge.core.progress import task
from onnxforge.pipeline.config import ReleaseConfig, StepConfig, load_config, release_name, with_provider, ConfigData
from onnxforge.backends import Runner, open_runner
from onnxforge.core.types import GateResult, LedgerRow, ReleaseReport, StepResult, Tolerance
import hashlib
import numpy as np
from onnxforge.backends.base import is_factory
from onnxforge.backends.onnx.runner import input_norms_of, inputs_and_ranges, onnx_runner
from onnxforge.backends.onnx.runtime import environment
from onnxforge.backends.torch.hf import is_hf_source
from onnxforge.backends.torch.sources import load_torch
from onnxforge.checks.benchmark import benchmark
from onnxforge.checks.compare import Criteria, DEFAULT_TOLERANCE, LOOSE
from onnxforge.checks.generation import has_past
from onnxforge.checks.parity import cast_floats, validate
from onnxforge.core.fileio import folder_lock, load_onnx, onnx_bytes
from onnxforge.core.memory import release_memory
from onnxforge.core.stats import contention_line
from onnxforge.data.generate import generate_inputs
from onnxforge.data.samples import read_npz, save_samples
from onnxforge.data.specs import model_io_specs, numpy_dtype, parse_spec
from onnxforge.pipeline.publish import (
    check_inputs_kept,
    check_out_dir,
    input_hashes,
    planned_files,
    publish,
    rebase,
    stage_dir,
    swap_in,
    versions,
    write_reports,
)
from onnxforge.steps import function_of
from onnxforge.steps.base import CheckOptions
from onnxforge.steps.package.package import package, safe_model_name
from onnxforge.steps.serve_check.check import serve_check

log = logging.getLogger("onnxforge")


def _declared_types(cfg: ReleaseConfig) -> dict[str, str] | None:
    """The input dtypes the source declares (ONNX source, model.inputs), if it does."""
    if cfg.framework == "onnx":
        return {s.name: s.dtype for s in model_io_specs(load_onnx(cfg.source, graph_only=True))[0]}
    if cfg.model.get("inputs"):
        return {s.name: s.dtype for s in map(parse_spec, cfg.model["inputs"])}
    return None


def _as_declared(cfg: ReleaseConfig, arrays: dict) -> dict:
    """Validation data as numpy and scikit-learn make it (float64) fed as the model
    declares its inputs; a torch source with no declared types gets float32, as a
    torch model's weights are. A scikit-learn source keeps float64 (its own precision);
    each ONNX model gets it cast to what it declares (validate, _ledger_row)."""

    types = _declared_types(cfg)
    out = {}
    for k, v in arrays.items():
        want = (types or {}).get(k)
        if want in (None, "str", "unknown") or v.dtype == numpy_dtype(want):
            if v.dtype == np.float64 and types is None and cfg.framework == "torch":
                v = v.astype(np.float32)
        elif (v.dtype.kind == "f" and want.startswith("float")) or np.can_cast(v.dtype, numpy_dtype(want), "safe"):
            v = v.astype(numpy_dtype(want))  # float64 -> float32, int32 -> int64: what deployment code does
        else:
            raise BadInputError(f"data.validation: {k} is {v.dtype}, the model declares {want}",
                                hint=f"save it as {want}: numpy.savez(..., {k}=arr.astype('{want}'))")
        out[k] = v
    return out


def _validation(cfg: ReleaseConfig) -> tuple[dict | None, Any]:
    """Validation inputs (one batch, as the model declares them) and labels, or (None, None)."""
    if cfg.data.validation is None:
        return None, None
    arrays = read_npz(cfg.data.validation, "data.validation")
    labels = arrays.pop(cfg.data.labels, None)
    return _as_declared(cfg, arrays), labels


def _accuracy(outputs: Mapping[str, Any], labels, output: str | None) -> float:
    """The share of rows whose predicted class is the label. Anything that would make
    the number meaningless (an unknown output, labels that are not classes, a row count
    that differs) is refused: an accuracy of 0 vs 0 "passed" for a regressor."""
    labels = np.asarray(labels)
    if labels.dtype.kind == "f" and not np.all(np.mod(labels, 1) == 0):
        raise UsageError("gates.accuracy compares class labels; data.validation's labels are not classes "
                         f"(float values such as {labels.reshape(-1)[0]:g})",
                         hint="drop gates.accuracy for a regressor: the parity gate checks its outputs")
    if output:
        if output not in outputs:
            raise UsageError(f"gates.accuracy.output: the model has no output {output!r}",
                             hint="its outputs are: " + ", ".join(outputs))
        out = np.asarray(outputs[output])
    else:
        ints = [v for v in outputs.values() if np.asarray(v).dtype.kind in "iuUO" and np.asarray(v).ndim == 1]
        out = np.asarray(ints[0]) if ints else np.asarray(next(iter(outputs.values())))
    if out.ndim == 0 or out.shape[0] != labels.reshape(-1).shape[0]:
        raise BadInputError(f"data.validation: {labels.size} labels for {out.shape[0] if out.ndim else 1} predicted "
                            "rows", hint="one label per row of the validation inputs")
    pred = out if out.ndim == 1 else out.reshape(out.shape[0], -1).argmax(-1)
    return float((pred.reshape(-1) == labels.reshape(-1)).mean())


def _source(cfg: ReleaseConfig) -> tuple[Runner, Path | None, Any]:
    """(a runner over the source model; the source's path when it is already ONNX; the
    module a torch factory built, for the convert step to use rather than build again).

    The runner's outputs are memoized per input (_Memo): the ledger feeds every step the
    same inputs, so the model itself is let go after the first row. For GPT-2-large each
    copy is 3.1 GB, and the release held four at its peak (source, convert's, two sessions)."""
    if cfg.framework == "onnx":
        runner = _onnx(cfg.source)
        return dataclasses.replace(runner, fn=_Memo(runner.fn, lambda: _onnx(cfg.source).fn)), Path(cfg.source), None

    def load():
        kind = "factory" if _is_factory(cfg.source) else "hf" if is_hf_source(cfg.source) else cfg.framework
        return open_runner(cfg.source, kind=kind, label="source", weights=cfg.model.get("weights"),
                           trust_pickle=cfg.model.get("trust_pickle", False), trust=cfg.model.get("trust", ()),
                           task=cfg.model.get("task"), allow_download=cfg.model.get("allow_download", False))

    module = None
    if cfg.framework == "torch" and _is_factory(cfg.source):
        module = load_torch(cfg.source, weights=cfg.model.get("weights"),
                            trust_pickle=cfg.model.get("trust_pickle", False)).module
        module = _Module(module, bool(getattr(module, "training", False)))
        runner = open_runner(module.module, kind="torch", label="source")
    else:
        runner = load()
    return dataclasses.replace(runner, fn=_Memo(runner.fn, lambda: load().fn)), None, module


@dataclass
class _Module:
    """The module a torch factory built, held until the convert step takes it."""

    module: Any
    training: bool  # as the factory left it: convert reports a model left in training mode

    def take(self):
        m, self.module = self.module, None
        return m


class _Memo:
    """A runner's function, once per distinct input; after drop() the model behind it
    is freed, and reloaded only for an input not seen before."""

    def __init__(self, fn, reload):
        self.fn, self.reload, self.cache = fn, reload, {}

    def __call__(self, feeds):
        key = _feeds_key(feeds)
        if key not in self.cache:
            if self.fn is None:
                self.fn = self.reload()
            self.cache[key] = self.fn(feeds)
        return self.cache[key]

    def drop(self) -> None:
        self.fn = None


def _feeds_key(feeds) -> str:

    h = hashlib.sha256()
    for k in sorted(feeds):
        a = np.ascontiguousarray(feeds[k])
        h.update(f"{k}:{a.dtype}:{a.shape}".encode())
        h.update(a.tobytes() if a.dtype != object else repr(a.tolist()).encode())
    return h.hexdigest()


def _let_go(source: Runner, at_stake: int) -> None:
    if isinstance(source.fn, _Memo):
        source.fn.drop()
    release_memory(at_stake)  # onnxscript's rewriters still hold the exported graph, and with it the module's weights


def _is_factory(spec: str) -> bool:
    return is_factory(spec)


def _onnx(path) -> Runner:
    return onnx_runner(path, "cpu", label=Path(path).name)


def _run_step(cfg: ReleaseConfig, sc: StepConfig, i: int, current, steps_dir: Path, check_inputs: str | None,
              module: _Module | None = None):
    target = steps_dir / f"{i:02d}-{sc.run.replace('.', '-')}.onnx"
    extra = {"inputs": check_inputs} if isinstance(sc.options, CheckOptions) and check_inputs else {}
    source = cfg.source
    if sc.run == "convert" and module is not None and module.module is not None:
        training, source, extra["weights"] = module.training, module.take(), None  # built once, weights in
        if training:
            source.train()
    if getattr(sc.options, "speed_budget", 0.0) is None:  # quantize's own budget: the latency gate decides once
        extra["speed_budget"] = 0.0
    opts = dataclasses.replace(sc.options, force=True, **extra)
    fn = function_of(sc.step)
    return fn(source if sc.run == "convert" else current, target, opts)


def _ledger_row(cfg: ReleaseConfig, sc: StepConfig, result: StepResult, source: Runner, previous: Runner | None,
                feeds: dict, labels, step_input: Path | None = None, cand: Runner | None = None) -> LedgerRow:
    gate = cfg.gate("parity")
    against_prev = gate is not None and gate.against == "previous"
    ref = previous if against_prev and previous is not None else source
    cand = cand or _onnx(result.output)
    crit = sc.parity or gate
    if sc.parity is not None and sc.parity.atol is None and sc.parity.rtol is None:
        tol = LOOSE  # a step that states its own criteria (cosine, labels) only
    else:
        tol = Tolerance(_or(crit and crit.atol, DEFAULT_TOLERANCE.atol), _or(crit and crit.rtol, DEFAULT_TOLERANCE.rtol))
    if has_past(cand.inputs):  # a decoder with its cache: judged by greedy generation (checks/generation.py)
        return _generation_row(cfg, sc, result, ref, crit)
    agree = Criteria.budget(crit.min_cosine, crit.max_mismatch, crit.check_stat) if crit else Criteria()
    rep = validate(ref, cand, input_samples=[feeds], tolerance=tol, criteria=agree)
    if not rep.passed and crit is not None and crit.layerwise_on_failure:
        rep = _with_layerwise(rep, step_input, cand, feeds)
    acc = None
    if labels is not None:  # fed as the model declares its inputs (float64 data for a float32 model)
        acc = _accuracy(cand(cast_floats(feeds, cand.inputs)), labels,
                        cfg.gate("accuracy").output if cfg.gate("accuracy") else None)
    return LedgerRow(step=sc.run, model=str(result.output), against="previous" if against_prev else "source",
                     parity=rep, accuracy=acc, passed=rep.passed)


def _with_layerwise(rep, step_input: Path | None, cand: Runner, feeds: dict):
    """layerwise_on_failure: the failing step's model against the model it was given
    (the first step's input is the source, not ONNX: a note says so)."""
    if step_input is None or step_input.suffix != ".onnx":
        return dataclasses.replace(rep, notes=rep.notes + (
            "layerwise_on_failure: the step's input is not an ONNX model; nothing to compare tensor by tensor",))
    lw = validate(_onnx(step_input), cand, input_samples=[feeds], layerwise=True).layerwise
    return dataclasses.replace(rep, layerwise=lw, notes=rep.notes + (
        f"layer-wise: {cand.label} against the step's input {step_input.name}",))


def _generation_row(cfg: ReleaseConfig, sc: StepConfig, result: StepResult, ref: Runner, crit) -> LedgerRow:
    """The ledger row of a model with a key/value cache: greedy decoding against the
    source folder (or the step before, itself such a model), [gates.generation]'s tokens
    and atol, else the step's or parity gate's atol."""
    gen = cfg.gate("generation")
    atol = gen.atol if gen is not None and gen.atol is not None else crit.atol if crit is not None else None
    tol = DEFAULT_TOLERANCE if atol is None else Tolerance(atol, 0.0)
    against = ref.path if ref.kind == "onnx" and ref.path else cfg.source
    rep = validate(against, str(result.output), tolerance=tol, generate_tokens=gen.tokens if gen else None)
    return LedgerRow(step=sc.run, model=str(result.output), against="source" if against == cfg.source else "previous",
                     parity=rep, accuracy=None, passed=rep.passed)


def _generation_gate(run: _Run) -> GateResult:
    row = run.ledger[-1] if run.ledger else None
    gen = row.parity.generation if row is not None and row.parity is not None else None
    if gen is None:
        return GateResult("generation", False, 0.0, 1.0, "the final model takes no key/value cache: export it with "
                          "--task text-generation-with-past", kind="generation", model=str(run.final))
    return GateResult("generation", gen.passed, gen.tokens_equal / gen.tokens, 1.0,
                      f"{gen.tokens_equal}/{gen.tokens} greedy tokens equal, max logit error "
                      f"{gen.max_logit_error:.3g} (atol {gen.atol:g})", kind="generation", model=str(run.final))


def _or(v, default):
    return default if v is None else v


def _generated_feeds(cfg: ReleaseConfig, model_path) -> dict:
    """Inputs for the ledger when there is no data.validation: seeded, at 2 for every
    symbolic dim, within the model's val_ranges (a BERT mask stays a mask)."""
    specs, recorded = inputs_and_ranges(model_path)
    # the ranges convert recorded (a Hugging Face model's vocabulary and mask), then the config's own
    ranges = {**(recorded or {}), **{k: tuple(v) for k, v in cfg.model.get("val_ranges", {}).items()}}
    norms = {**(input_norms_of(model_path) or {}), **cfg.model.get("input_norms", {})}
    return generate_inputs(specs, seed=0, dims={d: 2 for s in specs for d in s.shape if isinstance(d, str)},
                           val_ranges=ranges, norms=norms)


@dataclass
class _Run:
    """What a release has done so far; becomes the ReleaseReport on every exit."""

    stage: Path
    out: Path | None = None
    name: str = ""  # the release's name (release_name): packages and report titles
    cfg: ReleaseConfig | None = None
    steps: list = field(default_factory=list)
    ledger: list = field(default_factory=list)
    gates: list = field(default_factory=list)
    step_seconds: list = field(default_factory=list)
    packages: list = field(default_factory=list)
    serve_check: Any = None
    benchmark: Any = None
    failure: str | None = None
    exit_code: int = 0
    status: str = "passed"
    error: str | None = None
    hint: str | None = None
    raised_at: int | None = None
    current: int | None = None
    final: Path | None = None
    first_onnx: Path | None = None
    bar: Any = None  # the release's progress task: one unit per step and per later phase

    def fail(self, code: int, failure: str, status: str = "failed", error=None, hint=None) -> None:
        self.exit_code, self.failure, self.status, self.error, self.hint = code, failure, status, error, hint
        if status != "failed":
            self.raised_at = self.current


def _steps(run: _Run, source: Runner, source_path, feeds, labels, check_inputs, module=None) -> None:
    """Run every step and its ledger row; stops at the first step whose own check fails."""
    cfg = run.cfg
    current = source_path
    previous = source
    step_input = Path(source_path) if source_path else None  # the model the step was given
    gate = cfg.gate("parity")
    against_prev = gate is not None and gate.against == "previous"
    for i, sc in enumerate(cfg.steps):
        run.current = i
        t0 = time.perf_counter()
        with task(f"step {i + 1}/{len(cfg.steps)} {sc.run}"):  # the step, its own check and its ledger row
            res = _run_step(cfg, sc, i, current, run.stage / "steps", check_inputs, module)
            run.steps.append(res)
            run.step_seconds.append(round(time.perf_counter() - t0, 3))
            if not res.passed or not res.written:
                run.fail(1, f"step {i} ({sc.run}) failed its own check")
                return
            current = res.artifact or Path(res.output)
            if run.first_onnx is None:
                run.first_onnx = Path(res.output)
            row_feeds = feeds if feeds is not None else _generated_feeds(cfg, res.output)
            run.ledger.append(_ledger_row(cfg, sc, res, source, previous, row_feeds, labels, step_input))
            step_input = Path(res.output)
            # its outputs on these inputs are kept; sized by the export, not a smaller int8 output
            _let_go(source, max(onnx_bytes(run.first_onnx), onnx_bytes(res.output)))
        run.bar.advance()
        previous = _onnx(res.output) if against_prev else None  # a session only where the ledger uses it
    run.current = None
    run.final = Path(run.steps[-1].output)


def _parity_gates(cfg: ReleaseConfig, ledger) -> list[GateResult]:
    gates = []
    for row in ledger:
        value, limit, what = _deciding(row)
        gates.append(GateResult(f"parity:{row.step}", row.passed, value, limit,
                                f"{row.step} vs {row.against}: {what}", kind="parity", model=row.model))
    return gates


def _deciding(row: LedgerRow) -> tuple[float, float, str]:
    """The criterion that decided a ledger row, with its value and limit."""
    p = row.parity
    if p is not None and p.generation is not None:
        g = p.generation
        return g.tokens_equal / g.tokens, 1.0, f"{g.tokens_equal}/{g.tokens} greedy tokens equal, max logit error " \
                                               f"{g.max_logit_error:.3g} (atol {g.atol:g})"
    if p is None or not p.outputs:
        return 0.0, 0.0, "; ".join(p.problems) if p else "not checked"
    bad = [o for o in p.outputs if not o.passed]
    o = bad[0] if bad else p.outputs[0]
    if o.label_agreement is not None and o.topk_agreement is None:
        return o.label_agreement, 1.0, f"output {o.name}: labels agree {o.label_agreement:.4f}" + (
            "" if o.passed else f" ({o.message})")
    if math.isinf(o.atol) and math.isinf(o.rtol):
        cos = min(x.cosine for x in p.outputs)
        return cos, 0.0, f"cosine {cos:.6f}" + ("" if row.passed else f": {o.message}")
    text = f"output {o.name}: max abs {o.max_abs:.3g} (atol {o.atol:g}, rtol {o.rtol:g})"
    return o.max_abs, o.atol, text + ("" if o.passed else f": {o.message}")


def _latency_gates(cfg: ReleaseConfig, first: Path, final: Path):
    lat = cfg.gate("latency")
    models = [str(first)] if final == first else [str(first), str(final)]
    bench = benchmark(models, providers=[lat.provider], runtimes=[lat.runtime], ov_precision=lat.ov_precision,
                      duration=lat.seconds, dims=dict(lat.dims),
                      threads=lat.threads, max_p50_ms=lat.max_p50_ms, max_p99_ms=lat.max_p99_ms,
                      min_speedup=lat.min_speedup if len(models) > 1 else None, warmup=5)
    return bench, [g for g in bench.gates if g.model == str(final)]


def _openvino_parity(run: _Run, source: Runner, feeds, labels) -> list[GateResult]:
    """With the latency gate on OpenVINO, the final model's ledger row again, the model run
    by OpenVINO (against the same reference, with the last step's criteria): a latency
    measured there is worth only a model OpenVINO computes right."""
    lat = run.cfg.gate("latency")
    if lat is None or lat.runtime != "openvino" or run.failure is not None:
        return []

    res, sc = run.steps[-1], run.cfg.steps[-1]
    with task("parity on OpenVINO"):
        cand = open_runner(str(res.output), runtime="openvino", ov_precision=lat.ov_precision)
        gate = run.cfg.gate("parity")
        ref = _onnx(res.output) if gate is not None and gate.against == "previous" else source
        row = _ledger_row(run.cfg, sc, res, ref, None, feeds if feeds is not None else
                          _generated_feeds(run.cfg, res.output), labels, cand=cand)
    value, limit, what = _deciding(row)
    return [GateResult("parity:openvino", row.passed, value, limit, f"{sc.run} on {cand.provider} vs "
                       f"{'itself on ONNX Runtime' if ref is not source else 'the source'}: {what}", kind="parity",
                       model=str(res.output))]


def _gates(run: _Run, acc_src, extra=()) -> None:
    cfg = run.cfg
    gates = _parity_gates(cfg, run.ledger) + list(extra)
    acc_gate = cfg.gate("accuracy")
    if acc_gate is not None and acc_src is not None:
        acc_final = run.ledger[-1].accuracy if run.ledger else acc_src
        drop = acc_src - acc_final
        gates.append(GateResult("accuracy", drop <= acc_gate.max_drop + 1e-12, drop, acc_gate.max_drop,
                                f"accuracy {acc_final:.4f} vs source {acc_src:.4f}: drop {drop:+.4f}, "
                                f"limit {acc_gate.max_drop}", kind="accuracy", model=str(run.final)))
    if cfg.gate("generation") is not None:
        gates.append(_generation_gate(run))
    run.gates = gates
    if cfg.gate("latency") is not None:
        with task("latency gate"):
            run.benchmark, lat = _latency_gates(cfg, run.first_onnx, run.final)
        run.bar.advance()
        run.gates = gates + lat
    _judge(run)


def _judge(run: _Run) -> None:
    """A failed gate fails the release (exit 1); else a timing gate the machine's load
    left undecided makes it inconclusive (exit 6): no model ships, and no CI reads a pass."""
    if all(g.passed for g in run.gates):
        return
    failed = [g.name for g in run.gates if g.status != "inconclusive" and not g.passed]
    if failed:
        run.fail(1, "gate(s) failed: " + ", ".join(failed))
        return

    undecided = [g for g in run.gates if g.status == "inconclusive"]
    why = contention_line(run.benchmark.contention) if run.benchmark and run.benchmark.contention else "see the gates"
    run.fail(6, "gate(s) inconclusive: " + ", ".join(g.name for g in undecided), "inconclusive",
             f"{', '.join(g.name for g in undecided)} not decided: the machine was busy ({why})",
             "rerun when no other CPU-heavy work runs beside it, or give the gate more time ([gates.latency] seconds)")


def _pipeline(run: _Run, config, provider: str | None = None) -> None:
    cfg = run.cfg = with_provider(load_config(config), provider)
    if run.out is not None:
        check_inputs_kept(run.out, release_inputs(cfg, config))
    run.bar.update(0, total=_phases(cfg))
    feeds, labels = _validation(cfg)  # before any work: its dtypes are checked against [model] inputs
    with task(f"load source {Path(cfg.source).name}"):  # a torch factory imports torch: seconds
        source, source_path, module = _source(cfg)
    run.first_onnx = source_path
    check_inputs = None
    if feeds is not None:  # the validation inputs without labels, for each step's own check
        check_inputs = str(run.stage / ".validation-inputs.npz")
        save_samples(check_inputs, [feeds])
    acc_gate = cfg.gate("accuracy")
    acc_src = _accuracy(source(dict(feeds)), labels, acc_gate.output if acc_gate else None) \
        if labels is not None else None
    _steps(run, source, source_path, feeds, labels, check_inputs, module)
    if run.failure is None:
        _gates(run, acc_src, _openvino_parity(run, source, feeds, labels))


def _phases(cfg: ReleaseConfig) -> int:
    """The units of the release's progress bar: steps, the latency gate, packages, serve-check."""
    return (len(cfg.steps) + (cfg.gate("latency") is not None) + len(cfg.packages)
            + (cfg.serve_check is not None))


def release(config: str | os.PathLike | Mapping[str, Any], out_dir: str | os.PathLike = "release-out", *,
            keep_steps: bool = True, force: bool = False, provider: str | None = None,
            base_dir: str | os.PathLike | None = None) -> ReleaseReport:
    """Run the pipeline a release.toml describes; see the module docstring. Every exit
    — a failed gate, a bad config, an error, an internal error, Ctrl-C or SIGTERM —
    writes the reports; the release is built in a scratch folder beside OUT_DIR and
    moved in at the end (publish.py), so OUT_DIR never mixes two releases.
    ``config``: the file, or its tables as data (a dict), whose relative paths resolve
    against ``base_dir`` (default: the current directory).
    ``provider`` replaces the latency gate's provider (a zoo target's)."""
    if isinstance(config, Mapping):
        config = ConfigData.of(config, base_dir)
    elif base_dir is not None:
        raise UsageError("base_dir is for a config given as data (a dict)",
                         hint="paths in a release.toml are relative to the file")
    t_start = time.perf_counter()
    out = Path(out_dir)
    with folder_lock(out):  # before any check: two releases into one OUT_DIR, the second fails at once
        cfg = _config_or_none(config)
        if cfg is not None:  # an input in OUT_DIR: say so, rather than that OUT_DIR holds a stranger's file
            check_inputs_kept(out, release_inputs(cfg, config))
        check_out_dir(out, force, planned_files(cfg, keep_steps))
        return _release(out, config, keep_steps, provider, t_start)


def _name(config, out: Path) -> str:
    """The release's name (its config's: see release_name), usable as a folder name;
    the output folder's when the config is not a file."""
    raw = release_name(config) if isinstance(config, (str, os.PathLike)) and str(config) else ""
    return safe_model_name(raw or out.resolve().name)


def _config_or_none(config) -> ReleaseConfig | None:
    """The config if it loads (what the release will write depends on it); one that
    does not is the release's verdict to record, not a reason to refuse its folder."""
    try:
        return load_config(config)
    except OnnxforgeError:
        return None


def _release(out: Path, config, keep_steps: bool, provider: str | None, t_start: float) -> ReleaseReport:
    with stage_dir(out) as stage, task("release") as bar:
        run = _Run(stage=stage, out=out, bar=bar, name=_name(config, out))
        (stage / "steps").mkdir()
        try:
            _pipeline(run, config, provider)
        except (KeyboardInterrupt, Exception) as exc:
            stop = interrupt_of(exc)  # Ctrl-C, or SIGTERM (Terminated), also inside another exception
            if stop is None and isinstance(exc, OnnxforgeError):
                run.fail(int(exc.exit_code), f"{type(exc).__name__}: {exc.message}", "error", exc.message, exc.hint)
                return _finish(run, config, out, keep_steps, t_start)
            if stop is not None:  # the verdict says which, as the exit does
                how = "terminated" if isinstance(stop, Terminated) else "interrupted"
                run.fail(143 if how == "terminated" else 130, how, "interrupted", how)
                _finish(run, config, out, keep_steps, t_start)
                raise
            # an internal error: the verdict still says so, then it propagates
            run.fail(70, f"internal error: {type(exc).__name__}: {exc}", "error", f"{type(exc).__name__}: {exc}",
                     "rerun with --debug for the traceback, and report it")
            _finish(run, config, out, keep_steps, t_start)
            raise
        return _finish(run, config, out, keep_steps, t_start)


def _finish(run: _Run, config, out: Path, keep_steps: bool, t_start: float) -> ReleaseReport:
    cfg = run.cfg
    vers, inputs_sha = versions(), input_hashes(cfg, config)

    def report_now() -> ReleaseReport:  # paths into the stage are paths into OUT once it moves in
        return rebase(_report(run, config, outputs, inputs_sha, vers, t_start), run.stage, out.resolve())

    outputs = {}
    if run.failure is None and run.final:
        outputs = publish(run.final, run.stage, cfg, run.steps, inputs_sha, vers)
        if cfg.packages:
            write_reports(report_now(), run.stage, summary=False)
            _deploy(run)
            if run.failure is not None:  # a release whose package failed does not ship a model
                for name in {"model.onnx", "model.onnx.data", *outputs}:
                    (run.stage / name).unlink(missing_ok=True)
                outputs = {}
    report = report_now()
    write_reports(report, run.stage)
    swap_in(run.stage, out, keep_steps=keep_steps, inputs=release_inputs(cfg, config))
    return report


def _report(run: _Run, config, outputs, inputs_sha, vers, t_start) -> ReleaseReport:
    cfg = run.cfg
    passed = run.failure is None
    return ReleaseReport(
        config=cfg.raw if cfg else {}, steps=tuple(run.steps), ledger=tuple(run.ledger), benchmark=run.benchmark,
        gates=tuple(run.gates), passed=passed, failure=run.failure, exit_code=run.exit_code, outputs=outputs,
        inputs=inputs_sha, environment=environment(), versions=vers, seconds=round(time.perf_counter() - t_start, 2),
        status=run.status if not passed else "passed", error=run.error, hint=run.hint,
        planned_steps=tuple(s.run for s in cfg.steps) if cfg else (), planned_gates=_planned_gates(cfg),
        step_seconds=tuple(run.step_seconds), raised_at=run.raised_at, packages=tuple(run.packages),
        serve_check=run.serve_check, name=run.name)


def _deploy(run: _Run) -> None:
    """[package] then [serve_check]: each target packaged from the release being built
    (the stage), each a gate; the served model checked last."""

    try:
        for opts in run.cfg.packages:  # named after the release, not its output folder
            opts = opts if opts.name else dataclasses.replace(opts, name=run.name)
            with task(f"package {opts.target}"):
                res = package(run.stage, run.stage / opts.target, opts)
            run.bar.advance()
            run.packages.append(res)
            why = "; ".join([*res.problems, *(["the proof failed"] if res.proof and not res.proof.passed else [])])
            run.gates.append(GateResult(f"package:{opts.target}", res.passed, float(res.passed), 1.0,
                                        f"{opts.target} folder written and proved" if res.passed else why,
                                        kind="package", model=str(run.stage / opts.target)))
        if run.cfg.serve_check is not None:
            target, opts = run.cfg.serve_check
            with task(f"serve-check {target}"):
                rep = run.serve_check = serve_check(run.stage / target, opts)
            run.bar.advance()
            p99 = rep.load.latency.p99 if rep.load and rep.load.latency else 0.0
            run.gates.append(GateResult("serve_check", rep.passed, p99, opts.max_p99_ms or 0.0,
                                        "; ".join(rep.failures) or f"served parity over {', '.join(rep.parity)}, "
                                        f"0 errors under load, p99 {p99:.3f} ms", kind="serving", model=target))
    except OnnxforgeError as exc:
        run.fail(int(exc.exit_code), f"{type(exc).__name__}: {exc.message}", "error", exc.message, exc.hint)
        return
    _judge(run)


def _planned_gates(cfg: ReleaseConfig | None) -> tuple[str, ...]:
    if cfg is None:
        return ()
    names = [f"parity:{s.run}" for s in cfg.steps]
    if cfg.gate("accuracy") is not None:
        names.append("accuracy")
    if cfg.gate("generation") is not None:
        names.append("generation")
    lat = cfg.gate("latency")
    if lat is not None:
        names += [n for n, v in (("max_p50_ms", lat.max_p50_ms), ("max_p99_ms", lat.max_p99_ms),
                                 ("min_speedup", lat.min_speedup)) if v is not None]
    names += [f"package:{p.target}" for p in cfg.packages] + (["serve_check"] if cfg.serve_check else [])
    return tuple(names)


def release_inputs(cfg: ReleaseConfig | None, config) -> list:
    """The files a release reads: its config and what the config names."""
    if cfg is None:
        return [config]
    return [config, cfg.source, cfg.model.get("weights"), cfg.model.get("sample"), cfg.data.calibration,
            cfg.data.validation]
