"""`serve_check`: prove the *served* model answers like the file.

It starts ``mlserver start FOLDER`` as a subprocess in its own process group, on
127.0.0.1 and free ports (HTTP, gRPC, metrics), waits for the model to be ready, then:

1. sends the packaged inputs over REST and gRPC (V2 / Open Inference Protocol) and
   compares the answers with the golden outputs (the same ParityReport as validate);
2. sends malformed requests (wrong name, wrong datatype, wrong shape, empty body) on
   each protocol: each must get a 4xx / INVALID_ARGUMENT and the server must stay live;
3. runs a bounded loopback load (``concurrency`` threads for ``duration`` seconds, each
   with its own connection, stopping by itself) and reports served p50/p90/p99,
   throughput and errors (which must be 0), and the overhead against ``session.run``
   in this process on the same request, measured before the server starts so the two
   never compete for the CPU;
4. stops the server and every process in its group (SIGTERM, then SIGKILL), also on
   KeyboardInterrupt, and reports whether anything was left.

The gRPC client uses tritonclient's generated ``inference`` service stubs; this process
never imports mlserver (the two register the same protobuf symbols). The server runs in
the folder (its working directory), so nothing in the caller's folder can shadow a module.

A folder can name code: MLServer imports each model-settings.json's ``implementation``
(and settings.json's repository class, extensions and logging config), runs the Python
of a model's ``environment_tarball``, reads MLSERVER_* settings from a ``.env`` file, and
puts the folder first on ``sys.path``. Unless ``trust_code``, check_folder_code refuses
all of that before anything starts: implementations must be onnxforge's runtime or one
of MLServer's own (``mlserver.*``, ``mlserver_*``), settings.json may hold only the keys
in SERVER_KEYS, and the folder (and each folder holding a model-settings.json, which
MLServer also puts on ``sys.path``) may hold no importable module, except the runtime the
package ships: ``onnxforge_runtime.py``, accepted only when its sha256 is that of this
onnxforge's steps/package/mlserver_runtime.py (an edited copy is code of the folder's own); a
sub-folder without ``__init__.py`` that holds a module at any depth is refused too (Python
imports it as a namespace package: ``mlserver_x.runtime`` would pass the name check; a .py
inside ``__pycache__`` counts), and so is a folder of over MAX_MODELS model-settings.json
(MLServer loads every one: checking some would leave the rest unchecked). The server's launcher
imports whatever lies inside the folder from its ``.py`` source only, so a ``__pycache__``
there (a forged .pyc Python would run instead of the checked .py, or the harmless one
`mlserver start` leaves) is never read, and no bytecode is written into the folder (parallel
workers, which MLServer spawns as fresh interpreters, read bytecode only from serve-check's
scratch folder, PYTHONPYCACHEPREFIX); the server's own process keeps the installed packages'
bytecode caches (with the scratch prefix every start compiled MLServer and its dependencies
again: 6.2 s of CPU per start against 3.0 s).
The folder's settings.json also beats MLSERVER_HOST/ports, so the server is started
through a small launcher that sets 127.0.0.1 and the picked ports on the loaded settings
(a folder asking for ``0.0.0.0`` is served on 127.0.0.1 all the same).

A failed check gives ``passed=False`` with the reasons; an exception means the check
could not be run (no mlserver installed, the folder is not a package, the server did not
start).
"""

from __future__ import annotations

import contextlib
import itertools
import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator, Mapping, Sequence

from onnxforge.core.errors import BadInputError, MissingDependencyError, UsageError, first_line, require
from onnxforge.core.progress import task
from onnxforge.core.types import LatencyStats, ParityReport, Tolerance
from importlib import metadata
import importlib.util
import re
from onnxforge.core.options import resolve
from onnxforge.steps.package.package import RUNTIME_FILE, load_package, runtime_source
from onnxforge.steps.serve_check.options import ServeCheckOptions

# A stuck server must not hold a CI job: per-request timeout, and a stop after this many errors.
REQUEST_TIMEOUT_S = 30.0
MAX_LOAD_ERRORS = 1000


@dataclass(frozen=True)
class RequestCheck:
    protocol: str  # rest | grpc
    case: str  # wrong name | wrong datatype | wrong shape | empty body
    expected: str  # "4xx" | "INVALID_ARGUMENT"
    got: str  # HTTP status or gRPC code
    message: str  # the server's error text (cut)
    server_live: bool
    passed: bool


@dataclass(frozen=True)
class LoadStats:
    protocol: str
    concurrency: int
    duration_s: float
    requests: int
    errors: int
    throughput: float  # requests per second
    items_per_s: float  # rows per second (requests x batch)
    latency: LatencyStats | None  # ms, successful requests
    first_error: str = ""


