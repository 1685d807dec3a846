"""Static facts about a model: `onnxforge inspect`, before/after summaries, and onnx.checker."""

from __future__ import annotations

import collections
import math
import os
from pathlib import Path

from onnxforge.core.types import GraphSummary, ModelInfo
from onnxforge.backends.onnx.runtime import available_providers, create_session, support_verdict
from onnxforge.core.errors import BadInputError, MissingDependencyError, first_line
from onnxforge.core.fileio import _all_tensors, external_data_files, load_onnx, walk_graphs
from onnxforge.data.specs import model_io_specs


def _tensor_bytes(t) -> tuple[int, int]:
    """(element count, bytes) of an initializer without reading external data."""
    from onnx import helper

    n = math.prod(t.dims) if t.dims else 1
    try:
        itemsize = helper.tensor_dtype_to_np_dtype(t.data_type).itemsize
    except Exception:  # string tensors and exotic types
        itemsize = 0
    if t.data_type in (16,):  # bfloat16 maps to a 4-byte numpy dtype in old onnx
        itemsize = 2
    return n, n * itemsize


def inspect_model(path: str | os.PathLike, *, runtime: bool = True) -> ModelInfo:
    """Everything `onnxforge inspect` shows, as data. Does not read external data,
    but checks that its files exist."""
    p = Path(path)
    # the runtime verdict checks inline tensors' bytes against their dims: it needs them
    model = load_onnx(p, load_external_data=False, graph_only=not runtime)
    g = model.graph
    inputs, outputs = model_io_specs(model)
    hist = collections.Counter(n.op_type if not n.domain or n.domain == "ai.onnx" else f"{n.domain}.{n.op_type}" for n in g.node)
    params = 0
    nbytes = 0
    for t in g.initializer:
        n, b = _tensor_bytes(t)
        params += n
        nbytes += b
    for st in g.sparse_initializer:
        n, b = _tensor_bytes(st.values)
        params += n
        nbytes += b
    opsets = {o.domain if o.domain != "ai.onnx" else "": o.version for o in model.opset_import}
    ext = external_data_files(model)
    return ModelInfo(
        path=str(p),
        file_bytes=p.stat().st_size,
        ir_version=model.ir_version,
        opsets=opsets,
        producer=model.producer_name,
        producer_version=model.producer_version,
        graph_name=g.name,
        inputs=inputs,
        outputs=outputs,
        node_count=len(g.node),
        op_histogram=dict(sorted(hist.items(), key=lambda kv: (-kv[1], kv[0]))),
        initializer_count=len(g.initializer) + len(g.sparse_initializer),
        parameter_count=params,
        parameter_bytes=nbytes,
        external_data={k: v for k, v in sorted(ext.items())},
        metadata={p.key: p.value for p in model.metadata_props},
        runtime=_runtime_verdict(model, p, opsets, ext) if runtime else {},
    )


def _ops(model) -> set[tuple[str, str]]:
    """(domain, op type) of every node, subgraphs and local functions included, less the
    calls of the model's own functions."""
    local = {(f.domain, f.name) for f in model.functions}
    found = {(n.domain if n.domain != "ai.onnx" else "", n.op_type) for g, _ in walk_graphs(model) for n in g.node}
    return found - local


# inspect loads a model in ONNX Runtime when its files hold at most this many bytes
# (seconds at most); a larger one is judged from its declared sizes alone
ORT_LOAD_BYTES = 256 << 20


def _runtime_verdict(model, path: Path, opsets, ext) -> dict:
    """support_verdict (IR, opsets, ops this onnxruntime knows), then what ORT would
    refuse on loading: opsets and tensors judged from declared sizes (no data is read,
    so a tensor claiming 10^12 elements costs nothing), then, where cheap, ORT's own
    session on the model and its data. "runs this model: no" with the reasons, as for
    an op ORT lacks (exit 1)."""
    ops = _ops(model)
    out = support_verdict(model.ir_version, opsets, ops)
    reasons = [*_opset_problems(ops, opsets), *filter(None, (_tensor_problem(t, path.parent)
                                                             for t in _all_tensors(model)))]
    files = path.stat().st_size + sum((path.parent / f).stat().st_size for f in ext)
    if not reasons and out["supported"] and files <= ORT_LOAD_BYTES:
        reasons = list(filter(None, [_ort_refuses(path)]))
    if reasons:
        out["supported"] = False
        out["reason"] = "; ".join(filter(None, [out.get("reason"), *reasons[:3]]))
    return out


