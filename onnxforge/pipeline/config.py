"""The release config (release.toml), checked completely before any work starts.

The schema is derived from the step declarations (steps/): a ``[[steps]]`` table takes the step's
options whose TOML key lies in its own table, ``[model]`` the convert options that
live there (``model.inputs``, ``model.weights`` ...), ``[data]`` the data options
(``data.calibration``). The gates are declared below the same way. Every value is
validated strictly (options.validate_options): a wrong type, an unknown key, a NaN
threshold or a value out of range is a UsageError (exit 2) naming the key; a missing
file is a BadInputError (exit 3). Paths are relative to the config file.
"""

from __future__ import annotations

import dataclasses
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, Mapping, Optional

from onnxforge.core.errors import BadInputError, UsageError
from onnxforge.core.options import (Fraction, NonNegFloat, PosFloat, PosInt, Seconds, Threads, Tokens, fields_of, option,
                               suggest, toml_place)
from onnxforge.core.options import alias_keys, validate_options, non_defaults
from onnxforge.steps import RUN_NAMES, STEPS, step_for
from onnxforge.steps.base import StepDef
from onnxforge.steps.convert.torch import role_names
from onnxforge.steps.quantize.quantize import refuse_generated_data
from onnxforge.backends.base import is_factory
from onnxforge.backends.onnx.runtime import resolve_provider
from onnxforge.backends.torch.sources import pt2_input_dims
from onnxforge.core.fileio import check_readable_file, load_onnx, load_toml
from onnxforge.data.samples import read_npz
from onnxforge.data.specs import model_io_specs, parse_dynamic, parse_spec
from onnxforge.steps.package.options import PackageOptions
from onnxforge.steps.serve_check.options import ServeCheckOptions

# every framework with a convert step (steps/convert/step.py), and onnx, which needs none
FRAMEWORKS = (*(name.partition(".")[2] for name in STEPS if name.startswith("convert.")), "onnx")
SECTIONS = ("model", "data", "steps", "gates", "package", "serve_check")


@dataclass(frozen=True)
class DataSection:
    calibration: Optional[str] = option(None, "Calibration inputs (.npz with a leading sample axis, or a folder).",
                                        path=True)
    validation: Optional[str] = option(None, "Validation inputs (.npz keyed by input name) and their labels.",
                                       path=True)
    labels: str = option("labels", "The key of the labels in data.validation.")


@dataclass(frozen=True)
class StepParity:
    """A step's own ledger criteria (replacing the parity gate's for its row)."""

    atol: Optional[NonNegFloat] = option(None, "Absolute tolerance against the source.")
    rtol: Optional[NonNegFloat] = option(None, "Relative tolerance against the source.")
    check_stat: Literal["elementwise", "elemwise", "max", "mean", "median", "p99"] = option(
        "elementwise", "Statistic within tolerance (elemwise: Polygraphy's spelling of elementwise).",
        normalize=lambda v: "elementwise" if v == "elemwise" else v)
    min_cosine: Optional[Fraction] = option(None, "Minimum cosine similarity of every output.")
    max_mismatch: Optional[Fraction] = option(None, "Fraction of top-1 labels allowed to change.")
    layerwise_on_failure: bool = option(
        False, "When a step fails this check, compare its model with the step's input tensor by tensor "
               "(validate --layerwise) and put the table in the report.")


@dataclass(frozen=True)
class ParityGate(StepParity):
    against: Literal["source", "previous"] = option("source", "Compare each step with the source or the step before.")


@dataclass(frozen=True)
class AccuracyGate:
    max_drop: Fraction = option(0.0, "Largest allowed drop in accuracy against the source.")
    output: Optional[str] = option(None, "The output holding labels or scores (default: the first label output).")


@dataclass(frozen=True)
class LatencyGate:
    provider: str = option("cpu", "Execution provider of the benchmark (ONNX Runtime's).")
    runtime: Literal["ort", "openvino"] = option("ort", "What runs the benchmark: ort (ONNX Runtime, on provider) or "
                                                        "openvino (the openvino package, CPU; extra onnxforge[openvino]; "
                                                        "adds the gate parity:openvino).")
    ov_precision: Literal["auto", "f32", "bf16", "f16"] = option("auto", "OpenVINO's inference precision (auto: its "
                                                                         "own choice for the CPU).")
    max_p50_ms: Optional[PosFloat] = option(None, "Largest allowed median latency of the final model.")
    max_p99_ms: Optional[PosFloat] = option(None, "Largest allowed p99 latency of the final model.")
    min_speedup: Optional[PosFloat] = option(None, "The final model against the first ONNX model.")
    seconds: Seconds = option(3.0, "Seconds of interleaved timing.")
    threads: Optional[Threads] = option(None, "Intra-op threads (default: the CPU quota).")
    dims: dict[str, PosInt] = option({}, "Symbolic dims to measure at (default 1 each).")


