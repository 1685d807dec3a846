"""`package`: an ONNX model or a release folder -> a folder a server can load.

Targets
-------
- ``mlserver``: ``OUT/model-settings.json`` (implementation
  ``onnxforge_runtime.OnnxRuntimeModel``), ``OUT/onnxforge_runtime.py`` (a byte copy of
  mlserver_runtime.py: it imports only mlserver, onnxruntime and numpy),
  ``OUT/settings.json`` (server settings without ports), ``OUT/model.onnx``,
  ``OUT/requirements.txt`` (mlserver, onnxruntime and numpy pinned to the versions
  installed here, the ones the golden outputs came from; no onnxforge). Serve it with
  ``mlserver start OUT`` anywhere those three are installed, or ``mlserver build OUT``.
- ``mlflow``: an MLflow model written by ``mlflow.onnx.save_model`` (the onnx flavor:
  MLmodel, one self-contained model.onnx, requirements.txt pinned to the onnxruntime
  version, signature, input example, metadata), plus the same model-settings.json,
  settings.json and onnxforge_runtime.py so ``mlserver start OUT`` (and serve-check)
  serves the folder without onnxforge (MLServer's own MLflow runtime needs the full
  ``mlflow`` package). Proof: ``mlflow.pyfunc.load_model`` round trip against the
  golden outputs.
- ``triton``: a model repository ``OUT/NAME/config.pbtxt`` + ``OUT/NAME/1/model.onnx``.
  Proof: the config parses with tritonclient's ModelConfig protobuf and matches the model.

Every target carries ``onnxforge-package/`` beside the model (``OUT/NAME/onnxforge-package``
for Triton, which ignores non-numeric folders in a model folder): ``package.json`` (what
was packaged, from where, with which settings), ``inputs.npz`` and ``golden.npz`` (the
inputs and the outputs of the packaged model.onnx on ONNX Runtime in this process),
and the release's ``manifest.json`` / ``report.json`` when packaged from a release.
The folder name has a hyphen so that it can never be imported as a module: MLServer
puts the model folder on ``sys.path``. Every file is written 0644 and every folder 0755
whatever the umask: a server in a container often runs as another, non-root user.

Golden inputs: ``inputs=`` when given; for a release folder, the validation data named
in its report.json (labels dropped); else seeded generated inputs (``seed``, ``dims``).

The output folder is staged beside OUT and renamed into place; an existing OUT needs
``force``. A failed proof writes nothing unless ``keep_failed``.
"""

from __future__ import annotations

import json
import logging
import os
import re
import shutil
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Mapping, Sequence

from onnxforge.core.errors import BadInputError, UsageError, MissingDependencyError, first_line, require
from onnxforge.core.types import ParityReport, TensorSpec, Tolerance
from importlib.metadata import PackageNotFoundError, version
import time
from onnxforge.core.options import resolve
from onnxforge.data.specs import model_io_specs, numpy_dtype
from onnxforge.steps.package.options import PackageOptions

log = logging.getLogger("onnxforge")

TARGETS = ("mlflow", "mlserver", "triton")
EXTRA_DIR = "onnxforge-package"
RUNTIME_FILE = "onnxforge_runtime.py"  # not "mlserver*": the folder is first on the server's sys.path
RUNTIME = "onnxforge_runtime.OnnxRuntimeModel"
# The protobuf limit: a model below it is written as one file (no external data to lose or mis-permission)
ONE_FILE_LIMIT = 2**31 - 2**24
INPUTS_FILE = "inputs.npz"
GOLDEN_FILE = "golden.npz"
# Rows kept in the MLflow input example: it is documentation, not the validation set.
EXAMPLE_ROWS = 5