@dataclass(frozen=True)
class ServeCheckReport:
    folder: str
    model_name: str
    server: str
    startup_s: float
    parity: Mapping[str, ParityReport]  # protocol -> served outputs vs golden outputs
    malformed: tuple[RequestCheck, ...]
    load: LoadStats | None
    in_process: LatencyStats | None  # session.run on the load's request, ms
    overhead_ms: float | None  # served p50 - in-process p50, at the load's concurrency
    batch: int | None  # rows per load request (None: the whole sample)
    passed: bool
    failures: tuple[str, ...]
    stopped: bool  # the server and every process in its group are gone
    notes: tuple[str, ...] = ()
    max_p99_ms: float | None = None


@dataclass(frozen=True)
class Server:
    pid: int
    http_port: int
    grpc_port: int
    metrics_port: int
    model_name: str
    log: Path

    @property
    def infer_path(self) -> str:
        return f"/v2/models/{self.model_name}/infer"


# ----------------------------------------------------------------------------- the server


# `mlserver start FOLDER` with serve-check's address: MLServer reads settings.json into
# init arguments, which beat the MLSERVER_* variables, so they are set on the result. A path
# hook first makes every sys.path entry inside the folder import from source only.
# argv: mlserver start FOLDER HOST HTTP GRPC METRICS WORKER_PYCACHE (the first words for ps and pgrep).
_LAUNCH = """\
import importlib.machinery
import os
import sys
if sys.path and sys.path[0] in ("", "."):
    del sys.path[0]
ROOT = os.path.realpath(sys.argv[3])


class SourceOnly(importlib.machinery.SourceFileLoader):
    def get_code(self, fullname):  # never a .pyc (the folder may hold a forged one), and none written
        path = self.get_filename(fullname)
        return self.source_to_code(self.get_data(path), path)


def folder_finder(entry):
    if not any(p == ROOT or p.startswith(ROOT + os.sep) for p in (os.path.abspath(entry or "."),
                                                                   os.path.realpath(entry or "."))):
        raise ImportError(entry)
    return importlib.machinery.FileFinder(entry, (SourceOnly, importlib.machinery.SOURCE_SUFFIXES))


sys.path_hooks.insert(0, folder_finder)
sys.path_importer_cache.clear()
# parallel workers are spawned: fresh interpreters without the hook read bytecode only
# from serve-check's scratch folder (set here, after this process started: it keeps its caches)
folder, host, http_port, grpc_port, metrics_port, os.environ["PYTHONPYCACHEPREFIX"] = sys.argv[3:9]
import mlserver.cli.main
cli = sys.modules["mlserver.cli.main"]  # mlserver.cli.main is also the name of its main() function
_load = cli.load_settings


async def load_settings(folder=None):
    settings, models = await _load(folder)
    settings.host = host
    settings.http_port, settings.grpc_port, settings.metrics_port = int(http_port), int(grpc_port), int(metrics_port)
    return settings, models


cli.load_settings = load_settings
sys.argv = ["mlserver", "start", folder]
cli.main()
"""


def _mlserver_command(folder: Path, http_port: int, grpc_port: int, metrics_port: int, pycache: Path) -> list[str]:
    if importlib.util.find_spec("mlserver") is None:
        raise MissingDependencyError("mlserver is not installed", hint="pip install 'onnxforge[serve]'")
    return [sys.executable, "-c", _LAUNCH, "mlserver", "start", str(folder), "127.0.0.1", str(http_port),
            str(grpc_port), str(metrics_port), str(pycache)]


def free_ports(n: int) -> list[int]:
    """Ports the kernel hands out now, all held open until every one is picked, so the
    n are distinct. Another process may take one before the server binds it; the server
    then fails to start and the caller retries once."""
    socks = []
    try:
        for _ in range(n):
            s = socket.socket()
            s.bind(("127.0.0.1", 0))
            socks.append(s)
        return [s.getsockname()[1] for s in socks]
    finally:
        for s in socks:
            s.close()


