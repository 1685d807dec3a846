"""The attention engine of simplify: the padding-mask bias of fused attention made
readable by ``steps/quantize/attention.py``, then that module's rewrite.

A dynamo export of a Hugging Face BERT builds its padding bias from
``attention_mask`` and the batch and sequence sizes, which it reads from the shape of
whichever input the model used first (``token_type_ids`` for BertModel): the bias then
depends on two graph inputs, and attention.py, which proves a bias is a padding mask
of one 2-D input, leaves it as an ``attention_bias`` of [B, 1, S, S] built by 20 nodes
(Range, Expand, GatherND, And, Where ...). ORT's quantizer then turns the Attention
into a QAttention without that input (the mask silently dropped), so the fused graph
cannot be quantized. Here a ``Shape`` node inside such a bias sub-graph that reads
another graph input is pointed at the mask instead, when the model declares both
inputs with the same dims (the same names or fixed sizes, none unnamed): by the
model's own contract the two shapes are equal. The bias then depends on the mask
alone, attention.py turns it into ``mask_index`` and its sub-graph goes away; the
result is checked on padded masks there and against the model before it by the caller.
"""

from __future__ import annotations

from pathlib import Path


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
    from onnxforge.steps.quantize.attention import BIAS_INPUT, attention_nodes, bias_subgraph

    g = model.graph
    if any(a.HasField("g") or len(a.graphs) for n in g.node for a in n.attribute):
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


def run_attention(src: Path, dst: Path) -> dict:
    """The simplify engine after transformer fusions: unify_bias_shapes, then
    attention.py's rewrite (which raises StepNotApplicable when it has nothing to do
    or its padded-mask check fails: the model before it is kept)."""
    from onnxforge.core.fileio import load_onnx
    from onnxforge.steps.artifacts import save_scratch
    from onnxforge.steps.quantize.attention import run_attention_rewrite

    from onnx.external_data_helper import load_external_data_for_model

    model = load_onnx(src, load_external_data=False)
    changed = unify_bias_shapes(model)
    if not changed:
        return run_attention_rewrite(src, dst)
    load_external_data_for_model(model, str(Path(src).parent))
    unified = dst.with_name(dst.stem + "_masks.onnx")
    save_scratch(model, unified)
    del model
    return {**run_attention_rewrite(unified, dst), "mask_shapes": changed}
