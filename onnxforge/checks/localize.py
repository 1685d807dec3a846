"""Where two ONNX models diverge: copies of both with every intermediate tensor they
share marked as an output, run on one sample. ``localize_divergence`` names the first
node, in the reference's topological order, whose output is past tolerance;
``layerwise`` compares every shared tensor (validate --layerwise); the quantization
sensitivity ranking reads the same rows. The models on disk are never modified.

A tensor is shared by name, or through the names onnxruntime's quantizer gives it
(what its ``qdq_loss_debug`` matches): in a QDQ model ``X`` as the next nodes see it
is ``X_DequantizeLinear_Output`` (the node's float output before its QuantizeLinear
keeps the name ``X``); in a QOperator model ``X_quantized``, dequantized here with the
``X_scale`` / ``X_zero_point`` initializers. A Relu or Clip the quantizer folded into
the node before it (its range does the clipping) leaves the node's tensor holding the
activation's values: it is compared with the activation's output.
"""

from __future__ import annotations

import math
from typing import Mapping, Sequence

from onnxforge.core.errors import UsageError
from onnxforge.core.types import Layerwise, LayerRow, Localization, Tolerance
from onnxforge.checks.compare import compare_output
from pathlib import Path
import tempfile
import numpy as np
from onnxforge.backends.onnx.runtime import create_session, run_session
from onnxforge.core.fileio import PROTOBUF_LIMIT, load_onnx, save_onnx
from onnxforge.data.samples import save_samples

DQ_SUFFIXES = ("_DequantizeLinear_Output", "_DequantizeLinear_Output_1")
FOLDED_ACTIVATIONS = ("Relu", "Clip")


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

    if model.ByteSize() < PROTOBUF_LIMIT:
        return create_session(model.SerializeToString(), provider, optimization="basic")
    path = Path(tmpdir) / "model.onnx"
    save_onnx(model, path, external_data=True)
    return create_session(path, provider, optimization="basic")


def tensor_pairs(ref_m, cand_m) -> dict[str, tuple[str, object, object]]:
    """reference tensor -> (the candidate tensor holding its value, scale, zero point):
    scale and zero point are None unless the candidate's tensor is quantized
    (QOperator) and must be dequantized. Only tensors some reference node produces."""
    from onnx import numpy_helper

    produced = {o for n in cand_m.graph.node for o in n.output if o}
    inits = {t.name: t for t in cand_m.graph.initializer}
    pairs: dict[str, tuple[str, object, object]] = {}
    through_quantized = []
    for n in ref_m.graph.node:
        for x in (o for o in n.output if o):
            found = next((x + s for s in DQ_SUFFIXES if x + s in produced), x if x in produced else None)
            if found:
                pairs[x] = (found, None, None)
            elif x + "_quantized" in produced and x + "_scale" in inits and x + "_zero_point" in inits:
                pairs[x] = (x + "_quantized", numpy_helper.to_array(inits[x + "_scale"]),
                            numpy_helper.to_array(inits[x + "_zero_point"]))
                through_quantized.append(x)
    consumers: dict[str, list] = {}
    for n in ref_m.graph.node:
        for i in n.input:
            consumers.setdefault(i, []).append(n)
    graph_outputs = {o.name for o in ref_m.graph.output}
    for x in through_quantized:
        users = consumers.get(x, [])
        if len(users) == 1 and users[0].op_type in FOLDED_ACTIVATIONS and x not in graph_outputs:
            act = users[0].output[0]
            pair = pairs.pop(x)
            pairs.setdefault(act, pair)
    return pairs


def _dequantized(value, scale, zero_point):
    if scale is None:
        return value
    return (np.asarray(value, dtype=np.float32) - np.asarray(zero_point, dtype=np.float32)) * \
        np.asarray(scale, dtype=np.float32)


def _run_shared(ref_m, cand_m, pairs, feeds, *, ref_provider, provider, cand_feeds):
    """Both models' values of the paired tensors, keyed by the reference's names."""

    keep_r, keep_c = set(pairs), {c for c, _, _ in pairs.values()}
    with tempfile.TemporaryDirectory() as tmp:
        rs = _session_for(_with_all_outputs(ref_m, keep_r), ref_provider, tmp)
        cs = _session_for(_with_all_outputs(cand_m, keep_c), provider, tmp)
        r_out = run_session(rs, feeds, [o.name for o in rs.get_outputs() if o.name in keep_r])
        c_raw = run_session(cs, cand_feeds or feeds, [o.name for o in cs.get_outputs() if o.name in keep_c])
    c_out = {r: _dequantized(c_raw[c], s, z) for r, (c, s, z) in pairs.items() if c in c_raw}
    return r_out, c_out


def shared_intermediates(ref_path, cand_path, feeds: Mapping[str, object], *, ref_provider: str = "cpu",
                         provider: str = "cpu", cand_feeds: Mapping[str, object] | None = None):
    """Run copies of both models with every intermediate tensor they share (see
    tensor_pairs) marked as an output. Returns (the reference ModelProto, its (index,
    node, tensor) triples that the candidate also computes, reference values,
    candidate values keyed by the reference's names)."""
    ref_m, cand_m = load_onnx(ref_path), load_onnx(cand_path)
    pairs = tensor_pairs(ref_m, cand_m)
    shared = [(i, n, o) for i, n in enumerate(ref_m.graph.node) for o in n.output if o in pairs]
    if not shared:
        return ref_m, [], {}, {}
    r_out, c_out = _run_shared(ref_m, cand_m, pairs, feeds, ref_provider=ref_provider, provider=provider,
                               cand_feeds=cand_feeds)
    return ref_m, shared, r_out, c_out


