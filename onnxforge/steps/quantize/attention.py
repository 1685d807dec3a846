"""Rewrite fused ``com.microsoft.Attention`` nodes into the form ORT's quantizer turns
into ``QAttention``.

ORT's ``AttentionQuant`` (onnxruntime/quantization/operators/attention.py) leaves an
Attention in fp32 when it carries ``qkv_hidden_sizes``, and builds ``QAttention``
from inputs 0-4 only: an ``attention_bias`` (input 5) still attached at quantization
time is dropped, and the mask with it, silently. onnxscript's fusions (the ones that
fuse a dynamo export) emit exactly that form: ``qkv_hidden_sizes`` and the padding
mask as an additive bias ``Where(mask[b, k], 0, -FLT_MAX)`` of shape [B, 1, S, S].

Two rewrites, each only where it is exact:

- ``qkv_hidden_sizes`` with three equal sizes says what the packed [H, 3H] weight
  already says; it is dropped.
- an ``attention_bias`` whose value is a function of one 2-D graph input ``m`` alone
  and equals ``0 where m[b, k] != 0 else NEG`` for every head and query row becomes
  ``mask_index`` = ``Cast(Cast(m, bool), int32)`` (the raw 2-D mask, which ORT reads as
  "key k of batch b is valid when > 0") with ``mask_filter_value = NEG``, so the
  masked scores get the same additive value as before. The bias sub-graph is not
  matched by pattern (exporters change it between versions): it is cut out and run
  on probe masks (every 0/1 mask of lengths 1-3, random ones of lengths 5, 8 and 17,
  rows of zeros and of ones, values other than 0/1), and compared exactly.

A dynamo export of a Hugging Face BERT builds its padding bias from ``attention_mask``
and the batch and sequence sizes, read from the shape of whichever input the model used
first (``token_type_ids`` for BertModel): the bias then depends on two graph inputs and
is no padding mask of one input. ``unify_bias_shapes`` first points a ``Shape`` node
inside such a bias sub-graph that reads another graph input at the mask, when the model
declares both inputs with the same dims (the same names or fixed sizes, none unnamed):
by the model's own contract the two shapes are equal. Without it ORT's quantizer turned
the Attention into a QAttention without that input (the mask silently dropped).

Anything else (a causal or relative-position bias, a past state, several inputs
behind the bias) is left as it is and the report says why. The caller still checks
the rewritten model against the original with padded masks (see
``padded_mask_inputs``): the rewrite is kept only when that passes.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
import itertools
import shutil
import numpy as np
from onnxforge.backends.onnx.runner import onnx_runner as onnx_side, recorded_val_ranges
from onnxforge.checks.compare import DEFAULT_TOLERANCE
from onnxforge.checks.parity import validate
from onnxforge.core.errors import StepNotApplicable, first_line
from onnxforge.core.fileio import external_data_files, has_subgraphs, initializer_value
from onnxforge.data.generate import generate_inputs, padding_mask
from onnxforge.data.specs import model_io_specs, resolve_shape

MS_DOMAIN = "com.microsoft"
BIAS_INPUT, MASK_INPUT, PAST_INPUT = 5, 3, 4
PROBE_LENGTHS = (1, 2, 3, 5, 8, 17)
SMALL_CONSTANT = 1 << 20  # bytes: larger tensors are weights, never part of a mask


@dataclass(frozen=True)
class NodeRewrite:
    node: str
    dropped_qkv_hidden_sizes: bool
    mask: str  # "mask_index", "kept attention_bias", "none"
    quantizable: bool  # what ORT's AttentionQuant needs: no qkv_hidden_sizes, no attention_bias
    reason: str = ""


@dataclass(frozen=True)
class AttentionReport:
    nodes: tuple[NodeRewrite, ...]
    mask_inputs: tuple[str, ...] = ()  # graph inputs now read as mask_index
    removed_nodes: int = 0
    notes: tuple[str, ...] = field(default_factory=tuple)
    mask_shapes: tuple[str, ...] = ()  # Shape nodes pointed at the mask (unify_bias_shapes)

    @property
    def changed(self) -> bool:
        return any(n.dropped_qkv_hidden_sizes or n.mask == "mask_index" for n in self.nodes)

    @property
    def quantizable(self) -> int:
        return sum(n.quantizable for n in self.nodes)


def attention_nodes(model) -> list:
    return [n for n in model.graph.node if n.op_type == "Attention" and n.domain == MS_DOMAIN]


def rewrite_for_quantization(src: str | Path, dst: str | Path) -> AttentionReport:
    """Write ``src`` with its Attention nodes in the form ORT quantizes (see the module
    docstring) to ``dst``. Untouched weights stay in ``src``'s data file (copied beside
    ``dst`` when it is in another folder); folded ones go to a file of their own.
    Returns what was done per node."""
    import onnx

    src, dst = Path(src), Path(dst)
    model = onnx.load(str(src), load_external_data=False)
    if src.resolve().parent != dst.resolve().parent:
        _link_data(model, src.parent, dst.parent)
    report = rewrite_model(model, src.parent)
    # folded weights are new in-memory tensors: they go to a data file of their own,
    # the untouched weights stay in the input's data file
    data = dst.name + ".attention.data"
    (dst.parent / data).unlink(missing_ok=True)
    onnx.save_model(model, str(dst), save_as_external_data=True, all_tensors_to_one_file=True, location=data,
                    size_threshold=1024)
    return report


def _link_data(model, src_dir: Path, dst_dir: Path) -> None:
    """Copies of the model's external data files beside ``dst_dir`` (their locations are
    relative, so the proto needs no change). Not hard links: onnx refuses to read a data
    file with several links (its guard against hard-link attacks)."""

    for f in external_data_files(model):
        target = dst_dir / f
        if target.exists():
            raise FileExistsError(f"{target} exists: refusing to overwrite another model's data")
        shutil.copyfile(src_dir / f, target)


def run_attention_rewrite(src: Path, dst: Path) -> dict:
    """The simplify engine after transformer fusions: the rewrite, checked against its
    input on padded-mask and random inputs. Nothing to rewrite, or a failed check,
    keeps the model before it (StepNotApplicable: a fallback with a note, not a failure)."""
    if not attention_nodes(_graph(src)):
        raise StepNotApplicable("no Attention node to rewrite")
    rep = rewrite_for_quantization(src, dst)
    if not rep.changed:
        raise StepNotApplicable("the Attention nodes are already in the form ORT quantizes, or cannot take it: "
                                + "; ".join(sorted({n.reason for n in rep.nodes if n.reason}))[:200])
    failed = check_padded(src, dst, rep.mask_inputs, DEFAULT_TOLERANCE)
    if failed:
        raise StepNotApplicable(f"attention rewrite skipped: it changed the outputs on padded masks ({failed})")
    shapes = {"mask_shapes": list(rep.mask_shapes)} if rep.mask_shapes else {}
    return {**shapes, "attention": {"nodes": len(rep.nodes), "quantizable": rep.quantizable,
                          "mask_inputs": list(rep.mask_inputs), "notes": list(rep.notes),
                          "kept": sorted({f"{n.node}: {n.reason}" for n in rep.nodes if not n.quantizable})[:5]}}


def _graph(path: Path):
    import onnx

    return onnx.load(str(path), load_external_data=False)


def check_padded(ref: Path, cand: Path, mask_inputs, tolerance, *, seed: int = 0) -> str:
    """'' when ``cand`` matches ``ref`` within ``tolerance`` on right-padded, holed and
    random inputs; else what differed."""
    graph = _graph(ref)
    specs, _ = model_io_specs(graph)
    ranges = recorded_val_ranges(graph)  # a BERT's token_type_ids stay in [0, 1]
    dims = {d: 4 for s in specs for d in s.shape if isinstance(d, str)}
    samples = (padded_mask_inputs(specs, mask_inputs, dims=dims, seed=seed, val_ranges=ranges)
               + [generate_inputs(specs, seed=seed, dims=dims, val_ranges=ranges)])
    rep = validate(onnx_side(ref, "cpu"), onnx_side(cand, "cpu"), input_samples=samples, tolerance=tolerance)
    if rep.passed:
        return ""
    return "; ".join(list(rep.problems) + [f"{o.name}: {o.message}" for o in rep.outputs if not o.passed])[:300]


def rewrite_model(model, base_dir: Path) -> AttentionReport:
    """In-place version of ``rewrite_for_quantization`` on a loaded ModelProto (its
    external data, if any, stays where ``base_dir`` says; only small constants are read)."""
    from onnx import helper

    g = model.graph
    mask_shapes = tuple(unify_bias_shapes(model))
    results: list[NodeRewrite] = []
    notes: list[str] = []
    mask_cache: dict[str, tuple[str, float] | str] = {}  # bias tensor -> (mask input, NEG) or why not
    casts: dict[str, str] = {}  # mask input -> its int32 0/1 tensor
    new_nodes = []
    folded = 0
    for node in attention_nodes(model):
        folded += fold_packed_weights(model, node, base_dir)
        attrs = {a.name: a for a in node.attribute}
        dropped = False
        qkv = attrs.get("qkv_hidden_sizes")
        if qkv is not None and len(set(qkv.ints)) == 1:
            node.attribute.remove(qkv)
            dropped = True
        has_qkv = any(a.name == "qkv_hidden_sizes" for a in node.attribute)
        ins = list(node.input)
        bias = ins[BIAS_INPUT] if len(ins) > BIAS_INPUT else ""
        extra = [i for k, i in enumerate(ins) if k > BIAS_INPUT and i]
        mask, reason = "none", ""
        if bias:
            if (len(ins) > MASK_INPUT and ins[MASK_INPUT]) or (len(ins) > PAST_INPUT and ins[PAST_INPUT]) or extra:
                mask, reason = "kept attention_bias", "the node also has a mask_index, past state or past length"
            else:
                if bias not in mask_cache:
                    mask_cache[bias] = padding_bias_source(model, bias, base_dir)
                found = mask_cache[bias]
                if isinstance(found, str):
                    mask, reason = "kept attention_bias", found
                else:
                    mask_name, neg = found
                    if mask_name not in casts:
                        casts[mask_name] = _mask_index_casts(mask_name, new_nodes)
                    del node.input[:]
                    node.input.extend([ins[0], ins[1], ins[2], casts[mask_name]])
                    for a in [a for a in node.attribute if a.name == "mask_filter_value"]:
                        node.attribute.remove(a)
                    node.attribute.append(helper.make_attribute("mask_filter_value", float(neg)))
                    mask = "mask_index"
        elif len(ins) > MASK_INPUT and ins[MASK_INPUT]:
            mask = "mask_index"
        quantizable = not has_qkv and mask != "kept attention_bias"
        if has_qkv:
            reason = (reason + "; " if reason else "") + "Q, K and V sizes differ (qkv_hidden_sizes kept)"
        results.append(NodeRewrite(node.name, dropped, mask, quantizable, reason))
    if new_nodes:
        # the casts read a graph input, so they can go first in topological order
        nodes = new_nodes + list(g.node)
        del g.node[:]
        g.node.extend(nodes)
    removed = remove_dead_nodes(model) if (casts or folded) else 0
    if folded:
        notes.append(f"{folded} packed Q/K/V weight(s) computed by Concat at run time folded into initializers "
                     "(ORT's quantizer quantizes only initializer weights; a Concat output is quantized as an "
                     "activation on every call)")
    if casts:
        notes.append(f"attention_bias from {', '.join(sorted(casts))} turned into mask_index "
                     f"({sum(r.mask == 'mask_index' for r in results)} node(s))")
    return AttentionReport(tuple(results), tuple(sorted(casts)), removed, tuple(notes), mask_shapes=mask_shapes)


def _declared_dims(value_info) -> tuple | None:
    """The input's dims as declared (names or sizes); None when one is unnamed."""
    tt = value_info.type.tensor_type
    if not tt.HasField("shape"):
        return None
    dims = tuple(d.dim_param if d.HasField("dim_param") else d.dim_value if d.HasField("dim_value") else None
                 for d in tt.shape.dim)
    return None if any(d in (None, "") for d in dims) else dims


