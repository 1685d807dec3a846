"""Code execution and resources that need a real process: a module the archive names
imported from the current directory, a memory budget read from the cgroup."""

import json
import os
import subprocess
import sys

import pytest

from conftest import ROOT
from cases import MARKER
from cases_code import dynamic_pt2, edit_program, forged_bytecode

pytestmark = pytest.mark.slow  # exports torch models, starts onnxforge processes


def _onnxforge(args, cwd, **env):
    return subprocess.run([sys.executable, "-m", "onnxforge", *map(str, args)], cwd=cwd, capture_output=True,
                          text=True, timeout=600, env={**os.environ, "PYTHONPATH": str(ROOT), **env})


@pytest.fixture(scope="module")
def dyn(tmp_path_factory):
    pytest.importorskip("torch")
    p = tmp_path_factory.mktemp("pt2") / "dyn.pt2"
    dynamic_pt2(p)
    return p



def _convert_beside_a_setup_py(dyn, tmp_path, edit):
    """convert torch of ``dyn`` changed by ``edit``, run where a setup.py would leave the
    marker if imported; the marker must not appear."""
    evil = tmp_path / "in" / "edited.pt2"
    evil.parent.mkdir()
    edit_program(dyn, evil, edit)
    cwd = tmp_path / "cwd"
    cwd.mkdir()
    (cwd / "setup.py").write_text(f"open({str(tmp_path / MARKER)!r}, 'w').close()\n")
    r = _onnxforge(["convert", "torch", evil, "-o", tmp_path / "out" / "m.onnx"], cwd)
    assert not (tmp_path / MARKER).exists(), "setup.py from the current directory ran"
    return r

def test_pt2_cannot_import_a_module_from_the_current_directory(dyn, tmp_path):
    """A pytree type `setup.Evil` once made onnxforge import setup.py from the cwd
    (``python -m`` puts the cwd first on sys.path)."""
    def edit(program):
        sig = program["graph_module"]["module_call_graph"][0]["signature"]
        spec = json.loads(sig["out_spec"])
        spec[1]["type"] = "setup.Evil"
        sig["out_spec"] = json.dumps(spec)

    r = _convert_beside_a_setup_py(dyn, tmp_path, edit)
    assert r.returncode == 3, r.stderr
    assert "setup.Evil" in r.stderr and "hint: " in r.stderr and "--trust-pickle" in r.stderr
    assert not (tmp_path / "out").exists()


def test_pt2_declared_sizes_over_the_cgroup_limit_are_refused_before_reading(dyn, tmp_path):
    """The members' declared sizes are checked against the memory the container has left."""
    cg = tmp_path / "cgroup"
    cg.mkdir()
    (cg / "memory.max").write_text(f"{16 * 1024}\n")
    (cg / "memory.current").write_text("0\n")
    r = _onnxforge(["convert", "torch", dyn, "-o", tmp_path / "m.onnx"], tmp_path, ONNXFORGE_CGROUP_ROOT=str(cg))
    assert r.returncode == 3, r.stderr
    assert "of memory available" in r.stderr and "hint: " in r.stderr
    assert not (tmp_path / "m.onnx").exists()


def _listening(port: int) -> set[str]:
    """Local addresses (hex, as /proc/net/tcp* writes them) of sockets listening on ``port``."""
    out = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        try:
            lines = open(table).read().splitlines()[1:]
        except OSError:
            continue
        for line in lines:
            local, state = line.split()[1], line.split()[3]
            addr, _, p = local.rpartition(":")
            if state == "0A" and int(p, 16) == port:  # 0A: LISTEN
                out.add(addr)
    return out


