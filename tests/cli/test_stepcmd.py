"""Every step option round-trips: CLI flags -> --print-step -> release TOML -> the same
options object the library receives; and the generated commands behave like the
hand-written ones did (help, defaults, validation)."""

import tomllib

import pytest

from conftest import ROOT

M = f"{ROOT / 'tests' / 'models.py'}"
COMMANDS = {"convert.torch": ["convert", "torch"], "convert.sklearn": ["convert", "sklearn"],
            "simplify": ["simplify"], "quantize.dynamic": ["quantize", "dynamic"],
            "quantize.static": ["quantize", "static"], "quantize.fp16": ["quantize", "fp16"]}


def _parse(words, args) -> dict:
    """The parameters click parses for a command line, without running it."""
    from onnxforge.cli.app import root_command

    cmd = root_command()
    for w in words:
        cmd = cmd.commands[w]
    return cmd.make_context(words[-1], list(args)).params


def _release_toml(name: str, printed: str, fx) -> str:
    if name.startswith("convert"):
        return printed
    head = f'[model]\nsource = "{fx / "tiny.onnx"}"\nframework = "onnx"\n'
    # a step that reads a [model] key (quantize's input_norms) prints its own [model] table
    return head + printed.removeprefix("[model]\n") if printed.startswith("[model]\n") else head + "\n" + printed


@pytest.mark.parametrize("name", list(COMMANDS))
def test_every_option_round_trips(name, cli, fx, tmp_path):
    from onnxforge.cli.stepcmd import options_from_cli
    from onnxforge.core.options import default_of, fields_of, toml_place
    from onnxforge.steps import STEPS
    from onnxforge.pipeline.config import load_config

    step = STEPS[name]
    source = f"{M}:mlp" if name == "convert.torch" else f"{M}:logreg" if name == "convert.sklearn" else str(fx / "tiny.onnx")
    tried = 0
    for f, o in fields_of(step.options):
        if toml_place(f, o) is None or not o.example:
            assert toml_place(f, o) is None or o.path, f"{name}.{f.name} has no example to test it with"
            continue
        needs = ["--calibration", "random"] if name == "quantize.static" and f.name != "calibration" else []
        needs += ["--allow-generated-data"] if name in ("quantize.dynamic", "quantize.static") else []  # no data here
        args = [source, "-o", str(tmp_path / "out.onnx"), *needs, *o.example]
        from_cli = options_from_cli(step, _parse(COMMANDS[name], args))
        assert getattr(from_cli, f.name) != default_of(f), f"{name}: {o.example} does not change {f.name}"
        r = cli(*COMMANDS[name], *args, "--print-step")
        assert r.code == 0, r.err
        cfg_path = tmp_path / "release.toml"
        cfg_path.write_text(_release_toml(name, r.out, fx))
        tomllib.loads(cfg_path.read_text())
        from_toml = load_config(cfg_path).steps[0].options
        assert from_toml == from_cli, (name, f.name, r.out)
        tried += 1
    assert tried >= 5


def test_cli_values_are_validated_like_toml(cli, fx, tmp_path):
    base = ["quantize", "static", "--allow-generated-data", fx / "tiny.onnx", "-o", tmp_path / "q.onnx", "--calibration", "random"]
    for extra, needle in ((["--min-cosine", "nan"], "--min-cosine: must be a finite number"),
                          (["--method", "minmaxx"], "--method: must be 'minmax'"),
                          (["--percentile", "150"], "--percentile: must be less than or equal to 100"),
                          (["--max-mismatch", "-1"], "--max-mismatch: must be greater than or equal to 0"),
                          (["--seed", "-1"], "--seed: must be greater than or equal to 0"),
                          (["--bench-seconds", "nan"], "--bench-seconds: must be a finite number"),
                          (["--max-memory", "lots"], "--max-memory: bad size")):
        r = cli(*base, *extra)
        assert r.code == 2 and needle in r.err, (extra, r.err)
        assert r.err.startswith("error: ") and "Traceback" not in r.err
    assert not (tmp_path / "q.onnx").exists()


def test_library_keywords_are_validated(fx, tmp_path):
    import onnxforge
    from onnxforge.core.errors import UsageError

    with pytest.raises(UsageError, match="per_channel: must be true or false"):
        onnxforge.quantize(fx / "tiny.onnx", tmp_path / "q.onnx", per_channel="false")
    with pytest.raises(UsageError, match="unknown option ort_levle") as exc:
        onnxforge.simplify(fx / "tiny.onnx", tmp_path / "s.onnx", ort_levle="basic")
    assert "did you mean 'ort_level'" in exc.value.hint


def test_help_lists_flags_with_defaults(cli):
    r = cli("quantize", "static", "--help")
    assert r.code == 0
    for flag in ("--calibration", "--method", "--per-channel / --no-per-channel", "--quant-format", "--max-memory",
                 "--check-samples", "--print-step"):
        assert flag in r.out, flag
    assert "[default: 0.99]" in r.out and "minmax|entropy|percentile|distribution" in r.out
