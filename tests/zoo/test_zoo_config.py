"""The zoo file is checked completely before any work: every bad key or value is one
`error:` line naming it, a `hint:`, and the right exit code (2 usage, 3 missing file)."""

import json
import os
import subprocess
import sys

import pytest

from conftest import ROOT
from zoofix import make_zoo


@pytest.fixture
def zoo(tmp_path):
    return make_zoo(tmp_path)


BAD = [
    ('[zoo]\nreleases = ["models/*/release.toml"]\nmax_retry = 1\n', 2, "zoo.max_retry", "max_retries"),
    ('[zoo]\nreleases = "models/*/release.toml"\n', 2, "zoo.releases", "list"),
    ('[zoo]\nreleases = ["models/*/release.toml"]\nmax_retries = -1\n', 2, "zoo.max_retries", "greater than"),
    ('[zoo]\nreleases = ["models/*/release.toml"]\nmax_retries = true\n', 2, "zoo.max_retries", "integer"),
    ('[zoo]\nreleases = ["models/*/release.toml"]\ncpus_per_release = nan\n', 2, "zoo.cpus_per_release", "finite"),
    ('[zooo]\nreleases = []\n', 2, "[zooo]", "did you mean 'zoo'"),
    ('[zoo]\nreleases = []\n', 2, "zoo.releases is empty", "releases ="),
    ('releases = ["a"]\n[zoo]\n', 2, "unknown section [releases]", ""),
    ('[zoo]\nreleases = ["models/*/release.toml"]\n[[targets]]\nprovider = "cpu"\n', 2, "targets[0] has no name", ""),
    ('[zoo]\nreleases = ["models/*/release.toml"]\n[[targets]]\nname = "a b"\n', 2, "targets[0].name", "letters"),
    ('[zoo]\nreleases = ["models/*/release.toml"]\n[[targets]]\nname = "a"\nresources = { GPU = "1" }\n', 2,
     "targets[0].resources.GPU", "number"),
    ('[zoo]\nreleases = ["models/*/release.toml"]\n[[targets]]\nname = "a"\nrunson = ["x"]\n', 2,
     "targets[0].runson", "runs_on"),
    ('[zoo]\nreleases = ["models/*/release.toml"]\n[[targets]]\nname = "a"\n[[targets]]\nname = "a"\n', 2,
     "targets[1].name", "its own name"),
    ('[zoo]\nreleases = ["models/*/release.toml"]\ntargets = 3\n', 2, "zoo.targets", ""),
    ('[zoo]\nreleases = ["models/*/release.toml"]\n[[targets]]\nname = "a"\nprovider = "cudaa"\n', 2,
     "targets[0].provider", "cuda"),
    ('[zoo]\nreleases = ["models/*/release.toml"]\nkeep_steps = "no"\n', 2, "zoo.keep_steps", "true or false"),
    ('[zoo]\nreleases = ["nowhere/*/release.toml"]\n', 3, "no file matches", "relative to the zoo file"),
    ('[zoo]\nreleases = ["missing.toml"]\n', 3, "not found", "relative to the zoo file"),
    ('[zoo\n', 2, "not valid TOML", ""),
]