@dataclass(frozen=True)
class PackageResult:
    target: str
    source: str
    out_dir: str
    model_name: str
    model_dir: str  # the folder holding the model and onnxforge-package/ (OUT, or OUT/NAME for triton)
    passed: bool
    written: bool
    proof: ParityReport | None  # mlflow: the pyfunc round trip against the golden outputs
    checks: tuple[str, ...] = ()  # structural checks that held
    problems: tuple[str, ...] = ()  # structural checks that failed
    files: Mapping[str, str] = field(default_factory=dict)  # path relative to OUT -> sha256
    inputs_from: str = ""
    samples: int = 0
    tracking: Mapping[str, str] = field(default_factory=dict)  # run_id, experiment_id, registered_model, version
    notes: tuple[str, ...] = ()


@dataclass(frozen=True)
class _Source:
    model: Path
    release: Path | None
    manifest: Mapping[str, Any] | None
    report: Mapping[str, Any] | None  # report.json's "result"
    label: str = ""  # what package.json and MLmodel record as the source


def _label(src: _Source, out: Path) -> str:
    """The source as the package records it: relative to the package folder when the
    package sits inside it (a release's own packages: "..", true wherever the release
    folder is copied or downloaded), else the absolute path."""
    where = (src.release or src.model).resolve()
    o = out.resolve()
    return os.path.relpath(where, o) if where in o.parents else str(where)


def package(source: str | os.PathLike, out_dir: str | os.PathLike, options=None, /, **kwargs) -> PackageResult:
    """Write ``out_dir`` for ``options.target`` from ``source`` (a .onnx file or a release
    folder). Options: steps/package/options.py's PackageOptions, as an object or keywords.

    ``provider``/``threads`` go into the serving config (MLServer parameters, MLflow's
    ONNX session options, Triton's instance_group and ORT backend parameters). The
    tolerance (``atol``/``rtol``) is what the MLflow proof and, later, serve_check use
    (stored in package.json). ``mlflow_tracking_uri`` (mlflow only;
    ``sqlite:///path/mlflow.db`` works offline) logs the packaged folder to a run in
    ``experiment`` with the release's metrics; ``register`` registers it under that name.
    A sqlite store needs sqlalchemy and alembic (in the serve extra) and keeps the
    artifacts of experiments it creates in ``mlartifacts/`` beside the database. MLflow 3
    refuses ``file:`` stores unless ``MLFLOW_ALLOW_FILE_STORE=true`` is set.
    ``inputs``/``seed``/``dims``: where the golden inputs come from (see the module doc).
    ``keep_failed``: write the folder even when the proof fails.
    """
    o = resolve(PackageOptions, options, kwargs)
    if (o.mlflow_tracking_uri or o.register) and o.target != "mlflow":
        raise UsageError("--mlflow-tracking-uri and --register apply to the mlflow target only",
                         hint="pass --target mlflow")
    if o.runtime != "ort" and (o.target != "triton" or o.provider != "cpu"):
        raise UsageError(f"--runtime {o.runtime} is Triton's OpenVINO backend (CPU): it applies to --target triton "
                         "without --provider", hint="pass --target triton, or drop --runtime")
    if o.register and not o.mlflow_tracking_uri:
        raise UsageError("--register needs --mlflow-tracking-uri", hint="e.g. --mlflow-tracking-uri sqlite:///mlflow.db")
    job = _prepare(source, Path(out_dir), o)
    client = _tracking_client(o.mlflow_tracking_uri) if o.mlflow_tracking_uri else None
    written, passed, proof, checks, problems, files = _stage(job, o)
    if not written:
        job.notes.append("nothing written: the proof failed (keep_failed writes it anyway)")
    tracking: dict[str, str] = {}
    if written and client is not None:
        tracking = _log_to_mlflow(client, job.out, job.src, o.mlflow_tracking_uri, o.experiment, o.register,
                                  job.name, proof, passed)
    return PackageResult(
        target=o.target, source=str(source), out_dir=str(job.out), model_name=job.name,
        model_dir=str(job.out / job.name if o.target == "triton" else job.out), passed=passed, written=written,
        proof=proof, checks=tuple(checks), problems=tuple(problems), files=files, inputs_from=job.inputs_from,
        samples=len(job.samples), tracking=tracking, notes=tuple(job.notes))


