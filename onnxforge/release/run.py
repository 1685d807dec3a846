"""`onnxforge release`: the whole pipeline from one TOML file, with gates.

Steps run in order, each writing its model under OUT_DIR/steps/ and running its own
check. Every step's output is then checked against the ORIGINAL source model on the
validation inputs (the parity ledger), so error that accumulates across steps is
caught, not only each step against the one before. The final model is benchmarked
against the first ONNX model, the gates are evaluated, and OUT_DIR receives
model.onnx (only when every gate passes), manifest.json, report.json, report.md
(also appended to $GITHUB_STEP_SUMMARY) and junit.xml (publish.py). Seeds are fixed
and nothing time-dependent goes into the model, so the same inputs give the same
model bytes.
"""

from __future__ import annotations

import dataclasses
import logging
import math
import os
import time
from pathlib import Path
from typing import Any, Mapping

from onnxforge.errors import BadInputError, OnnxforgeError
from onnxforge.release.config import ReleaseConfig, StepConfig, load_config
from onnxforge.runners import Runner
from onnxforge.types import GateResult, LedgerRow, ReleaseReport, StepResult, Tolerance

log = logging.getLogger("onnxforge")


def _validation(cfg: ReleaseConfig) -> tuple[dict | None, Any]:
    """Validation inputs (one batch) and labels, or (None, None)."""
    import numpy as np

    if cfg.data.validation is None:
        return None, None
    try:
        with np.load(cfg.data.validation, allow_pickle=False) as z:
            arrays = {k: z[k] for k in z.files}
    except Exception as exc:
        raise BadInputError(f"data.validation: cannot read {cfg.data.validation} as .npz ({exc})") from None
    labels = arrays.pop(cfg.data.labels, None)
    return arrays, labels


def _accuracy(outputs: Mapping[str, Any], labels, output: str | None) -> float:
    import numpy as np

    if output:
        out = np.asarray(outputs[output])
    else:
        ints = [v for v in outputs.values() if np.asarray(v).dtype.kind in "iu" and np.asarray(v).ndim == 1]
        out = np.asarray(ints[0]) if ints else np.asarray(next(iter(outputs.values())))
    pred = out if out.ndim == 1 else out.reshape(len(labels), -1).argmax(-1)
    return float((pred.reshape(-1) == np.asarray(labels).reshape(-1)).mean())


def _source(cfg: ReleaseConfig) -> tuple[Runner, Path | None]:
    """(a runner over the source model; the source's path when it is already ONNX)."""
    from onnxforge.runners import open_runner

    if cfg.framework == "onnx":
        return _onnx(cfg.source), Path(cfg.source)
    return open_runner(cfg.source, kind=cfg.framework if not _is_factory(cfg.source) else "factory", label="source",
                       weights=cfg.model.get("weights"), trust_pickle=cfg.model.get("trust_pickle", False),
                       trust=cfg.model.get("trust", ())), None


def _is_factory(spec: str) -> bool:
    from onnxforge.runners.sources import is_factory

    return is_factory(spec)


def _onnx(path) -> Runner:
    from onnxforge.runners.onnx import onnx_runner

    return onnx_runner(path, "cpu", label=Path(path).name)


def _run_step(cfg: ReleaseConfig, sc: StepConfig, i: int, current, steps_dir: Path, check_inputs: str | None):
    from onnxforge.registry import CheckOptions, function_of

    target = steps_dir / f"{i:02d}-{sc.run.replace('.', '-')}.onnx"
    extra = {"inputs": check_inputs} if isinstance(sc.options, CheckOptions) and check_inputs else {}
    opts = dataclasses.replace(sc.options, force=True, **extra)
    fn = function_of(sc.step)
    return fn(cfg.source if sc.run == "convert" else current, target, opts)


def _ledger_row(cfg: ReleaseConfig, sc: StepConfig, result: StepResult, source: Runner, previous: Runner | None,
                feeds: dict, labels) -> LedgerRow:
    from onnxforge.validators.compare import DEFAULT_TOLERANCE, LOOSE
    from onnxforge.validators.parity import validate

    gate = cfg.gate("parity")
    against_prev = gate is not None and gate.against == "previous"
    ref = previous if against_prev and previous is not None else source
    cand = _onnx(result.output)
    crit = sc.parity or gate
    if sc.parity is not None and sc.parity.atol is None and sc.parity.rtol is None:
        tol = LOOSE  # a step that states its own criteria (cosine, labels) only
    else:
        tol = Tolerance(_or(crit and crit.atol, DEFAULT_TOLERANCE.atol), _or(crit and crit.rtol, DEFAULT_TOLERANCE.rtol))
    mm = crit.max_mismatch if crit else None
    rep = validate(ref, cand, input_samples=[feeds], tolerance=tol,
                   check_stat=crit.check_stat if crit else "elementwise", min_cosine=crit.min_cosine if crit else None,
                   task="classification" if mm is not None else None, min_agreement=1 - mm if mm is not None else None)
    acc = None
    if labels is not None:
        acc = _accuracy(cand(dict(feeds)), labels, cfg.gate("accuracy").output if cfg.gate("accuracy") else None)
    return LedgerRow(step=sc.run, model=str(result.output), against="previous" if against_prev else "source",
                     parity=rep, accuracy=acc, passed=rep.passed)


def _or(v, default):
    return default if v is None else v


