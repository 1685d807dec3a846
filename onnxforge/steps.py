"""What every model-producing step shares: scratch files, the check of a new model
against the model it came from, before/after summaries, lineage, and publishing
(atomic; a failed check writes nothing unless --keep-failed)."""

from __future__ import annotations

import contextlib
import logging
import os
from pathlib import Path
from typing import Mapping, Sequence

from onnxforge.errors import BadInputError
from onnxforge.types import ParityReport, StepResult, Tolerance

LINEAGE_KEY = "onnxforge.lineage"
log = logging.getLogger("onnxforge")


@contextlib.contextmanager
def quiet_third_party():
    """Exporters and graph rewriters print progress and graph dumps on stdout and warn
    on stderr; keep stdout for our result (``--json``) and their chatter for ``-v``."""
    import io
    import sys
    import warnings

    verbose = log.isEnabledFor(logging.INFO)
    loggers = [logging.getLogger(n) for n in ("torch.onnx", "torch.export", "torch._dynamo", "torch.fx", "onnxscript",
                                              "onnx_ir", "onnxruntime", "root")]
    levels = [lg.level for lg in loggers]
    sink = sys.stderr if verbose else io.StringIO()
    # C++ code (TorchScript graph dumps) writes to file descriptor 1 directly
    sys.stdout.flush()
    saved_fd = os.dup(1)
    target_fd = os.open(os.devnull, os.O_WRONLY) if not verbose else os.dup(2)
    os.dup2(target_fd, 1)
    try:
        with warnings.catch_warnings(), contextlib.redirect_stdout(sink):
            if not verbose:
                warnings.simplefilter("ignore")
                for lg in loggers:
                    lg.setLevel(logging.ERROR)
            try:
                yield
            finally:
                for lg, lvl in zip(loggers, levels):
                    lg.setLevel(lvl)
    finally:
        sys.stdout.flush()
        os.dup2(saved_fd, 1)
        os.close(saved_fd)
        os.close(target_fd)


def summary(path: str | os.PathLike) -> dict:
    """Node count per op type, total nodes, initializer bytes, file size (data included)."""
    from onnxforge.validators.checker import inspect_model

    info = inspect_model(path)
    return {"nodes": info.node_count, "ops": dict(info.op_histogram), "initializer_bytes": info.parameter_bytes,
            "file_bytes": info.file_bytes + sum(info.external_data.values())}


def lineage_of(path: str | os.PathLike) -> tuple[str, ...]:
    from onnxforge.fileio import load_onnx

    m = load_onnx(path, load_external_data=False)
    for p in m.metadata_props:
        if p.key == LINEAGE_KEY and p.value:
            return tuple(p.value.split(","))
    return ()


def save_scratch(model, path: Path) -> Path:
    """Scratch models keep weights in a data file (see fileio.inline_external_data)."""
    from onnxforge.fileio import save_onnx

    return save_onnx(model, path, external_data=True)


def set_metadata(path: Path, items: Mapping[str, str]) -> None:
    """Set metadata_props on a scratch model (small: its weights are external)."""
    import onnx

    m = onnx.load(str(path), load_external_data=False)
    keep = [p for p in m.metadata_props if p.key not in items]
    del m.metadata_props[:]
    m.metadata_props.extend(keep)
    for k, v in items.items():
        m.metadata_props.add(key=k, value=v)
    onnx.save_model(m, str(path))


def symbolic_dims(path) -> list[str]:
    from onnxforge.fileio import load_onnx
    from onnxforge.specs import model_io_specs

    ins, _ = model_io_specs(load_onnx(path, load_external_data=False))
    return sorted({d for s in ins for d in s.shape if isinstance(d, str)})


def check_against(
    before: str | os.PathLike,
    after: str | os.PathLike,
    *,
    tolerance: Tolerance,
    inputs: str | None = None,
    samples: int = 1,
    seed: int = 0,
    dims: Mapping[str, int] | None = None,
    val_ranges: Mapping[str, tuple[float, float]] | None = None,
    label: str = "",
    second_shape: bool = True,
    check_stat: str = "elementwise",
    task: str | None = None,
    min_agreement: float | None = None,
    min_cosine: float | None = None,
) -> list[ParityReport]:
    """Parity of ``after`` against ``before`` on the given inputs (or seeded random
    ones), and, for models with symbolic dims, again at another size of each, which
    proves that the dims stayed dynamic."""
    from dataclasses import replace

    from onnxforge.validators.parity import onnx_side, validate

    ref = onnx_side(before, "cpu", label=f"{Path(before).name}")
    cand = onnx_side(after, "cpu", label=label or f"{Path(after).name}")
    common = dict(tolerance=tolerance, check_stat=check_stat, task=task, min_agreement=min_agreement,
                  min_cosine=min_cosine)
    dims = dict(dims or {})
    sym = [d for d in symbolic_dims(before) if d not in dims]
    base = {**{d: 2 for d in sym}, **dims}
    reports = [validate(ref, cand, inputs=inputs, samples=samples, seed=seed, dims=base, val_ranges=val_ranges, **common)]
    if second_shape and sym and not inputs:
        second = {**base, **{d: 3 for d in sym}}
        try:
            rep = validate(ref, cand, samples=1, seed=seed + 1, dims=second, val_ranges=val_ranges, **common)
            rep = replace(rep, candidate=f"{rep.candidate} ({', '.join(f'{d}=3' for d in sym)})")
        except BadInputError as exc:
            rep = ParityReport(ref.label, f"{cand.label} ({', '.join(f'{d}=3' for d in sym)})", 1, (), False,
                               problems=(f"the new model does not run with {', '.join(sym)} changed: {exc.message}; "
                                         "a dynamic dim became fixed",))
        reports.append(rep)
    return reports


def finish(
    scratch_model: Path,
    target: Path,
    *,
    step: str,
    passed: bool,
    keep_failed: bool,
    force: bool,
    external_data: bool | None,
    lineage: Sequence[str],
    checks: Sequence[ParityReport] = (),
    notes: Sequence[str] = (),
    details: Mapping[str, object] | None = None,
    metadata: Mapping[str, str] | None = None,
) -> StepResult:
    """Publish a scratch model (or not, on failure) and build the StepResult."""
    from onnxforge.fileio import (PROTOBUF_LIMIT, external_data_files, failed_name, inline_external_data,
                                  load_onnx, make_artifact, publish_model)

    set_metadata(scratch_model, {LINEAGE_KEY: ",".join(lineage), **(metadata or {})})
    written_to = target if passed else failed_name(target)
    written = passed or keep_failed
    artifact = None
    if written:
        if written_to != target and written_to.exists() and not force:
            raise BadInputError(f"{written_to} exists", hint="pass --force to overwrite it")
        size = sum(external_data_files(load_onnx(scratch_model, load_external_data=False)).values())
        if external_data or size >= PROTOBUF_LIMIT:
            artifact_src = None
            publish_model(scratch_model, written_to)
        else:
            inline_external_data(scratch_model, written_to)
            artifact_src = scratch_model
        artifact = make_artifact(written_to, tuple(lineage), specs_from=artifact_src)
    return StepResult(step=step, output=str(written_to), written=written, passed=passed, artifact=artifact,
                      checks=tuple(checks), notes=tuple(notes), details=dict(details or {}))