@dataclass
class _Job:
    src: _Source
    out: Path
    name: str
    ins: tuple
    outs: tuple
    samples: list
    goldens: list
    inputs_from: str
    notes: list
    tol: Tolerance


def _prepare(source, out: Path, o) -> _Job:
    from onnxforge.core.fileio import check_readable_file, load_onnx
    from onnxforge.steps.package.v2 import v2_datatype
    from onnxforge.checks.compare import make_tolerance

    src = _resolve_source(source)
    src = replace(src, label=_label(src, out))
    check_readable_file(src.model, "model")
    _check_out(out, src, o.force)
    proto = load_onnx(src.model, graph_only=True)
    ins, outs = model_io_specs(proto)
    for s in ins + outs:
        v2_datatype(s)  # refuses ZipMap outputs and other non-tensors up front
    from onnxforge.backends.onnx.runner import recorded_val_ranges

    ranges = recorded_val_ranges(proto)
    del proto
    samples, inputs_from, notes = _golden_inputs(src, ins, o.inputs, o.seed, o.dims, ranges)
    return _Job(src, out, _model_name(o.name, src), ins, outs, samples, _run_goldens(src.model, samples, o.threads),
                inputs_from, notes, make_tolerance(o.atol, o.rtol))


def _stage(job: _Job, o):
    """Write the target in a scratch folder beside OUT, prove it, rename it into place."""
    from onnxforge.core.fileio import copy_model, scratch_dir, sha256_file

    with scratch_dir(job.out) as tmp:
        stage = tmp / "stage"
        stage.mkdir()
        proof, checks, problems = None, [], []
        model_dir = stage
        if o.target == "mlserver":
            copy_model(job.src.model, stage / "model.onnx")
            _write_mlserver_config(stage, job.name, job.ins, job.outs, o.provider, o.threads)
            (stage / "requirements.txt").write_text(_server_requirements(job.src, job.notes))
        elif o.target == "triton":
            from onnxforge.steps.package.triton import check_triton_config, write_triton

            model_dir = stage / job.name
            write_triton(job.src.model, model_dir, job.name, job.ins, job.outs, provider=o.provider,
                         threads=o.threads, max_batch_size=o.max_batch_size, runtime=o.runtime)
            checks, problems = check_triton_config(model_dir, job.src.model, provider=o.provider, threads=o.threads,
                                                   runtime=o.runtime)
        else:
            _write_mlflow(job.src, stage, job.ins, job.outs, job.samples, o.provider, o.threads)
            _write_mlserver_config(stage, job.name, job.ins, job.outs, o.provider, o.threads)
            proof = _mlflow_proof(stage, job.samples, job.goldens, job.tol)
        _write_extra(model_dir / EXTRA_DIR, job, o)
        _readable_by_all(stage)
        passed = not problems and (proof is None or proof.passed)
        written = passed or o.keep_failed
        files = {}
        if written:
            files = {str(p.relative_to(stage)): sha256_file(p) for p in sorted(stage.rglob("*")) if p.is_file()}
            if job.out.exists():
                os.replace(job.out, tmp / "old")  # removed with the scratch folder
            os.replace(stage, job.out)
    return written, passed, proof, checks, problems, files


def _readable_by_all(folder: Path) -> None:
    """0755 folders and 0644 files, whatever the umask or the writer (mlflow.onnx writes
    external data 0600; temp files are 0600): the server's user is often not ours."""
    folder.chmod(0o755)
    for p in folder.rglob("*"):
        if not p.is_symlink():  # chmod follows a link, out of the folder
            p.chmod(0o755 if p.is_dir() else 0o644)


def runtime_source() -> Path:
    """The MLServer runtime's source file, which every folder ships as onnxforge_runtime.py
    (read, not imported: importing it imports mlserver)."""
    return Path(__file__).with_name("mlserver_runtime.py")


