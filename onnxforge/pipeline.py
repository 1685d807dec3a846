"""`onnxforge release`: the whole pipeline from one TOML file, with gates.

The config is validated completely before any work starts (unknown keys, bad
values, missing files, gates that need data that was not given). Steps run in
order, each writing its model under OUT_DIR/steps/. Every step's output is checked
against the ORIGINAL source model on the validation inputs (the parity ledger), so
error that accumulates across steps is caught, not only each step against the one
before. The final model is benchmarked against the first ONNX model, the gates are
evaluated, and OUT_DIR receives model.onnx (only when every gate passes),
manifest.json, report.json, report.md (also appended to $GITHUB_STEP_SUMMARY) and
junit.xml. Seeds are fixed and nothing time-dependent goes into the model, so the
same inputs give the same model bytes.
"""

from __future__ import annotations

import difflib
import json
import logging
import math
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping

from onnxforge.errors import BadInputError, OnnxforgeError, UsageError
from onnxforge.types import BenchmarkReport, GateResult, ParityReport, StepResult, Tolerance

log = logging.getLogger("onnxforge")

STEP_OPTIONS: dict[str, set[str]] = {
    "convert": {"opset", "exporter", "external_data", "input_names", "output_names", "zipmap", "options",
                "target_opset", "double", "atol", "rtol"},
    "simplify": {"onnxsim", "skip", "max_constant_size", "ort_level", "transformer", "num_heads", "hidden_size",
                 "allow_skip", "atol", "rtol"},
    "quantize.dynamic": {"weight_type", "per_channel", "reduce_range", "op_types", "exclude_nodes", "exclude_ops",
                         "preprocess", "min_cosine", "max_mismatch", "min_speedup", "fallback", "max_trials", "atol",
                         "rtol"},
    "quantize.static": {"method", "percentile", "format", "per_channel", "reduce_range", "weight_type",
                        "activation_type", "op_types", "exclude_nodes", "exclude_ops", "samples", "preprocess",
                        "min_cosine", "max_mismatch", "min_speedup", "fallback", "max_trials", "atol", "rtol"},
    "quantize.fp16": {"keep_io_types", "block_ops", "block_nodes", "atol", "rtol"},
}
SECTIONS = {
    "model": {"source", "framework", "inputs", "dynamic", "weights", "sample", "trust", "trust_pickle", "val_ranges"},
    "data": {"calibration", "validation", "labels"},
    "gates": {"parity", "accuracy", "latency"},
}
PARITY_KEYS = {"atol", "rtol", "against", "check_stat", "min_cosine", "max_mismatch"}
ACCURACY_KEYS = {"max_drop", "output"}
LATENCY_KEYS = {"provider", "max_p50_ms", "max_p99_ms", "min_speedup", "seconds", "threads", "dims"}
FRAMEWORKS = ("torch", "sklearn", "onnx")


@dataclass(frozen=True)
class LedgerRow:
    step: str
    model: str
    against: str
    parity: ParityReport | None
    accuracy: float | None
    passed: bool


@dataclass(frozen=True)
class ReleaseReport:
    config: Mapping[str, Any]
    steps: tuple[StepResult, ...]
    ledger: tuple[LedgerRow, ...]
    benchmark: BenchmarkReport | None
    gates: tuple[GateResult, ...]
    passed: bool
    failure: str | None
    exit_code: int
    outputs: Mapping[str, str]  # file -> sha256
    inputs: Mapping[str, str]  # file -> sha256
    environment: Mapping[str, Any]
    versions: Mapping[str, str]
    seconds: float = 0.0


# ----------------------------------------------------------------------------- config


def _suggest(key: str, allowed) -> str:
    close = difflib.get_close_matches(key, sorted(allowed), n=1)
    return f"did you mean {close[0]!r}?" if close else "allowed: " + ", ".join(sorted(allowed))


def _check_keys(where: str, table: Mapping, allowed) -> None:
    if not isinstance(table, Mapping):
        raise UsageError(f"{where} must be a table", hint=f"write [{where}] with keys: {', '.join(sorted(allowed))}")
    for k in table:
        if k not in allowed:
            raise UsageError(f"unknown key {where}.{k}", hint=_suggest(k, allowed))


