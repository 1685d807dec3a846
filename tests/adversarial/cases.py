"""Hostile and careless inputs, one case each, with what onnxforge must do: the exit
code, and a clue the one-line error must hold. Shared by tests/adversarial and
benchmarks/adversarial.py. Each case runs with an empty current directory; the checks
around it (run_case) are the same for all: one `error:` line and a `hint:` line on
stderr, no traceback, every input byte-identical afterwards, nothing created outside
the outputs the case names, and no code from a file ever run (a marker file)."""

from __future__ import annotations

import functools
import hashlib
import os
import pickle
import sys
import zipfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

ROOT = Path(__file__).resolve().parents[2]
MARKER = "PWNED"  # created by the hostile payloads when they run


@dataclass(frozen=True)
class Case:
    name: str
    args: Callable[[Path], list]  # workspace -> argv (after "onnxforge")
    code: int
    clue: str = ""  # must appear in stderr
    outputs: tuple[str, ...] = ()  # paths (relative to the workspace) the case may create
    setup: Callable[[Path], None] | None = None  # run before the snapshot: writes this case's inputs under ws/in
    one_line: bool = True  # an error: line and a hint: line (exit 1 verdicts print tables instead)
    slow: bool = False  # imports torch, reads the torch inputs (add_torch_inputs) or runs a real quantization


class _Payload:
    """Pickled, it runs code: it creates the marker file."""

    def __init__(self, marker: str):
        self.marker = marker

    def __reduce__(self):
        return (open, (self.marker, "w"))


def _toml(d: dict) -> str:
    sys.path.insert(0, str(ROOT))
    from onnxforge.core.options import toml_value

    lines = []
    for sec, table in d.items():
        if isinstance(table, list):
            for t in table:
                lines += [f"[[{sec}]]", *(f"{k} = {toml_value(v)}" for k, v in t.items())]
        else:
            lines += [f"[{sec}]", *(f"{k} = {toml_value(v)}" for k, v in table.items())]
    return "\n".join(lines) + "\n"


def release_config(ws: Path, name: str, **changes) -> str:
    """A release of the tiny ONNX model (simplify, quantize.dynamic), changed by ``changes``:
    {"steps.1.per_channel": "no"} sets a key of a table."""
    cfg = {"model": {"source": "tiny.onnx", "framework": "onnx"},
           "steps": [{"run": "simplify"}, {"run": "quantize.dynamic", "bench_seconds": 0.2, "allow_generated_data": True}],
           "gates": {"latency": {"provider": "cpu", "seconds": 0.2}}}
    for key, value in changes.items():
        *path, last = key.split(".")
        t = cfg
        for p in path:
            t = t[int(p)] if isinstance(t, list) else t.setdefault(p, {})
        t[last] = value
    p = ws / "in" / f"{name}.toml"
    p.write_text(_toml(cfg))
    return str(p)


def _evil_pt2(ws: Path) -> None:
    import torch

    class M(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.lin = torch.nn.Linear(4, 3)

        def forward(self, x):
            return self.lin(x)

    torch.manual_seed(0)
    good = ws / "in" / "good.pt2"
    torch.export.save(torch.export.export(M(), (), {"x": torch.randn(2, 4)}), str(good))
    src = zipfile.ZipFile(good)
    for name, payload in (("evil.pt2", pickle.dumps(_Payload(str(ws / MARKER)))),
                          ("misfit.pt2", _saved_inputs(torch, (), {"x": torch.randn(2, 7)}))):
        with zipfile.ZipFile(ws / "in" / name, "w") as z:
            for n in src.namelist():
                z.writestr(n, payload if n.endswith("sample_inputs/model.pt") else src.read(n))


def _saved_inputs(torch, args, kwargs) -> bytes:
    import io

    buf = io.BytesIO()
    torch.save((args, kwargs), buf)
    return buf.getvalue()


def _outside_data(ws: Path) -> None:
    """A model whose external data points outside its folder."""
    import onnx

    m = onnx.load(str(ws / "in" / "ext" / "ext.onnx"), load_external_data=False)
    for t in m.graph.initializer:
        for e in t.external_data:
            if e.key == "location":
                e.value = "../../secret.bin"
    (ws / "secret.bin").write_bytes(b"\0" * 65536)
    onnx.save(m, str(ws / "in" / "ext" / "outside.onnx"))


def _fails_at_runtime(path: Path) -> None:
    import onnx
    from onnx import TensorProto, helper

    shape = helper.make_tensor("shape", TensorProto.INT64, [2], [3, 5])
    g = helper.make_graph([helper.make_node("Reshape", ["x", "shape"], ["y"])], "bad",
                          [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", 4])],
                          [helper.make_tensor_value_info("y", TensorProto.FLOAT, [3, 5])], [shape])
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)])
    m.ir_version = 8
    onnx.save(m, str(path))