def unify_bias_shapes(model) -> list[str]:
    """Point the Shape nodes of each attention bias sub-graph that read another input
    than the bias' one data input at that input (see the module docstring). In place;
    returns the names of the Shape nodes changed."""
    g = model.graph
    if has_subgraphs(g):
        return []  # a subgraph body may read any name: left as is
    inits = {t.name for t in g.initializer}
    declared = {i.name: _declared_dims(i) for i in g.input if i.name not in inits}
    biases = {n.input[BIAS_INPUT] for n in attention_nodes(model) if len(n.input) > BIAS_INPUT and n.input[BIAS_INPUT]}
    changed = []
    for bias in sorted(biases):
        nodes, ins, _ = bias_subgraph(model, bias)
        readers = {i: [n for n in nodes if i in n.input] for i in ins}
        data = [i for i in ins if any(n.op_type != "Shape" for n in readers[i])]
        if len(data) != 1 or declared.get(data[0]) is None:
            continue
        mask = data[0]
        for other in sorted(ins - {mask}):
            if declared.get(other) != declared[mask]:
                continue
            for n in readers[other]:
                n.input[0] = mask
                changed.append(n.name or n.output[0])
    return changed


def fold_packed_weights(model, node, base_dir: Path) -> int:
    """Attention's packed weight (input 1) and bias (input 2) as initializers: onnxscript
    leaves ``Concat(Wq, Wk, Wv)`` of initializers unfolded (too large for its constant
    folding), and ORT's quantizer quantizes only initializers as weights."""
    from onnx import numpy_helper

    g = model.graph
    producer = {o: n for n in g.node for o in n.output}
    inits = {t.name: t for t in g.initializer}
    count = 0
    for k in (1, 2):
        if len(node.input) <= k or node.input[k] in inits:
            continue
        cat = producer.get(node.input[k])
        if cat is None or cat.op_type != "Concat" or not all(i in inits for i in cat.input):
            continue
        axis = next(a.i for a in cat.attribute if a.name == "axis")
        parts = [initializer_value(inits[i], base_dir) for i in cat.input]
        name = f"{node.name or node.output[0]}__onnxforge_packed_{'weight' if k == 1 else 'bias'}"
        g.initializer.append(numpy_helper.from_array(np.concatenate(parts, axis=axis), name))
        inits[name] = g.initializer[-1]
        node.input[k] = name
        count += 1
    return count