def _number(where: str, v, lo: float | None = None) -> float:
    if isinstance(v, bool) or not isinstance(v, (int, float)) or math.isnan(v):
        raise UsageError(f"{where} must be a number, got {v!r}")
    if lo is not None and v < lo:
        raise UsageError(f"{where} must be >= {lo}, got {v!r}")
    return float(v)


def load_config(path: str | os.PathLike) -> dict:
    """Parse and validate a release.toml; paths become absolute (relative to the file)."""
    import tomllib

    from onnxforge.converters.loading import is_factory
    from onnxforge.fileio import check_readable_file
    from onnxforge.specs import parse_spec

    p = check_readable_file(path, "release config")
    try:
        cfg = tomllib.loads(p.read_text())
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise UsageError(f"{p}: not valid TOML ({exc})") from None
    base = p.parent.resolve()
    _check_keys("config", cfg, set(SECTIONS) | {"steps"})
    for sec in ("model",):
        if sec not in cfg:
            raise UsageError(f"{p}: missing [{sec}]", hint="[model] needs source and framework")
    model = cfg["model"]
    _check_keys("model", model, SECTIONS["model"])
    if "source" not in model:
        raise UsageError("missing model.source", hint="a .pt2 / .skops / .onnx path or a factory module:function")
    fw = model.get("framework")
    if fw not in FRAMEWORKS:
        raise UsageError(f"model.framework must be one of {', '.join(FRAMEWORKS)}, got {fw!r}")

    def resolve(v: str, where: str) -> str:
        if not isinstance(v, str):
            raise UsageError(f"{where} must be a path (a string), got {v!r}")
        q = Path(v)
        return str(q if q.is_absolute() else base / q)

    src = model["source"]
    if not isinstance(src, str):
        raise UsageError(f"model.source must be a path or module:function (a string), got {src!r}")
    if is_factory(src):
        head, _, fn = src.rpartition(":")
        if head.endswith(".py") or "/" in head:
            head = resolve(head, "model.source")
            check_readable_file(head, "model.source factory file")
        model["source"] = f"{head}:{fn}"
    else:
        model["source"] = resolve(src, "model.source")
        check_readable_file(model["source"], "model.source")
    for key in ("weights", "sample"):
        if key in model:
            model[key] = resolve(model[key], f"model.{key}")
            check_readable_file(model[key], f"model.{key}")
    for key in ("inputs", "dynamic"):
        if not isinstance(model.get(key, []), list):
            raise UsageError(f"model.{key} must be a list of strings", hint=f'{key} = ["x:float32:batchx8"]')
    for i, s in enumerate(model.get("inputs", [])):
        try:
            parse_spec(s)
        except UsageError as exc:
            raise UsageError(f"model.inputs[{i}]: {exc.message}", hint=exc.hint) from None
    data = cfg.get("data", {})
    _check_keys("data", data, SECTIONS["data"])
    for key in ("calibration", "validation"):
        if key in data:
            data[key] = resolve(data[key], f"data.{key}")
            if not Path(data[key]).exists():
                raise BadInputError(f"data.{key}: not found: {data[key]}")
    cfg["data"] = data

    steps = cfg.get("steps", [])
    if not isinstance(steps, list) or not steps:
        raise UsageError("no [[steps]]", hint='add [[steps]] run = "convert" (and simplify, quantize.static ...)')
    for i, st in enumerate(steps):
        where = f"steps[{i}]"
        if not isinstance(st, Mapping) or "run" not in st:
            raise UsageError(f"{where} has no 'run'", hint="run = one of " + ", ".join(STEP_OPTIONS))
        run = st["run"]
        if run not in STEP_OPTIONS:
            raise UsageError(f"{where}.run: unknown step {run!r}", hint=_suggest(str(run), STEP_OPTIONS))
        _check_keys(where, st, STEP_OPTIONS[run] | {"run", "parity"})
        if "parity" in st:
            _check_keys(f"{where}.parity", st["parity"], PARITY_KEYS - {"against"})
        if run == "convert" and fw == "onnx":
            raise UsageError(f"{where}: a model with framework 'onnx' needs no convert step")
        if run == "quantize.static" and "calibration" not in data:
            raise UsageError(f"{where}: quantize.static needs data.calibration",
                             hint='add [data] calibration = "calib.npz"')
    if fw != "onnx" and steps[0]["run"] != "convert":
        raise UsageError("steps[0] must be convert for a torch or sklearn source")

    gates = cfg.get("gates", {})
    _check_keys("gates", gates, SECTIONS["gates"])
    if "parity" in gates:
        _check_keys("gates.parity", gates["parity"], PARITY_KEYS)
        for k in ("atol", "rtol", "min_cosine", "max_mismatch"):
            if k in gates["parity"]:
                _number(f"gates.parity.{k}", gates["parity"][k], 0)
        if gates["parity"].get("against", "source") not in ("source", "previous"):
            raise UsageError("gates.parity.against must be 'source' or 'previous'")
    if "accuracy" in gates:
        _check_keys("gates.accuracy", gates["accuracy"], ACCURACY_KEYS)
        _number("gates.accuracy.max_drop", gates["accuracy"].get("max_drop", 0.0), 0)
        if "validation" not in data:
            raise UsageError("gates.accuracy needs labelled data.validation",
                             hint='add [data] validation = "val.npz" holding the inputs and a "labels" array')
        _labels_present(data)
    if "latency" in gates:
        _check_keys("gates.latency", gates["latency"], LATENCY_KEYS)
        for k in ("max_p50_ms", "max_p99_ms", "min_speedup", "seconds"):
            if k in gates["latency"]:
                _number(f"gates.latency.{k}", gates["latency"][k], 0)
        for k, v in gates["latency"].get("dims", {}).items():
            if isinstance(v, bool) or not isinstance(v, int) or v < 1:
                raise UsageError(f"gates.latency.dims.{k} must be a positive integer, got {v!r}")
        from onnxforge.runtime import resolve_provider

        resolve_provider(gates["latency"].get("provider", "cpu"))
    cfg["gates"] = gates
    cfg["steps"] = steps
    cfg["_path"] = str(p)
    return cfg


