"""The spellings users bring from Polygraphy, onnxsim, skl2onnx, Optimum and perf_test:
every row of docs/migrating.md's alias table, flag by flag and command by command, must parse
to the same options as onnxforge's own spelling; then a few end to end."""

import re
import shlex

import numpy as np
import pytest

from conftest import ROOT, json_result
from onnxforge.cli.app import _hoist, _several_values, root_command
from onnxforge.core.errors import UsageError

# A positional argument (and -o) each command needs before its options parse.
POSITIONAL = {
    "validate": ["a.onnx", "b.onnx"], "benchmark": ["a.onnx"], "simplify": ["a.onnx", "-o", "b.onnx"],
    "convert torch": ["m.py:build", "-o", "b.onnx"], "convert sklearn": ["m.skops", "-o", "b.onnx"],
    "quantize dynamic": ["a.onnx", "-o", "b.onnx"], "quantize static": ["a.onnx", "-o", "b.onnx"],
    "quantize fp16": ["a.onnx", "-o", "b.onnx"], "package": ["a.onnx", "-o", "out"], "serve-check": ["out"],
}


def alias_rows() -> list[tuple[str, str, str, str]]:
    """(coming from, their spelling, ours, command) for every command in every row of docs/migrating.md's table."""
    section = (ROOT / "docs" / "migrating.md").read_text()
    rows = []
    for line in section.splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if len(cells) != 4 or not cells[1].startswith("`"):
            continue
        for command in cells[3].split(","):
            rows.append((cells[0], cells[1].strip("`"), cells[2].strip("`"), command.strip()))
    return rows


def test_the_table_is_there():
    rows = alias_rows()
    assert len(rows) >= 20
    assert {r[0] for r in rows} == {"Polygraphy", "onnxsim", "skl2onnx", "Optimum", "perf_test"}


def parse(command: str, args: list[str]):
    """What the command receives: our argv rewriting, then Click's parser (nothing runs)."""
    from onnxforge.cli.stepcmd import options_from_cli
    from onnxforge.steps import STEPS, TOOLS

    argv = _several_values(_hoist([*command.split(), *POSITIONAL[command], *args]))
    cmd = root_command()
    ctx = cmd.make_context("onnxforge", list(argv))
    while hasattr(cmd, "commands"):  # the group, then convert / quantize
        name, cmd, rest = cmd.resolve_command(ctx, [*getattr(ctx, "_protected_args", ()), *ctx.args])
        ctx = cmd.make_context(name, rest, parent=ctx)
    params = dict(ctx.params)
    key = command.replace(" ", ".")
    step = STEPS.get(key) or TOOLS.get(key)
    if step is not None:  # the step's options object, validated as the command does
        for k in ("json_", "fmt", "output", "print_step", "report", "source"):
            params.pop(k, None)
        return options_from_cli(step, params)
    if "check_stat" in params:
        from onnxforge.checks.compare import check_stat_name

        params["check_stat"] = check_stat_name(params["check_stat"])
    return params


@pytest.mark.parametrize("origin,theirs,ours,command", alias_rows(),
                         ids=lambda v: v if isinstance(v, str) and len(v) < 30 else None)
def test_alias_means_the_same(origin, theirs, ours, command):
    got, want = parse(command, shlex.split(theirs)), parse(command, shlex.split(ours))
    assert got == want


def test_several_values_stop_at_positionals():
    argv = ["simplify", "--shape", "x:1x8", "y:[2,4]", "model.onnx", "-o", "out.onnx", "--atol", "1e-5", "y:1e-3",
            "--force"]
    assert _several_values(argv) == ["simplify", "--shape", "x:1x8", "--shape", "y:[2,4]", "model.onnx", "-o",
                                     "out.onnx", "--atol", "1e-5", "--atol", "y:1e-3", "--force"]
    # a factory source is not a shape; "--" ends the options
    assert _several_values(["validate", "--atol", "1e-4", "m.py:build", "--", "1e-3"]) == \
        ["validate", "--atol", "1e-4", "m.py:build", "--", "1e-3"]
    assert _several_values(["validate", "--atol=1e-4", "y:1e-3"]) == ["validate", "--atol=1e-4", "--atol", "y:1e-3"]