def _mask_index_casts(mask_name: str, new_nodes: list) -> str:
    """``Cast(Cast(mask, bool), int32)``: 1 where the mask is non-zero (what the bias
    tested), 0 elsewhere; ORT's mask_index is int32."""
    from onnx import TensorProto, helper

    b = f"{mask_name}__onnxforge_bool"
    i32 = f"{mask_name}__onnxforge_mask_index"
    new_nodes.append(helper.make_node("Cast", [mask_name], [b], name=f"{mask_name}__onnxforge_to_bool",
                                      to=TensorProto.BOOL))
    new_nodes.append(helper.make_node("Cast", [b], [i32], name=f"{mask_name}__onnxforge_to_int32",
                                      to=TensorProto.INT32))
    return i32


def bias_subgraph(model, tensor: str) -> tuple[list, set[str], set[str]]:
    """The nodes computing ``tensor`` (in graph order), the graph inputs they read and
    the initializers they read."""
    g = model.graph
    producer = {o: n for n in g.node for o in n.output}
    graph_inputs = {i.name for i in g.input}
    inits = {t.name for t in g.initializer}
    need, seen, ins, used_inits = [tensor], set(), set(), set()
    while need:
        t = need.pop()
        if t in seen or not t:
            continue
        seen.add(t)
        n = producer.get(t)
        if n is None:
            if t in graph_inputs and t not in inits:
                ins.add(t)
            elif t in inits:
                used_inits.add(t)
            continue
        if any(a.g.node or a.graphs for a in n.attribute):
            raise _NotAPaddingBias("the bias is computed with a subgraph (If/Loop)")
        need.extend(n.input)
    keep = {id(producer[t]) for t in seen if t in producer}
    return [n for n in g.node if id(n) in keep], ins, used_inits


