"""The same zoo through every executor gives the same verdict: local worker processes,
Ray tasks on a real local Ray instance (2 CPUs), and a CI matrix whose jobs each run one
release and whose last job merges their folders."""

import json
import os
import shutil
import subprocess
import sys

import pytest

from conftest import ROOT
from zoofix import make_zoo, verdict_view, zoo_report

ENV = {**os.environ, "PYTHONPATH": str(ROOT)}


def zoo_cmd(*args) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "onnxforge", "zoo", *map(str, args)], capture_output=True, text=True,
                          env=ENV)


def test_matrix_json_one_entry_per_release_and_target(cli, tmp_path):
    zoo = make_zoo(tmp_path, extra='[[targets]]\nname = "cpu"\n[[targets]]\nname = "vnni"\nprovider = "cpu"\n'
                                  'resources = { avx512_vnni = 1 }\nruns_on = ["self-hosted", "avx512"]\n')
    r = cli("zoo", zoo, "--executor", "matrix")
    assert r.code == 0, r.err
    assert r.out.count("\n") == 1  # one line: what $GITHUB_OUTPUT takes
    m = json.loads(r.out)
    assert [e["release"] for e in m["include"]] == ["alpha-cpu", "alpha-vnni", "beta-cpu", "beta-vnni", "gamma-cpu",
                                                    "gamma-vnni"]
    assert m["include"][1] == {"release": "alpha-vnni", "name": "alpha", "target": "vnni",
                               "config": "models/alpha/release.toml", "provider": "cpu",
                               "runs-on": ["self-hosted", "avx512"]}
    assert m["include"][0]["runs-on"] == ["ubuntu-latest"] and m["include"][0]["provider"] is None
    assert not (tmp_path / "zoo-out").exists()  # printing the matrix writes nothing
    r = cli("zoo", zoo, "--executor", "matrix", "--only", "beta-vnni")
    assert r.code == 0, r.err
    assert [e["release"] for e in json.loads(r.out)["include"]] == ["beta-vnni"]


def test_matrix_refuses_more_jobs_than_github_runs(cli, tmp_path):
    names = tuple(f"m{i:03d}" for i in range(130))
    for n in names:
        (tmp_path / "models" / n).mkdir(parents=True)
        (tmp_path / "models" / n / "release.toml").write_text("[model]\n")
    zoo = tmp_path / "zoo.toml"
    zoo.write_text('[zoo]\nreleases = ["models/*/release.toml"]\n[[targets]]\nname = "a"\n[[targets]]\nname = "b"\n')
    r = cli("zoo", zoo, "--executor", "matrix")
    assert r.code == 2 and "260 releases" in r.err and "at most 256" in r.err and "--executor ray" in r.err


@pytest.fixture(scope="module")
def zoo_file(tmp_path_factory):
    return make_zoo(tmp_path_factory.mktemp("zoo"))


@pytest.fixture(scope="module")
def local_verdict(zoo_file, tmp_path_factory):
    out = tmp_path_factory.mktemp("local") / "out"
    r = zoo_cmd(zoo_file, "-o", out, "--jobs", "2")
    assert r.returncode == 1, r.stderr
    return zoo_report(out)


@pytest.mark.slow
@pytest.mark.xdist_group("ray")  # shares local_verdict with test_ray_equals_local
def test_matrix_jobs_and_merge_equal_local(cli, zoo_file, local_verdict, tmp_path):
    """Each matrix entry as its own job (its own OUT, as on its own runner), each
    job's OUT/RELEASE uploaded, all downloaded into one folder, then merged. The jobs run
    in this process (the verdict is read from their folders either way): as children
    they started five interpreters, 11-15 s of the test."""
    r = cli("zoo", zoo_file, "--executor", "matrix")
    entries = json.loads(r.out)["include"]
    merged = tmp_path / "merged"
    for i, e in enumerate(entries):
        job_out = tmp_path / f"job{i}" / "out"
        r = cli("zoo", zoo_file, "--only", e["release"], "-o", job_out)
        assert r.code == (1 if e["name"] == "gamma" else 0), r.err  # the job's own status is honest
        shutil.copytree(job_out / e["release"], merged / e["release"])  # upload-artifact + download-artifact
    r = cli("zoo", "merge", *sorted(merged.glob("*/report.json")), "-o", merged, "--zoo", zoo_file)
    assert r.code == 1, r.err
    rep = zoo_report(merged)
    assert rep["executor"] == "matrix" and [x["folder"] for x in rep["releases"]] == ["alpha", "beta", "gamma"]
    assert verdict_view(rep) == verdict_view(local_verdict)


@pytest.mark.slow
@pytest.mark.xdist_group("ray")  # with test_zoo_ray.py: one Ray instance at a time
def test_ray_equals_local(zoo_file, local_verdict, tmp_path):
    pytest.importorskip("ray", reason="the Ray executor needs the scale extra: pip install 'onnxforge[scale]'")
    out = tmp_path / "out"
    r = zoo_cmd(zoo_file, "-o", out, "--executor", "ray", "--jobs", "2")
    assert r.returncode == 1, r.stderr
    rep = zoo_report(out)
    assert rep["executor"] == "ray" and rep["jobs"] == 2
    assert verdict_view(rep) == verdict_view(local_verdict)
    phases = sorted(rep["timeline"], key=lambda p: p["start"])
    assert len(phases) == 3 and rep["overlaps"] == 0
    for a, b in zip(phases, phases[1:]):
        assert a["end"] <= b["start"]
    assert not list(out.glob(".onnxforge-*"))