@dataclass(frozen=True)
class GenerationGate:
    """Greedy generation of the final model (with its key/value cache, --task
    text-generation-with-past) against the source folder: every token equal."""

    tokens: Tokens = option(8, "New tokens decoded greedily from the same prompt ids by the source and the model.")
    atol: Optional[NonNegFloat] = option(None, "Largest logit error at any step (default 1e-3; a quantized model "
                                               "needs more).")


GATES = {"parity": ParityGate, "accuracy": AccuracyGate, "latency": LatencyGate, "generation": GenerationGate}


@dataclass(frozen=True)
class PackageSection:
    """[package]: targets, and the package options (steps/package/options.py's PackageOptions) they share."""

    targets: tuple[Literal["mlflow", "mlserver", "triton"], ...] = option(
        (), "Deployable folders to write into OUT_DIR/TARGET after the gates pass.")


@dataclass(frozen=True)
class ServeCheckSection:
    """[serve_check]: a gate on the packaged model served by MLServer (steps/serve_check/options.py's ServeCheckOptions)."""

    target: Literal["mlserver", "mlflow"] = option("mlserver", "Which packaged folder to serve.")


@dataclass(frozen=True)
class StepConfig:
    run: str
    step: StepDef
    options: Any  # the step's options dataclass
    parity: StepParity | None = None


@dataclass(frozen=True)
class ReleaseConfig:
    path: str
    framework: str
    source: str
    model: Mapping[str, Any]  # the [model] table as validated (paths resolved)
    data: DataSection
    steps: tuple[StepConfig, ...]
    gates: Mapping[str, Any]  # name -> ParityGate | AccuracyGate | LatencyGate
    raw: Mapping[str, Any] = field(default_factory=dict)  # the file's tables, paths resolved (for the report)
    packages: tuple = ()  # PackageOptions, one per target
    serve_check: tuple | None = None  # (target, ServeCheckOptions)

    def gate(self, name: str):
        return self.gates.get(name)


def _table(where: str, value) -> dict:
    if not isinstance(value, Mapping):
        raise UsageError(f"{where} must be a table, got {value!r}", hint=f"write [{where}] with key = value lines")
    return dict(value)


def _resolve_paths(cls, values: dict, base: Path, where: str) -> dict:
    """Path-valued keys become absolute (relative to the config file) and must exist."""
    out = dict(values)
    for f, o in fields_of(cls):
        key = (toml_place(f, o) or ("", f.name))[1]
        if not o.path or key not in out:
            continue
        v = out[key]
        if not isinstance(v, str):
            raise UsageError(f"{where}.{key} must be a path (a string), got {v!r}")
        if v == "random":
            continue
        p = Path(v) if Path(v).is_absolute() else base / v
        if not p.exists():
            raise BadInputError(f"{where}.{key}: not found: {p}", hint="paths are relative to the config file")
        out[key] = str(p)
    return out


def _source(model: dict, base: Path) -> str:
    src = model.get("source")
    if src is None:
        raise UsageError("missing model.source", hint="a .pt2 / .skops / .onnx path, a Hugging Face folder or hf:ID, "
                                                      "or a factory module:function")
    if not isinstance(src, str):
        raise UsageError(f"model.source must be a path or module:function (a string), got {src!r}")
    folder = Path(src) if Path(src).is_absolute() else base / src
    if src.startswith("hf:") or (folder / "config.json").is_file():
        if model.get("framework") != "torch":
            raise UsageError(f"model.source {src} is a Hugging Face model: model.framework must be \"torch\"")
        return src if src.startswith("hf:") else str(folder)
    if is_factory(src):
        head, _, fn = src.rpartition(":")
        if head.endswith(".py") or "/" in head:
            head = str(Path(head) if Path(head).is_absolute() else base / head)
            check_readable_file(head, "model.source factory file")
        return f"{head}:{fn}"
    path = Path(src) if Path(src).is_absolute() else base / src
    check_readable_file(path, "model.source")
    return str(path)


def _model_keys(framework: str) -> dict[str, str]:
    """[model] key -> the convert option it sets, for this framework."""
    if framework == "onnx":
        return {"val_ranges": "val_ranges", "input_norms": "input_norms"}
    cls = STEPS[f"convert.{framework}"].options
    return {place[1]: f.name for f, o in fields_of(cls) if (place := toml_place(f, o)) and place[0] == "model"}