def model_settings(folder: str | os.PathLike) -> dict:
    folder = Path(folder)
    if not folder.is_dir():
        raise BadInputError(f"not a folder: {folder}", hint="give the folder `onnxforge package` wrote")
    if (folder / "config.pbtxt").is_file() or any(folder.glob("*/config.pbtxt")):
        raise UsageError(f"{folder} is a Triton model repository; serve-check runs MLServer folders",
                         hint="no Triton server installs from the package registries: package --target mlserver "
                              "or mlflow for serve-check; the Triton config is checked when it is written")
    path = folder / "model-settings.json"
    if not path.is_file():
        raise BadInputError(f"{folder} has no model-settings.json", hint="package it with --target mlserver or mlflow")
    settings = _settings_json(path)
    if not isinstance(settings.get("name"), str) or not settings["name"]:
        raise BadInputError(f"{path} names no model (\"name\" must be a non-empty string)",
                            hint="re-run `onnxforge package`")
    params = settings.get("parameters")
    params = params if isinstance(params, dict) else {}
    extra = params.get("extra") if isinstance(params.get("extra"), dict) else {}
    for key, value, want in (("implementation", settings.get("implementation"), str),
                             ("parameters", settings.get("parameters"), dict),
                             ("parameters.uri", params.get("uri"), str),
                             ("parameters.extra", params.get("extra"), dict),
                             ("parameters.extra.provider", extra.get("provider"), str),
                             ("parameters.extra.threads", extra.get("threads"), int),
                             ("parameters.extra.spinning", extra.get("spinning"), bool)):
        if value is not None and (not isinstance(value, want) or want is int and isinstance(value, bool)):
            raise BadInputError(f"{path}: {key} must be {_KINDS[want]}, not {json.dumps(value)[:80]}",
                                hint="re-run `onnxforge package`, or fix the file")
    return settings


_KINDS = {str: "a string", dict: "an object", int: "an integer", bool: "true or false"}


def _settings_json(path: Path) -> dict:
    try:
        settings = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError, RecursionError) as exc:
        raise BadInputError(f"{path} is not valid JSON ({str(exc)[:160]})",
                            hint="re-run `onnxforge package`, or fix the file") from None
    if not isinstance(settings, dict):
        raise BadInputError(f"{path} holds a JSON {type(settings).__name__}, not an object",
                            hint="re-run `onnxforge package`, or fix the file")
    return settings


# settings.json keys that change neither what is imported nor where the server listens
# or writes (host and ports are allowed: serve-check replaces them). Anything else
# (model_repository_implementation, extensions, logging_settings, environments_dir,
# metrics_dir, kafka_*, ...) needs --trust-code.
SERVER_KEYS = frozenset({
    "debug", "parallel_workers", "parallel_workers_timeout", "load_models_at_startup", "server_name",
    "server_version", "host", "http_port", "grpc_port", "metrics_port", "root_path", "grpc_max_message_length",
    "metrics_endpoint", "metrics_rest_server_prefix", "use_structured_logging", "gzip_enabled", "cache_enabled",
    "cache_size", "cors_settings",
})
RUNTIME_PREFIXES = ("onnxforge.steps.package.mlserver_runtime.", "mlserver.", "mlserver_")
SHIPPED_PREFIX = "onnxforge_runtime."  # the runtime file the package writes beside model-settings.json
_MODULE_SUFFIXES = (".py", ".pyc", ".pyw", ".so", ".pyd")
MAX_MODELS = 1000  # model-settings.json files in one folder


def check_folder_code(folder: str | os.PathLike, trust_code: bool = False) -> None:
    """Refuse a folder whose settings would make MLServer run code that is neither
    onnxforge's nor MLServer's (see the module docstring), unless ``trust_code``."""
    folder = Path(folder)
    hint = "pass --trust-code if you trust the folder (its code runs in the server)"

    def refuse(what: str):
        raise BadInputError(f"{folder}: {what}; serving it runs code from the folder, so it is refused", hint=hint)


    found = sorted(itertools.islice(folder.rglob("model-settings.json"), MAX_MODELS + 1))
    if len(found) > MAX_MODELS and not trust_code:  # MLServer loads every one: checking some is checking none
        refuse(f"it holds over {MAX_MODELS} model-settings.json files, more than serve-check reads")
    for path in found:
        settings = _settings_json(path)
        impl = settings.get("implementation")
        params = settings.get("parameters") if isinstance(settings.get("parameters"), dict) else {}
        if trust_code:
            continue
        shipped = isinstance(impl, str) and impl.startswith(SHIPPED_PREFIX)
        if not isinstance(impl, str) or not (shipped or impl.startswith(RUNTIME_PREFIXES)):
            refuse(f"{path.relative_to(folder)} names the implementation {impl!r}, which is neither onnxforge's "
                   "runtime nor one of MLServer's")
        if shipped and not _our_runtime(path.parent / RUNTIME_FILE):
            refuse(f"{(path.parent / RUNTIME_FILE).relative_to(folder)} is missing or not this onnxforge's "
                   "runtime (its sha256 differs from onnxforge/steps/package/mlserver_runtime.py)")
        for key in ("environment_path", "environment_tarball"):
            if params.get(key):
                refuse(f"{path.relative_to(folder)} sets parameters.{key} (MLServer runs that environment's Python)")
    if (folder / "settings.json").is_file():
        settings = _settings_json(folder / "settings.json")
        other = sorted(set(settings) - SERVER_KEYS)
        if other and not trust_code:
            refuse(f"settings.json sets {', '.join(other)} (serve-check allows only {', '.join(sorted(SERVER_KEYS))})")
    if trust_code:
        return
    if (folder / ".env").exists():
        refuse(".env holds MLSERVER_* settings MLServer would read")
    for where in sorted({folder} | {p.parent for p in found}):
        for entry in sorted(where.iterdir()):
            name = str(entry.relative_to(folder))
            if _importable(entry) or _holds_module(entry):
                refuse(f"it holds the Python module {name} (MLServer puts the folder first on sys.path)")