def test_serve_check_serves_on_loopback_whatever_settings_json_says(tmp_path):
    """A settings.json asking for every interface and its own ports once made the server
    bind 0.0.0.0 on ports serve-check never polled ("not ready within 60 s")."""
    import importlib.util

    if importlib.util.find_spec("mlserver") is None:  # not imported here: its protobufs clash with tritonclient's
        pytest.skip("mlserver is not installed (pip install 'onnxforge[serve]')")
    sys.path.insert(0, str(ROOT))
    from fixtures import make_fixtures as mf
    from onnxforge.steps.package.package import package
    from onnxforge.steps.serve_check.check import serve_check
    from onnxforge.steps.serve_check.check import free_ports, mlserver_process

    mf.onnx_tiny(tmp_path / "tiny.onnx")
    folder = tmp_path / "srv"
    package(str(tmp_path / "tiny.onnx"), folder, target="mlserver")
    theirs = free_ports(3)
    settings = json.loads((folder / "settings.json").read_text())
    settings.update(host="0.0.0.0", http_port=theirs[0], grpc_port=theirs[1], metrics_port=theirs[2])
    (folder / "settings.json").write_text(json.dumps(settings))
    stopped: list = []
    with mlserver_process(folder, timeout=60, stopped=stopped) as server:
        for port in (server.http_port, server.grpc_port):
            assert _listening(port) and _listening(port) <= {"0100007F", "0000000000000000FFFF00000100007F"}, port
        assert not any(_listening(p) for p in theirs)
    assert stopped == [True]
    rep = serve_check(folder, duration=0.5, concurrency=1, protocols=("rest",))
    assert rep.passed, rep.failures


