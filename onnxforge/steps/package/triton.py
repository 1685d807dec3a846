"""Triton model repository: ``NAME/config.pbtxt`` and ``NAME/1/model.onnx``.

The config is written as text (what a person would write) and then parsed back with
the official ModelConfig protobuf from ``tritonclient`` and checked against the model,
so the text and the check are two independent paths. No Triton server installs from the
package registries, so that structural check is the proof here.

Batching: when every input and output has a symbolic first dim (the same name where
named), the first dim is Triton's batch dim: ``max_batch_size`` > 0, ``dims`` without
it, and ``dynamic_batching``. A tensor whose only dim is the batch dim gets ``dims: [1]``
and ``reshape: { shape: [] }``, Triton's way to say "batch only". Otherwise
``max_batch_size: 0`` and full dims. Symbolic dims are -1.

The model-config module is loaded from its file on its own, not through
``tritonclient.grpc``: that package also registers the gRPC service's ``inference.*``
symbols, which clash with mlserver's in one process. model_config.proto defines only
``inference.ModelConfig`` and its parts, which mlserver does not register.
"""

from __future__ import annotations

import functools
import os
from pathlib import Path
from typing import Sequence

from onnxforge.core.errors import BadInputError, UsageError, MissingDependencyError
from onnxforge.core.types import TensorSpec
import importlib.util
from onnxforge.backends.onnx.runtime import resolve_provider, short_provider
from onnxforge.core.fileio import copy_model, load_onnx, sha256_file
from onnxforge.data.specs import model_io_specs

TRITON_TYPES = {
    "bool": "TYPE_BOOL", "uint8": "TYPE_UINT8", "uint16": "TYPE_UINT16", "uint32": "TYPE_UINT32",
    "uint64": "TYPE_UINT64", "int8": "TYPE_INT8", "int16": "TYPE_INT16", "int32": "TYPE_INT32",
    "int64": "TYPE_INT64", "float16": "TYPE_FP16", "float32": "TYPE_FP32", "float64": "TYPE_FP64",
    "str": "TYPE_STRING", "bfloat16": "TYPE_BF16",
}
# provider -> (instance kind, accelerator block or "")
_INSTANCE = {
    "cpu": ("KIND_CPU", ""),
    "cuda": ("KIND_GPU", ""),
    "tensorrt": ("KIND_GPU", 'gpu_execution_accelerator: [ { name: "tensorrt" } ]'),
    "openvino": ("KIND_CPU", 'cpu_execution_accelerator: [ { name: "openvino" } ]'),
}


def _triton_type(s: TensorSpec) -> str:
    if s.dtype not in TRITON_TYPES:
        raise BadInputError(f"tensor {s.name} is {s.dtype}, which Triton cannot serve",
                            hint="sequence/map outputs (sklearn ZipMap) need re-converting without --zipmap")
    return TRITON_TYPES[s.dtype]


def batch_dim(ins: Sequence[TensorSpec], outs: Sequence[TensorSpec]) -> bool:
    """True when the first dim of every tensor is one symbolic batch dim."""
    tensors = list(ins) + list(outs)
    if not tensors or any(not s.shape or isinstance(s.shape[0], int) for s in tensors):
        return False
    named = {s.shape[0] for s in tensors if isinstance(s.shape[0], str)}
    return len(named) <= 1


def _dims(s: TensorSpec, batched: bool) -> tuple[list[int], bool]:
    """(dims, needs reshape to a scalar-per-item)."""
    dims = [d if isinstance(d, int) else -1 for d in (s.shape[1:] if batched else s.shape)]
    return (dims, False) if dims else ([1], True)


def _provider_key(provider: str) -> str:
    key = short_provider(resolve_provider(provider))
    if key not in _INSTANCE:
        raise UsageError(f"Triton's onnxruntime backend has no {provider} instance kind",
                         hint="use one of: " + ", ".join(_INSTANCE))
    return key


# Triton's OpenVINO backend reads the ONNX file itself; what it runs it with (its parameters),
# the latency settings `benchmark --runtime openvino` measures
OPENVINO_HEADER = ('backend: "openvino"', 'default_model_filename: "model.onnx"')
OPENVINO_PARAMETERS = {"PERFORMANCE_HINT": "LATENCY", "NUM_STREAMS": "1"}


def _parameter(key: str, value) -> str:
    return f'parameters {{ key: "{key}" value: {{ string_value: "{value}" }} }}'


