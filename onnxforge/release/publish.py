"""What a release writes: the model and its manifest (only when every gate passes),
and the reports (always): report.json, report.md (also appended to
$GITHUB_STEP_SUMMARY) and junit.xml. The hashes of every input file and the tool
versions go into both."""

from __future__ import annotations

import json
import os
from pathlib import Path

from onnxforge.release.config import ReleaseConfig
from onnxforge.types import ReleaseReport


def versions() -> dict:
    from importlib import metadata

    out = {}
    for name in ("onnxforge", "onnx", "onnxruntime", "onnxsim", "numpy", "torch", "onnxscript", "scikit-learn",
                 "skl2onnx", "transformers"):
        try:
            out[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            pass
    return out


def input_hashes(cfg: ReleaseConfig) -> dict:
    from onnxforge.fileio import sha256_file

    files = {"config": cfg.path}
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
    return {f"{k}:{Path(v).name}": sha256_file(v) for k, v in files.items()}


def publish(final: Path, out: Path, cfg: ReleaseConfig, steps, inputs_sha, vers) -> dict:
    """Copy the final model to OUT/model.onnx (copies first, then renames: never a
    half-written model.onnx) and write its manifest."""
    import shutil

    from onnxforge.fileio import atomic_write_text, external_data_files, load_onnx, publish_model, scratch_dir, sha256_file
    from onnxforge.specs import model_io_specs

    target = out / "model.onnx"
    m = load_onnx(final, load_external_data=False)
    with scratch_dir(target) as tmp:
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
        "source": dict(inputs_sha), "versions": vers,
    }
    atomic_write_text(out / "manifest.json", json.dumps(manifest, indent=2) + "\n")
    return {"model.onnx": digest, "manifest.json": sha256_file(out / "manifest.json")}


def write_reports(report: ReleaseReport, out: Path) -> None:
    from onnxforge.fileio import atomic_write_text
    from onnxforge.report import dumps
    from onnxforge.report.junit import junit
    from onnxforge.report.markdown import markdown

    atomic_write_text(out / "report.json", dumps(report, "release") + "\n")
    md = markdown(report)
    atomic_write_text(out / "report.md", md)
    atomic_write_text(out / "junit.xml", junit(report))
    summary = os.environ.get("GITHUB_STEP_SUMMARY")
    if summary:
        with open(summary, "a") as f:
            f.write(md + "\n")