@pytest.mark.parametrize("text,code,where,hint", BAD, ids=[b[2] for b in BAD])
def test_bad_zoo_file_is_one_line_with_the_right_exit_code(cli, zoo, tmp_path, text, code, where, hint):
    zoo.write_text(text)
    out = tmp_path / "out"
    r = cli("zoo", zoo, "-o", out)
    assert r.code == code, r.err
    errors = [line for line in r.err.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and where in errors[0], r.err
    assert "hint:" in r.err and hint in r.err, r.err
    assert "Traceback" not in r.err
    # the verdict is written on this exit too: CI sees an error, not nothing
    rep = json.loads((out / "zoo-report.json").read_text())["result"]
    assert rep["status"] == "error" and rep["exit_code"] == code and where in rep["error"]
    assert 'errors="1"' in (out / "junit.xml").read_text()


def test_duplicate_release_names_and_unknown_only(cli, zoo, tmp_path):
    other = tmp_path / "more" / "alpha"
    other.mkdir(parents=True)
    (other / "release.toml").write_text((tmp_path / "models" / "alpha" / "release.toml").read_text())
    zoo.write_text('[zoo]\nreleases = ["models/*/release.toml", "more/*/release.toml"]\n')
    r = cli("zoo", zoo, "-o", tmp_path / "o1")
    assert r.code == 2 and "two releases are named 'alpha'" in r.err and "rename one" in r.err
    zoo.write_text('[zoo]\nreleases = ["models/*/release.toml"]\n[[targets]]\nname = "cpu"\n'
                   '[[targets]]\nname = "cpu2"\n')
    # NAME is that release on every target, as the help says; NAME-TARGET is one of them
    r = cli("zoo", zoo, "--executor", "matrix", "--only", "alpha")
    assert r.code == 0, r.err
    assert sorted(e["release"] for e in json.loads(r.out)["include"]) == ["alpha-cpu", "alpha-cpu2"]
    r = cli("zoo", zoo, "--executor", "matrix", "--only", "alpha-cpu2", "--only", "alpha")
    assert r.code == 0 and len(json.loads(r.out)["include"]) == 2
    r = cli("zoo", zoo, "-o", tmp_path / "o2", "--only", "alhpa")
    assert r.code == 2 and "--only alhpa" in r.err and "releases: alpha, alpha-cpu" in r.err


def test_a_release_may_not_land_on_the_verdict(cli, zoo, tmp_path):
    d = tmp_path / "models" / "junit.xml"
    d.mkdir()
    (d / "release.toml").write_text("[model]\n")
    r = cli("zoo", zoo, "-o", tmp_path / "o")
    assert r.code == 2 and "OUT/junit.xml, where the zoo's verdict goes" in r.err


def test_usage_errors_of_the_command(cli, zoo, tmp_path):
    r = cli("zoo", zoo, "-o", tmp_path / "o", "--executor", "slurm")
    assert r.code == 2 and "--executor 'slurm'" in r.err and "local, ray or matrix" in r.err
    r = cli("zoo", zoo, "--ray-address", "auto")
    assert r.code == 2 and "--ray-address needs --executor ray" in r.err
    r = cli("zoo", zoo, "--executor", "ray", "--ray-address", "auto", "--jobs", "2")
    assert r.code == 2 and "--jobs sizes a local Ray instance" in r.err and "hint:" in r.err
    r = cli("zoo", zoo, "--executor", "matrix", "--jobs", "2")
    assert r.code == 2 and "--jobs" in r.err
    r = cli("zoo", tmp_path / "nope.toml", "-o", tmp_path / "o3")
    assert r.code == 3 and "zoo file not found" in r.err
    (tmp_path / "afile").write_text("x")
    r = cli("zoo", zoo, "-o", tmp_path / "afile")
    assert r.code == 3 and "is a file" in r.err


def test_globs_paths_and_names(zoo, tmp_path):
    from onnxforge.zoo.config import load_zoo

    extra = tmp_path / "single.toml"
    extra.write_text((tmp_path / "models" / "beta" / "release.toml").read_text().replace('"model.onnx"',
                                                                                     '"models/beta/model.onnx"'))
    zoo.write_text('[zoo]\nreleases = ["models/*/release.toml", "single.toml", "models/alpha/release.toml"]\n'
                   '[[targets]]\nname = "cpu"\n[[targets]]\nname = "vnni"\nprovider = "cpu"\n'
                   'resources = { avx512_vnni = 1 }\nruns_on = ["self-hosted", "avx512"]\n')
    cfg = load_zoo(zoo)
    assert [e.folder for e in cfg.entries] == ["alpha-cpu", "alpha-vnni", "beta-cpu", "beta-vnni", "gamma-cpu",
                                               "gamma-vnni", "single-cpu", "single-vnni"]
    assert cfg.targets[1].resources == {"avx512_vnni": 1.0} and cfg.targets[1].runs_on == ("self-hosted", "avx512")
    assert all(e.config.startswith(str(tmp_path)) for e in cfg.entries)


def test_help_and_a_local_zoo_never_import_ray():
    code = ("import sys\nfrom onnxforge.cli.app import main\n"
            "for args in (['--help'], ['zoo', '--help'], ['zoo', 'merge', '--help']):\n"
            "    try:\n        main(args)\n    except SystemExit:\n        pass\n"
            "import onnxforge.zoo.run, onnxforge.zoo.local, onnxforge.zoo.merge, onnxforge.zoo.report\n"
            "print('RAY', 'ray' in sys.modules)\n")
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env)
    assert "RAY False" in r.stdout, r.stdout + r.stderr
