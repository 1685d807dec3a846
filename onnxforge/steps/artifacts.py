"""What every model-producing step shares: the model it starts from (a path or the
ModelArtifact of the step before), scratch files, lineage, and publishing (atomic;
a failed check writes nothing unless --keep-failed)."""

from __future__ import annotations

import os
import shutil
from pathlib import Path
from typing import Mapping, Sequence

from onnxforge.core.errors import BadInputError
from onnxforge.core.types import ModelArtifact, ParityReport, StepResult
from onnxforge.core.fileio import (
    PROTOBUF_LIMIT,
    REF_MIN_BYTES,
    atomic_path,
    external_data_files,
    failed_name,
    inline_external_data,
    load_onnx,
    publish_model,
    save_onnx,
    sha256_file,
)
from onnxforge.checks.generation import companions, has_past
from onnxforge.data.specs import model_io_specs

LINEAGE_KEY = "onnxforge.lineage"


def model_path(model: str | os.PathLike | ModelArtifact) -> Path:
    return Path(model.path if isinstance(model, ModelArtifact) else model)


def lineage_of(model: str | os.PathLike | ModelArtifact) -> tuple[str, ...]:
    """The steps that made a model: from its artifact, else from its metadata."""
    if isinstance(model, ModelArtifact):
        return tuple(model.lineage)
    m = load_onnx(model, graph_only=True)
    for p in m.metadata_props:
        if p.key == LINEAGE_KEY and p.value:
            return tuple(p.value.split(","))
    return ()


def save_scratch(model, path: Path) -> Path:
    """Scratch models keep weights in a data file (see fileio.inline_external_data)."""
    return save_onnx(model, path, external_data=True)


def save_scratch_ir(model, path: Path, base: Path | None = None) -> Path:
    """An onnx_ir model (or a ModelProto whose external weights lie in ``base``, as
    load_onnx(weights_by_reference=True) leaves them) as a scratch model: its tensors
    written one at a time, each read from its own file, to a data file named after the
    model, as save_scratch."""
    import onnx_ir as ir

    if not isinstance(model, ir.Model):
        model = ir.serde.deserialize_model(model)
        ir.external_data.set_base_dir(model.graph, base)
    ir.save(model, path, external_data=path.name + ".data", size_threshold_bytes=REF_MIN_BYTES, alignment=4096)
    return path


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


def finish(
    scratch_model: Path,
    target: Path,
    *,
    step: str,
    passed: bool,
    options,
    lineage: Sequence[str],
    checks: Sequence[ParityReport] = (),
    notes: Sequence[str] = (),
    metadata: Mapping[str, str] | None = None,
    inherit_from=None,
    **fields,
) -> StepResult:
    """Publish a scratch model (or not, on failure) and build the StepResult.
    ``options`` carries keep_failed, force and external_data (steps/base.py's OutputOptions);
    ``fields`` are the StepResult's typed extras (before, after, speed ...). The
    onnxforge.* metadata of ``inherit_from`` (the step's input) carries over."""
    inherited = _onnxforge_metadata(inherit_from) if inherit_from is not None else {}
    set_metadata(scratch_model, {**inherited, LINEAGE_KEY: ",".join(lineage), **(metadata or {})})
    written_to = target if passed else failed_name(target)
    written = passed or options.keep_failed
    artifact = None
    if written:
        if written_to != target and written_to.exists() and not options.force:
            raise BadInputError(f"{written_to} exists", hint="pass --force to overwrite it")
        size = sum(external_data_files(load_onnx(scratch_model, graph_only=True)).values())
        if options.external_data or size >= PROTOBUF_LIMIT:
            artifact_src = None
            publish_model(scratch_model, written_to, overwrite=options.force)
        else:
            inline_external_data(scratch_model, written_to, overwrite=options.force)
            artifact_src = scratch_model
        artifact = make_artifact(written_to, tuple(lineage), specs_from=artifact_src)
        if passed and inherit_from is not None and has_past(artifact.inputs):
            notes = (*notes, *_carry_companions(model_path(inherit_from), target))
    return StepResult(step=step, output=str(written_to), written=written, passed=passed, artifact=artifact,
                      checks=tuple(checks), notes=tuple(notes), **fields)


def _carry_companions(src: Path, target: Path) -> list[str]:
    """A decoder with its cache made from another: the encoder (an encoder-decoder's) and
    the config and tokenizer files beside the input go beside the output too, so the
    folder opens as the input's did. A file of that name already there is kept."""
    if src.parent.resolve() == target.parent.resolve():
        return []
    copied, kept = [], []
    for f in companions(src):
        dest = target.parent / f.name
        if dest.exists():
            kept.append(f.name)
            continue
        with atomic_path(dest, overwrite=False) as tmp:
            shutil.copyfile(f, tmp)
        copied.append(f.name)
    notes = [f"copied {', '.join(copied)} beside {target.name} from {src.parent}, as they are"] if copied else []
    if kept:
        notes.append(f"kept the {', '.join(kept)} already beside {target.name} (not the input's)")
    return notes


def _onnxforge_metadata(model) -> dict:
    m = load_onnx(model_path(model), graph_only=True)
    return {p.key: p.value for p in m.metadata_props if p.key.startswith("onnxforge.") and p.key != LINEAGE_KEY}


def make_artifact(path: str | os.PathLike, lineage: tuple[str, ...], specs_from: str | os.PathLike | None = None):
    """The artifact for a written model. ``specs_from``: a copy of the same model with
    external data, read instead of ``path`` so a large inline model is not parsed again."""
    m = load_onnx(specs_from or path, graph_only=True)
    ins, outs = model_io_specs(m)
    opset = next((o.version for o in m.opset_import if o.domain in ("", "ai.onnx")), 0)
    return ModelArtifact(str(path), ins, outs, opset, f"{m.producer_name} {m.producer_version}".strip(),
                         tuple(lineage), sha256_file(path))