def localize_divergence(ref_path, cand_path, feeds: Mapping[str, object], tol: Tolerance, *,
                        ref_provider: str = "cpu", provider: str = "cpu",
                        cand_feeds: Mapping[str, object] | None = None) -> Localization:
    """The first node (in the reference's topological order) whose output tensor,
    shared by name with the candidate, differs past tolerance (run once on the first
    sample; see shared_intermediates)."""
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


def _rel_err(a, b) -> float:
    a64, b64 = np.asarray(a, dtype=np.float64).reshape(-1), np.asarray(b, dtype=np.float64).reshape(-1)
    denom = np.linalg.norm(a64)
    diff = np.linalg.norm(a64 - b64)
    return float(diff / denom) if denom else float(diff)


def layer_rows(ref_m, pairs, r_out, c_out) -> tuple[list[LayerRow], int]:
    """A row for every float tensor both sides computed with the same shape, in the
    reference's node order, and how many paired tensors were left out (other dtypes or
    shapes)."""
    producer = {o: n for n in ref_m.graph.node for o in n.output if o}
    err: dict[str, float] = {}
    via: dict[str, float] = {}

    def upstream(t: str) -> float:
        # the error reaching a node through a tensor not compared: its nearest compared
        # ancestors'; a graph input or a weight is exact
        if t in err:
            return err[t]
        if t not in via:
            via[t] = 0.0  # a cycle (none in a valid graph) ends here
            node = producer.get(t)
            via[t] = max((upstream(i) for i in node.input if i), default=0.0) if node is not None else 0.0
        return via[t]

    rows, skipped = [], 0
    for index, node in enumerate(ref_m.graph.node):
        for t in (o for o in node.output if o in pairs):
            if t not in r_out or t not in c_out:
                continue
            a, b = np.asarray(r_out[t]), np.asarray(c_out[t])
            if a.dtype.kind != "f" or b.dtype.kind != "f" or a.shape != b.shape:
                skipped += 1
                continue
            d = compare_output(t, [a], [b], atol=0.0, rtol=0.0)
            before = max((upstream(i) for i in node.input if i), default=0.0)
            err[t] = _rel_err(a, b)
            cand_name = pairs[t][0]
            rows.append(LayerRow(t, node.name, node.op_type, index, tuple(a.shape), d.max_abs, d.mean_abs, d.cosine, err[t],
                                 err[t] - before, "" if cand_name == t else cand_name))
    return rows, skipped


def top_growth(rows: Sequence[LayerRow], n: int = 5) -> tuple[str, ...]:
    """The tensors whose nodes add the most error, largest first (none when no node adds any)."""
    ranked = sorted((r for r in rows if r.growth > 0), key=lambda r: -r.growth)
    return tuple(r.tensor for r in ranked[:n])


def _save_names(names: Sequence[str], pairs) -> list[str]:
    """--save-intermediates NAMES (comma lists, ``all``) checked against the tensors both
    models compute, before anything runs."""
    wanted = [n.strip() for item in names for n in item.split(",") if n.strip()]
    if "all" in wanted:
        return list(pairs)
    unknown = [n for n in wanted if n not in pairs]
    if unknown:
        some = list(pairs)[:8]
        more = f", ... ({len(pairs)} in all)" if len(pairs) > len(some) else ""
        raise UsageError(f"--save-intermediates {unknown[0]}: not a tensor both models compute",
                         hint=f"tensors both compute: {', '.join(some) or '-'}{more}; or `all`")
    return list(dict.fromkeys(wanted))


def layerwise(ref_path, cand_path, feeds: Mapping[str, object], *, ref_provider: str = "cpu", provider: str = "cpu",
              cand_feeds: Mapping[str, object] | None = None, save: Sequence[str] = (),
              save_to: str | None = None, top: int = 5) -> Layerwise:
    """Compare every intermediate tensor the two models share (tensor_pairs) on one
    sample; ``save`` names tensors (or ``all``) written from both sides to ``save_to``
    (.npz, keys reference/NAME and candidate/NAME). Every tensor of the sample is held at
    once, from both models: the memory of one forward pass each, with nothing freed."""
    ref_m, cand_m = load_onnx(ref_path), load_onnx(cand_path)
    pairs = tensor_pairs(ref_m, cand_m)
    names = _save_names(save, pairs)
    if not pairs:
        return Layerwise((), message="the models share no intermediate tensor")
    r_out, c_out = _run_shared(ref_m, cand_m, pairs, feeds, ref_provider=ref_provider, provider=provider,
                               cand_feeds=cand_feeds)
    rows, skipped = layer_rows(ref_m, pairs, r_out, c_out)
    if save_to and names:
        save_samples(save_to, [{**{f"reference/{n}": r_out[n] for n in names if n in r_out},
                                **{f"candidate/{n}": c_out[n] for n in names if n in c_out}}])
    note = f"{skipped} shared tensor(s) not compared (not float, or shapes differ)" if skipped else ""
    return Layerwise(tuple(rows), top_growth(rows, top), note, save_to if save_to and names else "")