class _NotAPaddingBias(Exception):
    pass


def padding_bias_source(model, bias: str, base_dir: Path) -> tuple[str, float] | str:
    """(mask input, NEG) when ``bias`` is provably ``0 where mask[b, k] != 0 else NEG``
    for every head and query row; else the reason it is not."""
    try:
        nodes, ins, inits = bias_subgraph(model, bias)
    except _NotAPaddingBias as exc:
        return str(exc)
    if len(ins) != 1:
        return f"the bias depends on {len(ins)} graph inputs ({', '.join(sorted(ins)) or 'none'}), not one mask"
    mask_name = next(iter(ins))
    vi = next(i for i in model.graph.input if i.name == mask_name)
    tt = vi.type.tensor_type
    if len(tt.shape.dim) != 2:
        return f"{mask_name} is not a 2-D [batch, sequence] mask"
    dims = [d.dim_value if d.HasField("dim_value") else None for d in tt.shape.dim]
    try:
        fn = _subgraph_runner(model, nodes, mask_name, tt.elem_type, bias, inits, base_dir)
        return _probe(fn, mask_name, tt.elem_type, dims[0], dims[1])
    except _NotAPaddingBias as exc:
        return str(exc)
    except Exception as exc:  # the cut-out graph does not run: not something we can prove
        return f"the bias sub-graph could not be evaluated ({type(exc).__name__}: {first_line(exc, 160)})"