def _write_extra(extra: Path, job: _Job, o) -> None:
    """onnxforge-package/: what was packaged, the golden inputs and outputs, the release's reports."""
    extra.mkdir(parents=True)
    _save_arrays(extra / INPUTS_FILE, job.samples)
    _save_arrays(extra / GOLDEN_FILE, job.goldens)
    if job.src.release is not None:
        for f in ("manifest.json", "report.json"):
            if (job.src.release / f).is_file():
                shutil.copy(job.src.release / f, extra / f)
    info = _package_info(o.target, job.src, job.name, job.ins, job.outs, o.provider, o.threads, job.tol,
                         job.inputs_from, len(job.samples))
    (extra / "package.json").write_text(json.dumps(info, indent=2) + "\n")


# ----------------------------------------------------------------------------- source and output


def _resolve_source(source) -> _Source:
    p = Path(source)
    if not p.exists():
        raise BadInputError(f"source not found: {p}", hint="give an ONNX model or a folder written by `onnxforge release`")
    if p.is_file():
        if p.suffix.lower() != ".onnx":
            raise BadInputError(f"{p} is not an ONNX model (.onnx) or a release folder",
                                hint="convert the model first: onnxforge convert ...")
        return _Source(p, None, None, None)
    model = p / "model.onnx"
    if not model.is_file():
        if (p / "report.json").is_file():
            raise BadInputError(f"{p} holds a release that did not pass (no model.onnx)",
                                hint="see its report.md; only a release whose gates pass can be packaged")
        raise BadInputError(f"{p} is not a release folder (no model.onnx)",
                            hint="give an ONNX model or a folder written by `onnxforge release`")
    manifest = _read_json(p / "manifest.json") if (p / "manifest.json").is_file() else None
    report = _read_json(p / "report.json") if (p / "report.json").is_file() else None
    if report is not None:
        report = report.get("result", report)
    return _Source(model, p, manifest, report)


def _read_json(path: Path) -> dict:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        raise BadInputError(f"cannot read {path} as JSON ({exc})", hint="re-run `onnxforge release`") from None


def _check_out(out: Path, src: _Source, force: bool) -> None:
    """Never write over the source: not the model's folder when it is a release, nor a
    folder holding the source. A folder inside a release (release-out/mlserver) is fine."""
    o = out.resolve()
    protected = [src.model.resolve()] + ([src.release.resolve()] if src.release else [])
    for p in protected:
        if o == p or o in p.parents:
            raise BadInputError(f"output {out} would replace the source {p}; inputs are never modified",
                                hint="write the package to another folder, e.g. release-out/mlserver")
    if out.exists() and not out.is_dir():
        raise BadInputError(f"output {out} exists and is not a folder", hint="give a folder path")
    if out.exists() and any(out.iterdir()) and not force:
        raise BadInputError(f"output {out} exists", hint="pass --force to replace it")


def safe_model_name(raw: str) -> str:
    """A name every server accepts (Triton's repository folders, MLServer's settings)."""
    return re.sub(r"[^A-Za-z0-9_.-]", "_", raw).strip(".") or "model"


def _model_name(name: str | None, src: _Source) -> str:
    """--name, else the release's name (its report.json's; the folder's for an older
    release), else the model file's stem: never the output folder (release-out)."""
    released = (src.report or {}).get("name")
    raw = name or (released if isinstance(released, str) and released else None) or (
        src.release.resolve().name if src.release else src.model.stem)
    clean = safe_model_name(raw)
    if name and clean != name:
        raise UsageError(f"bad model name {name!r}", hint="use letters, digits, '_', '-' and '.'")
    return clean


# ----------------------------------------------------------------------------- golden data


