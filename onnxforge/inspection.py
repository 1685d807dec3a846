"""Static facts about a model: `onnxforge inspect`, before/after summaries, and onnx.checker."""

from __future__ import annotations

import collections
import math
import os
from pathlib import Path

from onnxforge.types import GraphSummary, ModelInfo


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
    from onnxforge.fileio import external_data_files, load_onnx
    from onnxforge.runtime import support_verdict
    from onnxforge.specs import model_io_specs

    p = Path(path)
    model = load_onnx(p, load_external_data=False)
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
        runtime=support_verdict(model.ir_version, opsets, _ops(model)) if runtime else {},
    )


def _ops(model) -> set[tuple[str, str]]:
    """(domain, op type) of every node, subgraphs and local functions included, less the
    calls of the model's own functions."""
    local = {(f.domain, f.name) for f in model.functions}
    found: set[tuple[str, str]] = set()

    def walk(nodes):
        for n in nodes:
            found.add((n.domain if n.domain != "ai.onnx" else "", n.op_type))
            for a in n.attribute:
                for g in ([a.g] if a.HasField("g") else []) + list(a.graphs):
                    walk(g.node)

    walk(model.graph.node)
    for f in model.functions:
        walk(f.node)
    return found - local


def check_model(path: str | os.PathLike, *, full: bool = True) -> None:
    """onnx.checker on a path (works for models over 2 GB); raises BadInputError."""
    import onnx

    from onnxforge.errors import BadInputError, first_line

    try:
        onnx.checker.check_model(str(path), full_check=full)
    except Exception as exc:
        raise BadInputError(f"{path}: onnx.checker rejects the model ({first_line(exc)})") from None


def summary(path: str | os.PathLike) -> GraphSummary:
    """Node count per op type, total nodes, initializer bytes, file size (data included)."""
    info = inspect_model(path, runtime=False)
    return GraphSummary(info.node_count, dict(info.op_histogram), info.parameter_bytes,
                        info.file_bytes + sum(info.external_data.values()))