def _subgraph_runner(model, nodes, mask_name, elem_type, out, inits, base_dir):
    import onnx
    import onnxruntime as ort
    from onnx import helper
    from onnx.external_data_helper import uses_external_data

    tensors = []
    for t in model.graph.initializer:
        if t.name not in inits:
            continue
        if uses_external_data(t):
            # a fixed-shape export keeps index constants such as arange(seq) in the data
            # file too; read those, but a weight-sized tensor is no part of a mask
            length = int({e.key: e.value for e in t.external_data}.get("length", 0) or 0)
            if length > SMALL_CONSTANT:
                raise _NotAPaddingBias(f"the bias reads a {length}-byte tensor {t.name}: not a mask")
            from onnx import numpy_helper

            t = numpy_helper.from_array(initializer_value(t, base_dir), t.name)
        tensors.append(t)
    g = helper.make_graph(list(nodes), "bias", [helper.make_tensor_value_info(mask_name, elem_type, ["b", "s"])],
                          [helper.make_tensor_value_info(out, onnx.TensorProto.FLOAT, None)], initializer=tensors)
    m = helper.make_model(g, opset_imports=list(model.opset_import), ir_version=model.ir_version)
    so = ort.SessionOptions()
    so.intra_op_num_threads = 1
    so.log_severity_level = 3
    sess = ort.InferenceSession(m.SerializeToString(), so, providers=["CPUExecutionProvider"])
    return lambda mask: sess.run([out], {mask_name: mask})[0]