def _labels_present(data) -> None:
    import numpy as np

    key = data.get("labels", "labels")
    with np.load(data["validation"], allow_pickle=False) as z:
        if key not in z.files:
            raise UsageError(f"gates.accuracy needs labels: {data['validation']} has no {key!r} array",
                             hint=f"it holds {', '.join(z.files)}; save the labels as {key!r} (or set data.labels)")


def plan(cfg: Mapping) -> dict:
    """What --dry-run prints."""
    return {"model": {k: v for k, v in cfg["model"].items()}, "data": cfg["data"],
            "steps": [dict(s) for s in cfg["steps"]], "gates": cfg["gates"]}


# ----------------------------------------------------------------------------- run


def _tol(t: Mapping, default: Tolerance) -> Tolerance:
    return Tolerance(float(t.get("atol", default.atol)), float(t.get("rtol", default.rtol)))


def _validation(cfg) -> tuple[dict | None, Any]:
    """Validation inputs (one batch) and labels, or (None, None)."""
    import numpy as np

    data = cfg["data"]
    if "validation" not in data:
        return None, None
    key = data.get("labels", "labels")
    with np.load(data["validation"], allow_pickle=False) as z:
        arrays = {k: z[k] for k in z.files}
    labels = arrays.pop(key, None)
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


