"""Data loss: a release or a zoo writes only into a folder that is missing, empty, or
holds what an earlier onnxforge run wrote there. A file of anyone else's at a name it
would write is refused (exit 3, naming the file), --force or not, and the refused run
writes nothing: no report, no scratch folder, no lock file (checked by run_case)."""

from __future__ import annotations

import shutil
from pathlib import Path

from cases import Case, release_config

RELEASE = '[model]\nsource = "tiny.onnx"\nframework = "onnx"\n\n[[steps]]\nrun = "simplify"\n'


def _folder(ws: Path, name: str, files: dict[str, str]) -> Path:
    """ws/in/NAME holding the tiny model, a release config and ``files`` (a user's own)."""
    d = ws / "in" / name
    d.mkdir(exist_ok=True)
    shutil.copy(ws / "in" / "tiny.onnx", d / "tiny.onnx")
    (d / "release.toml").write_text(RELEASE)
    for rel, text in files.items():
        (d / rel).parent.mkdir(parents=True, exist_ok=True)
        (d / rel).write_text(text)
    return d


def _user_dir(ws: Path) -> None:
    d = ws / "in" / "userdir"
    d.mkdir(exist_ok=True)
    (d / "report.md").write_text("# my own notes\n")


def _own_folder(ws: Path) -> None:
    _folder(ws, "proj", {"junit.xml": "<testsuites/>\n"})


def _forged_listing(ws: Path) -> None:
    # a listing makes the folder a release, but report.html is not in it: still the user's
    _folder(ws, "listed", {".onnxforge-release.json": '{"files": ["model.onnx"]}\n', "report.html": "<p>mine</p>\n"})


def _zoo_folder(ws: Path) -> None:
    d = _folder(ws, "zoo1", {"report.html": "<p>my dashboard</p>\n"})
    (d / "zoo.toml").write_text('[zoo]\nreleases = ["release.toml"]\n')


def _zoo_release_folder(ws: Path) -> None:
    d = _folder(ws, "zoo2", {})
    (d / "zoo.toml").write_text('[zoo]\nreleases = ["release.toml"]\n')
    out = ws / "in" / "zoo2out" / "zoo2"  # the release's folder: named after its config's folder
    out.mkdir(parents=True, exist_ok=True)
    (out / "report.md").write_text("# my notes on zoo2\n")


def _zoo_report_folder(ws: Path) -> None:
    out = ws / "in" / "zoo3out"
    out.mkdir(exist_ok=True)
    (out / "junit.xml").write_text("<testsuites/>\n")


CASES = [
    Case("release over a user's report.md", lambda ws: ["release", release_config(ws, "dl"), "-o",
                                                         str(ws / "in" / "userdir")], 3, "report.md",
         setup=_user_dir),
    Case("release --force over a user's report.md", lambda ws: ["release", release_config(ws, "dl"), "-o",
                                                                 str(ws / "in" / "userdir"), "--force"], 3,
         "report.md", setup=_user_dir),
    Case("release -o its config's folder holding a user's junit.xml",
         lambda ws: ["release", str(ws / "in" / "proj" / "release.toml"), "-o", str(ws / "in" / "proj"), "--force"],
         3, "junit.xml", setup=_own_folder),
    Case("release --force over a listing that does not list a user's file",
         lambda ws: ["release", str(ws / "in" / "listed" / "release.toml"), "-o", str(ws / "in" / "listed"),
                     "--force"], 3, "report.html", setup=_forged_listing),
    Case("zoo -o the zoo's folder --force over a user's report.html",
         lambda ws: ["zoo", str(ws / "in" / "zoo1" / "zoo.toml"), "-o", str(ws / "in" / "zoo1"), "--force"], 3,
         "report.html", setup=_zoo_folder),
    Case("zoo --force over a user's report.md in a release folder",
         lambda ws: ["zoo", str(ws / "in" / "zoo2" / "zoo.toml"), "-o", str(ws / "in" / "zoo2out"), "--force"], 3,
         "report.md", setup=_zoo_release_folder),
    Case("zoo --force over a user's junit.xml",
         lambda ws: ["zoo", str(ws / "in" / "zoo2" / "zoo.toml"), "-o", str(ws / "in" / "zoo3out"), "--force"], 3,
         "junit.xml", setup=lambda ws: (_zoo_release_folder(ws), _zoo_report_folder(ws))),
]