def _probe_masks(np_dtype, batch, seq):
    """Every 0/1 mask of lengths 1-3 (as rows of one batch), random ones for longer
    lengths, rows of zeros and of ones, right padding, and values other than 0/1
    (which a bool cast reads as 'valid'). A dim the model fixes is kept at its size."""

    rng = np.random.default_rng(0)
    out = []
    for s in ([seq] if isinstance(seq, int) and seq > 0 else PROBE_LENGTHS):
        if s <= 3:
            rows = np.array(list(itertools.product((0, 1), repeat=s)))
        else:
            rows = (rng.random((8, s)) < 0.6).astype(np.int64)
            rows[0] = 0
            rows[1] = 1
            rows[2, s // 2:] = 0  # right padding
            rows[3, : s // 3] = 0  # left padding
            rows[4, 1] = 2 if np.dtype(np_dtype).kind == "u" else -3  # non-0/1 values
            rows[5, -1] = 7
        batches = [rows, rows[:1]] if not isinstance(batch, int) or batch <= 0 else \
            [rows[np.arange(batch) % len(rows)], rows[(np.arange(batch) + 1) % len(rows)]]
        out.extend(b.astype(np_dtype) for b in batches)
    return out


def _probe(fn, mask_name: str, elem_type: int, batch, seq) -> tuple[str, float] | str:
    from onnx import helper

    np_dtype = helper.tensor_dtype_to_np_dtype(elem_type)
    neg = None
    for mask in _probe_masks(np_dtype, batch, seq):
        bias = np.asarray(fn(mask))
        b, s = mask.shape
        if bias.dtype != np.float32 or bias.ndim != 4 or bias.shape[-1] != s or bias.shape[0] not in (1, b) \
                or bias.shape[1] != 1 or bias.shape[2] not in (1, s):
            return f"the bias has shape {bias.shape} for a {mask.shape} mask, not [batch, 1, seq|1, seq]"
        valid = mask != 0
        masked_vals = np.unique(bias[np.broadcast_to(~valid[:, None, None, :], bias.shape)])
        if masked_vals.size > 1:
            return "masked positions do not all get the same bias"
        if masked_vals.size == 1:
            v = float(masked_vals[0])
            if not np.isfinite(v) or v >= 0 or (neg is not None and v != neg):
                return f"the masked bias value {v} is not one finite negative number"
            neg = v
        expect = np.where(valid[:, None, None, :], np.float32(0), np.float32(neg if neg is not None else 0))
        if not np.array_equal(np.broadcast_to(expect, bias.shape), bias):
            return f"the bias is not a padding mask of {mask_name} (it differs from 0/NEG on a probe mask)"
    if neg is None:
        return "the bias never masks anything"
    return mask_name, neg


def used_names(graph) -> set[str]:
    """Every tensor name a node reads, subgraphs included (their bodies may read outer names)."""
    out = set()
    for n in graph.node:
        out.update(n.input)
        for a in n.attribute:
            for sub in ([a.g] if a.HasField("g") else []) + list(a.graphs):
                out |= used_names(sub)
    return out


def remove_dead_nodes(model) -> int:
    """Drop nodes none of whose outputs is used (by a node or a graph output), and
    initializers nothing reads any more."""
    g = model.graph
    removed = 0
    while True:
        used = used_names(g) | {o.name for o in g.output}
        keep = [n for n in g.node if any(o in used for o in n.output if o)]
        if len(keep) == len(g.node):
            break
        removed += len(g.node) - len(keep)
        del g.node[:]
        g.node.extend(keep)
    used = used_names(g) | {o.name for o in g.output}
    inits = [t for t in g.initializer if t.name in used]
    if len(inits) != len(g.initializer):
        del g.initializer[:]
        g.initializer.extend(inits)
    if removed:
        names = {o for n in g.node for o in n.output} | {i.name for i in g.input}
        vis = [v for v in g.value_info if v.name in names]
        del g.value_info[:]
        g.value_info.extend(vis)
    return removed


def padded_mask_inputs(specs, mask_inputs, *, dims: dict, seed: int = 0, val_ranges=None) -> list[dict]:
    """Input samples whose masks have zeros: one right-padded batch (row i keeps
    ``seq - i`` tokens, at least one) and one with random holes. Other inputs are
    seeded random as usual. This is the check ORT's silent mask drop cannot pass."""

    out = []
    for k, kind in enumerate(("right-padded", "holes")):
        feeds = generate_inputs(specs, seed=seed + k, dims=dims, val_ranges=val_ranges)
        rng = np.random.default_rng(seed + 100 + k)
        for s in specs:
            if s.name not in mask_inputs:
                continue
            shape = resolve_shape(s, dims, 2)
            if len(shape) != 2:
                continue
            if kind == "right-padded":
                m = padding_mask(shape, start=1)  # every row padded
            else:
                m = (rng.random(shape) < 0.7).astype(np.float64)
                m[:, 0] = 1
            feeds[s.name] = m.astype(feeds[s.name].dtype)
        out.append(feeds)
    return out