def _step(i: int, table, framework: str, model: dict, data: dict, base: Path) -> StepConfig:
    where = f"steps[{i}]"
    table = _table(where, table)
    run = table.pop("run", None)
    if run is None:
        raise UsageError(f"{where} has no 'run'", hint="run = one of " + ", ".join(RUN_NAMES))
    if run not in RUN_NAMES:
        raise UsageError(f"{where}.run: unknown step {run!r}", hint=suggest(str(run), RUN_NAMES))
    if run == "convert" and framework == "onnx":
        raise UsageError(f"{where}: a model with framework 'onnx' needs no convert step")
    step = step_for(run, framework)
    parity = table.pop("parity", None)
    values, names = {}, {}
    own = {}
    for f, o in fields_of(step.options):
        place = toml_place(f, o)
        if place is None:
            continue
        table_name, key = place
        if table_name == "":
            for k in (key, *alias_keys(f, o)):  # target_opset = 17 is opset = 17 (validate_options renames it)
                own[k] = f.name
                if k in table:
                    values[f.name if k == key else k] = table[k]
                    names[f.name] = f"{where}.{k}"
        elif key in (model if table_name == "model" else data if table_name == "data" else {}):
            values[f.name] = (model if table_name == "model" else data)[key]
            names[f.name] = f"{table_name}.{key}"
    unknown = [k for k in table if k not in own]
    if unknown:
        raise UsageError(f"unknown key {where}.{unknown[0]} (step {run})", hint=suggest(unknown[0], list(own)))
    opts = validate_options(step.options, values, where, keys=names)
    if run == "quantize.static" and not opts.calibration:
        raise UsageError(f"{where}: quantize.static needs data.calibration", hint='add [data] calibration = "calib.npz"')
    if run in ("quantize.dynamic", "quantize.static", "quantize.int4", "quantize.bf16"):
        from dataclasses import replace

        # the step checks on data.validation when there is one (pipeline/run.py)
        keys = {"inputs": '[data] validation = "val.npz"', "calibration": '[data] calibration = "calib.npz"',
                "allow_generated_data": f"{where}.allow_generated_data = true"}
        try:
            refuse_generated_data(replace(opts, inputs=data.get("validation")), run.split(".")[1], flag=keys.get)
        except UsageError as exc:
            raise UsageError(f"{where}: {exc.message}", hint=exc.hint) from None
    sp = validate_options(StepParity, _table(f"{where}.parity", parity), f"{where}.parity") if parity is not None else None
    return StepConfig(run=run, step=step, options=opts, parity=sp)


DICT_CONFIG = "<dict>"  # ReleaseConfig.path of a config given as data


@dataclass(frozen=True)
class ConfigData:
    """A release config given as data (the tables ``tomllib`` would read from the file),
    with the folder its relative paths resolve against."""

    tables: Mapping[str, Any]
    base_dir: Path

    @classmethod
    def of(cls, tables: Mapping[str, Any], base_dir: str | os.PathLike | None = None) -> ConfigData:
        base = Path(base_dir if base_dir is not None else ".").resolve()  # resolved now: a later chdir moves nothing
        if not base.is_dir():
            raise BadInputError(f"base_dir {base} is not a folder", hint="relative paths in the config resolve there")
        return cls(_plain(tables), base)


def _plain(value: Any) -> Any:
    """A config given as data, as TOML would have read it: tables as dicts, a Path as
    its string (Python callers pass them), nothing shared with the caller's objects."""
    if isinstance(value, Mapping):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    return os.fspath(value) if isinstance(value, os.PathLike) else value


def release_name(config: str | os.PathLike) -> str:
    """A release's name: its config's folder name when the file is release.toml (one
    folder per model), else the file's stem (digits.toml). Packages, report titles and
    the zoo's folders are named with it."""
    if str(config) == DICT_CONFIG:  # a config given as data has no file to be named after
        return "release"
    p = Path(config)
    return p.resolve().parent.name if p.name == "release.toml" else p.stem