def _golden_inputs(src: _Source, specs, inputs, seed, dims, val_ranges=None) -> tuple[list[dict], str, list[str]]:
    from onnxforge.data.generate import generate_inputs
    from onnxforge.data.samples import check_sample_fits, load_samples

    notes: list[str] = []
    names = [s.name for s in specs]
    if inputs is not None:
        samples = [_model_dtypes(s, specs) for s in load_samples(inputs, names=names)]
        for i, s in enumerate(samples):
            check_sample_fits(s, specs, f"{inputs} sample {i}")
        return samples, str(inputs), notes
    if src.report is not None:
        data = (src.report.get("config") or {}).get("data") or {}
        val = data.get("validation")
        if val and Path(val).is_file():
            sample = load_samples(val, names=names)[0]
            label_key = data.get("labels", "labels")
            sample = _model_dtypes({k: v for k, v in sample.items() if k in names or k != label_key}, specs)
            check_sample_fits(sample, specs, f"release validation data {val}")
            return [sample], f"release validation data {val}", notes
        if val:
            notes.append(f"the release's validation data {val} is not on this machine: seeded generated inputs used")
    sample = generate_inputs(specs, seed=seed, dims=dims, default_dim=1, val_ranges=val_ranges)
    return [sample], f"generated (seed {seed}, dims {dict(dims or {})}, other symbolic dims 1)", notes


def _model_dtypes(sample: Mapping, specs) -> dict:
    """Strings read back from .npz are numpy unicode; ORT's string tensors take objects."""
    import numpy as np

    want = {s.name: s.dtype for s in specs}
    return {k: (np.asarray(v, dtype=object) if want.get(k) == "str" else v) for k, v in sample.items()}


def _run_goldens(model: Path, samples, threads) -> list[dict]:
    """The packaged file's outputs on ORT's CPU provider, in this process: the served
    model must answer like this."""
    from onnxforge.backends.onnx.runtime import create_session, run_session

    sess = create_session(model, "cpu", threads=threads)
    return [run_session(sess, s) for s in samples]


def _save_arrays(path: Path, samples: Sequence[Mapping]) -> None:
    """save_samples with strings as numpy unicode (np.load refuses pickled objects)."""
    import numpy as np

    from onnxforge.data.samples import save_samples

    save_samples(path, [{k: (np.asarray(v, dtype=str) if np.asarray(v).dtype.kind == "O" else v)
                         for k, v in s.items()} for s in samples])


def load_package(model_dir: str | os.PathLike) -> tuple[dict, list[dict], list[dict]]:
    """package.json, the inputs and the golden outputs of a packaged model folder."""
    from onnxforge.data.samples import load_samples

    extra = Path(model_dir) / EXTRA_DIR
    if not (extra / "package.json").is_file():
        raise BadInputError(f"{model_dir} was not packaged by onnxforge (no {EXTRA_DIR}/package.json)",
                            hint="write it with `onnxforge package`")
    info = _read_json(extra / "package.json")
    specs = [TensorSpec(d["name"], d["dtype"], tuple(d["shape"])) for d in info["inputs"]]
    inputs = [_model_dtypes(s, specs) for s in load_samples(extra / INPUTS_FILE)]
    golden = load_samples(extra / GOLDEN_FILE)
    if len(inputs) != len(golden):
        raise BadInputError(f"{extra}: {len(inputs)} input samples but {len(golden)} golden outputs",
                            hint="re-run `onnxforge package`")
    return info, inputs, golden


def _spec_json(s: TensorSpec) -> dict:
    return {"name": s.name, "dtype": s.dtype, "shape": list(s.shape)}


def _package_info(target, src: _Source, name, ins, outs, provider, threads, tol: Tolerance, inputs_from, n) -> dict:
    import onnxruntime as ort

    from onnxforge.core.fileio import sha256_file

    return {
        "schema_version": 1, "target": target, "model_name": name,
        "source": src.label, "source_sha256": sha256_file(src.model),
        "release": bool(src.release), "inputs": [_spec_json(s) for s in ins], "outputs": [_spec_json(s) for s in outs],
        "provider": provider, "threads": threads,
        "tolerance": {"atol": tol.atol, "rtol": tol.rtol, "per_output": {k: list(v) for k, v in tol.per_output.items()}},
        "inputs_from": inputs_from, "samples": n, "golden_runtime": f"onnxruntime {ort.__version__} (cpu)",
        "onnxruntime": _release_runtime_version(src) or ort.__version__,
    }


