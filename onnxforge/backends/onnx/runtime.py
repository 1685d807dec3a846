"""ONNX Runtime sessions: provider names, thread settings, proof of which provider
is active, and what the installed runtime supports."""

from __future__ import annotations

import functools
import os
import re
from typing import Mapping, Sequence

from onnxforge.core.errors import BadInputError, MissingDependencyError, UsageError, did_you_mean, first_line
from onnxforge.core.system import cpu_info, cpu_quota
from importlib import metadata
import platform
import sys
from onnxforge.core.logs import _VERBOSITY, configure_ort

PROVIDERS = {
    "cpu": "CPUExecutionProvider",
    "cuda": "CUDAExecutionProvider",
    "tensorrt": "TensorrtExecutionProvider",
    "openvino": "OpenVINOExecutionProvider",
    "dml": "DmlExecutionProvider",
    "rocm": "ROCMExecutionProvider",
    "coreml": "CoreMLExecutionProvider",
    "qnn": "QNNExecutionProvider",
}


def resolve_provider(name: str) -> str:
    """'cuda' -> 'CUDAExecutionProvider'; a full EP name passes through if ORT knows it."""
    import onnxruntime as ort

    key = name.strip()
    if key.lower() in PROVIDERS:
        return PROVIDERS[key.lower()]
    known = set(PROVIDERS.values()) | set(ort.get_all_providers())
    if key in known:
        return key
    raise UsageError(
        f"unknown execution provider {name!r}",
        hint=" ".join(filter(None, (did_you_mean(key, PROVIDERS), "use one of: " + ", ".join(PROVIDERS)
                                    + " (or a full name such as CUDAExecutionProvider)"))),
    )


def short_provider(full: str) -> str:
    for k, v in PROVIDERS.items():
        if v == full:
            return k
    return full


@functools.lru_cache(maxsize=1)
def _runtime_packages() -> tuple[str, ...]:
    return tuple(_scan_runtime_packages())


def installed_runtime_packages() -> list[str]:
    """Distributions that provide the `onnxruntime` module (scanned once per process)."""
    return list(_runtime_packages())


def _scan_runtime_packages() -> list[str]:
    """Distributions that provide the `onnxruntime` module (onnxruntime, -gpu, -openvino ...)."""
    names = set()
    for dist in metadata.distributions():
        n = (dist.metadata.get("Name") or "").lower()
        if n == "onnxruntime" or n.startswith("onnxruntime-") or n.startswith("onnxruntime_"):
            if n.replace("_", "-") in ("onnxruntime-tools", "onnxruntime-extensions", "onnxruntime-genai"):
                continue
            names.add(n)
    return sorted(names)


def runtime_conflict_note(pkgs: list[str] | None = None) -> str | None:
    pkgs = installed_runtime_packages() if pkgs is None else pkgs
    if len(pkgs) > 1:
        return (
            f"several onnxruntime packages are installed ({', '.join(pkgs)}); they share one module and "
            "the last installed wins, which commonly hides the GPU build. Uninstall all, then install one"
        )
    return None


def available_providers() -> list[str]:
    import onnxruntime as ort

    return list(ort.get_available_providers())


def session_options(
    *,
    threads: int | None = None,
    inter_threads: int | None = None,
    spinning: bool | None = None,
    profiling: bool = False,
    optimization: str = "all",
):
    import onnxruntime as ort

    so = ort.SessionOptions()
    so.intra_op_num_threads = threads if threads is not None else cpu_quota()
    if inter_threads is not None:
        so.inter_op_num_threads = inter_threads
    so.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    if spinning is not None:
        # Spinning workers of one session steal cycles from another's (PRIOR_ART).
        so.add_session_config_entry("session.intra_op.allow_spinning", "1" if spinning else "0")
        so.add_session_config_entry("session.inter_op.allow_spinning", "1" if spinning else "0")
    so.enable_profiling = profiling
    so.graph_optimization_level = {
        "disable": ort.GraphOptimizationLevel.ORT_DISABLE_ALL,
        "basic": ort.GraphOptimizationLevel.ORT_ENABLE_BASIC,
        "extended": ort.GraphOptimizationLevel.ORT_ENABLE_EXTENDED,
        "all": ort.GraphOptimizationLevel.ORT_ENABLE_ALL,
    }[optimization]

    configure_ort()
    so.log_severity_level = 3 if _verbose() else 4
    return so


