"""zoo-entry.json is written and read through one class (merge.ZooEntry): what a zoo
worker writes, `zoo merge` reads back; what it would not write, merge refuses."""

import json

import pytest

from onnxforge.core.errors import BadInputError
from onnxforge.report import read_report
from onnxforge.zoo.merge import ZooEntry, phases_of
from onnxforge.zoo.worker import _write_entry


def _info(**changes):
    info = {"run": "r1", "name": "alpha", "target": None, "folder": "alpha", "config": "/z/alpha/release.toml",
            "node": "n1", "pid": 7, "attempts": 1, "reported": True,
            "timeline": [{"what": "benchmark", "start": 10.0, "end": 11.5, "waited": 0.25}]}
    return {**info, **changes}


def test_what_a_worker_writes_merge_reads_back(tmp_path):
    _write_entry(tmp_path, _info(status="error", exit_code=3, failure="bad config", hint="fix it"))
    entry = read_report(tmp_path / "zoo-entry.json", ZooEntry, "zoo-entry", "h")
    assert entry.attempts == 1 and entry.exit_code == 3 and entry.timeline[0].waited == 0.25
    assert phases_of(tmp_path)[0]["start"] == 10.0


def test_a_worker_cannot_write_a_key_merge_does_not_know(tmp_path):
    with pytest.raises(TypeError):
        _write_entry(tmp_path, _info(verdict="passed"))


@pytest.mark.parametrize("change, key", [({"pid": "7"}, "result.pid"), ({"reported": 1}, "result.reported"),
                                         ({"timeline": [{"what": "b", "start": 1.0}]}, "result.timeline.0.end")])
def test_merge_refuses_what_a_worker_would_not_write(tmp_path, change, key):
    _write_entry(tmp_path, _info())
    env = json.loads((tmp_path / "zoo-entry.json").read_text())
    env["result"].update(change)
    (tmp_path / "zoo-entry.json").write_text(json.dumps(env))
    with pytest.raises(BadInputError, match=f"zoo-entry.json: key {key}"):
        read_report(tmp_path / "zoo-entry.json", ZooEntry, "zoo-entry", "h")