def test_one_option_under_two_names_is_refused(cli):
    r = cli("convert", "sklearn", "m.skops", "-o", "b.onnx", "--opset", "17", "--target-opset", "18", "--print-step")
    assert r.code == 0  # one field, repeated on the CLI: the grammar merges them (17, then 18 for ai.onnx)
    from onnxforge.core.options import validate_options
    from onnxforge.steps.convert.options import ConvertTorchOptions

    with pytest.raises(UsageError, match="set the same option"):
        validate_options(ConvertTorchOptions, {"opset": 17, "target_opset": 18})
    assert validate_options(ConvertTorchOptions, {"target_opset": 17}).opset == 17


def test_release_toml_takes_the_alias_keys(tmp_path):
    from onnxforge.pipeline.config import load_config

    src = ROOT / "fixtures" / "example-sklearn" / "model.skops"
    base = f'[model]\nsource = "{src}"\nframework = "sklearn"\ninputs = ["X:float32:?x30"]\n\n[[steps]]\nrun = "convert"\n'
    (tmp_path / "a.toml").write_text(base + "opset = 17\n")
    (tmp_path / "b.toml").write_text(base + "target_opset = 17\n")
    assert load_config(tmp_path / "a.toml").steps[0].options == load_config(tmp_path / "b.toml").steps[0].options
    (tmp_path / "c.toml").write_text(base + "opset = 17\ntarget_opset = 18\n")
    with pytest.raises(UsageError, match="same option"):
        load_config(tmp_path / "c.toml")
    (tmp_path / "d.toml").write_text(base + "[gates]\nparity = { check_stat = \"elemwise\" }\n")
    assert load_config(tmp_path / "d.toml").gate("parity").check_stat == "elementwise"


def test_validate_polygraphy_spellings_end_to_end(cli, fx):
    m = fx / "tiny.onnx"
    r = cli("validate", m, m, "--check-error-stat", "median", "--json")
    assert r.code == 0 and json_result(r)["check_stat"] == "median"
    r = cli("validate", m, m, "--check-stat", "elemwise", "--atol", "1e-5", "probs:1e-3", "--json")
    res = json_result(r)
    assert r.code == 0 and res["check_stat"] == "elementwise"
    atol = {o["name"]: o["atol"] for o in res["outputs"]}
    assert atol == {"logits": 1e-5, "probs": 1e-3}
    r = cli("validate", m, m, "--check-stat", "quartile")
    assert r.code == 2 and "median" in r.err and "hint:" in r.err


@pytest.mark.timing  # counts clean rounds (-r 12): another test's load would discard some
def test_benchmark_shape_and_perf_test_spellings_end_to_end(cli, fx):
    base = ("benchmark", fx / "tiny.onnx", "-r", "12", "-x", "1", "-e", "cpu", "--warmup", "1", "--json")
    shapes = [json_result(cli(*base, *flag))["results"][0]["shapes"]
              for flag in (["--shape", "x:3x4"], ["--input-shapes", "x:[3,4]"], ["--overwrite-input-shape", "x:3,4"])]
    assert shapes == [{"x": [3, 4]}] * 3
    row = json_result(cli(*base))["results"][0]
    # 12 clean rounds; on a machine another process loads, every round of 3x the budget
    assert row["latency"]["n"] in (12, 36) and row["threads"] == 1 and row["requested_provider"] == "cpu"


def test_median_statistic():
    from onnxforge.core.types import Tolerance
    from onnxforge.checks.compare import compare

    ref = {"y": np.ones(100)}
    cand = {"y": 1 + np.r_[np.full(60, 1e-6), np.full(40, 1.0)]}  # most errors tiny, some large
    tol = Tolerance(atol=1e-4, rtol=0)
    assert compare(ref, cand, tol, check_stat="median").passed  # the median error is 1e-6
    assert not compare(ref, cand, tol, check_stat="mean").passed
    assert not compare(ref, cand, tol, check_stat="elemwise").passed
    assert compare(ref, cand, tol, check_stat="elemwise").check_stat == "elementwise"


def test_alias_flags_show_in_help(cli):
    out = cli("simplify", "--help").out
    assert re.search(r"--shape, --input-shapes, --overwrite-input-shape", out)
    assert "--check-error-stat" in cli("validate", "--help").out
    assert "--target-opset" in cli("convert", "torch", "--help").out
    assert "--opset" in cli("convert", "sklearn", "--help").out