def release(config: str | os.PathLike, out_dir: str | os.PathLike = "release-out", *, keep_steps: bool = True,
            force: bool = False) -> ReleaseReport:
    from onnxforge.runtime import environment

    t_start = time.perf_counter()
    cfg = load_config(config)
    out = Path(out_dir)
    if (out / "model.onnx").exists() or (out / "report.json").exists():
        if not force:
            raise BadInputError(f"{out} already holds a release", hint="pass --force to replace it")
    (out / "steps").mkdir(parents=True, exist_ok=True)
    for stale in ("model.onnx", "manifest.json"):
        (out / stale).unlink(missing_ok=True)
    env = environment()
    versions = _versions()
    inputs_sha = _input_hashes(cfg)
    steps: list[StepResult] = []
    ledger: list[LedgerRow] = []
    gates: list[GateResult] = []
    bench = None
    failure = None
    exit_code = 0
    final = None
    first_onnx = None
    try:
        source_side, model_path = _source(cfg)
        val_inputs, labels = _validation(cfg)
        check_inputs = None
        if val_inputs is not None:  # the validation inputs without labels, for each step's own check
            from onnxforge.specs import save_samples

            check_inputs = str(out / "steps" / ".validation-inputs.npz")
            save_samples(check_inputs, [val_inputs])
        gate_parity = cfg["gates"].get("parity", {})
        from onnxforge.validators.parity import DEFAULT_TOLERANCE

        base_tol = _tol(gate_parity, DEFAULT_TOLERANCE)
        acc_src = None
        if labels is not None and source_side is not None:
            acc_src = _accuracy(source_side.run(dict(val_inputs)), labels, cfg["gates"].get("accuracy", {}).get("output"))
        current = model_path
        if current is not None:
            first_onnx = current
        prev_side = source_side
        for i, st in enumerate(cfg["steps"]):
            res = _run_step(cfg, st, i, current, out / "steps", check_inputs)
            steps.append(res)
            if not res.passed or not res.written:
                failure = f"step {i} ({st['run']}) failed its own check"
                exit_code = 1
                break
            current = Path(res.output)
            if first_onnx is None:
                first_onnx = current
            row = _ledger_row(cfg, st, current, source_side, prev_side, val_inputs, labels, base_tol, gate_parity)
            ledger.append(row)
            prev_side = _onnx_side(current)
        if failure is None:
            final = current
            for row in ledger:
                gates.append(GateResult(f"parity:{row.step}", row.passed, row.parity.outputs[0].max_abs
                                        if row.parity and row.parity.outputs else 0.0, base_tol.atol,
                                        f"{row.step} vs {row.against}: " + ("pass" if row.passed else _why(row.parity))))
            if "accuracy" in cfg["gates"] and labels is not None:
                acc_final = ledger[-1].accuracy if ledger else acc_src
                drop = acc_src - acc_final
                limit = float(cfg["gates"]["accuracy"].get("max_drop", 0.0))
                gates.append(GateResult("accuracy", drop <= limit + 1e-12, drop, limit,
                                        f"accuracy {acc_final:.4f} vs source {acc_src:.4f}: drop {drop:+.4f}, limit {limit}"))
            if "latency" in cfg["gates"]:
                lat = cfg["gates"]["latency"]
                from onnxforge.validators.benchmark import benchmark

                models = [str(first_onnx)] if final == first_onnx else [str(first_onnx), str(final)]
                bench = benchmark(models, providers=[lat.get("provider", "cpu")], duration=float(lat.get("seconds", 3.0)),
                                  dims=dict(lat.get("dims", {})),
                                  threads=lat.get("threads"), max_p50_ms=lat.get("max_p50_ms"),
                                  max_p99_ms=lat.get("max_p99_ms"),
                                  min_speedup=lat.get("min_speedup") if len(models) > 1 else None, warmup=5)
                final_rows = [g for g in bench.gates if str(final.name) in g.message or g.name == "min_speedup"]
                gates.extend(final_rows)
            if not all(g.passed for g in gates):
                exit_code = 1
                failure = "gate(s) failed: " + ", ".join(g.name for g in gates if not g.passed)
    except OnnxforgeError as exc:
        failure = f"{type(exc).__name__}: {exc.message}"
        exit_code = int(exc.exit_code)
    (out / "steps" / ".validation-inputs.npz").unlink(missing_ok=True)
    outputs = {}
    passed = failure is None
    if passed and final is not None:
        outputs = _publish(final, out, cfg, steps, inputs_sha, versions)
    if not keep_steps:
        import shutil

        shutil.rmtree(out / "steps", ignore_errors=True)
    report = ReleaseReport(
        config=_public_config(cfg), steps=tuple(steps), ledger=tuple(ledger), benchmark=bench, gates=tuple(gates),
        passed=passed, failure=failure, exit_code=exit_code, outputs=outputs, inputs=inputs_sha, environment=env,
        versions=versions, seconds=round(time.perf_counter() - t_start, 2),
    )
    _write_reports(report, out)
    return report


