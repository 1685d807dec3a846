"""What a release writes: the model and its manifest (only when every gate passes),
and the reports (always): report.json, report.md (also appended to
$GITHUB_STEP_SUMMARY), report.html (figures) and junit.xml. The hashes of every input file and the tool
versions go into both.

OUT_DIR is always the old release, the new one, or marked incomplete: the release is
built in a scratch folder beside it (same file system) and moved in at the end. The
move writes ``.onnxforge-incomplete`` first, removes the files the previous release
listed in ``.onnxforge-release.json`` (never an input of this run, never anything
else), moves the new files in with report.json and the new list last, then removes
the marker. While it moves, the list names the old files and the new, so a move cut
short leaves no file of ours unlisted.

A file at a name the release writes that no release listed is someone else's: the
release refuses the folder (check_out_dir, before any work), --force or not."""

from __future__ import annotations

import contextlib
import json
import os
from pathlib import Path, PurePath

from onnxforge.core.errors import BadInputError

from onnxforge.pipeline.config import DICT_CONFIG, ConfigData, ReleaseConfig
from onnxforge.core.types import ReleaseReport
from importlib import metadata
import dataclasses
import hashlib
import shutil
from onnxforge.core.fileio import (
    atomic_write_text,
    external_data_files,
    input_files,
    load_onnx,
    make_dirs,
    publish_model,
    same_file,
    scratch_dir,
    sha256_file,
)
from onnxforge.checks.generation import ENCODER_FILE, SIDE_FILES, companions
from onnxforge.data.specs import model_io_specs
from onnxforge.report import dumps
from onnxforge.report.html import write_html
from onnxforge.report.junit import junit
from onnxforge.report.markdown import markdown