def _importable(path: Path) -> bool:
    """A file Python could import under some name: any module suffix, except what Python's
    own bytecode cache holds (``__pycache__/NAME.TAG.pyc``: a dotted name is no module name)
    and an accepted copy of the runtime. A ``.py`` inside ``__pycache__`` is importable
    (``mlserver_x.__pycache__.evil``: the folder is a namespace package like any other)."""
    if path.suffix not in _MODULE_SUFFIXES:
        return False
    if path.suffix == ".pyc" and path.parent.name == "__pycache__" and "." in path.stem:
        return False
    return not (path.name == RUNTIME_FILE and _our_runtime(path))


def _holds_module(entry: Path) -> bool:
    """A folder Python would import as a package, regular or namespace (no ``__init__.py``):
    it holds, at any depth, an importable file. Links are followed; a tree too large to
    walk counts as one."""
    if not entry.is_dir():
        return False
    seen = 0
    for where, dirs, files in os.walk(entry, followlinks=True):
        if any(_importable(Path(where, f)) for f in files):
            return True
        seen += len(dirs) + len(files)
        if seen > 10_000:
            return True
    return False


def _our_runtime(path: Path) -> bool:
    """True when ``path`` is a byte copy of the runtime this onnxforge ships."""
    from onnxforge.core.fileio import sha256_file

    return path.is_file() and sha256_file(path) == sha256_file(runtime_source())


def _log_tail(log: Path, n: int = 15) -> str:
    try:
        lines = log.read_text(errors="replace").splitlines()
    except OSError:
        return ""
    return "\n".join(lines[-n:])


def _http(port: int, method: str, path: str, body: bytes | None = None, timeout: float = REQUEST_TIMEOUT_S):
    import http.client

    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
    try:
        headers = {"Content-Type": "application/json"} if body is not None else {}
        conn.request(method, path, body=body, headers=headers)
        resp = conn.getresponse()
        return resp.status, resp.read()
    finally:
        conn.close()


def _live(server: Server) -> bool:
    try:
        return _http(server.http_port, "GET", "/v2/health/live", timeout=5)[0] == 200
    except OSError:
        return False


def _log_cause(log: Path) -> str:
    """The first exception line a server log holds (the model that did not load, the
    busy port), else its last lines: MLServer logs a failed model load and exits 0."""
    tail = _log_tail(log, 200)
    causes = [ln for ln in tail.splitlines() if re.match(r"^[A-Za-z_.]*(Error|Exception): ", ln)]
    return causes[0] if causes else "\n".join(tail.splitlines()[-15:])


