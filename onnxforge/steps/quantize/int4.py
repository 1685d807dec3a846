"""int4 weight-only quantization: ORT's MatMulNBits quantizer on every MatMul whose B
is a constant 2-D weight (a Gemm with constant weights is first written as MatMul +
Add: the quantizer handles MatMul only); activations and every other op stay fp32.
Checked with the int8 modes' parity, size and speed budgets (quantize.py).

Algorithms: rtn (ORT's blockwise round-to-nearest C++ kernel, the default) and hqq
(half-quadratic, in torch). GPTQ is refused: the copy of Intel Neural Compressor's
GPTQ that ORT ships fails on a plain two-layer MLP whose MatMuls differ in K
("operands could not be broadcast together", ORT 1.32).
"""

from __future__ import annotations

import time
from pathlib import Path

from onnxforge.core.errors import BadInputError, ConversionError, MissingDependencyError, UsageError, first_line
from onnxforge.core.types import StepResult
from onnxforge.steps.quantize.options import Int4Options
from onnxforge.core.logs import quiet_third_party
from onnxforge.core.options import resolve
from onnxforge.steps.quantize.quantize import low_bit_job, refuse_generated_data, run_low_bit


def quantize_int4(model, output: str | Path, options: Int4Options | None = None, /, **kwargs) -> StepResult:
    """4-bit weights in blocks along K (MatMulNBits), fp32 activations. Options: Int4Options."""
    o = resolve(Int4Options, options, kwargs)
    if o.algorithm == "gptq":
        raise UsageError("--algorithm gptq is not offered: onnxruntime's offline GPTQ fails on models whose MatMuls "
                         "differ in K", hint="use --algorithm rtn (default) or hqq")
    refuse_generated_data(o, "int4")
    if o.algorithm == "hqq":
        from importlib.util import find_spec

        if find_spec("torch") is None:
            raise MissingDependencyError("--algorithm hqq needs torch",
                                         hint="pip install torch, or use --algorithm rtn")
    why = missing_kernel(o.block_size, o.accuracy_level)
    if why:
        raise BadInputError(f"this onnxruntime cannot run int4 weights: {why}",
                            hint="quantize dynamic or static (int8) instead, or upgrade onnxruntime")
    with low_bit_job(model, output, o, "int4") as job:
        t0 = time.perf_counter()
        q = job.tmp / "int4.onnx"
        count = _quantize(job.base, q, o)
        seconds = time.perf_counter() - t0
        if count == 0:
            raise BadInputError(f"{job.src} has no MatMul or Gemm with a constant 2-D weight: nothing to quantize",
                                hint="int4 is weight-only; quantize dynamic or static quantize activations too")
        details = {"mode": "int4", "algorithm": o.algorithm, "block_size": o.block_size,
                   "accuracy_level": o.accuracy_level, "symmetric": o.symmetric, "gather": o.gather,
                   "int4_weights": count}
        what = "MatMul and Gather" if o.gather else "MatMul"
        return run_low_bit(job, model, q, seconds, details,
                           [f"{count} {what} weight(s) in 4 bits (blocks of {o.block_size}); the rest stays fp32"])


def _quantize(src: Path, dst: Path, o: Int4Options) -> int:
    """Run the quantizer; the count of MatMulNBits and GatherBlockQuantized nodes written."""
    from onnxruntime.quantization import matmul_nbits_quantizer as mq

    from onnxforge.core.fileio import load_onnx
    from onnxforge.steps.artifacts import save_scratch

    m = load_onnx(src)
    gemm_as_matmul(m)
    # B of MatMul blocked along K (axis 0); an embedding table along its width (axis 1)
    ops = dict(op_types_to_quantize=("MatMul", "Gather") if o.gather else ("MatMul",),
               quant_axes=(("MatMul", 0), ("Gather", 1)))
    if o.algorithm == "hqq":
        cfg = mq.HQQWeightOnlyQuantConfig(block_size=o.block_size, **ops)
    else:
        cfg = mq.DefaultWeightOnlyQuantConfig(block_size=o.block_size, is_symmetric=o.symmetric,
                                              accuracy_level=o.accuracy_level, **ops)
    try:
        with quiet_third_party():
            q = mq.MatMulNBitsQuantizer(m, block_size=o.block_size, is_symmetric=o.symmetric,
                                        accuracy_level=o.accuracy_level, nodes_to_exclude=list(o.exclude_nodes),
                                        algo_config=cfg, **ops)
            q.process()
    except Exception as exc:
        raise ConversionError(f"onnxruntime's int4 quantizer failed: {type(exc).__name__}: {first_line(exc)}",
                              hint="leave the failing MatMul in fp32 with --exclude-node NAME") from None
    out = q.model.model
    save_scratch(out, dst)
    return sum(n.op_type in ("MatMulNBits", "GatherBlockQuantized") for n in out.graph.node)