def _verbose() -> bool:
    return _VERBOSITY["level"] >= 1


def create_session(
    model: str | os.PathLike | bytes,
    provider: str = "cpu",
    *,
    provider_options: Mapping[str, str] | None = None,
    options=None,
    **option_kwargs,
):
    """An InferenceSession on ``provider``, or an error: never a silent CPU fallback.

    The requested provider must be available before the session is made, and must be
    the first active provider after (ORT drops a provider that fails to initialize).
    """
    import onnxruntime as ort

    full = resolve_provider(provider)
    avail = available_providers()
    if full not in avail:
        raise MissingDependencyError(
            f"execution provider {short_provider(full)} ({full}) is not available; "
            f"available: {', '.join(avail)}",
            hint=runtime_conflict_note() or provider_hint(full),
        )
    providers: list = [(full, dict(provider_options or {}))]
    if full != "CPUExecutionProvider":
        providers.append("CPUExecutionProvider")  # for ops the EP does not implement
    so = options if options is not None else session_options(**option_kwargs)
    src = model if isinstance(model, bytes) else str(model)
    try:
        sess = ort.InferenceSession(src, sess_options=so, providers=providers)
    except Exception as exc:
        raise _session_error(model, exc) from None
    active = sess.get_providers()
    if not active or active[0] != full:
        raise MissingDependencyError(
            f"{full} was requested but the session runs on {', '.join(active)} "
            "(the provider failed to initialize)",
            hint=runtime_conflict_note() or provider_hint(full),
        )
    return sess


def provider_hint(full: str) -> str:
    if full in ("CUDAExecutionProvider", "TensorrtExecutionProvider"):
        return "pip uninstall onnxruntime && pip install onnxruntime-gpu (and a matching CUDA/cuDNN)"
    if full == "OpenVINOExecutionProvider":
        return "pip install onnxruntime-openvino"
    if full == "DmlExecutionProvider":
        return "pip install onnxruntime-directml (Windows)"
    return "install the onnxruntime build that ships this provider"


def _session_error(model, exc: Exception):
    text = str(exc)
    where = "<bytes>" if isinstance(model, bytes) else str(model)
    line = first_line(exc, 10_000)
    if "Unsupported model IR version" in text or "opset" in text.lower() and "support" in text.lower():
        sup = runtime_support()
        return BadInputError(
            f"{where}: onnxruntime {sup['version']} cannot load this model ({line[:300]})",
            hint=f"this runtime supports IR <= {sup['max_ir_version']} and ai.onnx opset <= {sup['max_opset']}; "
            "upgrade onnxruntime or re-export with a lower --opset",
        )
    if "NOT_IMPLEMENTED" in text or "Could not find an implementation" in text:
        return BadInputError(
            f"{where}: onnxruntime has no kernel for an op in this model ({line[:300]})",
            hint="this provider has no kernel for that op at this opset and dtype; re-export at a newer opset, leave the op unquantized, or use another provider",
        )
    return BadInputError(f"{where}: onnxruntime cannot load the model ({line[:300]})", hint="run `onnxforge inspect` on it")