def build_workspace(ws: Path, torch_inputs: bool = True) -> Path:
    """Every input the cases read, under ws/in; ws/cwd is the (empty) current directory.
    ``torch_inputs=False`` leaves out what only the ``torch`` cases read (add_torch_inputs):
    making them imports torch and exports a model, most of the fast lane's time."""
    import numpy as np

    sys.path.insert(0, str(ROOT))
    from fixtures import make_fixtures as mf

    d = ws / "in"
    d.mkdir(parents=True)
    (ws / "cwd").mkdir()
    mf.onnx_tiny(d / "tiny.onnx")
    mf.onnx_chain(d / "chain.onnx")
    mf.onnx_with_external_data(d / "ext")
    _outside_data(ws)
    _fails_at_runtime(d / "runtime_fail.onnx")
    np.savez(d / "calib.npz", x=np.random.default_rng(0).random((8, 4), dtype=np.float32))
    np.savez(d / "x.npz", x=np.random.default_rng(1).random((3, 4), dtype=np.float32))
    np.savez(d / "zero.npz", x=np.zeros((0, 4), np.float32))
    np.savez(d / "val.npz", x=np.random.default_rng(2).random((6, 4), dtype=np.float32))
    (d / "existing.npz").write_bytes((d / "x.npz").read_bytes())
    (d / "notes.txt").write_text("not a model\n")
    (d / "bad_utf8.csv").write_bytes(b"a,b\n\xff\xfe,1\n")
    (d / "short.csv").write_text("a,b,c,d\n1,2,3,4\n5,6\n")
    (d / "mixed.csv").write_text("a,b,c,d\n1,2,3,4\n5,six,7,8\n")
    (d / "sub").mkdir()
    (d / "a_file").write_text("x")
    (d / "taken.onnx").write_bytes(b"")
    (d / "taken.onnx.data").write_bytes(b"old weights")
    os.symlink(d / "tiny.onnx", d / "link.onnx")
    if torch_inputs:
        add_torch_inputs(ws)
    return ws


def add_torch_inputs(ws: Path) -> None:
    import torch

    d = ws / "in"
    (d / "model.py").write_text("import torch\n\ndef build():\n    torch.manual_seed(0)\n"
                                "    return torch.nn.Sequential(torch.nn.Linear(4, 3))\n")
    torch.save(torch.nn.Sequential(torch.nn.Linear(4, 3)).state_dict(), d / "weights.pt")
    _evil_pt2(ws)
    with open(d / "evil.pkl", "wb") as f:
        pickle.dump(_Payload(str(ws / MARKER)), f)


def snapshot(ws: Path) -> dict[str, tuple]:
    """Every file under ws (links not followed) with its inode, size, mtime and ctime, and
    its sha256 where the file system's timestamps are coarse. The kernel sets ctime on
    every write, truncation, rename or utime (no call sets it back), so with fine-grained
    timestamps (Linux 6.13+) an equal tuple is an untouched file and a replaced one has
    another inode. Hashing every file under pathlib's rglob, twice a case, took 15 of the
    21 s the 181 fast cases ran (1540 files by the last case); os.scandir and stat take 2."""
    coarse = _coarse_timestamps(ws)
    out, folders, skip = {}, [str(ws)], len(str(ws)) + 1
    while folders:
        with os.scandir(folders.pop()) as entries:
            for e in entries:
                if e.is_dir(follow_symlinks=False):
                    folders.append(e.path)
                elif e.is_file(follow_symlinks=False):
                    st = e.stat(follow_symlinks=False)
                    key = (st.st_ino, st.st_size, st.st_mtime_ns, st.st_ctime_ns)
                    if coarse:
                        with open(e.path, "rb") as f:
                            key += (hashlib.sha256(f.read()).hexdigest(),)
                    out[e.path[skip:]] = key
    return out