def test_a_forged_pycache_beside_the_runtime_is_never_run(tmp_path):
    """A .pyc claiming the shipped runtime's mtime and size would run instead of the
    checked source; serve-check's server reads bytecode only from its own scratch folder,
    so the folder serves (a harmless __pycache__ that `mlserver start` left is no reason
    to refuse it) and the payload never runs."""
    import importlib.util

    if importlib.util.find_spec("mlserver") is None:  # not imported here: its protobufs clash with tritonclient's
        pytest.skip("mlserver is not installed (pip install 'onnxforge[serve]')")
    sys.path.insert(0, str(ROOT))
    from fixtures import make_fixtures as mf
    from onnxforge.steps.package.package import package

    mf.onnx_tiny(tmp_path / "tiny.onnx")
    folder = tmp_path / "srv"
    package(str(tmp_path / "tiny.onnx"), folder, target="mlserver")
    forged_bytecode(tmp_path, folder)
    before = sorted(p.relative_to(folder) for p in folder.rglob("*"))
    r = _onnxforge(["serve-check", folder, "--duration", "0.5", "--concurrency", "1"], cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    assert not (tmp_path / MARKER).exists(), "the forged bytecode ran"
    assert sorted(p.relative_to(folder) for p in folder.rglob("*")) == before  # nothing written into the folder


_STUB_MLSERVER = """\
import multiprocessing
import sys


async def load_settings(folder=None):
    return None, None


def _worker():
    import onnxforge_runtime  # noqa: F401


def main():  # what `mlserver start` does with the runtime: the folder on sys.path, workers spawned
    sys.path.insert(0, sys.argv[2])
    worker = multiprocessing.get_context("spawn").Process(target=_worker)
    worker.start()
    worker.join()
    import onnxforge_runtime  # noqa: F401
"""


def test_the_launcher_and_its_spawned_workers_never_read_the_folders_bytecode(tmp_path):
    """serve-check's launcher, in front of a stand-in for `mlserver start` that imports
    the folder's runtime in its own process and in a spawned worker (MLServer's parallel
    workers; its 1.7 workers crash under this uvloop, so a real one cannot be served
    here): both run the .py source, neither the forged .pyc beside it, and nothing is
    written into the folder."""
    from onnxforge.steps.serve_check.check import _LAUNCH

    stub = tmp_path / "stub" / "mlserver" / "cli"
    stub.mkdir(parents=True)
    for init in (stub.parent / "__init__.py", stub / "__init__.py"):
        init.write_text("")
    (stub / "main.py").write_text(_STUB_MLSERVER)
    folder = tmp_path / "srv"
    folder.mkdir()
    ran = tmp_path / "ran"
    ran.mkdir()
    (folder / "onnxforge_runtime.py").write_text(f"import os; open(os.path.join({str(ran)!r}, str(os.getpid())), 'w').close()\n")
    forged_bytecode(tmp_path, folder)
    before = sorted(p.relative_to(folder) for p in folder.rglob("*"))
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(tmp_path / "stub"), str(ROOT)])}
    env.pop("PYTHONPYCACHEPREFIX", None)
    r = subprocess.run([sys.executable, "-c", _LAUNCH, "mlserver", "start", str(folder), "127.0.0.1", "1", "2", "3",
                        str(tmp_path / "pycache")],
                       cwd=folder, env=env, capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    assert not (tmp_path / MARKER).exists(), "the forged bytecode ran"
    assert len(list(ran.iterdir())) == 2  # the source ran in the launcher and in the spawned worker
    assert sorted(p.relative_to(folder) for p in folder.rglob("*")) == before


def test_trust_code_lets_a_folder_name_its_own_runtime(tmp_path):
    from onnxforge.core.errors import BadInputError
    from onnxforge.steps.serve_check.check import check_folder_code

    (tmp_path / "model-settings.json").write_text(json.dumps({"name": "m", "implementation": "mine.Runtime"}))
    (tmp_path / "mine.py").write_text("")
    with pytest.raises(BadInputError, match="mine.Runtime"):
        check_folder_code(tmp_path)
    check_folder_code(tmp_path, trust_code=True)


@pytest.mark.parametrize("kind, context", [
    ("builtins.tuple", {"__enum__": True, "fqn": "setup:Evil", "name": "A"}),  # torch's JSON hook imports the module
    ("collections.defaultdict",  # a defaultdict's factory
     {"default_factory_module": "setup", "default_factory_name": "Evil", "dict_context": ["a", "b"]}),
], ids=["enum", "defaultdict"])
def test_pt2_spec_context_cannot_import_a_module(dyn, tmp_path, kind, context):
    """Pytree contexts in a .pt2's specs name modules torch imports while loading."""
    def edit(program):
        sig = program["graph_module"]["module_call_graph"][0]["signature"]
        spec = json.loads(sig["out_spec"])
        spec[1]["type"], spec[1]["context"] = kind, json.dumps(context) if "__enum__" in context else context
        sig["out_spec"] = json.dumps(spec)

    r = _convert_beside_a_setup_py(dyn, tmp_path, edit)
    assert r.returncode == 3, r.stderr
    assert "setup" in r.stderr and "hint: " in r.stderr


def test_pt2_grammar_takes_what_torch_writes_and_nothing_else():
    from onnxforge.backends.torch.pt2 import _expression_ok, _target_ok

    sym = "Symbol('s0', positive=True, integer=True)"
    for e in (sym, f"FloorDiv({sym}, Integer(2))", f"Min({sym}, Symbol('s1', integer=True))",
              f"Add(Mod(Mul(Integer(6), {sym}), Integer(7)), Integer(1))", f"Pow({sym}, Integer(2))",
              f"Mul(Float('1.5', precision=53), {sym})", f"StrictLessThan({sym}, Integer(4))", "int_oo", "2*s44",
              "s0 // 2 + Min(s0, s1) - 3*s2 % 7 >= 1", "-s0", "oo"):
        assert _expression_ok(e, guard=False), e
    for e in ("__import__('os').system('x')", f"{sym}.__class__", "exec('1')", "Min(open, 1)", "Symbol('a b')",
              "Integer(2)**Integer(99999999)", "Pow(Integer(2), Integer(10**9))", "((((s0**8)**8)**8)**8)**8",
              "lambda: 1", "[s0 for s0 in s1]", "s0[0]", "ｅｘｅｃ('1')", "s0 if s1 else s2", "Symbol('s0', f=print)"):
        assert not _expression_ok(e, guard=False), e
    for g in ("(L['x'].size()[0] // 2) <= L['x'].size()[0]", "min(L['y'].size()[0], L['x'].size()[0]) <= 3",
              "(1 + ((3*L['x'].size()[0]) % 7)) != 1", "math.floor(L['x'].size()[1] / 2) == 2"):
        assert _expression_ok(g, guard=True), g
    for g in ("__import__('os').system('x') == 0", "L['x'].size()[0] # ", "L['x'].__class__", "L['x\"'].size()[0]",
              "os.system('x')", "L['x'].size()[0]\n== 1", "getattr(L, 'x')"):
        assert not _expression_ok(g, guard=True), g
    for t in ("torch.ops.aten.add.Tensor", "torch.ops.aten.__and__.Tensor", "torch.ops.higher_order.cond",
              "_operator.floordiv", "torch.sym_min", "math.trunc"):
        assert _target_ok(t), t
    for t in ("torch.os.system", "torch.ops.import_module", "torch.ops.load_library", "torch.ops.aten.__class__",
              "torch.ops._dir.append", "torch.load", "builtins.eval", "_operator.attrgetter", "math.floor.__self__"):
        assert not _target_ok(t), t