def versions() -> dict:
    out = {}
    for name in ("onnxforge", "onnx", "onnxruntime", "onnxsim", "numpy", "torch", "onnxscript", "scikit-learn",
                 "skl2onnx", "transformers"):
        try:
            out[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            pass
    return out


MARKER = ".onnxforge-incomplete"
LISTING = ".onnxforge-release.json"
KNOWN = ("model.onnx", "model.onnx.data", "manifest.json", "report.json", "report.md", "report.html", "junit.xml")


def planned_files(cfg: ReleaseConfig | None, keep_steps: bool = True) -> list[str]:
    """What a release of ``cfg`` writes into OUT_DIR (a name ending in / : a folder it fills)."""
    names = list(KNOWN)
    if cfg is not None:
        if keep_steps:
            names += [f"steps/{i:02d}-{sc.run.replace('.', '-')}.onnx{x}" for i, sc in enumerate(cfg.steps)
                      for x in ("", ".data")]
        names += [f"{p.target}/" for p in cfg.packages]
        if str(cfg.model.get("task", "")).endswith("-with-past"):  # a decoder with its cache: publish()'s companions
            names += [*SIDE_FILES, ENCODER_FILE]
    return names


def check_out_dir(out: Path, force: bool, planned=KNOWN) -> None:
    """Before anything (under OUT_DIR's lock): OUT_DIR is missing, or a folder where the
    release loses nothing. Each file it would write there (``planned``) is absent or was
    written by the previous release (its listing); a previous release is replaced only
    with --force, and a file of anyone else's is never replaced, --force or not."""
    if out.exists() and not out.is_dir():
        raise BadInputError(f"release output {out} is a file, not a folder", hint="give a folder path with -o")
    if not out.is_dir():
        return
    previous = previous_release(out)
    if previous is not None and not force:
        raise BadInputError(f"{out} already holds a release", hint="pass --force to replace it")
    lost = next(iter(_not_ours(out, planned, set(previous or ()))), None)
    if lost is not None:
        raise BadInputError(f"{out} holds {lost.relative_to(out)}, which is not from an onnxforge release: the "
                            "release would overwrite it", hint="pick another folder with -o (a missing or empty "
                            "one, or one that holds a release), or move that file away")


def _not_ours(out: Path, names, owned: set[str]):
    """The files under ``out`` at ``names`` (a folder name: every file in it) that no
    onnxforge release listed."""
    for name in names:
        p = out / name
        found = [f for f in p.rglob("*") if not f.is_dir()] if name.endswith("/") and p.is_dir() else [p]
        yield from (f for f in found if (f.is_symlink() or f.exists()) and str(f.relative_to(out)) not in owned)


def is_onnxforge_json(path: Path, kind: str) -> bool:
    """``path`` is an onnxforge JSON envelope of this kind (a report it wrote), not a user's file."""
    try:
        if path.stat().st_size > 64 * 1024**2:
            return False
        doc = json.loads(path.read_text())
    except (OSError, ValueError, RecursionError):
        return False
    return isinstance(doc, dict) and doc.get("kind") == kind and isinstance(doc.get("result"), dict)


def previous_release(out: Path) -> list[str] | None:
    """The files the previous onnxforge release in ``out`` wrote, by its listing (a
    release from before listings: its known outputs, when its report.json is one of
    ours); None when ``out`` holds no release. Names that leave ``out`` are dropped."""
    try:
        names = json.loads((out / LISTING).read_text()).get("files")
    except (OSError, ValueError, AttributeError, RecursionError):
        names = None
    if not isinstance(names, list):
        if not is_onnxforge_json(out / "report.json", "release"):
            return None
        names = [*KNOWN, *(f"steps/{p.name}" for p in (out / "steps").glob("[0-9][0-9]-*.onnx*"))]
    return [n for n in names if isinstance(n, str) and n and not Path(n).is_absolute() and ".." not in Path(n).parts]


def check_inputs_kept(out: Path, inputs) -> None:
    """A release may be written into the folder that holds its inputs (the README's
    example does), but never over one: a source named model.onnx in OUT would be
    replaced by the released model, --force or not."""
    ins = input_files(*inputs)
    for name in KNOWN:
        hit = next((i for i in ins if same_file(out / name, i)), None)
        if hit is not None:
            raise BadInputError(f"{out / name} is an input of this release: the release would write its {name} "
                                f"over it", hint="give -o another folder, or rename the input")


@contextlib.contextmanager
def stage_dir(out: Path):
    with scratch_dir(out.resolve()) as stage:  # beside OUT_DIR: moving in is a rename
        yield stage


def swap_in(stage: Path, out: Path, *, keep_steps: bool, inputs) -> None:
    ins = input_files(*inputs)
    listed = previous_release(out) if out.is_dir() else None
    new = sorted(p for p in stage.rglob("*") if p.is_file() and not p.name.startswith(".")
                 and (keep_steps or p.parent != stage / "steps"))
    new.sort(key=lambda p: p.name == "report.json")  # the verdict last
    rels = [str(p.relative_to(stage)) for p in new]
    # check_out_dir ran first; a file that appeared since (written by hand, under our lock) is still not ours
    lost = next(iter(_not_ours(out, [r for r in rels if not any(same_file(out / r, i) for i in ins)],
                               set(listed or ()))), None)
    if lost is not None:
        raise BadInputError(f"{out} holds {lost.relative_to(out)}, which is not from an onnxforge release: the "
                            "release was not moved in, so as not to overwrite it",
                            hint="move that file away and run the release again")
    make_dirs(out)
    atomic_write_text(out / MARKER, "a release is being written here; if this file stays, it did not finish\n")
    # until the end the listing names the old files and the new: a move cut short leaves nothing unlisted
    atomic_write_text(out / LISTING, json.dumps({"files": sorted({*(listed or ()), *rels})}, indent=1) + "\n")
    home = out.resolve()
    for old in (out / n for n in listed or ()):  # a listing's folder that links elsewhere is not followed
        inside = old.parent.resolve() == home or home in old.parent.resolve().parents
        if inside and old.is_file() and not any(same_file(old, i) for i in ins):
            old.unlink()
    moved = []
    for p, rel in zip(new, rels):
        if any(same_file(out / rel, i) for i in ins):  # check_inputs_kept ran first; an input is never replaced
            continue
        make_dirs((out / rel).parent)
        os.replace(p, out / rel)
        moved.append(rel)
    atomic_write_text(out / LISTING, json.dumps({"files": moved}, indent=1) + "\n")
    (out / MARKER).unlink(missing_ok=True)


def rebase(obj, old: Path, new: Path):
    """``obj`` (a report: dataclasses, containers, strings) with every path under ``old``
    moved under ``new``; the rest as it was."""
    if isinstance(obj, PurePath):
        return Path(rebase(str(obj), old, new))
    if isinstance(obj, str):
        head = str(old)
        return str(new) + obj[len(head):] if obj == head or obj.startswith(head + os.sep) else obj
    if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        return dataclasses.replace(obj, **{f.name: rebase(getattr(obj, f.name), old, new)
                                           for f in dataclasses.fields(obj) if f.init})
    if isinstance(obj, (list, tuple)):
        return type(obj)(rebase(x, old, new) for x in obj)
    if isinstance(obj, dict):
        return {k: rebase(v, old, new) for k, v in obj.items()}
    return obj


def input_hashes(cfg: ReleaseConfig | None, config) -> dict:

    if isinstance(config, ConfigData):  # no file: the hash of the data, as canonical JSON
        text = json.dumps(config.tables, sort_keys=True, default=str).encode()
        own = {f"config:{DICT_CONFIG}": hashlib.sha256(text).hexdigest()}
    else:
        own = {f"config:{Path(config).name}": sha256_file(config)} if Path(config).is_file() else {}
    if cfg is None:
        return own
    files = {}
    head = cfg.source if Path(cfg.source).is_file() else cfg.source.rpartition(":")[0]  # a file, or a factory's file
    if Path(head).is_file():
        files["source"] = head
    for k in ("weights", "sample"):
        if isinstance(cfg.model.get(k), str):
            files[k] = cfg.model[k]
    for k in ("calibration", "validation"):
        v = getattr(cfg.data, k)
        if v and Path(v).is_file():
            files[k] = v
    return {**own, **{f"{k}:{Path(v).name}": sha256_file(v) for k, v in files.items()}}


def publish(final: Path, out: Path, cfg: ReleaseConfig, steps, inputs_sha, vers) -> dict:
    """Copy the final model to OUT/model.onnx (``out`` is the stage; copies first, then
    renames: never a half-written model.onnx) and write its manifest. A decoder with its
    cache takes its companions along (its encoder, config and tokenizer files: the folder
    opens with Hugging Face loaders), listed in the manifest's ``files``."""

    target = out / "model.onnx"
    m = load_onnx(final, graph_only=True)
    with scratch_dir(target) as tmp:
        shutil.copy(final, tmp / final.name)
        for f in external_data_files(m):
            shutil.copy(final.parent / f, tmp / f)
        publish_model(tmp / final.name, target)
    side = {}
    for f in companions(final):  # a decoder with its cache: its encoder, config and tokenizer files beside it
        shutil.copy(f, out / f.name)
        side[f.name] = sha256_file(out / f.name)
    ins, outs = model_io_specs(load_onnx(target, graph_only=True))
    opset = next((o.version for o in m.opset_import if o.domain in ("", "ai.onnx")), 0)
    digest = sha256_file(target)
    manifest = {
        "schema_version": 1, "model": "model.onnx", "sha256": digest,
        "inputs": [{"name": s.name, "dtype": s.dtype, "shape": list(s.shape)} for s in ins],
        "outputs": [{"name": s.name, "dtype": s.dtype, "shape": list(s.shape)} for s in outs],
        "opset": opset, "lineage": list(steps[-1].artifact.lineage) if steps and steps[-1].artifact else [],
        "source": dict(inputs_sha), "versions": vers,
        **({"files": side} if side else {}),
    }
    atomic_write_text(out / "manifest.json", json.dumps(manifest, indent=2) + "\n")
    return {"model.onnx": digest, **side, "manifest.json": sha256_file(out / "manifest.json")}


def write_reports(report: ReleaseReport, out: Path, *, summary: bool = True) -> None:
    atomic_write_text(out / "report.json", dumps(report, "release") + "\n")
    md = markdown(report)
    atomic_write_text(out / "report.md", md)
    write_html(out / "report.html", report)  # the verdict with its figures, one file that opens offline
    atomic_write_text(out / "junit.xml", junit(report))
    path = os.environ.get("GITHUB_STEP_SUMMARY")
    if summary and path:
        with open(path, "a") as f:
            f.write(md + "\n")