def _generated_feeds(cfg: ReleaseConfig, model_path) -> dict:
    """Inputs for the ledger when there is no data.validation: seeded, at 2 for every
    symbolic dim, within the model's val_ranges (a BERT mask stays a mask)."""
    from onnxforge.fileio import load_onnx
    from onnxforge.specs import generate_inputs, model_io_specs

    specs, _ = model_io_specs(load_onnx(model_path, load_external_data=False))
    ranges = {k: tuple(v) for k, v in cfg.model.get("val_ranges", {}).items()}
    return generate_inputs(specs, seed=0, dims={d: 2 for s in specs for d in s.shape if isinstance(d, str)},
                           val_ranges=ranges)


def _steps(cfg, out: Path, source: Runner, source_path, feeds, labels, check_inputs, state: dict) -> None:
    """Run every step and its ledger row; stops at the first step whose own check fails."""
    current = source_path
    previous = source
    for i, sc in enumerate(cfg.steps):
        res = _run_step(cfg, sc, i, current, out / "steps", check_inputs)
        state["steps"].append(res)
        if not res.passed or not res.written:
            state["failure"] = f"step {i} ({sc.run}) failed its own check"
            state["exit_code"] = 1
            return
        current = res.artifact or Path(res.output)
        if state["first_onnx"] is None:
            state["first_onnx"] = Path(res.output)
        row_feeds = feeds if feeds is not None else _generated_feeds(cfg, res.output)
        state["ledger"].append(_ledger_row(cfg, sc, res, source, previous, row_feeds, labels))
        previous = _onnx(res.output)
    state["final"] = Path(state["steps"][-1].output)


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
    from onnxforge.validators.benchmark import benchmark

    lat = cfg.gate("latency")
    models = [str(first)] if final == first else [str(first), str(final)]
    bench = benchmark(models, providers=[lat.provider], duration=lat.seconds, dims=dict(lat.dims),
                      threads=lat.threads, max_p50_ms=lat.max_p50_ms, max_p99_ms=lat.max_p99_ms,
                      min_speedup=lat.min_speedup if len(models) > 1 else None, warmup=5)
    return bench, [g for g in bench.gates if g.model == str(final)]


def _gates(cfg: ReleaseConfig, state: dict, acc_src) -> None:
    gates = _parity_gates(cfg, state["ledger"])
    acc_gate = cfg.gate("accuracy")
    if acc_gate is not None and acc_src is not None:
        acc_final = state["ledger"][-1].accuracy if state["ledger"] else acc_src
        drop = acc_src - acc_final
        gates.append(GateResult("accuracy", drop <= acc_gate.max_drop + 1e-12, drop, acc_gate.max_drop,
                                f"accuracy {acc_final:.4f} vs source {acc_src:.4f}: drop {drop:+.4f}, "
                                f"limit {acc_gate.max_drop}", kind="accuracy", model=str(state["final"])))
    if cfg.gate("latency") is not None:
        state["benchmark"], lat = _latency_gates(cfg, state["first_onnx"], state["final"])
        gates.extend(lat)
    state["gates"] = gates
    if not all(g.passed for g in gates):
        state["exit_code"] = 1
        state["failure"] = "gate(s) failed: " + ", ".join(g.name for g in gates if not g.passed)


def _prepare_out(out: Path, force: bool) -> None:
    if (out / "model.onnx").exists() or (out / "report.json").exists():
        if not force:
            raise BadInputError(f"{out} already holds a release", hint="pass --force to replace it")
    (out / "steps").mkdir(parents=True, exist_ok=True)
    for stale in ("model.onnx", "manifest.json"):
        (out / stale).unlink(missing_ok=True)


def release(config: str | os.PathLike, out_dir: str | os.PathLike = "release-out", *, keep_steps: bool = True,
            force: bool = False) -> ReleaseReport:
    """Run the pipeline a release.toml describes; see the module docstring."""
    from onnxforge.release.publish import input_hashes, publish, versions, write_reports
    from onnxforge.runtime import environment

    t_start = time.perf_counter()
    cfg = load_config(config)
    out = Path(out_dir)
    _prepare_out(out, force)
    env, vers, inputs_sha = environment(), versions(), input_hashes(cfg)
    state: dict = {"steps": [], "ledger": [], "gates": [], "benchmark": None, "failure": None, "exit_code": 0,
                   "final": None, "first_onnx": None}
    check_inputs = out / "steps" / ".validation-inputs.npz"
    try:
        source, source_path = _source(cfg)
        state["first_onnx"] = source_path
        feeds, labels = _validation(cfg)
        if feeds is not None:  # the validation inputs without labels, for each step's own check
            from onnxforge.specs import save_samples

            save_samples(check_inputs, [feeds])
        acc_gate = cfg.gate("accuracy")
        acc_src = _accuracy(source(dict(feeds)), labels, acc_gate.output if acc_gate else None) \
            if labels is not None else None
        _steps(cfg, out, source, source_path, feeds, labels, str(check_inputs) if feeds is not None else None, state)
        if state["failure"] is None:
            _gates(cfg, state, acc_src)
    except OnnxforgeError as exc:
        state["failure"] = f"{type(exc).__name__}: {exc.message}"
        state["exit_code"] = int(exc.exit_code)
    check_inputs.unlink(missing_ok=True)
    passed = state["failure"] is None
    outputs = publish(state["final"], out, cfg, state["steps"], inputs_sha, vers) if passed and state["final"] else {}
    if not keep_steps:
        import shutil

        shutil.rmtree(out / "steps", ignore_errors=True)
    report = ReleaseReport(
        config=cfg.raw, steps=tuple(state["steps"]), ledger=tuple(state["ledger"]), benchmark=state["benchmark"],
        gates=tuple(state["gates"]), passed=passed, failure=state["failure"], exit_code=state["exit_code"],
        outputs=outputs, inputs=inputs_sha, environment=env, versions=vers,
        seconds=round(time.perf_counter() - t_start, 2))
    write_reports(report, out)
    return report