def load_config(config: str | os.PathLike | Mapping[str, Any] | ConfigData,
                base_dir: str | os.PathLike | None = None) -> ReleaseConfig:
    """Parse and validate a release.toml (see the module docstring), or the same tables
    given as data (a dict): its relative paths are then relative to ``base_dir``, by
    default the current directory."""
    if isinstance(config, Mapping):
        config = ConfigData.of(config, base_dir)
    elif base_dir is not None:
        raise UsageError("base_dir is for a config given as data (a dict)",
                         hint="paths in a release.toml are relative to the file")
    if isinstance(config, ConfigData):
        p, cfg, base = Path(DICT_CONFIG), _plain(config.tables), config.base_dir
    else:
        p, cfg = load_toml(config, "release config")
        base = p.parent.resolve()
    for k in cfg:
        if k not in SECTIONS:
            raise UsageError(f"unknown section [{k}]", hint=suggest(k, SECTIONS))
    if "model" not in cfg:
        raise UsageError(f"{p}: missing [model]", hint="[model] needs source and framework")
    model = _table("model", cfg["model"])
    fw = model.get("framework")
    if fw not in FRAMEWORKS:
        raise UsageError(f"model.framework must be one of {', '.join(FRAMEWORKS)}, got {fw!r}")
    source = _source(model, base)
    keys = _model_keys(fw)
    for k in model:
        if k not in keys and k not in ("source", "framework"):
            raise UsageError(f"unknown key model.{k} (framework {fw})", hint=suggest(k, [*keys, "source", "framework"]))
    convert_cls = STEPS[f"convert.{fw}"].options if fw != "onnx" else None
    if convert_cls is not None:
        model = _resolve_paths(convert_cls, model, base, "model")
    data_raw = _resolve_paths(DataSection, _table("data", cfg.get("data", {})), base, "data")
    data = validate_options(DataSection, data_raw, "data")
    steps_raw = cfg.get("steps", [])
    if not isinstance(steps_raw, list) or not steps_raw:
        raise UsageError("no [[steps]]", hint='add [[steps]] run = "convert" (and simplify, quantize.static ...)')
    data_for_steps = {k: v for k, v in dataclasses.asdict(data).items() if v is not None}
    steps = tuple(_step(i, t, fw, model, data_for_steps, base) for i, t in enumerate(steps_raw))
    if fw != "onnx" and steps[0].run != "convert":
        raise UsageError("steps[0] must be convert for a torch or sklearn source")
    gates = _gates(cfg.get("gates", {}), data)
    _check_dims(fw, source, model, steps, gates)
    if "latency" in gates and gates["latency"].min_speedup is not None and fw != "onnx" and len(steps) == 1:
        # one ONNX model (convert's): min_speedup had nothing to compare and was left "not evaluated" in a pass
        raise UsageError("gates.latency.min_speedup: the release makes one ONNX model (convert only), so there is "
                         "nothing to compare it with", hint="add a step after convert (simplify, quantize.static ...) "
                         "or drop min_speedup")
    packages, serve = _deploy(cfg, base)
    raw = {"model": {**model, "source": source}, "data": data_raw, "steps": steps_raw, "gates": cfg.get("gates", {}),
           **{k: cfg[k] for k in ("package", "serve_check") if k in cfg}}
    return ReleaseConfig(path=str(p), framework=fw, source=source, model=model, data=data, steps=steps, gates=gates,
                         raw=raw, packages=packages, serve_check=serve)


def _split(table: dict, cls, options_cls, where: str) -> tuple[dict, dict]:
    """(the keys a section dataclass declares, the options' TOML keys); any other key is unknown."""
    own = {f.name for f, _ in fields_of(cls)}
    toml = {f.name for f, o in fields_of(options_cls) if toml_place(f, o) is not None}
    for k in table:
        if k not in own and k not in toml:
            raise UsageError(f"unknown key {where}.{k}", hint=suggest(k, own | toml))
    return {k: v for k, v in table.items() if k in own}, {k: v for k, v in table.items() if k not in own}


def _deploy(cfg: Mapping, base: Path) -> tuple[tuple, tuple | None]:
    """[package] and [serve_check], validated through the same declarations as the
    `package` and `serve-check` commands."""
    packages: tuple = ()
    if "package" in cfg:
        head, rest = _split(_table("package", cfg["package"]), PackageSection, PackageOptions, "package")
        section = validate_options(PackageSection, head, "package")
        if not section.targets:
            raise UsageError("package.targets is empty", hint='targets = ["mlflow", "mlserver", "triton"]')
        opts = validate_options(PackageOptions, _resolve_paths(PackageOptions, rest, base, "package"), "package")
        packages = tuple(dataclasses.replace(opts, target=t, force=True) for t in dict.fromkeys(section.targets))
    if "serve_check" not in cfg:
        return packages, None
    head, rest = _split(_table("serve_check", cfg["serve_check"]), ServeCheckSection, ServeCheckOptions, "serve_check")
    section = validate_options(ServeCheckSection, head, "serve_check")
    if section.target not in {p.target for p in packages}:
        raise UsageError(f"serve_check.target {section.target!r} is not packaged",
                         hint=f'add it to [package] targets (targets = ["{section.target}"])')
    return packages, (section.target, validate_options(ServeCheckOptions, rest, "serve_check"))