def _why(p: ParityReport | None) -> str:
    if p is None:
        return "not checked"
    bad = [f"{o.name}: {o.message}" for o in p.outputs if not o.passed]
    return "; ".join(list(p.problems) + bad)[:300]


def _public_config(cfg) -> dict:
    return {k: v for k, v in cfg.items() if not k.startswith("_")}


def _versions() -> dict:
    from importlib import metadata

    out = {}
    for name in ("onnxforge", "onnx", "onnxruntime", "onnxsim", "numpy", "torch", "onnxscript", "scikit-learn",
                 "skl2onnx", "transformers"):
        try:
            out[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            pass
    return out


def _input_hashes(cfg) -> dict:
    from onnxforge.fileio import sha256_file

    files = {"config": cfg["_path"]}
    src = cfg["model"]["source"]
    head = src if Path(src).is_file() else src.rpartition(":")[0]  # a file, or a factory's file
    if Path(head).is_file():
        files["source"] = head
    for k in ("weights", "sample"):
        if k in cfg["model"]:
            files[k] = cfg["model"][k]
    for k in ("calibration", "validation"):
        if k in cfg["data"] and Path(cfg["data"][k]).is_file():
            files[k] = cfg["data"][k]
    return {f"{k}:{Path(v).name}": sha256_file(v) for k, v in files.items()}


def _source(cfg):
    """(a Side running the source model; the source's path when it is already ONNX)."""
    from onnxforge.converters.loading import source_side

    m = cfg["model"]
    if m["framework"] == "onnx":
        return _onnx_side(m["source"]), Path(m["source"])
    side = source_side(m["source"], framework=m["framework"], weights=m.get("weights"),
                       trust_pickle=bool(m.get("trust_pickle")), trust=m.get("trust", ()), label="source")
    return side, None


def _onnx_side(path):
    from onnxforge.validators.parity import onnx_side

    return onnx_side(path, "cpu", label=Path(path).name)


def _run_step(cfg, st, i, current, steps_dir: Path, inputs_for_check: str | None) -> StepResult:
    import onnxforge
    from onnxforge.validators.parity import parse_tolerances

    run = st["run"]
    opts = {k: v for k, v in st.items() if k not in ("run", "parity")}
    target = steps_dir / f"{i:02d}-{run.replace('.', '-')}.onnx"
    tol = parse_tolerances([str(opts.pop("atol"))] if "atol" in opts else None,
                           [str(opts.pop("rtol"))] if "rtol" in opts else None)
    m = cfg["model"]
    data = cfg["data"]
    if run == "convert":
        if m["framework"] == "torch":
            return onnxforge.convert_torch(
                m["source"], target, inputs=m.get("inputs", ()), dynamic=m.get("dynamic", ()),
                weights=m.get("weights"), trust_pickle=bool(m.get("trust_pickle")), tolerance=tol, force=True,
                val_ranges={k: tuple(v) for k, v in m.get("val_ranges", {}).items()},
                opset=opts.get("opset"), exporter=opts.get("exporter", "auto"),
                external_data=opts.get("external_data"), input_names=opts.get("input_names"),
                output_names=opts.get("output_names"))
        return onnxforge.convert_sklearn(
            m["source"], target, sample=m.get("sample"), inputs=m.get("inputs", ()), trust=m.get("trust", ()),
            trust_pickle=bool(m.get("trust_pickle")), tolerance=tol, force=True, zipmap=opts.get("zipmap", False),
            options=opts.get("options"), target_opset=opts.get("target_opset"), double=opts.get("double", False))
    if run == "simplify":
        return onnxforge.simplify(current, target, tolerance=tol, force=True, inputs=inputs_for_check, **opts)
    if run == "quantize.fp16":
        return onnxforge.quantize_fp16(current, target, tolerance=None if not ("atol" in st or "rtol" in st) else tol,
                                       force=True, inputs=inputs_for_check, **opts)
    mode = run.split(".")[1]
    qopts = dict(opts)
    if "format" in qopts:
        qopts["fmt"] = qopts.pop("format")
    from onnxforge.optimizers.quantize import LOOSE

    qtol = tol if ("atol" in st or "rtol" in st) else LOOSE
    return onnxforge.quantize(current, target, mode=mode, calibration=data.get("calibration"), tolerance=qtol,
                              force=True, inputs=inputs_for_check, bench_seconds=1.0, **qopts)


def _ledger_row(cfg, st, model_path, source_side, prev_side, val_inputs, labels, tol, gate_parity) -> LedgerRow:
    from onnxforge.specs import generate_inputs, model_io_specs
    from onnxforge.fileio import load_onnx
    from onnxforge.validators.parity import validate

    against_prev = gate_parity.get("against", "source") == "previous"
    ref = prev_side if against_prev and prev_side is not None else source_side
    cand = _onnx_side(model_path)
    crit = {**{k: v for k, v in gate_parity.items() if k != "against"}, **st.get("parity", {})}
    t = Tolerance(float(crit.get("atol", tol.atol)), float(crit.get("rtol", tol.rtol)))
    if "parity" in st and not ({"atol", "rtol"} & set(st["parity"])):
        t = Tolerance(math.inf, math.inf)  # a step that states its own criteria (cosine, labels) only
    feeds = val_inputs
    if feeds is None:
        specs, _ = model_io_specs(load_onnx(model_path, load_external_data=False))
        feeds = generate_inputs(specs, seed=0, dims={d: 2 for s in specs for d in s.shape if isinstance(d, str)})
    rep = None
    if ref is not None:
        mm = crit.get("max_mismatch")
        rep = validate(ref, cand, input_samples=[feeds], tolerance=t, check_stat=crit.get("check_stat", "elementwise"),
                       min_cosine=crit.get("min_cosine"), task="classification" if mm is not None else None,
                       min_agreement=1 - mm if mm is not None else None)
    acc = None
    if labels is not None:
        acc = _accuracy(cand.run(dict(feeds)), labels, cfg["gates"].get("accuracy", {}).get("output"))
    return LedgerRow(step=st["run"], model=str(model_path), against="previous" if against_prev else "source",
                     parity=rep, accuracy=acc, passed=rep.passed if rep is not None else True)


def _publish(final: Path, out: Path, cfg, steps, inputs_sha, versions) -> dict:
    import shutil

    from onnxforge.fileio import atomic_write_text, external_data_files, load_onnx, publish_model, sha256_file
    from onnxforge.specs import model_io_specs

    from onnxforge.fileio import scratch_dir

    target = out / "model.onnx"
    m = load_onnx(final, load_external_data=False)
    with scratch_dir(target) as tmp:  # copies first, then renames: no half-written model.onnx
        shutil.copy(final, tmp / final.name)
        for f in external_data_files(m):
            shutil.copy(final.parent / f, tmp / f)
        publish_model(tmp / final.name, target)
    ins, outs = model_io_specs(load_onnx(target, load_external_data=False))
    opset = next((o.version for o in m.opset_import if o.domain in ("", "ai.onnx")), 0)
    digest = sha256_file(target)
    manifest = {
        "schema_version": 1, "model": "model.onnx", "sha256": digest,
        "inputs": [{"name": s.name, "dtype": s.dtype, "shape": list(s.shape)} for s in ins],
        "outputs": [{"name": s.name, "dtype": s.dtype, "shape": list(s.shape)} for s in outs],
        "opset": opset, "lineage": list(steps[-1].artifact.lineage) if steps and steps[-1].artifact else [],
        "source": {k: v for k, v in inputs_sha.items()}, "versions": versions,
    }
    atomic_write_text(out / "manifest.json", json.dumps(manifest, indent=2) + "\n")
    return {"model.onnx": digest, "manifest.json": sha256_file(out / "manifest.json")}


# ----------------------------------------------------------------------------- reports


def _write_reports(report: ReleaseReport, out: Path) -> None:
    from onnxforge.fileio import atomic_write_text
    from onnxforge.report import dumps

    atomic_write_text(out / "report.json", dumps(report, "release") + "\n")
    md = markdown(report)
    atomic_write_text(out / "report.md", md)
    atomic_write_text(out / "junit.xml", junit(report))
    summary = os.environ.get("GITHUB_STEP_SUMMARY")
    if summary:
        with open(summary, "a") as f:
            f.write(md + "\n")


def markdown(r: ReleaseReport) -> str:
    lines = [f"# onnxforge release: {'PASSED' if r.passed else 'FAILED'}", ""]
    if r.failure:
        lines += [f"**Failure:** {r.failure}", ""]
    lines += ["## Steps", "", "| # | step | own check | output |", "|---|---|---|---|"]
    for i, s in enumerate(r.steps):
        lines.append(f"| {i} | {s.step} | {'pass' if s.passed else 'FAIL'} | {Path(s.output).name if s.written else '-'} |")
    lines += ["", "## Parity ledger (each step against the source)", "",
              "| step | against | max abs | min cosine | accuracy | result |", "|---|---|---|---|---|---|"]
    for row in r.ledger:
        outs = row.parity.outputs if row.parity else ()
        max_abs = max((o.max_abs for o in outs), default=0.0)
        cos = min((o.cosine for o in outs), default=1.0)
        acc = f"{row.accuracy:.4f}" if row.accuracy is not None else "-"
        lines.append(f"| {row.step} | {row.against} | {max_abs:.3g} | {cos:.6f} | {acc} | {'pass' if row.passed else 'FAIL'} |")
    if r.benchmark:
        lines += ["", "## Latency", "", "| model | p50 ms | p90 ms | p99 ms | speed-up |", "|---|---|---|---|---|"]
        sp = {c.model: c for c in r.benchmark.comparisons}
        for b in r.benchmark.results:
            c = sp.get(b.model)
            lines.append(f"| {Path(b.model).name} | {b.latency.p50:.4g} | {b.latency.p90:.4g} | {b.latency.p99:.4g} | "
                         f"{f'{c.speedup:.2f}x [{c.ci95[0]:.2f}-{c.ci95[1]:.2f}]' if c else '1.00x'} |")
    lines += ["", "## Gates", "", "| gate | result | detail |", "|---|---|---|"]
    for g in r.gates:
        lines.append(f"| {g.name} | {'pass' if g.passed else 'FAIL'} | {g.message} |")
    if r.outputs:
        lines += ["", "## Outputs", ""] + [f"- `{k}` sha256 `{v}`" for k, v in r.outputs.items()]
    return "\n".join(lines) + "\n"


def junit(r: ReleaseReport) -> str:
    from xml.sax.saxutils import escape, quoteattr

    cases = []
    for i, s in enumerate(r.steps):
        msg = "" if s.passed else f'<failure message={quoteattr("step check failed")}>{escape(_step_why(s))}</failure>'
        cases.append(f'  <testcase classname="onnxforge.steps" name={quoteattr(f"{i}:{s.step}")}>{msg}</testcase>')
    for g in r.gates:
        msg = "" if g.passed else f'<failure message={quoteattr(g.name)}>{escape(g.message)}</failure>'
        cases.append(f'  <testcase classname="onnxforge.gates" name={quoteattr(g.name)}>{msg}</testcase>')
    if r.failure and not r.steps and not r.gates:
        cases.append(f'  <testcase classname="onnxforge" name="release"><error message={quoteattr(r.failure)}/></testcase>')
    failures = sum("<failure" in c or "<error" in c for c in cases)
    return (f'<?xml version="1.0" encoding="utf-8"?>\n<testsuite name="onnxforge release" tests="{len(cases)}" '
            f'failures="{failures}">\n' + "\n".join(cases) + "\n</testsuite>\n")


def _step_why(s: StepResult) -> str:
    return "; ".join(_why(c) for c in s.checks if not c.passed) or "; ".join(s.notes)