def _release_runtime_version(src: _Source) -> str | None:
    """The onnxruntime the release was validated and benchmarked with."""
    for doc in (src.manifest, src.report):
        v = ((doc or {}).get("versions") or {}).get("onnxruntime")
        if v:
            return str(v)
    return None


# ----------------------------------------------------------------------------- mlserver


def _server_requirements(src: _Source, notes: list[str]) -> str:
    """What the server's environment needs (``mlserver build`` installs it into an
    image): exactly what onnxforge_runtime.py imports, at the versions installed here
    (the golden outputs came from this onnxruntime). No onnxforge: it is on no index."""
    import numpy
    import onnxruntime as ort

    try:
        server = f"mlserver=={version('mlserver')}"
    except PackageNotFoundError:
        server = "mlserver>=1.7,<2"
        notes.append("mlserver is not installed here: requirements.txt asks for mlserver>=1.7,<2, untested")
    released = _release_runtime_version(src)
    if released and released != ort.__version__:
        notes.append(f"the release ran onnxruntime {released}; the package pins {ort.__version__}, installed here")
    return f"{server}\nonnxruntime=={ort.__version__}\nnumpy=={numpy.__version__}\n"


def _write_mlserver_config(folder: Path, name: str, ins, outs, provider: str, threads: int | None) -> None:
    from onnxforge.steps.package.v2 import v2_datatype, v2_shape

    extra: dict[str, Any] = {"provider": provider}
    if threads is not None:
        extra["threads"] = threads
    settings = {
        "name": name,
        "implementation": RUNTIME,
        "parameters": {"uri": "./model.onnx", "extra": extra},
        "inputs": [{"name": s.name, "datatype": v2_datatype(s), "shape": v2_shape(s)} for s in ins],
        "outputs": [{"name": s.name, "datatype": v2_datatype(s), "shape": v2_shape(s)} for s in outs],
    }
    (folder / "model-settings.json").write_text(json.dumps(settings, indent=2) + "\n")
    shutil.copyfile(runtime_source(), folder / RUNTIME_FILE)
    # Server-wide settings. No ports or host here: a settings file beats the MLSERVER_*
    # environment, and serve-check (or a deployment) sets those. parallel_workers 0
    # runs inference in the server process: ORT has its own thread pool, and a worker
    # pool would add a process hop per request and a second copy of the model. debug
    # off: MLServer's default (on) writes an access-log line for every request.
    server = {"parallel_workers": 0, "debug": False}
    (folder / "settings.json").write_text(json.dumps(server, indent=2) + "\n")


# ----------------------------------------------------------------------------- mlflow


def _tracking_client(uri: str):
    """An MlflowClient for ``uri``, checked with one cheap call before anything is
    written, so a bad store fails the command up front."""
    require("mlflow", "serve")
    if uri.startswith(("sqlite:", "postgresql", "mysql")):
        try:
            import alembic  # noqa: F401
            import sqlalchemy  # noqa: F401
        except ImportError:
            raise MissingDependencyError(
                f"an MLflow database store ({uri.split(':')[0]}) needs sqlalchemy and alembic",
                hint="pip install 'onnxforge[serve]'",
            ) from None
    from mlflow import MlflowClient

    try:
        client = MlflowClient(tracking_uri=uri, registry_uri=uri)
        client.search_experiments(max_results=1)
    except Exception as exc:
        hint = "check the tracking URI (sqlite:///path/mlflow.db works offline)"
        if "maintenance mode" in str(exc):  # MLflow 3.x refuses file stores unless told
            hint = "use sqlite:///path/mlflow.db, or set MLFLOW_ALLOW_FILE_STORE=true to keep a file store"
        raise BadInputError(f"MLflow tracking store {uri} cannot be used: {first_line(exc, 200)}", hint=hint) from None
    return client


def _mlflow_signature(ins, outs):
    from mlflow.models import ModelSignature
    from mlflow.types import Schema
    from mlflow.types import TensorSpec as MlflowTensorSpec


    def schema(specs):
        return Schema([MlflowTensorSpec(numpy_dtype(s.dtype), tuple(d if isinstance(d, int) else -1 for d in s.shape),
                                        s.name) for s in specs])

    return ModelSignature(inputs=schema(ins), outputs=schema(outs))


