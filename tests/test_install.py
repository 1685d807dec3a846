"""onnxforge installed the way a user's repository installs it: a wheel built with
`python -m build`, into a fresh virtual environment (no system site packages, no
checkout on sys.path), run from a folder outside the repository."""

from __future__ import annotations

import shutil
import subprocess
import sys
import tarfile
import zipfile
from pathlib import Path

import pytest
from venvs import clean_env, install, make_venv

pytestmark = [pytest.mark.slow, pytest.mark.long]  # builds a wheel, pip-installs it into a fresh venv

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def dist(tmp_path_factory) -> Path:
    """The wheel and sdist, built from a copy of the sources (building in the checkout
    would leave build/ and egg-info there)."""
    src = tmp_path_factory.mktemp("src")
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(ROOT / name, src / name)
    shutil.copytree(ROOT / "onnxforge", src / "onnxforge", ignore=shutil.ignore_patterns("__pycache__"))
    out = tmp_path_factory.mktemp("dist")
    r = subprocess.run([sys.executable, "-m", "build", "--no-isolation", "-o", str(out), str(src)],
                       capture_output=True, text=True, env=clean_env(), timeout=300)
    assert r.returncode == 0, r.stdout[-2000:] + r.stderr[-2000:]
    return out


def test_wheel_and_sdist_hold_every_package_file(dist):
    """Every file of the package (the .py modules, py.typed, the JSON Schemas) is in the
    wheel and the sdist; nothing from tests/ or fixtures/ is."""
    wanted = {p.relative_to(ROOT).as_posix() for p in (ROOT / "onnxforge").rglob("*")
              if p.is_file() and "__pycache__" not in p.parts and p.suffix != ".pyc"}
    assert {"onnxforge/py.typed", "onnxforge/schemas/release.schema.json"} <= wanted
    (wheel,) = dist.glob("onnxforge-*.whl")
    names = set(zipfile.ZipFile(wheel).namelist())
    assert wanted - names == set(), "missing from the wheel (add them to [tool.setuptools.package-data])"
    assert not [n for n in names if n.split("/")[0] in ("tests", "fixtures", "benchmarks")]
    (sdist,) = dist.glob("onnxforge-*.tar.gz")
    with tarfile.open(sdist) as t:
        snames = {n.split("/", 1)[1] for n in t.getnames() if "/" in n}
    assert wanted - snames == set()


def test_wheel_installs_and_runs_outside_the_repository(dist, tmp_path):
    """The wheel in a fresh venv with the base dependencies (constraints.txt), plus the
    three packages a scikit-learn convert needs: --version, and a real convert and
    inspect run from a folder that is not the checkout."""
    (wheel,) = dist.glob("onnxforge-*.whl")
    venv = tmp_path / "venv"
    env = clean_env()
    py = make_venv(venv)
    base_s = install(py, ["-c", str(ROOT / "constraints.txt"), str(wheel)])
    more_s = install(py, ["-c", str(ROOT / "constraints.txt"), "scikit-learn", "skl2onnx", "skops"])
    print(f"\ninstall: wheel + base deps {base_s:.1f} s, + sklearn/skl2onnx/skops {more_s:.1f} s")
    work = tmp_path / "user-repo"
    work.mkdir()
    for name in ("model.skops", "sample.npy"):
        shutil.copy(ROOT / "fixtures" / "example-sklearn" / name, work / name)
    exe = str(venv / "bin" / "onnxforge")

    def run(*args: str) -> subprocess.CompletedProcess:
        return subprocess.run([exe, *args], cwd=work, capture_output=True, text=True, env=env, timeout=300)

    r = run("--version")
    assert r.returncode == 0 and r.stdout.strip() == "onnxforge 0.1.0", r.stdout + r.stderr
    where = subprocess.run([str(venv / "bin" / "python"), "-c", "import onnxforge; print(onnxforge.__file__)"],
                           cwd=work, capture_output=True, text=True, env=env)
    assert Path(where.stdout.strip()).is_relative_to(venv), where.stdout  # the installed copy, not the checkout
    r = run("convert", "sklearn", "model.skops", "--sample", "sample.npy", "-o", "m.onnx")
    assert r.returncode == 0, r.stderr[-3000:]
    r = run("inspect", "m.onnx", "--json")
    assert r.returncode == 0 and '"kind": "inspect"' in r.stdout, r.stderr
    r = run("schema", "release")
    assert r.returncode == 0 and '"$schema"' in r.stdout, r.stderr  # the installed package's data
