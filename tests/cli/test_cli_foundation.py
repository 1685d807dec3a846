import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import run_subprocess


HEAVY = ("torch", "sklearn", "skl2onnx", "onnxsim", "onnxruntime.quantization", "onnxscript", "transformers",
         "pydantic", "mlflow", "mlserver", "tritonclient", "numpy", "onnxruntime")


@pytest.mark.parametrize("argv", [["--help"], ["validate", "--help"], ["quantize", "static", "--help"]])
def test_help_imports_nothing_heavy(argv):
    """--help (and a command's --help, which runs the root callback first) imports
    none of the heavy modules: they load inside the functions that need them. Typer
    itself (0.2x) coerces option values through pydantic once a command parses its
    options, so pydantic is only kept out of the root --help."""
    heavy = HEAVY if argv == ["--help"] else tuple(m for m in HEAVY if m != "pydantic")
    code = (
        "import sys\n"
        "from onnxforge.cli.app import main\n"
        f"try:\n    main({argv!r})\nexcept SystemExit:\n    pass\n"
        f"heavy = [m for m in {heavy!r} if m in sys.modules]\n"
        "print('HEAVY', heavy)\n"
    )
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert "HEAVY []" in r.stdout, r.stdout + r.stderr


def test_inspect_does_not_import_heavy(fx):
    code = (
        "import sys\nfrom onnxforge.cli.app import main\n"
        f"main(['inspect', r'{fx / 'tiny.onnx'}', '--json'])\n"
        "print('HEAVY', [m for m in ('torch','sklearn','skl2onnx','onnxsim') if m in sys.modules], file=sys.stderr)\n"
    )
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert "HEAVY []" in r.stderr, r.stderr


@pytest.mark.slow  # a process that simplifies and quantizes (3 s)
def test_simplify_and_quantize_never_import_torch_and_the_packages_stay_whole(fx, tmp_path):
    """onnxsim 0.8's __init__ imports torch, and so does onnxruntime.tools' (which ORT's
    quant_pre_process imports): 2.5-3 s of every simplify and quantize of a small model;
    onnxsim's model_info imports sympy for its CLI's printing (0.3-0.45 s; ORT's
    symbolic shape inference, which quantize runs, needs it).
    onnxforge loads the submodules alone; a user's later imports in that process still
    get the whole packages."""
    code = (
        "import sys\nfrom onnxforge.cli.app import main\n"
        f"codes = [main(['simplify', r'{fx / 'chain.onnx'}', '-o', r'{tmp_path / 's.onnx'}'])]\n"
        "print('SIMPLIFY', [m for m in ('torch', 'sklearn', 'sympy') if m in sys.modules], file=sys.stderr)\n"
        f"codes += [main(['quantize', 'dynamic', r'{fx / 'chain.onnx'}', '-o', r'{tmp_path / 'q.onnx'}',\n"
        "                '--allow-generated-data', '--speed-budget', '0'])]\n"
        "print('HEAVY', [m for m in ('torch', 'sklearn') if m in sys.modules], codes, file=sys.stderr)\n"
        "import onnxsim\nfrom onnxsim import quantize\nimport onnxruntime.tools as tools\nimport sympy\n"
        "print('WHOLE', callable(onnxsim.simplify) and callable(quantize) and callable(tools.infer_input_info),\n"
        "      'torch' in sys.modules, callable(sympy.Symbol), file=sys.stderr)\n"
    )
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert "SIMPLIFY []" in r.stderr and "HEAVY [] [0, 0]" in r.stderr and "WHOLE True True True" in r.stderr, r.stderr
    assert (tmp_path / "s.onnx").is_file() and (tmp_path / "q.onnx").is_file()


def test_version_and_help(cli):
    r = cli("--version")
    assert r.code == 0 and r.out.startswith("onnxforge ")
    r = cli("--help")
    assert r.code == 0 and "inspect" in r.out


def test_inspect_json_only_json_on_stdout(cli, fx, tmp_path):
    rep = tmp_path / "r" / "inspect.json"
    r = cli("inspect", fx / "tiny.onnx", "--json", "--report", rep)
    assert r.code == 0
    env = json.loads(r.out)
    assert env["kind"] == "inspect" and env["schema_version"] == 1
    assert env["result"]["inputs"][0] == {"name": "x", "dtype": "float32", "shape": ["batch", 4]}
    assert json.loads(rep.read_text()) == env
    r2 = cli("inspect", fx / "tiny.onnx", "--format", "json")
    assert json.loads(r2.out)["result"] == env["result"]


def test_inspect_table(cli, light):
    r = cli("inspect", light / "light_resnet50.onnx")
    assert r.code == 0
    assert "gpu_0/data_0" in r.out and "415" in r.out and "Conv" in r.out


def _write(path, data: bytes):
    path.write_bytes(data)
    return path


