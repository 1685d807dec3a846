"""`onnxforge doctor`: what onnxforge sees on this machine, in one report.

Versions of Python and of every package a step uses (read from the installed
distributions: nothing heavy is imported), which onnxruntime build is installed
(CPU, GPU, OpenVINO ...; two builds at once is a problem), every execution provider
ORT lists and whether it actually initialises (a one-node session on it: a provider
can be listed and still fail to load its libraries), the CPU model and the ISA
extensions that decide int8 speed, the cgroup CPU quota and memory limit, the GPUs
nvidia-smi reports, and which extras are installed and what a missing one disables.

``require`` names providers that must initialise (``--require cuda`` in CI on a GPU
runner): the report's ``passed`` is False when one does not.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
import time
from dataclasses import dataclass, field
from typing import Mapping, Sequence
from importlib import metadata
import platform
from onnxforge import __version__
from onnxforge.backends.onnx.runtime import (
    PROVIDERS,
    available_providers,
    installed_runtime_packages,
    resolve_provider,
    runtime_conflict_note,
    session_options,
    short_provider,
)
from onnxforge.core.errors import first_line
from onnxforge.core.system import (
    affinity_cpus,
    available_memory,
    cgroup_cpu_limit,
    cpu_info,
    cpu_quota,
    host_available_memory,
    memory_limit,
)

# The extras of pyproject.toml: what each brings and what is off without it
# (tests/backends/test_doctor.py checks this table against pyproject.toml).
EXTRAS = {
    "torch": (("torch", "onnxscript"), "convert torch; torch, .pt2 and Hugging Face sources in validate and release"),
    "sklearn": (("scikit-learn", "skl2onnx", "skops", "pandas"),
                "convert sklearn; .skops/.joblib sources in validate and release; CSV samples"),
    "boosting": (("onnxmltools", "lightgbm", "xgboost-cpu"), "LightGBM and XGBoost estimators in convert sklearn"),
    "serve": (("mlserver", "mlflow-skinny", "tritonclient", "sqlalchemy", "alembic"),
              "package --target mlflow (and --mlflow-tracking-uri), serve-check (MLServer), Triton config checks"),
    "scale": (("ray",), "zoo --executor ray (a Ray task per release, on a local instance or a cluster)"),
    "openvino": (("openvino", "nncf"), "--runtime openvino in benchmark, validate and the release's latency gate; "
                                       "quantize static --engine nncf"),
}
PACKAGES = ("onnx", "onnxruntime", "numpy", "onnxsim", "torch", "onnxscript", "scikit-learn", "skl2onnx",
            "onnxmltools", "transformers", "mlserver", "mlflow-skinny", "tritonclient", "ray", "openvino", "nncf", "typer",
            "rich", "pydantic")
BUILDS = {"onnxruntime": "CPU", "onnxruntime-gpu": "GPU (CUDA, TensorRT)", "onnxruntime-openvino": "OpenVINO",
          "onnxruntime-directml": "DirectML", "onnxruntime-rocm": "ROCm", "onnxruntime-qnn": "QNN",
          "onnxruntime-training": "training"}


@dataclass(frozen=True)
class ProviderCheck:
    name: str  # cpu, cuda ... (the --provider spelling)
    provider: str  # CUDAExecutionProvider
    available: bool  # listed by onnxruntime.get_available_providers()
    initialises: bool  # a one-node session came up with it as the first active provider
    seconds: float = 0.0
    error: str = ""


@dataclass(frozen=True)
class ExtraStatus:
    name: str
    installed: bool
    missing: tuple[str, ...]
    disables: str


@dataclass(frozen=True)
class DoctorReport:
    onnxforge: str
    python: str
    platform: str
    packages: Mapping[str, str | None]  # distribution -> version (None: not installed)
    onnxruntime_build: str
    onnxruntime_packages: tuple[str, ...]
    providers: tuple[ProviderCheck, ...]
    cpu: Mapping[str, object]  # model, machine, isa flags
    cpus: Mapping[str, object]  # affinity, cgroup quota, the threads onnxforge uses
    memory: Mapping[str, int | None]  # bytes: cgroup limit, available to this process, host available
    gpus: tuple[Mapping[str, str], ...]
    extras: tuple[ExtraStatus, ...]
    passed: bool
    required: tuple[str, ...] = ()
    problems: tuple[str, ...] = ()
    notes: tuple[str, ...] = field(default_factory=tuple)


def _version(dist: str) -> str | None:
    try:
        return metadata.version(dist)
    except metadata.PackageNotFoundError:
        return None


def _probe_model() -> bytes:
    from onnx import TensorProto, helper

    g = helper.make_graph([helper.make_node("Identity", ["x"], ["y"])], "doctor",
                          [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1])],
                          [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1])])
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", 13)])
    m.ir_version = 8  # every onnxruntime of the last years loads it
    return m.SerializeToString()


def check_provider(full: str, model: bytes | None = None) -> ProviderCheck:
    """Make a one-node session on ``full`` and see whether it is the active provider."""
    import onnxruntime as ort


    available = full in available_providers()
    if not available:
        return ProviderCheck(short_provider(full), full, False, False, error="not in this onnxruntime build")
    t0 = time.perf_counter()
    try:
        providers = [full] + (["CPUExecutionProvider"] if full != "CPUExecutionProvider" else [])
        sess = ort.InferenceSession(model or _probe_model(), sess_options=session_options(threads=1),
                                    providers=providers)
        active = sess.get_providers()
        ok, error = bool(active) and active[0] == full, ""
        if not ok:
            error = f"the session fell back to {', '.join(active)}"
    except Exception as exc:  # noqa: BLE001 - a provider that cannot start is what we report
        ok, error = False, first_line(exc, 300)
    return ProviderCheck(short_provider(full), full, True, ok, round(time.perf_counter() - t0, 3), error)


def gpus() -> tuple[Mapping[str, str], ...]:
    """NVIDIA GPUs as nvidia-smi lists them (name, driver, memory), or none."""
    exe = shutil.which("nvidia-smi")
    if exe is None:
        return ()
    try:
        out = subprocess.run([exe, "--query-gpu=name,driver_version,memory.total", "--format=csv,noheader"],
                             capture_output=True, text=True, timeout=15).stdout
    except (OSError, subprocess.SubprocessError):
        return ()
    rows = []
    for line in out.strip().splitlines():
        parts = [p.strip() for p in line.split(",")]
        if len(parts) == 3:
            rows.append({"name": parts[0], "driver": parts[1], "memory": parts[2]})
    return tuple(rows)


def runtime_build(packages: Sequence[str]) -> str:
    names = [BUILDS.get(p.replace("_", "-"), p) for p in packages]
    return " + ".join(names) if names else "not installed"


def extras() -> tuple[ExtraStatus, ...]:
    out = []
    for name, (dists, disables) in EXTRAS.items():
        missing = tuple(d for d in dists if _version(d) is None and not _optional_here(d))
        out.append(ExtraStatus(name, not missing, missing, disables))
    return tuple(out)


def _optional_here(dist: str) -> bool:
    """mlserver is not part of the serve extra on Python 3.13+ (its own limit)."""
    return dist == "mlserver" and sys.version_info >= (3, 13)


def doctor(require: Sequence[str] = ()) -> DoctorReport:
    """See the module docstring. ``require``: provider names that must initialise."""
    import onnxruntime as ort


    wanted = [resolve_provider(p) for p in require]  # an unknown name is a usage error, before any work
    model = _probe_model()
    listed = list(ort.get_available_providers())
    checks = [check_provider(p, model) for p in dict.fromkeys([*listed, *wanted])]
    pkgs = installed_runtime_packages()
    failed = [c for c in checks if c.provider in wanted and not c.initialises]
    problems = [f"{c.name} is required but does not initialise: {c.error}" for c in failed]
    note = runtime_conflict_note(pkgs)
    if note:
        problems.append(note)
    missing = [k for k, v in PROVIDERS.items() if v not in listed and k in ("cuda", "tensorrt", "openvino")]
    notes = [f"not in this build: {', '.join(missing)} (GPU: pip install onnxruntime-gpu; Intel: "
             "onnxruntime-openvino; one onnxruntime package at a time)"] if missing else []
    return DoctorReport(
        onnxforge=__version__, python=sys.version.split()[0], platform=platform.platform(),
        packages={p: _version(p) for p in PACKAGES}, onnxruntime_build=runtime_build(pkgs),
        onnxruntime_packages=tuple(pkgs), providers=tuple(checks), cpu=cpu_info(),
        cpus={"affinity": affinity_cpus(), "cgroup_quota": cgroup_cpu_limit(), "threads": cpu_quota()},
        memory={"cgroup_limit": memory_limit(), "available": available_memory(),
                "host_available": host_available_memory()},
        gpus=gpus(), extras=extras(), passed=not failed, required=tuple(require), problems=tuple(problems), notes=tuple(notes))