@functools.cache
def _coarse_timestamps(ws: Path) -> bool:
    """Whether two writes microseconds apart can share a ctime here (jiffy-grained clocks)."""
    probe = ws.parent / f".{ws.name}-timestamps"
    try:
        stamps = []
        for i in range(20):
            probe.write_bytes(bytes([i]))
            stamps.append(probe.stat().st_ctime_ns)
        return len(set(stamps)) < len(stamps)
    finally:
        probe.unlink(missing_ok=True)


def _i(name: str) -> Callable[[Path], str]:
    return lambda ws: str(ws / "in" / name)


def _o(name: str) -> Callable[[Path], str]:
    return lambda ws: str(ws / "out" / name)


def A(*parts) -> Callable[[Path], list]:
    """argv from strings and workspace callables."""
    return lambda ws: [p(ws) if callable(p) else p for p in parts]


T, CH, EXT = _i("tiny.onnx"), _i("chain.onnx"), _i("ext/ext.onnx")
CASES = [
    # code execution: nothing in a file runs unless --trust-pickle
    Case("pt2 pickle runs no code (convert)", A("convert", "torch", _i("evil.pt2"), "-o", _o("m.onnx")), 3,
         "refused", outputs=("out",), slow=True),
    Case("pt2 pickle runs no code (validate reference)", A("validate", _i("evil.pt2"), T), 3, "refused", slow=True),
    Case("pt2 pickle runs no code (validate candidate)", A("validate", T, _i("evil.pt2")), 3, "refused", slow=True),
    Case("pickled torch model needs trust", A("convert", "torch", _i("evil.pkl"), "-o", _o("m.onnx")), 3,
         "torch file", outputs=("out",), slow=True),
    Case("release source pt2 runs no code",
         lambda ws: ["release", release_config(ws, "evil", **{"model.source": "evil.pt2", "model.framework": "torch",
                                                               "steps": [{"run": "convert"}], "gates": {}}),
                     "-o", str(ws / "out" / "evil")], 3, "refused", outputs=("out",), slow=True),
    Case("config trust_pickle as a string",
         lambda ws: ["release", release_config(ws, "tp", **{"model.source": "model.py:build", "model.framework": "torch",
                                                             "model.trust_pickle": "false",
                                                             "steps": [{"run": "convert"}], "gates": {}}),
                     "-o", str(ws / "out" / "tp")], 2, "must be true or false", outputs=("out",), slow=True),
    Case("config per_channel as a string",
         lambda ws: ["release", release_config(ws, "pc", **{"steps.1.per_channel": "no"}), "-o", str(ws / "out" / "pc")],
         2, "steps[1].per_channel", outputs=("out",)),
    # data loss: an output is never an input, --force or not
    Case("simplify over its input", A("simplify", T, "-o", T, "--force"), 3, "is an input"),
    Case("simplify over ./input spelling", A("simplify", T, "-o", lambda ws: str(ws / "in" / "." / "tiny.onnx"),
                                             "--force"), 3, "is an input"),
    Case("simplify over a link to its input", A("simplify", T, "-o", _i("link.onnx"), "--force"), 3, "is an input"),
    Case("fp16 over its input", A("quantize", "fp16", T, "-o", T, "--force"), 3, "is an input"),
    Case("dynamic over its input", A("quantize", "dynamic", "--allow-generated-data", CH, "-o", CH, "--force"), 3, "is an input"),
    Case("static over its calibration", A("quantize", "static", T, "-o", _i("calib.npz"), "--calibration",
                                          _i("calib.npz"), "--force"), 3, "is an input"),
    Case("simplify over the input's data file", A("simplify", EXT, "-o", _i("ext/ext.onnx.data"), "--force"), 3,
         "is an input"),
    Case("convert over its factory file", A("convert", "torch", lambda ws: str(ws / "in" / "model.py") + ":build",
                                            "-o", _i("model.py"), "--input", "x:float32:2x4", "--force"), 3,
         "is an input", slow=True),
    Case("convert over its weights", A("convert", "torch", lambda ws: str(ws / "in" / "model.py") + ":build",
                                       "-o", _i("weights.pt"), "--weights", _i("weights.pt"), "--input",
                                       "x:float32:2x4", "--force"), 3, "is an input", slow=True),
    Case("--report over the model", A("validate", T, T, "--report", T, "--force"), 3, "is an input"),
    Case("--save-outputs over an existing file", A("validate", T, T, "--save-outputs", _i("existing.npz")), 3,
         "exists"),
    Case("--report into a folder", A("inspect", T, "--report", _i("sub")), 3, "directory"),
    Case("existing NAME.onnx.data beside the target", A("simplify", T, "-o", _i("taken.onnx")), 3, "exists"),
    Case("output whose parent is a file", A("simplify", T, "-o", lambda ws: str(ws / "in" / "a_file" / "m.onnx")), 3,
         "is a file"),
    Case("release -o an existing file", lambda ws: ["release", release_config(ws, "ok"), "-o", str(ws / "in" / "a_file")],
         3, "is a file"),
    # wrong verdicts
    Case("NaN min-cosine", A("quantize", "dynamic", "--allow-generated-data", T, "-o", _o("q.onnx"), "--min-cosine", "nan"), 2, "finite"),
    Case("NaN max-mismatch", A("quantize", "dynamic", "--allow-generated-data", T, "-o", _o("q.onnx"), "--max-mismatch", "nan"), 2, "finite"),
    Case("NaN TOML min_cosine", lambda ws: ["release", release_config(ws, "nan", **{"steps.1.min_cosine": float("nan")}),
                                            "-o", str(ws / "out" / "nan")], 2, "finite", outputs=("out",)),
    Case("NaN validate min-cosine", A("validate", T, T, "--min-cosine", "nan"), 2, "finite"),
    Case("NaN duration", A("benchmark", T, "--duration", "nan"), 2, "finite"),
    Case("NaN bench-seconds", A("quantize", "dynamic", "--allow-generated-data", T, "-o", _o("q.onnx"), "--bench-seconds", "nan"), 2, "finite"),
    Case("zero-size inputs", A("validate", T, T, "--inputs", _i("zero.npz")), 3, "no elements"),
    Case("zero-size example input", A("convert", "torch", lambda ws: str(ws / "in" / "model.py") + ":build",
                                      "-o", _o("m.onnx"), "--input", "x:float32:0x4"), 3, "no elements",
         outputs=("out",), slow=True),
    Case("unknown --dim", A("validate", T, T, "--dim", "foo=3"), 2, "batch"),
    Case("unknown TOML dims", lambda ws: ["release", release_config(ws, "dims", **{"gates.latency.dims": {"btch": 4}}),
                                          "-o", str(ws / "out" / "dims")], 2, "btch", outputs=("out",)),
    Case("unknown onnxsim pass", A("simplify", T, "-o", _o("s.onnx"), "--skip", "bogus_pass"), 2, "bogus_pass",
         slow=True),  # onnxsim 0.8 imports torch to list its passes
    Case("NaN percentile", A("quantize", "static", "--allow-generated-data", T, "-o", _o("q.onnx"), "--calibration", "random",
                             "--percentile", "nan"), 2, "finite"),
    Case("zero threads", lambda ws: ["release", release_config(ws, "thr", **{"gates.latency.threads": 0}),
                                     "-o", str(ws / "out" / "thr")], 2, "threads", outputs=("out",)),
    Case("opset the dynamo exporter cannot write", A("convert", "torch", lambda ws: str(ws / "in" / "model.py") + ":build",
                                                     "-o", _o("m.onnx"), "--input", "x:float32:2x4", "--opset", "9",
                                                     "--exporter", "dynamo"), 4, "opset", outputs=("out",), slow=True),
    Case("opset that does not exist", A("convert", "torch", lambda ws: str(ws / "in" / "model.py") + ":build",
                                        "-o", _o("m.onnx"), "--input", "x:float32:2x4", "--opset", "999"), 2, "opset", slow=True),
    # exit codes
    Case("dims that cannot be allocated", A("convert", "torch", lambda ws: str(ws / "in" / "model.py") + ":build",
                                            "-o", _o("m.onnx"), "--input", "x:float32:1x1000000000x1000000"), 3,
         "GiB", outputs=("out",), slow=True),
    Case("huge --dim", A("validate", T, T, "--dim", "batch=100000000000"), 3, "GiB"),
    Case("non-UTF-8 CSV", A("validate", T, T, "--inputs", _i("bad_utf8.csv")), 3, "UTF-8"),
    Case("short CSV row", A("validate", T, T, "--inputs", _i("short.csv")), 3, "fields"),
    Case("text in a numeric CSV column", A("validate", T, T, "--inputs", _i("mixed.csv")), 3, "mixes numbers and text"),
    Case("corrupt data.validation", lambda ws: ["release", release_config(ws, "cv", **{"data.validation": "notes.txt"}),
                                                "-o", str(ws / "out" / "cv")], 3, "validation", outputs=("out",)),
    Case("pt2 saved inputs do not fit forward()", A("convert", "torch", _i("misfit.pt2"), "-o", _o("m.onnx")), 3,
         "fails on the example inputs", outputs=("out",), slow=True),
    Case("benchmark of a model that fails at run time", A("benchmark", _i("runtime_fail.onnx")), 3, "fails at run time"),
    Case("TOML inputs of numbers",
         lambda ws: ["release", release_config(ws, "in5", **{"model.source": "model.py:build", "model.framework": "torch",
                                                              "model.inputs": [5], "steps": [{"run": "convert"}],
                                                              "gates": {}}), "-o", str(ws / "out" / "in5")],
         2, "model.inputs", outputs=("out",), slow=True),
    Case("TOML latency dims not a table", lambda ws: ["release", release_config(ws, "ld", **{"gates.latency.dims": 5}),
                                                      "-o", str(ws / "out" / "ld")], 2, "dims", outputs=("out",)),
    Case("TOML threads as words", lambda ws: ["release", release_config(ws, "tw", **{"gates.latency.threads": "four"}),
                                              "-o", str(ws / "out" / "tw")], 2, "integer", outputs=("out",)),
    Case("TOML samples as words", lambda ws: ["release", release_config(ws, "sw", **{"steps.1.check_samples": "ten"}),
                                              "-o", str(ws / "out" / "sw")], 2, "integer", outputs=("out",)),
    Case("TOML min_cosine as words", lambda ws: ["release", release_config(ws, "mw", **{"steps.1.min_cosine": "high"}),
                                                 "-o", str(ws / "out" / "mw")], 2, "number", outputs=("out",)),
    Case("negative seed", A("validate", T, T, "--seed", "-1"), 2, "seed"),
    Case("string input for torch", A("convert", "torch", lambda ws: str(ws / "in" / "model.py") + ":build",
                                     "-o", _o("m.onnx"), "--input", "x:str:2x8"), 2, "strings", slow=True),
    Case("validate side that is no model", A("validate", _i("notes.txt"), T), 3, "not a valid ONNX model"),
    Case("percentile over 100", A("quantize", "static", "--allow-generated-data", T, "-o", _o("q.onnx"), "--calibration", "random",
                                  "--percentile", "150"), 2, "100"),
    Case("negative max-mismatch", A("quantize", "dynamic", "--allow-generated-data", T, "-o", _o("q.onnx"), "--max-mismatch", "-1"), 2, "0"),
    Case("negative max-constant-size", A("simplify", T, "-o", _o("s.onnx"), "--max-constant-size", "-5"), 2, "0"),
    Case("empty dim in a shape", A("convert", "torch", lambda ws: str(ws / "in" / "model.py") + ":build",
                                   "-o", _o("m.onnx"), "--input", "x:float32:1xx8"), 2, "empty dimension", slow=True),
    Case("inspect: external data outside the folder", A("inspect", _i("ext/outside.onnx")), 3, "outside"),
    # what must work, and leave nothing behind (ORT's pre-processing once wrote into the cwd)
    Case("quantize leaves nothing outside its output; exact zeros pass the default check",
         A("quantize", "dynamic", "--allow-generated-data", T, "-o", _o("q_ok.onnx"), "--bench-seconds", "0.2", "--speed-budget", "0"), 0,
         outputs=("out/q_ok.onnx",), one_line=False, slow=True),
    Case("static quantize leaves nothing outside its output",
         A("quantize", "static", "--allow-generated-data", CH, "-o", _o("qs_ok.onnx"), "--calibration", "random", "--samples", "4",
           "--bench-seconds", "0.2", "--min-cosine", "0", "--speed-budget", "0"), 0, outputs=("out/qs_ok.onnx",), one_line=False,
         slow=True),
    Case("a failed check leaves no folder behind", A("quantize", "dynamic", "--allow-generated-data", CH, "-o", _o("new/deeper/q.onnx"),
                                                     "--atol", "1e-9", "--speed-budget", "0", "--bench-seconds", "0.2"),
         1,
         one_line=False, slow=True),
    # the ones that already held: keep them holding
    Case("truncated model", lambda ws: ["inspect", str(_truncated(ws))], 3, "not a valid ONNX model"),
    Case("missing model", A("inspect", _i("nope.onnx")), 3, "not found"),
    Case("unknown provider", A("benchmark", T, "--provider", "tpu"), 2, "provider"),
    Case("missing CUDA", A("benchmark", T, "--provider", "cuda"), 5, "not available"),
    Case("pickled npz", lambda ws: ["validate", str(ws / "in" / "tiny.onnx"), str(ws / "in" / "tiny.onnx"),
                                    "--inputs", str(_pickled_npz(ws))], 3, "npz"),
]