def _opset_problems(ops, opsets) -> list[str]:
    used = {d for d, _ in ops}
    return [f"{d or 'ai.onnx'} opset {opsets[d]} does not exist" if d in opsets else
            f"no opset_import for the domain {d or 'ai.onnx'} its nodes use"
            for d in sorted(used) if opsets.get(d, 0) < 1]


SUB_BYTE_BITS = {21: 4, 22: 4, 23: 4}  # uint4, int4, float4e2m1: two elements per byte


def _tensor_problem(t, base: Path) -> str | None:
    """Why ORT could not load this tensor, from its declared dims and where its data
    is (the data itself is never read)."""
    from onnx import helper
    from onnx.external_data_helper import uses_external_data

    name = repr(t.name) if t.name else "a constant"
    if any(d < 0 for d in t.dims):
        return f"tensor {name} has a negative dim {list(t.dims)}"
    n = math.prod(t.dims)
    _, nbytes = _tensor_bytes(t)
    bits = SUB_BYTE_BITS.get(t.data_type)
    need = (n * bits + 7) // 8 if bits else nbytes
    claims = f"declares {n:,} element(s) ({need:,} bytes)"
    if uses_external_data(t):
        info = {e.key: e.value for e in t.external_data}
        try:
            offset, length = int(info.get("offset") or 0), int(info["length"]) if info.get("length") else None
        except ValueError:
            return f"tensor {name}: external data offset/length is not a number"
        size = (base / info.get("location", "")).stat().st_size
        if offset < 0 or (length or 0) < 0:
            return f"tensor {name}: external data at a negative offset or length ({offset}, {length})"
        have = size - offset if length is None else length
        if offset + have > size:
            return (f"tensor {name}: external data bytes {offset:,}..{offset + have:,} lie beyond the end of "
                    f"{info.get('location')} ({size:,} bytes)")
        return f"tensor {name} {claims} but its external data holds {have:,} bytes" if need and have != need else None
    if t.raw_data:
        have = len(t.raw_data)
        return f"tensor {name} {claims} but holds {have:,} bytes" if need and have != need else None
    try:
        field = helper.tensor_dtype_to_field(t.data_type)
    except Exception:  # noqa: BLE001 - an unknown type: support_verdict and ORT speak for it
        return None
    count = len(getattr(t, field)) // (2 if t.data_type in (14, 15) else 1)  # complex: (re, im) pairs
    return f"tensor {name} {claims} but holds {count:,}" if not bits and count != n else None


def _ort_refuses(path: Path) -> str | None:
    """ORT's own verdict: a session on the model (no graph optimization, one thread),
    on CUDA as well where it is available, as validate would make one."""
    provider = "cuda" if "CUDAExecutionProvider" in available_providers() else "cpu"
    try:
        create_session(path, provider, optimization="disable", threads=1)
    except BadInputError as exc:
        return exc.message.removeprefix(f"{path}: ")
    except MissingDependencyError:  # CUDA listed but not starting: no verdict from this load
        return None
    return None


def check_model(path: str | os.PathLike, *, full: bool = True) -> None:
    """onnx.checker on a path (works for models over 2 GB); raises BadInputError."""
    import onnx


    try:
        onnx.checker.check_model(str(path), full_check=full)
    except Exception as exc:
        raise BadInputError(f"{path}: onnx.checker rejects the model ({first_line(exc)})") from None


def summary(path: str | os.PathLike) -> GraphSummary:
    """Node count per op type, total nodes, initializer bytes, file size (data included)."""
    info = inspect_model(path, runtime=False)
    return GraphSummary(info.node_count, dict(info.op_histogram), info.parameter_bytes,
                        info.file_bytes + sum(info.external_data.values()))


def symbolic_dims(path) -> list[str]:
    ins, _ = model_io_specs(load_onnx(path, graph_only=True))
    return sorted({d for s in ins for d in s.shape if isinstance(d, str)})