def _example(sample: Mapping, ins) -> dict:
    """The first rows of the first sample, when every input has a batch axis."""
    if all(s.shape and not isinstance(s.shape[0], int) for s in ins):
        return {k: v[:EXAMPLE_ROWS] for k, v in sample.items()}
    return dict(sample)


def _write_mlflow(src: _Source, stage: Path, ins, outs, samples, provider: str, threads: int | None) -> None:
    import onnx

    from onnxforge.core.fileio import external_data_files, load_onnx
    from onnxforge.backends.onnx.runtime import resolve_provider

    require("mlflow", "serve")
    import mlflow.onnx

    runtime_version = _release_runtime_version(src)
    if runtime_version is None:
        import onnxruntime as ort

        runtime_version = ort.__version__
    providers = [resolve_provider(provider)]
    if providers[0] != "CPUExecutionProvider":
        providers.append("CPUExecutionProvider")
    session_options = {"intra_op_num_threads": threads} if threads else None
    # One file unless the protobuf limit forbids it: mlflow's default (external data)
    # writes the weights 0600 in a second file.
    external = external_data_files(load_onnx(src.model, graph_only=True))
    big = src.model.stat().st_size + sum(external.values()) >= ONE_FILE_LIMIT
    model = load_onnx(src.model)
    # mlflow wants to create the folder itself
    stage.rmdir()
    mlflow.onnx.save_model(
        model, str(stage), signature=_mlflow_signature(ins, outs), input_example=_example(samples[0], ins),
        save_as_external_data=big,
        pip_requirements=[f"onnxruntime=={runtime_version}", f"onnx=={onnx.__version__}"],
        onnx_execution_providers=providers, onnx_session_options=session_options,
        metadata={"onnxforge": _mlflow_metadata(src)},
    )


def _mlflow_metadata(src: _Source) -> dict:
    """The manifest and a summary of the parity ledger, in MLmodel's metadata."""
    meta: dict[str, Any] = {"source": src.label}
    if src.manifest:
        meta["manifest"] = {k: src.manifest[k] for k in ("sha256", "inputs", "outputs", "opset", "lineage", "versions")
                            if k in src.manifest}
    if src.report:
        meta["ledger"] = [
            {"step": r.get("step"), "against": r.get("against"), "passed": r.get("passed"), "accuracy": r.get("accuracy"),
             "outputs": {o["name"]: {"max_abs": _num(o.get("max_abs")), "cosine": _num(o.get("cosine"))}
                         for o in ((r.get("parity") or {}).get("outputs") or [])}}
            for r in src.report.get("ledger") or []
        ]
    return meta


def _num(x):
    """report.json writes non-finite floats as strings; YAML metadata wants numbers or None."""
    try:
        return float(x)
    except (TypeError, ValueError):
        return None


def _mlflow_proof(stage: Path, samples, goldens, tol: Tolerance) -> ParityReport:
    import mlflow.pyfunc

    from onnxforge.checks.compare import compare

    loaded = mlflow.pyfunc.load_model(str(stage))
    preds = []
    for s in samples:
        out = loaded.predict(dict(s))
        if not isinstance(out, Mapping):  # a DataFrame for tabular input; columns are the output names
            out = {c: out[c].to_numpy() for c in out.columns}
        preds.append(dict(out))
    return compare(goldens, preds, tol, reference="golden (onnxruntime in-process)",
                   candidate="mlflow.pyfunc.load_model")