def config_text(name: str, ins, outs, *, provider: str = "cpu", threads: int | None = None,
                max_batch_size: int = 64, runtime: str = "ort") -> str:
    key = _provider_key(provider)
    batched = batch_dim(ins, outs) and max_batch_size > 0
    lines = [
        "# Written by onnxforge package --target triton" + (" --runtime openvino" if runtime == "openvino" else ""),
        f'name: "{name}"',
        *(OPENVINO_HEADER if runtime == "openvino" else ('platform: "onnxruntime_onnx"',)),
        f"max_batch_size: {max_batch_size if batched else 0}",
    ]
    for section, specs in (("input", ins), ("output", outs)):
        items = []
        for s in specs:
            dims, reshape = _dims(s, batched)
            body = [f'name: "{_escape(s.name)}"', f"data_type: {_triton_type(s)}", f"dims: [ {', '.join(map(str, dims))} ]"]
            if reshape:
                body.append("reshape: { shape: [ ] }")
            items.append("  {\n" + "".join(f"    {b}\n" for b in body) + "  }")
        lines.append(f"{section} [\n" + ",\n".join(items) + "\n]")
    kind, accel = _INSTANCE[key]
    lines.append(f"instance_group [ {{ kind: {kind}, count: 1 }} ]")
    if batched:
        lines.append("dynamic_batching { }")
    if runtime == "openvino":
        params = {**OPENVINO_PARAMETERS, **({"INFERENCE_NUM_THREADS": threads} if threads else {})}
        lines += [_parameter(k, v) for k, v in params.items()]
        return "\n".join(lines) + "\n"
    if accel:
        lines.append(f"optimization {{ execution_accelerators {{ {accel} }} }}")
    if threads:
        lines.append(_parameter("intra_op_thread_count", threads))
    return "\n".join(lines) + "\n"


def _escape(name: str) -> str:
    return name.replace("\\", "\\\\").replace('"', '\\"')


def write_triton(model: Path, model_dir: Path, name: str, ins, outs, *, provider: str = "cpu",
                 threads: int | None = None, max_batch_size: int = 64, runtime: str = "ort") -> None:
    if max_batch_size < 0:
        raise UsageError(f"bad max_batch_size {max_batch_size}: must be >= 0")
    text = config_text(name, ins, outs, provider=provider, threads=threads, max_batch_size=max_batch_size,
                       runtime=runtime)
    copy_model(model, model_dir / "1" / "model.onnx")
    (model_dir / "config.pbtxt").write_text(text)


@functools.lru_cache(maxsize=1)
def _model_config_module():

    spec = importlib.util.find_spec("tritonclient")
    if spec is None or not spec.submodule_search_locations:
        raise MissingDependencyError("tritonclient is not installed (needed to check config.pbtxt)",
                                     hint="pip install 'onnxforge[serve]'")
    path = Path(next(iter(spec.submodule_search_locations))) / "grpc" / "model_config_pb2.py"
    mod_spec = importlib.util.spec_from_file_location("onnxforge_triton_model_config_pb2", path)
    module = importlib.util.module_from_spec(mod_spec)
    mod_spec.loader.exec_module(module)
    return module


def parse_config(path: str | os.PathLike):
    """config.pbtxt -> inference.ModelConfig, or a BadInputError naming the parse error."""
    from google.protobuf import text_format

    mc = _model_config_module()
    try:
        return text_format.Parse(Path(path).read_text(), mc.ModelConfig())
    except text_format.ParseError as exc:
        raise BadInputError(f"{path} does not parse as a Triton ModelConfig: {exc}") from None