@functools.lru_cache(maxsize=1)
def runtime_support() -> dict:
    """The IR version and opsets the installed ORT accepts, found by loading tiny
    probe models (ORT has no API for it; its error messages state the limits)."""
    import onnxruntime as ort

    def probe(ir: int, opsets: dict[str, int]) -> str | None:
        from onnx import helper

        g = helper.make_graph(
            [helper.make_node("Identity", ["x"], ["y"])], "probe",
            [helper.make_tensor_value_info("x", 1, [1])], [helper.make_tensor_value_info("y", 1, [1])],
        )
        m = helper.make_model(g, opset_imports=[helper.make_opsetid(d, v) for d, v in opsets.items()])
        m.ir_version = ir
        try:
            ort.InferenceSession(m.SerializeToString(), providers=["CPUExecutionProvider"])
            return None
        except Exception as exc:
            return str(exc)

    def limit(msg: str | None, pattern: str, fallback: int) -> int:
        m = re.search(pattern, msg or "")
        return int(m.group(1)) if m else fallback

    max_ir = limit(probe(999, {"": 11}), r"max supported IR version: (\d+)", 0)
    max_opset = limit(probe(7, {"": 999}), r"ai\.onnx is till opset (\d+)", 0)
    max_ml = limit(probe(7, {"": 11, "ai.onnx.ml": 999}), r"ai\.onnx\.ml is till opset (\d+)", 0)
    return {
        "version": ort.__version__,
        "max_ir_version": max_ir,
        "max_opset": max_opset,
        "max_opsets": {"": max_opset, "ai.onnx.ml": max_ml},
        "providers": available_providers(),
        "packages": installed_runtime_packages(),
    }


# operator domains onnxruntime implements besides the ONNX ones (contrib, layout, training)
ORT_DOMAINS = {"com.microsoft", "com.microsoft.nchwc", "com.microsoft.experimental", "com.ms.internal.nhwc",
               "ai.onnx.training", "ai.onnx.preview.training"}


def _unknown_ops(ops) -> list[str]:
    """Ops onnxruntime cannot know: ONNX-domain ops ONNX has no schema for, and ops of
    domains no build of it implements (a custom-op library's)."""
    from onnx import defs

    out = []
    for dom, op in sorted(ops):
        if dom in ("", "ai.onnx.ml") and not defs.has(op, dom):
            out.append(f"{dom or 'ai.onnx'}:{op} is not an ONNX operator")
        elif dom not in ("", "ai.onnx.ml") and dom not in ORT_DOMAINS:
            out.append(f"{dom}:{op} needs a custom-op library")
    return out


def support_verdict(ir_version: int, opsets: Mapping[str, int], ops=()) -> dict:
    """Whether this onnxruntime can load a model of this IR version, these opsets and
    these (domain, op) pairs, with the reasons when it cannot."""
    sup = runtime_support()
    reasons = _unknown_ops(ops)[:3]
    if sup["max_ir_version"] and ir_version > sup["max_ir_version"]:
        reasons.append(f"IR version {ir_version} > {sup['max_ir_version']}")
    for dom, ver in opsets.items():
        lim = sup["max_opsets"].get(dom)
        if lim and ver > lim:
            reasons.append(f"{dom or 'ai.onnx'} opset {ver} > {lim}")
    out = dict(sup)
    out["supported"] = not reasons
    if reasons:
        out["reason"] = "; ".join(reasons)
    note = runtime_conflict_note()
    if note:
        out["warning"] = note
    return out


def run_session(sess, feeds: Mapping[str, object], output_names: Sequence[str] | None = None) -> dict:
    try:
        values = sess.run(list(output_names) if output_names else None, dict(feeds))
    except Exception as exc:
        line = first_line(exc, 10_000)
        raise BadInputError(f"the model failed on these inputs: {line[:400]}",
                            hint="check input shapes and dtypes against `onnxforge inspect`") from None
    names = list(output_names) if output_names else [o.name for o in sess.get_outputs()]
    return dict(zip(names, values))


def environment() -> dict:
    """What a benchmark or release report records about where it ran."""
    import onnxruntime as ort

    env = {
        "cpu": cpu_info(),
        "cpu_quota": cpu_quota(),
        "onnxruntime": ort.__version__,
        "onnxruntime_build": (ort.get_build_info() if hasattr(ort, "get_build_info") else ""),
        "onnxruntime_packages": installed_runtime_packages(),
        "device": ort.get_device(),
        "providers": available_providers(),
        "os": platform.platform(),
        "python": sys.version.split()[0],
    }
    note = runtime_conflict_note()
    if note:
        env["warning"] = note
    return env