def _wait_ready(proc: subprocess.Popen, server: Server, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    path = f"/v2/models/{server.model_name}/ready"
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise BadInputError(
                f"mlserver exited (code {proc.returncode}) before {server.model_name} was ready: {_log_cause(server.log)}",
                hint=f"the server log is {server.log}")
        try:
            if _http(server.http_port, "GET", path, timeout=2)[0] == 200:
                return
        except OSError:
            pass
        time.sleep(0.1)
    raise BadInputError(f"mlserver did not report {server.model_name} ready within {timeout:g} s: "
                        f"{_log_cause(server.log)}", hint=f"raise --timeout, or read the server log {server.log}")


def _group_alive(pgid: int) -> bool:
    try:
        os.killpg(pgid, 0)
        return True
    except ProcessLookupError:
        return False
    except PermissionError:
        return True


def stop_group(proc: subprocess.Popen, grace: float = 10.0) -> bool:
    """SIGTERM the server's process group, SIGKILL what is left after ``grace`` seconds;
    True when nothing of the group is left."""
    pgid = proc.pid  # start_new_session: the server leads its own group
    if _group_alive(pgid):
        with contextlib.suppress(ProcessLookupError):
            os.killpg(pgid, signal.SIGTERM)
    try:
        proc.wait(grace)
    except subprocess.TimeoutExpired:
        pass
    deadline = time.monotonic() + grace
    while _group_alive(pgid) and time.monotonic() < deadline:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(pgid, signal.SIGKILL)
        with contextlib.suppress(subprocess.TimeoutExpired):
            proc.wait(0.1)
        time.sleep(0.05)
    with contextlib.suppress(subprocess.TimeoutExpired):
        proc.wait(1.0)
    return not _group_alive(pgid)


@contextlib.contextmanager
def mlserver_process(folder: str | os.PathLike, *, timeout: float = 60.0, log_dir: str | os.PathLike | None = None,
                     stopped: list | None = None, trust_code: bool = False) -> Iterator[Server]:
    """Run ``mlserver start FOLDER`` on 127.0.0.1 and free ports until the block ends
    (also on an exception or Ctrl-C). ``stopped`` (a list) receives True when the whole
    process group is gone. The folder's code is checked first (check_folder_code)."""
    import tempfile

    folder = Path(folder).resolve()
    name = model_settings(folder)["name"]
    check_folder_code(folder, trust_code)
    # Without log_dir the log lives in a temp folder, removed unless the server failed
    # to start (the error names the log).
    log_root = Path(log_dir) if log_dir else Path(tempfile.mkdtemp(prefix="onnxforge-serve-"))
    log_root.mkdir(parents=True, exist_ok=True)
    keep_log = log_dir is not None
    try:
        for attempt in (1, 2):
            http_port, grpc_port, metrics_port = free_ports(3)
            cmd = _mlserver_command(folder, http_port, grpc_port, metrics_port, log_root / "pycache")
            log = log_root / f"mlserver-{attempt}.log"
            env = dict(os.environ, MLSERVER_HOST="127.0.0.1",
                       MLSERVER_HTTP_PORT=str(http_port), MLSERVER_GRPC_PORT=str(grpc_port),
                       MLSERVER_METRICS_PORT=str(metrics_port))
            with open(log, "wb") as logf:
                proc = subprocess.Popen(cmd, cwd=folder, env=env, stdin=subprocess.DEVNULL, stdout=logf,
                                        stderr=subprocess.STDOUT, start_new_session=True)
            server = Server(proc.pid, http_port, grpc_port, metrics_port, name, log)
            try:
                try:
                    with task("start mlserver", detail=True):  # seconds of imports and model loading
                        _wait_ready(proc, server, timeout)
                except BadInputError:
                    if attempt == 1 and "address already in use" in _log_tail(log, 200).lower():
                        continue  # another process took a port between picking and binding
                    keep_log = True
                    raise
                yield server
                return
            finally:
                gone = stop_group(proc)
                if stopped is not None:
                    stopped.append(gone)
    finally:
        if not keep_log:
            import shutil

            shutil.rmtree(log_root, ignore_errors=True)


# ----------------------------------------------------------------------------- clients


class RestClient:
    """One keep-alive HTTP connection (one per load thread)."""

    def __init__(self, server: Server, timeout: float = REQUEST_TIMEOUT_S):
        import http.client

        self.server = server
        self.conn = http.client.HTTPConnection("127.0.0.1", server.http_port, timeout=timeout)

    def post(self, body: bytes) -> tuple[int, bytes]:
        import http.client

        try:
            self.conn.request("POST", self.server.infer_path, body=body, headers={"Content-Type": "application/json"})
            resp = self.conn.getresponse()
            return resp.status, resp.read()
        except (http.client.HTTPException, OSError):
            self.conn.close()  # reconnect on the next request
            raise

    def infer(self, feeds: Mapping[str, object]) -> dict:
        from onnxforge.steps.package.v2 import from_json_tensor, json_request

        status, data = self.post(json.dumps(json_request(feeds)).encode())
        if status != 200:
            raise RuntimeError(f"HTTP {status}: {data[:300].decode(errors='replace')}")
        return {o["name"]: from_json_tensor(o) for o in json.loads(data)["outputs"]}

    def close(self) -> None:
        self.conn.close()


class GrpcClient:
    """``raw``: send raw_input_contents (needed when the model has an FP16 tensor)."""

    def __init__(self, server: Server, timeout: float = REQUEST_TIMEOUT_S, raw: bool = False):
        grpc = require("grpc", "serve")
        require("tritonclient.grpc", "serve")
        from tritonclient.grpc import service_pb2, service_pb2_grpc

        self.pb, self.grpc, self.timeout, self.server, self.raw = service_pb2, grpc, timeout, server, raw
        self.channel = grpc.insecure_channel(f"127.0.0.1:{server.grpc_port}", options=[
            ("grpc.max_receive_message_length", -1), ("grpc.max_send_message_length", -1)])
        self.stub = service_pb2_grpc.GRPCInferenceServiceStub(self.channel)

    def request(self, feeds: Mapping[str, object], **overrides):
        from onnxforge.steps.package.v2 import grpc_request

        return grpc_request(self.pb, self.server.model_name, feeds, raw=self.raw, **overrides)

    def call(self, req):
        return self.stub.ModelInfer(req, timeout=self.timeout)

    def infer(self, feeds: Mapping[str, object]) -> dict:
        from onnxforge.steps.package.v2 import from_grpc_response

        return from_grpc_response(self.call(self.request(feeds)))

    def live(self) -> bool:
        try:
            return bool(self.stub.ServerLive(self.pb.ServerLiveRequest(), timeout=5).live)
        except self.grpc.RpcError:
            return False

    def close(self) -> None:
        self.channel.close()


def _client(server: Server, protocol: str, raw: bool = False):
    return RestClient(server) if protocol == "rest" else GrpcClient(server, raw=raw)


def needs_raw(info: Mapping) -> bool:
    """Whether a packaged model has an FP16 tensor (see v2.grpc_request)."""
    return any(t["dtype"] == "float16" for t in list(info["inputs"]) + list(info["outputs"]))


# ----------------------------------------------------------------------------- the checks


def served_parity(server: Server, protocol: str, inputs: Sequence[Mapping], golden: Sequence[Mapping],
                  tol: Tolerance, *, raw: bool = False) -> ParityReport:
    from onnxforge.checks.compare import compare

    label = f"mlserver over {protocol}"
    client = _client(server, protocol, raw)
    try:
        served = [client.infer(s) for s in inputs]
    except Exception as exc:  # a served error on a valid request is a failed check
        return ParityReport("golden", label, len(inputs), (), False,
                            problems=(f"request failed: {first_line(exc, 500)}",))
    finally:
        client.close()
    return compare(list(golden), served, tol, reference="golden (onnxruntime in-process)", candidate=label)


def _malformed_cases(feeds: Mapping[str, object], specs: Sequence[Mapping]) -> list[tuple[str, dict, dict, dict]]:
    """(case, feeds, datatype overrides, shape overrides) for each malformed request."""
    import numpy as np

    from onnxforge.steps.package.v2 import datatype_of

    first = specs[0]["name"]
    arr = np.asarray(feeds[first])
    taken = {s["name"] for s in specs}
    wrong = first + "_wrong"
    while wrong in taken:
        wrong += "_"
    renamed = {(wrong if k == first else k): v for k, v in feeds.items()}
    right = datatype_of(arr)
    alt = "INT64" if right in ("FP32", "FP64", "FP16", "BYTES") else "FP32"
    numeric = np.zeros(arr.shape) if right == "BYTES" else arr
    alt_arr = numeric.astype("int64" if alt == "INT64" else "float32")
    retyped = dict(feeds)
    retyped[first] = alt_arr
    reshaped = dict(feeds)
    reshaped[first] = arr.reshape(arr.shape + (1,))  # one more dim: the rank is wrong
    return [("wrong name", renamed, {}, {}), ("wrong datatype", retyped, {}, {}),
            ("wrong shape", reshaped, {}, {}), ("empty body", {}, {}, {})]


def malformed_requests(server: Server, protocol: str, feeds: Mapping[str, object],
                       specs: Sequence[Mapping], *, raw: bool = False) -> list[RequestCheck]:
    from onnxforge.steps.package.v2 import json_request

    results = []
    if protocol == "rest":
        client = RestClient(server)
        try:
            for case, f, _, _ in _malformed_cases(feeds, specs):
                body = b"" if case == "empty body" else json.dumps(json_request(f)).encode()
                try:
                    status, data = client.post(body)
                    got, msg = str(status), data[:300].decode(errors="replace")
                    ok = 400 <= status < 500
                except OSError as exc:
                    got, msg, ok = "no answer", str(exc), False
                live = _live(server)
                results.append(RequestCheck("rest", case, "4xx", got, msg, live, ok and live))
        finally:
            client.close()
        return results
    client = GrpcClient(server, raw=raw)
    try:
        for case, f, dts, shapes in _malformed_cases(feeds, specs):
            req = client.pb.ModelInferRequest(model_name=server.model_name) if case == "empty body" \
                else client.request(f, datatypes=dts, shapes=shapes)
            try:
                client.call(req)
                got, msg = "OK", ""
            except client.grpc.RpcError as exc:
                got, msg = exc.code().name, (exc.details() or "")[:300]
            live = client.live()
            results.append(RequestCheck("grpc", case, "INVALID_ARGUMENT", got, msg, live,
                                        got == "INVALID_ARGUMENT" and live))
    finally:
        client.close()
    return results


def latency_stats(ms: Sequence[float]) -> LatencyStats | None:
    """core.stats' figures of the successful requests (None when none succeeded)."""
    from onnxforge.core.stats import latency_stats as stats_of

    return stats_of(ms)[0] if len(ms) else None


def run_load(server: Server, feeds: Mapping[str, object], *, protocol: str = "rest", concurrency: int = 4,
             duration: float = 5.0, rows: int = 1, warmup: int = 5, raw: bool = False) -> LoadStats:
    """``concurrency`` threads, each with its own connection, sending the same request
    back to back for ``duration`` seconds; stops early after MAX_LOAD_ERRORS errors."""
    from onnxforge.steps.package.v2 import json_request

    stop = threading.Event()
    lock = threading.Lock()
    lat: list[float] = []
    errors = [0]
    first_error = [""]
    body = json.dumps(json_request(feeds)).encode()

    def worker():
        client = _client(server, protocol, raw)
        req = None if protocol == "rest" else client.request(feeds)
        mine = []
        try:
            while not stop.is_set():
                t0 = time.perf_counter()
                try:
                    if protocol == "rest":
                        status, data = client.post(body)
                        if status != 200:
                            raise RuntimeError(f"HTTP {status}: {data[:200].decode(errors='replace')}")
                    else:
                        client.call(req)
                    mine.append((time.perf_counter() - t0) * 1e3)
                except Exception as exc:
                    with lock:
                        errors[0] += 1
                        first_error[0] = first_error[0] or first_line(exc, 300)
                        if errors[0] >= MAX_LOAD_ERRORS:
                            stop.set()
        finally:
            client.close()
            with lock:
                lat.extend(mine)

    warm = _client(server, protocol, raw)
    try:  # connections, ORT's first-run allocations and the server's code paths
        for _ in range(warmup):
            warm.infer(feeds)
    except Exception as exc:
        errors[0] += 1
        first_error[0] = first_line(exc, 300)
    finally:
        warm.close()
    threads = [threading.Thread(target=worker, daemon=True) for _ in range(concurrency)]
    t_start = time.perf_counter()
    try:
        for t in threads:
            t.start()
        with task(f"load: {concurrency} {protocol} client(s)", total=float(duration), detail=True) as bar:
            deadline = t_start + duration  # woken 4 times a second to move the bar; errors stop it early
            while not stop.wait(max(0.0, min(0.25, deadline - time.perf_counter()))):
                bar.update(min(float(duration), time.perf_counter() - t_start))
                if time.perf_counter() >= deadline:
                    break
    finally:
        stop.set()
        for t in threads:
            t.join(REQUEST_TIMEOUT_S + 5)
    elapsed = time.perf_counter() - t_start
    n = len(lat)
    return LoadStats(protocol, concurrency, round(elapsed, 3), n, errors[0], n / elapsed if elapsed else 0.0,
                     n * rows / elapsed if elapsed else 0.0, latency_stats(lat), first_error[0])


def in_process_latency(model: str | os.PathLike, feeds: Mapping[str, object], *, provider: str = "cpu",
                       threads: int | None = None, spinning: bool | None = None, seconds: float = 2.0,
                       warmup: int = 5) -> LatencyStats:
    """session.run on the same session settings as the server's runtime."""
    from onnxforge.backends.onnx.runtime import create_session

    sess = create_session(model, provider, threads=threads, spinning=spinning)
    feeds = dict(feeds)
    for _ in range(warmup):
        sess.run(None, feeds)
    ms = []
    end = time.perf_counter() + seconds
    while time.perf_counter() < end:
        t0 = time.perf_counter()
        sess.run(None, feeds)
        ms.append((time.perf_counter() - t0) * 1e3)
    return latency_stats(ms)


def load_request(sample: Mapping[str, object], specs: Sequence[Mapping], batch: int | None) -> tuple[dict, int | None]:
    """The first ``batch`` rows of the sample when every input has a symbolic first dim,
    else the whole sample. Returns (feeds, rows per request or None when unbatched)."""
    import numpy as np

    batched = all(s["shape"] and not isinstance(s["shape"][0], int) for s in specs)
    if batch is None or not batched:
        rows = int(np.asarray(next(iter(sample.values()))).shape[0]) if batched and sample else None
        return dict(sample), rows
    n = min(int(np.asarray(v).shape[0]) for v in sample.values())
    rows = min(batch, n)
    return {k: np.asarray(v)[:rows] for k, v in sample.items()}, rows


def serve_check(folder: str | os.PathLike, options=None, /, **kwargs) -> ServeCheckReport:
    """Serve ``folder`` (written by ``package`` with target mlserver or mlflow) in MLServer
    and check it. Options: steps/serve_check/options.py's ServeCheckOptions (object or keywords). ``duration``
    0 skips the load; ``batch``: rows of the first input sample per load request;
    tolerance: default the one stored by package; ``timeout``: seconds to wait for the
    model to be ready; ``max_p99_ms``: a gate on the served p99 under load; ``log_dir``
    keeps the server log."""
    o = resolve(ServeCheckOptions, options, kwargs)
    settings = model_settings(folder)
    check_folder_code(folder, o.trust_code)
    info, inputs, golden = load_package(folder)
    tol = _tolerance(o, info)
    params = settings.get("parameters") or {}
    extra = params.get("extra") or {}
    feeds, rows = load_request(inputs[0], info["inputs"], o.batch)
    in_proc = None
    if o.duration > 0:
        with task("in-process latency", detail=True):
            in_proc = in_process_latency((Path(folder) / params.get("uri", "./model.onnx")).resolve(), feeds,
                                         provider=extra.get("provider", "cpu"), threads=extra.get("threads"),
                                         spinning=extra.get("spinning"), seconds=min(max(o.duration / 2, 0.5), 3.0))
    stopped: list[bool] = []
    t0 = time.perf_counter()
    with mlserver_process(folder, timeout=o.timeout, log_dir=o.log_dir, stopped=stopped,
                          trust_code=o.trust_code) as server:
        startup = time.perf_counter() - t0
        raw = needs_raw(info)
        with task("served parity, malformed requests", detail=True):
            parity = {p: served_parity(server, p, inputs, golden, tol, raw=raw) for p in o.protocols}
            malformed = [m for p in o.protocols for m in malformed_requests(server, p, feeds, info["inputs"],
                                                                            raw=raw)]
        load = run_load(server, feeds, protocol=o.load_protocol, concurrency=o.concurrency, duration=o.duration,
                        rows=rows or 1, raw=raw) if o.duration > 0 else None
    overhead = load.latency.p50 - in_proc.p50 if load and load.latency and in_proc else None
    notes = [f"overhead at concurrency {o.concurrency} includes queueing; concurrency 1 isolates it"] \
        if o.concurrency > 1 and overhead is not None else []
    gone = bool(stopped) and all(stopped)
    failures = _failures(parity, malformed, load, o.max_p99_ms, gone)
    return ServeCheckReport(
        folder=str(folder), model_name=settings["name"], server=_server_version(), startup_s=round(startup, 2),
        parity=parity, malformed=tuple(malformed), load=load, in_process=in_proc, overhead_ms=overhead,
        batch=rows, passed=not failures, failures=tuple(failures), stopped=gone, notes=tuple(notes),
        max_p99_ms=o.max_p99_ms,
    )


def _tolerance(o, info: Mapping) -> Tolerance:
    from onnxforge.checks.compare import make_tolerance

    stored = _stored_tolerance(info)
    return make_tolerance(o.atol, o.rtol, stored) if (o.atol is not None or o.rtol is not None) else stored


def _failures(parity, malformed, load, max_p99_ms, gone: bool) -> list[str]:
    failures = [f"served parity over {p} failed: {_parity_why(r)}" for p, r in parity.items() if not r.passed]
    failures += [f"malformed request ({m.protocol}, {m.case}) got {m.got}, expected {m.expected}"
                 + ("" if m.server_live else "; the server stopped answering") for m in malformed if not m.passed]
    if load is not None:
        if load.errors:
            failures.append(f"{load.errors} error(s) under load: {load.first_error}")
        if not load.requests:
            failures.append("no request succeeded under load")
        if max_p99_ms is not None and load.latency and load.latency.p99 > max_p99_ms:
            failures.append(f"served p99 {load.latency.p99:.3f} ms > {max_p99_ms:g} ms")
    if not gone:
        failures.append("the server (or a child of it) was still running after stop")
    return failures


def _stored_tolerance(info: Mapping) -> Tolerance:
    t = info.get("tolerance") or {}
    from onnxforge.checks.compare import DEFAULT_TOLERANCE

    return Tolerance(float(t.get("atol", DEFAULT_TOLERANCE.atol)), float(t.get("rtol", DEFAULT_TOLERANCE.rtol)),
                     {k: (float(v[0]), float(v[1])) for k, v in (t.get("per_output") or {}).items()})


def _parity_why(r: ParityReport) -> str:
    if r.problems:
        return "; ".join(r.problems)
    bad = [o for o in r.outputs if not o.passed]
    return "; ".join(f"{o.name}: {o.message}" for o in bad) or "no outputs compared"


def _server_version() -> str:
    try:
        return f"mlserver {metadata.version('mlserver')}"
    except metadata.PackageNotFoundError:
        return "mlserver"


__all__ = ["LoadStats", "RequestCheck", "ServeCheckReport", "Server", "serve_check", "mlserver_process", "run_load",
           "in_process_latency", "served_parity", "malformed_requests", "latency_stats", "free_ports", "stop_group"]