def check_triton_config(model_dir: str | os.PathLike, model: str | os.PathLike | None = None, *,
                        provider: str | None = None, threads: int | None = None,
                        runtime: str = "ort") -> tuple[list[str], list[str]]:
    """Parse ``model_dir/config.pbtxt`` and check every field against
    ``model_dir/1/model.onnx`` (and, when given, that this file is a copy of ``model``,
    that the instance kind and threads are ``provider``'s and ``threads``, and that the
    backend is ``runtime``'s: ort's onnxruntime, or openvino's with its parameters).
    Returns (checks that held, problems); a problem reads "FIELD: expected X, found Y".

    Batching as Triton reads it: max_batch_size > 0 needs one symbolic first dim on every
    input and output (a fixed one is a mismatch) and then dims exclude it; with 0 the
    dims are the model's whole shape. A symbolic model dim is -1 (or a size, which
    Triton accepts as a restriction); a fixed one must be that size. Tensors are matched
    by name: Triton does not care about their order."""
    model_dir = Path(model_dir)
    cfg = parse_config(model_dir / "config.pbtxt")
    mc = _model_config_module()
    served = model_dir / "1" / "model.onnx"
    ins, outs = model_io_specs(load_onnx(served, graph_only=True))
    checks: list[str] = []
    problems: list[str] = []

    def field(what: str, expected, found, ok: bool | None = None, why: str = "") -> None:
        if expected == found if ok is None else ok:
            checks.append(f"{what}: {found}{why}")
        else:
            problems.append(f"{what}: expected {expected}, found {found}{why}")

    field("name", repr(model_dir.name), repr(cfg.name), why=" (the model folder's name)")
    on_ov = runtime == "openvino"
    field("platform", "backend 'openvino'" if on_ov else "'onnxruntime_onnx'", repr(cfg.platform or cfg.backend),
          ok=not cfg.platform and cfg.backend == "openvino" if on_ov else
          cfg.platform == "onnxruntime_onnx" or (not cfg.platform and cfg.backend == "onnxruntime"))
    if on_ov:  # Triton's OpenVINO backend looks for model.xml unless told
        field("default_model_filename", "'model.onnx'", repr(cfg.default_model_filename))
    has_batch = batch_dim(ins, outs)
    batched = cfg.max_batch_size > 0
    field("max_batch_size", "0 (the model has no symbolic first dim shared by every input and output)",
          cfg.max_batch_size, ok=has_batch or not batched, why=" (the first dim is the batch dim)" if batched else "")
    field("dynamic_batching", "set" if batched else "absent (max_batch_size 0)",
          "set" if cfg.HasField("dynamic_batching") else "absent" + ("" if batched else " (max_batch_size 0)"))
    note = " (max_batch_size > 0: without the batch dim)" if batched else ""
    for kind, got, specs in (("input", cfg.input, ins), ("output", cfg.output, outs)):
        by_name = {t.name: t for t in got}
        field(f"{kind} names", sorted(s.name for s in specs), sorted(by_name))
        for s in specs:
            t = by_name.get(s.name)
            if t is None:
                continue
            field(f"{kind} {s.name} data_type", _triton_type(s), mc.DataType.Name(t.data_type), why=f" ({s.dtype})")
            dims, reshape = _dims(s, batched)
            found = list(t.dims)
            ok = len(found) == len(dims) and all(f == e or (e == -1 and f > 0) for e, f in zip(dims, found))
            field(f"{kind} {s.name} dims", dims, found, ok=ok, why=f" for model shape {list(s.shape)}{note}")
            want_reshape = "[ ] (batch only)" if reshape else "absent"
            got_reshape = (f"{list(t.reshape.shape) or '[ ]'}" + (" (batch only)" if not t.reshape.shape else "")
                           if t.HasField("reshape") else "absent")
            field(f"{kind} {s.name} reshape", want_reshape, got_reshape)
    kinds = [mc.ModelInstanceGroup.Kind.Name(g.kind) for g in cfg.instance_group]
    want_kind = _INSTANCE[_provider_key(provider)][0] if provider else None
    one = len(cfg.instance_group) == 1 and cfg.instance_group[0].count >= 1
    field("instance_group", f"one group of {want_kind or 'any kind'}, count >= 1", kinds,
          ok=one and (want_kind is None or kinds[0] == want_kind))
    if provider is not None:
        _check_parameters(field, cfg.parameters, threads, on_ov)
    if model is not None:
        same = sha256_file(served) == sha256_file(model)
        field("1/model.onnx", "a byte copy of the source model", "a byte copy" if same else "another file", ok=same)
    return checks, problems


def _check_parameters(field, params, threads: int | None, on_ov: bool) -> None:
    """The backend's parameters: the thread count (ORT's intra_op_thread_count, OpenVINO's
    INFERENCE_NUM_THREADS) and OpenVINO's latency settings."""
    def got(key: str) -> str:
        return params[key].string_value if key in params else "absent"

    key = "INFERENCE_NUM_THREADS" if on_ov else "intra_op_thread_count"
    field(f"parameters.{key}", str(threads) if threads else "absent", got(key))
    for k, v in OPENVINO_PARAMETERS.items() if on_ov else ():
        field(f"parameters.{k}", v, got(k))