def gemm_as_matmul(model) -> int:
    """Gemm(A, W, C) with a constant 2-D W, alpha = beta = 1 and no transA, as MatMul(A, W
    or Wᵀ) + Add(C), in place: the int4 quantizer handles MatMul only (torch exports a
    Linear on 2-D inputs, and GPT-2's Conv1D, as Gemm). Returns how many."""
    from onnx import helper, numpy_helper

    g = model.graph
    inits = {t.name: t for t in g.initializer}
    nodes, count = [], 0
    for n in g.node:
        a = {x.name: helper.get_attribute_value(x) for x in n.attribute}
        w = inits.get(n.input[1]) if n.op_type == "Gemm" and len(n.input) > 1 else None
        if w is None or len(w.dims) != 2 or a.get("transA", 0) or a.get("alpha", 1.0) != 1.0 \
                or a.get("beta", 1.0) != 1.0:
            nodes.append(n)
            continue
        weight = n.input[1]
        if a.get("transB", 0):
            weight = f"{n.input[1]}__onnxforge_t"
            g.initializer.append(numpy_helper.from_array(numpy_helper.to_array(w).T.copy(), weight))
        bias = len(n.input) > 2 and n.input[2]
        mm_out = f"{n.output[0]}__onnxforge_matmul" if bias else n.output[0]
        nodes.append(helper.make_node("MatMul", [n.input[0], weight], [mm_out], name=n.name or mm_out))
        if bias:
            nodes.append(helper.make_node("Add", [mm_out, n.input[2]], [n.output[0]], name=f"{n.name}__bias"))
        count += 1
    if count:
        del g.node[:]
        g.node.extend(nodes)
        from onnxforge.steps.quantize.attention import remove_dead_nodes

        remove_dead_nodes(model)  # the transposed copies replaced their originals
    return count


def missing_kernel(block_size: int, accuracy_level: int | None) -> str | None:
    """None when this onnxruntime loads and runs a one-node MatMulNBits model with these
    settings; else why not."""
    import numpy as np
    import onnxruntime as ort
    from onnx import TensorProto, helper

    k, n = max(block_size, 32), 8
    blocks = k // block_size
    attrs = dict(K=k, N=n, bits=4, block_size=block_size)
    if accuracy_level is not None:
        attrs["accuracy_level"] = accuracy_level
    node = helper.make_node("MatMulNBits", ["x", "w", "s"], ["y"], domain="com.microsoft", **attrs)
    g = helper.make_graph([node], "probe", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, k])],
                          [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, n])],
                          initializer=[helper.make_tensor("w", TensorProto.UINT8, [n, blocks, block_size // 2],
                                                          np.zeros(n * k // 2, np.uint8).tobytes(), raw=True),
                                       helper.make_tensor("s", TensorProto.FLOAT, [n * blocks], [1.0] * (n * blocks))])
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", 17), helper.make_opsetid("com.microsoft", 1)])
    try:
        s = ort.InferenceSession(m.SerializeToString(), providers=["CPUExecutionProvider"])
        s.run(None, {"x": np.ones((1, k), np.float32)})
        return None
    except Exception as exc:
        return f"MatMulNBits (block size {block_size}) does not run on onnxruntime {ort.__version__} here " \
               f"({first_line(exc, 160)})"