def _known_dims(framework: str, source: str, model: Mapping) -> list | None:
    """The symbolic dims the released model will have, when the config tells: an ONNX
    source's own, or the names in model.inputs and model.dynamic (None: unknown here)."""
    if framework == "onnx":
        specs, _ = model_io_specs(load_onnx(source, graph_only=True))
        return sorted({d for s in specs for d in s.shape if isinstance(d, str)})
    if framework == "sklearn" and not model.get("inputs"):
        return ["0"]  # skl2onnx leaves the batch dim unnamed: only its position names it (dims = { "0" = 64 })
    names = {d for s in model.get("inputs", ()) for d in parse_spec(s).shape if isinstance(d, str)}
    names |= {label for axes in parse_dynamic(model.get("dynamic", ())).values() for label in axes.values()}
    if names or model.get("inputs"):
        return sorted(names)
    if framework == "torch" and source.endswith(".pt2"):  # its own dims, named as convert names them
        dims = pt2_input_dims(Path(source))
        return None if dims is None else sorted(set(role_names(dims).values()))
    return None


def _check_dims(framework, source, model, steps, gates) -> None:
    known = _known_dims(framework, source, model)
    if known is None:
        return
    uses = [(f"steps[{i}].dims", s.options.dims) for i, s in enumerate(steps) if getattr(s.options, "dims", None)]
    if "latency" in gates:
        uses.append(("gates.latency.dims", gates["latency"].dims))
    for where, dims in uses:
        unknown = sorted(set(dims) - set(known))
        if unknown:
            raise UsageError(f"{where}: the model has no dim {', '.join(unknown)}",
                             hint=f"its symbolic dims are: {', '.join(known) or 'none (its dims are fixed or unnamed)'}"
                             + ("; \"0\" is the unnamed batch axis of every input" if known == ["0"] else ""))


def _gates(table, data: DataSection) -> dict:
    table = _table("gates", table)
    out = {}
    for name, value in table.items():
        if name not in GATES:
            raise UsageError(f"unknown key gates.{name}", hint=suggest(name, GATES))
        out[name] = validate_options(GATES[name], _table(f"gates.{name}", value), f"gates.{name}")
    if "accuracy" in out:
        if data.validation is None:
            raise UsageError("gates.accuracy needs labelled data.validation",
                             hint='add [data] validation = "val.npz" holding the inputs and a "labels" array')
        _labels_present(data)
    if "latency" in out:
        resolve_provider(out["latency"].provider)
        if out["latency"].runtime == "openvino" and out["latency"].provider != "cpu":
            raise UsageError("gates.latency: provider picks ONNX Runtime's execution provider; runtime = \"openvino\" "
                             "runs on OpenVINO's CPU device", hint="drop provider, or set runtime = \"ort\"")
    return out


def _labels_present(data: DataSection) -> None:
    files = list(read_npz(data.validation, "data.validation"))
    if data.labels not in files:
        raise UsageError(f"gates.accuracy needs labels: {data.validation} has no {data.labels!r} array",
                         hint=f"it holds {', '.join(files)}; save the labels as {data.labels!r} (or set data.labels)")


def with_provider(cfg: ReleaseConfig, provider: str | None) -> ReleaseConfig:
    """The config with its latency gate measured on ``provider`` (a zoo target's: the
    same release benchmarked on each kind of hardware). The resolved config in the
    report says so. No latency gate, or no provider: the config as it is."""
    lat = cfg.gate("latency")
    if provider is None or lat is None or provider == lat.provider:
        return cfg

    resolve_provider(provider)  # unknown or inactive: the same error as in the file
    gates = {**cfg.gates, "latency": dataclasses.replace(lat, provider=provider)}
    raw_gates = dict(cfg.raw.get("gates", {}))
    raw_gates["latency"] = {**raw_gates.get("latency", {}), "provider": provider}
    return dataclasses.replace(cfg, gates=gates, raw={**cfg.raw, "gates": raw_gates})


def plan(cfg: ReleaseConfig) -> dict:
    """What --dry-run prints: the resolved config, each step's full options."""
    return {"config": cfg.path, "model": dict(cfg.raw["model"]), "data": dataclasses.asdict(cfg.data),
            "steps": [{"run": s.run, "step": s.step.name, "options": non_defaults(s.options),
                       **({"parity": dataclasses.asdict(s.parity)} if s.parity else {})} for s in cfg.steps],
            "gates": {k: dataclasses.asdict(v) for k, v in cfg.gates.items()}}
