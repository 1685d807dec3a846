"""Where two ONNX models diverge: copies of both with every intermediate tensor they
share (by name) marked as an output, run on one sample; the first node, in the
reference's topological order, whose output is past tolerance. The models on disk
are never modified. The quantization sensitivity ranking reads the same tensors."""

from __future__ import annotations

import math
from typing import Mapping

from onnxforge.core.types import Localization, Tolerance
from onnxforge.checks.compare import compare_output


def _with_all_outputs(model, keep: set[str]):
    from onnx import helper

    have = {o.name for o in model.graph.output}
    for n in model.graph.node:
        for o in n.output:
            if o and o in keep and o not in have:
                model.graph.output.append(helper.make_empty_tensor_value_info(o))
                have.add(o)
    return model


def _session_for(model, provider: str, tmpdir):
    """A session over a modified model: bytes when it fits, else a temp file with
    its external data beside it."""
    from pathlib import Path

    from onnxforge.core.fileio import PROTOBUF_LIMIT, save_onnx
    from onnxforge.backends.onnx.runtime import create_session

    if model.ByteSize() < PROTOBUF_LIMIT:
        return create_session(model.SerializeToString(), provider, optimization="basic")
    path = Path(tmpdir) / "model.onnx"
    save_onnx(model, path, external_data=True)
    return create_session(path, provider, optimization="basic")


def shared_intermediates(ref_path, cand_path, feeds: Mapping[str, object], *, ref_provider: str = "cpu",
                         provider: str = "cpu", cand_feeds: Mapping[str, object] | None = None):
    """Run copies of both models with every intermediate tensor they share (by name)
    marked as an output. Returns (the reference ModelProto, its (index, node, tensor)
    triples that the candidate also produces, reference values, candidate values).
    The models on disk are never modified."""
    import tempfile

    from onnxforge.core.fileio import load_onnx
    from onnxforge.backends.onnx.runtime import run_session

    ref_m = load_onnx(ref_path)
    cand_m = load_onnx(cand_path)
    cand_producers = {o for n in cand_m.graph.node for o in n.output if o}
    shared = [(i, n, o) for i, n in enumerate(ref_m.graph.node) for o in n.output if o and o in cand_producers]
    if not shared:
        return ref_m, [], {}, {}
    keep = {o for _, _, o in shared}
    with tempfile.TemporaryDirectory() as tmp:
        rs = _session_for(_with_all_outputs(ref_m, keep), ref_provider, tmp)
        cs = _session_for(_with_all_outputs(cand_m, keep), provider, tmp)
        r_out = run_session(rs, feeds, [o.name for o in rs.get_outputs() if o.name in keep])
        c_out = run_session(cs, cand_feeds or feeds, [o.name for o in cs.get_outputs() if o.name in keep])
    return ref_m, shared, r_out, c_out


def localize_divergence(ref_path, cand_path, feeds: Mapping[str, object], tol: Tolerance, *,
                        ref_provider: str = "cpu", provider: str = "cpu",
                        cand_feeds: Mapping[str, object] | None = None) -> Localization:
    """The first node (in the reference's topological order) whose output tensor,
    shared by name with the candidate, differs past tolerance (run once on the first
    sample; see shared_intermediates)."""
    import numpy as np

    _, shared, r_out, c_out = shared_intermediates(ref_path, cand_path, feeds, ref_provider=ref_provider,
                                                   provider=provider, cand_feeds=cand_feeds)
    if not shared:
        return Localization(None, "the models share no intermediate tensor names")
    compared = 0
    for index, node, out in shared:
        if out not in r_out or out not in c_out:
            continue
        a, b = np.asarray(r_out[out]), np.asarray(c_out[out])
        if a.dtype.kind not in "fc" or b.dtype.kind not in "fc":
            continue
        compared += 1
        if a.shape != b.shape:
            return Localization(node.name or out, f"shape {list(a.shape)} vs {list(b.shape)}", node.op_type, out,
                                index, math.inf, math.inf, compared)
        d = compare_output(out, [a], [b], atol=tol.atol, rtol=tol.rtol)
        if not d.passed:
            return Localization(node.name or out, d.message, node.op_type, out, index, d.max_abs, d.max_rel, compared)
    return Localization(None, f"none of {compared} shared intermediate tensors diverges; the difference arises in "
                              "nodes the models do not share", compared=compared)
