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

from onnxforge.errors import BadInputError, UsageError
from onnxforge.types import TensorSpec

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
    from onnxforge.runtime import resolve_provider, short_provider

    key = short_provider(resolve_provider(provider))
    if key not in _INSTANCE:
        raise UsageError(f"Triton's onnxruntime backend has no {provider} instance kind",
                         hint="use one of: " + ", ".join(_INSTANCE))
    return key


def config_text(name: str, ins, outs, *, provider: str = "cpu", threads: int | None = None,
                max_batch_size: int = 64) -> str:
    key = _provider_key(provider)
    batched = batch_dim(ins, outs) and max_batch_size > 0
    lines = [
        "# Written by onnxforge package --target triton",
        f'name: "{name}"',
        'platform: "onnxruntime_onnx"',
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
    if accel:
        lines.append(f"optimization {{ execution_accelerators {{ {accel} }} }}")
    if threads:
        lines.append(f'parameters {{ key: "intra_op_thread_count" value: {{ string_value: "{threads}" }} }}')
    return "\n".join(lines) + "\n"


def _escape(name: str) -> str:
    return name.replace("\\", "\\\\").replace('"', '\\"')


def write_triton(model: Path, model_dir: Path, name: str, ins, outs, *, provider: str = "cpu",
                 threads: int | None = None, max_batch_size: int = 64) -> None:
    from onnxforge.fileio import copy_model

    if max_batch_size < 0:
        raise UsageError(f"bad max_batch_size {max_batch_size}: must be >= 0")
    text = config_text(name, ins, outs, provider=provider, threads=threads, max_batch_size=max_batch_size)
    copy_model(model, model_dir / "1" / "model.onnx")
    (model_dir / "config.pbtxt").write_text(text)


@functools.lru_cache(maxsize=1)
def _model_config_module():
    import importlib.util

    from onnxforge.errors import MissingDependencyError

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


def check_triton_config(model_dir: str | os.PathLike, model: str | os.PathLike | None = None) -> tuple[list[str], list[str]]:
    """Parse ``model_dir/config.pbtxt`` and check it against ``model_dir/1/model.onnx``
    (and, when given, that this file is a copy of ``model``). Returns (checks, problems)."""
    from onnxforge.fileio import load_onnx, sha256_file
    from onnxforge.specs import model_io_specs

    model_dir = Path(model_dir)
    cfg = parse_config(model_dir / "config.pbtxt")
    mc = _model_config_module()
    served = model_dir / "1" / "model.onnx"
    ins, outs = model_io_specs(load_onnx(served, load_external_data=False))
    checks, problems = [], []

    def check(ok: bool, what: str):
        (checks if ok else problems).append(what)

    check(cfg.name == model_dir.name, f"name {cfg.name!r} is the model folder's name {model_dir.name!r}")
    check(cfg.platform == "onnxruntime_onnx", f"platform is {cfg.platform!r}")
    batched = cfg.max_batch_size > 0
    check(not batched or batch_dim(ins, outs),
          f"max_batch_size {cfg.max_batch_size}: " + ("first dim is a batch dim" if batch_dim(ins, outs) else "no batch dim"))
    check(batched == cfg.HasField("dynamic_batching"), "dynamic_batching set exactly when batching")
    for kind, got, specs in (("input", cfg.input, ins), ("output", cfg.output, outs)):
        check([t.name for t in got] == [s.name for s in specs],
              f"{kind} names {[t.name for t in got]} match the model's {[s.name for s in specs]}")
        for t, s in zip(got, specs):
            want_type = mc.DataType.Value(_triton_type(s))
            check(t.data_type == want_type, f"{kind} {s.name}: {mc.DataType.Name(t.data_type)} for {s.dtype}")
            dims, reshape = _dims(s, batched)
            check(list(t.dims) == dims and t.HasField("reshape") == reshape
                  and (not reshape or list(t.reshape.shape) == []),
                  f"{kind} {s.name}: dims {list(t.dims)} for model shape {list(s.shape)}"
                  + (" (batch dim stripped)" if batched else ""))
    check(len(cfg.instance_group) == 1 and cfg.instance_group[0].count >= 1,
          f"instance_group {[mc.ModelInstanceGroup.Kind.Name(g.kind) for g in cfg.instance_group]}")
    if model is not None:
        check(sha256_file(served) == sha256_file(model), "1/model.onnx is a byte copy of the source model")
    return checks, problems