def _more_cases() -> list[Case]:
    """Cases kept in cases_<area>.py beside this file (each a list ``CASES``), so one
    area's cases are added without touching another's."""
    import importlib

    here = Path(__file__).parent
    if str(here) not in sys.path:
        sys.path.insert(0, str(here))
    out: list[Case] = []
    for f in sorted(here.glob("cases_*.py")):
        out += importlib.import_module(f.stem).CASES
    return out


CASES += _more_cases()


def _truncated(ws: Path) -> Path:
    p = ws / "in" / "truncated.onnx"
    if not p.exists():
        p.write_bytes((ws / "in" / "tiny.onnx").read_bytes()[:40])
    return p


def _pickled_npz(ws: Path) -> Path:
    import numpy as np

    p = ws / "in" / "pickled.npz"
    if not p.exists():
        np.savez(p, x=np.array([_Payload(str(ws / MARKER))], dtype=object))
    return p


@dataclass
class Outcome:
    case: str
    code: int
    right_code: bool
    one_line: bool
    inputs_intact: bool
    leftovers: list = field(default_factory=list)
    ran_code: bool = False
    clue: bool = True
    err: str = ""


TMP = "tmp"  # under the workspace: each case's own $TMPDIR, empty before it runs


def run_case(case: Case, ws: Path, run: Callable[[list], tuple[int, str]]) -> Outcome:
    """Run one case through ``run(argv) -> (exit code, stderr)`` with ws/cwd as the
    current directory and ws/tmp as the temp folder (tempfile's and $TMPDIR, which a
    child process inherits), and check everything around it. Whatever is left in the
    temp folder (files or folders) is a leftover, named ``$TMPDIR/...``."""
    import shutil
    import tempfile

    if case.setup is not None:
        case.setup(ws)  # makes the inputs only this case reads (under ws/in; must be idempotent)
    args = case.args(ws)  # may write config files under ws/in first
    tmp = ws / TMP
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir()
    before = snapshot(ws)
    cwd, saved = os.getcwd(), (tempfile.tempdir, os.environ.get("TMPDIR"))
    os.chdir(ws / "cwd")
    tempfile.tempdir = os.environ["TMPDIR"] = str(tmp)
    try:
        code, err = run([str(a) for a in args])
    finally:
        os.chdir(cwd)
        tempfile.tempdir = saved[0]
        if saved[1] is None:
            os.environ.pop("TMPDIR", None)
        else:
            os.environ["TMPDIR"] = saved[1]
    after = snapshot(ws)
    allowed = tuple(str(Path(o)) for o in case.outputs)
    changed = [k for k, v in before.items() if after.get(k) != v]
    created = [k for k in after if k not in before and not k.startswith(TMP + "/")
               and not any(k == a or k.startswith(a + "/") for a in allowed)]
    created += sorted(f"$TMPDIR/{p.name}" for p in tmp.iterdir())
    shutil.rmtree(tmp, ignore_errors=True)
    lines = [ln for ln in err.splitlines() if ln.strip()]
    one_line = ("Traceback" not in err and "[E:onnxruntime" not in err
                and sum(ln.startswith("error: ") for ln in lines) == 1 and any(ln.startswith("hint: ") for ln in lines))
    return Outcome(case.name, code, code == case.code, one_line or not case.one_line, not changed,
                   created, (ws / MARKER).exists(), case.clue in err, err)