@pytest.mark.parametrize(
    "make,needle",
    [
        (lambda d: d / "nope.onnx", "not found"),
        (lambda d: d, "is a directory"),
        (lambda d: _write(d / "empty.onnx", b""), "is empty"),
        (lambda d: _write(d / "text.onnx", b"hello, I am text\n"), "not a valid ONNX model"),
        (lambda d: _write(d / "rand.onnx", os.urandom(4096)), "not a valid ONNX model"),
    ],
)
def test_bad_input_exit_3_one_line(cli, tmp_path, make, needle):
    path = make(tmp_path)
    before = sorted(p.name for p in tmp_path.iterdir())
    r = cli("inspect", path, "--json")
    assert r.code == 3
    assert r.out == ""
    lines = r.err.strip().splitlines()
    assert lines[0].startswith("error: ") and needle in lines[0]
    assert "Traceback" not in r.err
    assert sorted(p.name for p in tmp_path.iterdir()) == before


def test_truncated_model_exit_3(cli, fx, tmp_path):
    data = (fx / "tiny.onnx").read_bytes()
    (tmp_path / "cut.onnx").write_bytes(data[: len(data) // 2])
    r = cli("inspect", tmp_path / "cut.onnx")
    assert r.code == 3 and "not a valid ONNX model" in r.err


def test_missing_external_data_exit_3(cli, fx, tmp_path):
    shutil.copy(fx / "ext" / "ext.onnx", tmp_path / "ext.onnx")
    r = cli("inspect", tmp_path / "ext.onnx")
    assert r.code == 3 and "ext.onnx.data" in r.err and "Traceback" not in r.err


def test_usage_errors_exit_2(cli, fx):
    assert cli("inspect").code == 2
    assert cli("inspect", fx / "tiny.onnx", "--no-such-flag").code == 2
    assert cli("inspect", fx / "tiny.onnx", "--format", "xml").code == 2
    assert cli("no-such-command").code == 2


@pytest.mark.slow  # the installed console script, in a process
def test_debug_shows_traceback_console_script(fx, tmp_path):
    r = run_subprocess("--debug", "inspect", str(tmp_path / "missing.onnx"))
    assert r.returncode == 3 and "Traceback" in r.stderr
    r = run_subprocess("inspect", str(tmp_path / "missing.onnx"))
    assert r.returncode == 3 and "Traceback" not in r.stderr and r.stdout == ""


def test_unsupported_ir_version_fails_check(cli, fx, tmp_path):
    import onnx

    from onnxforge.backends.onnx.runtime import runtime_support

    m = onnx.load(str(fx / "tiny.onnx"))
    m.ir_version = runtime_support()["max_ir_version"] + 1
    onnx.save(m, str(tmp_path / "future.onnx"))
    r = cli("inspect", tmp_path / "future.onnx", "--json")
    assert r.code == 1
    res = json.loads(r.out)["result"]["runtime"]
    assert res["supported"] is False and "IR version" in res["reason"]


def test_print_step_round_trips_into_a_release_config(cli, tmp_path):
    import tomllib

    r = cli("quantize", "static", "in.onnx", "-o", "out.onnx", "--calibration", "c.npz", "--method", "entropy",
            "--max-mismatch", "0.02", "--print-step")
    assert r.code == 0
    step = tomllib.loads(r.out)["steps"][0]
    assert step == {"run": "quantize.static", "method": "entropy", "max_mismatch": 0.02}
    r = cli("convert", "torch", "m.py:build", "-o", "x.onnx", "--input", "x:float32:batchx8", "--opset", "18", "--print-step")
    doc = tomllib.loads(r.out)
    assert doc["model"] == {"source": "m.py:build", "framework": "torch", "inputs": ["x:float32:batchx8"]}
    assert doc["steps"] == [{"run": "convert", "opset": 18}]
    for cmd, run, key in ((["simplify", "a.onnx", "-o", "b.onnx", "--transformer", "bert", "--ort", "basic"], "simplify", "ort_level"),
                          (["quantize", "dynamic", "a.onnx", "-o", "b.onnx", "--per-channel"], "quantize.dynamic", "per_channel"),
                          (["quantize", "fp16", "a.onnx", "-o", "b.onnx", "--block-op", "Softmax"], "quantize.fp16", "block_ops")):
        st = tomllib.loads(cli(*cmd, "--print-step").out)["steps"][0]
        assert st["run"] == run and key in st


def test_debug_anywhere_on_the_line(cli, tmp_path):
    r = cli("inspect", tmp_path / "missing.onnx", "--debug")
    assert r.code == 3 and "Traceback" in r.err and r.err.startswith("error: ")


def _shell(cmd: str, tmp_path, **env) -> subprocess.CompletedProcess:
    """Through bash (the `; true` keeps bash as the parent, so typer's shell detection finds it)."""
    from conftest import ROOT

    e = {**os.environ, "HOME": str(tmp_path), "PYTHONPATH": str(ROOT), **env}
    return subprocess.run(["bash", "-c", f"{sys.executable} -m onnxforge {cmd}; true"], capture_output=True,
                          text=True, env=e, cwd=tmp_path)


@pytest.mark.slow  # shell completion, in processes
def test_show_and_install_completion(tmp_path):
    r = _shell("--show-completion", tmp_path)
    assert "_ONNXFORGE_COMPLETE=complete_bash" in r.stdout, r.stdout + r.stderr
    r = _shell("--install-completion", tmp_path)
    assert "completion installed" in r.stdout, r.stdout + r.stderr
    assert "onnxforge" in (tmp_path / ".bashrc").read_text()  # only the fake HOME is touched
    assert list((tmp_path / ".bash_completions").glob("onnxforge*"))


def _complete(words: str) -> list[str]:
    env = {**os.environ, "_ONNXFORGE_COMPLETE": "complete_bash", "COMP_WORDS": words,
           "COMP_CWORD": str(len(words.split()) - (0 if words.endswith(" ") else 1))}
    r = subprocess.run([sys.executable, "-m", "onnxforge"], capture_output=True, text=True, env=env)
    assert r.returncode == 0, r.stderr
    return r.stdout.split()


@pytest.mark.slow  # shell completion, in processes
def test_completion_of_commands_and_options():
    assert _complete("onnxforge vali") == ["validate"]
    assert set(_complete("onnxforge quantize ")) >= {"dynamic", "static", "fp16"}
    assert "--calibration" in _complete("onnxforge quantize static --cal")


@pytest.mark.slow  # shell completion, in processes
def test_choice_values_complete():
    assert _complete("onnxforge quantize static m.onnx --method ") == ["minmax", "entropy", "percentile",
                                                                       "distribution"]
    assert _complete("onnxforge package m.onnx --target ") == ["mlflow", "mlserver", "triton"]
    assert _complete("onnxforge quantize dynamic m.onnx --recipe f") == ["fused"]
    assert _complete("onnxforge zoo run z.toml --executor ") == ["local", "ray", "matrix"]
    assert _complete("onnxforge validate a.onnx b.onnx --format j") == ["json"]
    assert _complete("onnxforge benchmark m.onnx --provider cu") == ["cuda"]


def test_no_arguments_prints_the_help_not_an_error(cli):
    r = cli()
    assert r.code == 2 and r.err.startswith("Usage: onnxforge") and "error:" not in r.err and "Commands:" in r.err
    assert r.out == ""
    r = cli("quantize")
    assert r.code == 2 and r.err.startswith("Usage: onnxforge quantize") and "error:" not in r.err


@pytest.mark.parametrize("argv, near", [
    (("relase", "x.toml"), "Did you mean 'release'?"),
    (("quantize", "dynamc", "m.onnx"), "Did you mean 'dynamic'?"),
    (("quantize", "static", "m.onnx", "-o", "q.onnx", "--method", "minmx"), "did you mean 'minmax'?"),
    (("package", "m.onnx", "-o", "out", "--target", "tritn"), "did you mean 'triton'?"),
    (("validate", "m.onnx", "m.onnx", "--format", "jsn"), "did you mean 'json'?"),
    (("zoo", "run", "z.toml", "--executor", "rey"), "did you mean 'ray'?"),
])
def test_did_you_mean_for_commands_and_choice_values(cli, tmp_path, monkeypatch, argv, near):
    monkeypatch.chdir(tmp_path)
    r = cli(*argv)
    assert r.code == 2 and near in r.err and r.err.count("error:") == 1 and "Traceback" not in r.err, r.err
    assert list(tmp_path.iterdir()) == []


def test_command_table_matches_the_commands():
    """`onnxforge --help` lists the commands from a table, without building them: the help
    it reads from each command's source must be the command's own, and building one
    builds only it."""
    import typer

    from onnxforge.cli.app import COMMANDS, app, build_command, command_help

    group = typer.main.get_command(app)
    assert group.list_commands(None) == list(COMMANDS)
    assert dict.keys(group.commands) == set()  # nothing built yet
    for name in COMMANDS:
        assert build_command(name).help == command_help(name), name
    group.get_command(None, "inspect")
    assert set(dict.keys(group.commands)) == {"inspect"}


@pytest.mark.skipif(not Path("/proc/self").is_dir(), reason="needs a folder no one can write to: Linux's /proc")
def test_an_unwritable_report_is_refused_before_the_model_is_written(cli, fx, tmp_path):
    """The run failed on --report after writing the model; the rerun then needed --force."""
    r = cli("simplify", fx / "tiny.onnx", "-o", tmp_path / "out" / "s.onnx", "--report", "/proc/onnxforge-r.json")
    assert r.code == 3 and "cannot write --report" in r.err and "hint:" in r.err, r.err
    assert not (tmp_path / "out").exists()


def test_a_ctrl_c_inside_an_import_still_exits_130(capsys):
    """A Ctrl-C that lands in a dataclass's set-up (a lazily imported module) reaches the
    CLI as RuntimeError("Error calling __set_name__ ...") from the KeyboardInterrupt: it
    said 'internal error' and exit 70 where the user pressed Ctrl-C."""
    from onnxforge.cli.common import exit_code_for, report_error

    class Interrupting:
        def __set_name__(self, owner, name):
            raise KeyboardInterrupt

    with pytest.raises(RuntimeError) as exc:
        type("Model", (), {"field": Interrupting()})
    assert exit_code_for(exc.value) == 130
    report_error(exc.value, debug=False)
    err = capsys.readouterr().err
    assert "interrupted" in err and "internal error" not in err