def release_metrics(report: Mapping[str, Any] | None) -> dict[str, float]:
    """The release's numbers as MLflow metrics: the final ledger row's parity and
    accuracy, the final model's latency, the speed-up, and the model size."""
    out: dict[str, float] = {}
    if not report:
        return out
    ledger = report.get("ledger") or []
    if ledger:
        last = ledger[-1]
        for o in ((last.get("parity") or {}).get("outputs") or []):
            key = re.sub(r"[^A-Za-z0-9_\-./ ]", "_", o["name"])
            for stat in ("max_abs", "cosine", "label_agreement"):
                v = _num(o.get(stat))
                if v is not None:
                    out[f"parity.{key}.{stat}"] = v
        if _num(last.get("accuracy")) is not None:
            out["accuracy"] = float(last["accuracy"])
        out["parity_passed"] = float(all(r.get("passed") for r in ledger))
    bench = report.get("benchmark") or {}
    results = bench.get("results") or []
    if results:
        lat = results[-1].get("latency") or {}
        for k in ("p50", "p90", "p99"):
            if _num(lat.get(k)) is not None:
                out[f"latency_{k}_ms"] = float(lat[k])
        if _num(results[-1].get("throughput")) is not None:
            out["throughput_items_per_s"] = float(results[-1]["throughput"])
    comps = bench.get("comparisons") or []
    if comps and _num(comps[-1].get("speedup")) is not None:
        out["speedup"] = float(comps[-1]["speedup"])
    return out


def _log_to_mlflow(client, out: Path, src: _Source, uri: str, experiment: str, register: str | None, name: str,
                   proof: ParityReport | None, passed: bool) -> dict[str, str]:
    """Log the packaged folder as a run's ``model`` artifacts, with metrics, through an
    explicit client (no global tracking URI is changed), and register it when asked."""
    from mlflow.entities import Metric, Param


    try:
        exp = client.get_experiment_by_name(experiment)
        exp_id = exp.experiment_id if exp else client.create_experiment(experiment,
                                                                         artifact_location=_artifact_root(uri))
        run = client.create_run(exp_id, run_name=name, tags={"onnxforge.source": str(src.release or src.model)})
        run_id = run.info.run_id
        ts = int(time.time() * 1000)
        metrics = release_metrics(src.report)
        metrics["model_bytes"] = float(src.model.stat().st_size)
        if proof is not None:
            metrics["pyfunc_parity_passed"] = float(proof.passed)
            for o in proof.outputs:
                metrics[f"pyfunc.{re.sub(r'[^A-Za-z0-9_./ -]', '_', o.name)}.max_abs"] = o.max_abs
        params = {"target": "mlflow", "model_name": name}
        if src.manifest:
            params["sha256"] = str(src.manifest.get("sha256", ""))
            params["lineage"] = ",".join(src.manifest.get("lineage") or [])[:500]
        client.log_batch(run_id, metrics=[Metric(k, float(v), ts, 0) for k, v in sorted(metrics.items())],
                         params=[Param(k, v) for k, v in params.items()])
        client.log_artifacts(run_id, str(out), artifact_path="model")
        client.set_terminated(run_id, "FINISHED" if passed else "FAILED")
        result = {"tracking_uri": uri, "experiment_id": str(exp_id), "run_id": run_id,
                  "model_uri": f"runs:/{run_id}/model"}
        if register:
            from mlflow.exceptions import MlflowException

            try:
                client.create_registered_model(register)
            except MlflowException as exc:
                if "already exists" not in str(exc).lower() and "RESOURCE_ALREADY_EXISTS" not in str(exc):
                    raise
            mv = client.create_model_version(register, source=f"{run.info.artifact_uri}/model", run_id=run_id)
            result.update(registered_model=register, version=str(mv.version))
        return result
    except Exception as exc:
        from mlflow.exceptions import MlflowException

        if isinstance(exc, (MlflowException, OSError)):
            raise BadInputError(f"MLflow tracking at {uri} failed after the package was written: {first_line(exc)}",
                                hint="the package folder is complete; log it again once the store works") from None
        raise


def _artifact_root(uri: str) -> str | None:
    """Artifacts of a new experiment in a sqlite store go beside the database file;
    MLflow's default is ./mlruns under whatever folder the caller happens to be in."""
    if not uri.startswith("sqlite:///"):
        return None
    db = Path(uri[len("sqlite:///"):])
    return (db.parent.resolve() / "mlartifacts").as_uri()
