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

    from onnxforge.core.fileio import load_onnx, working_dir
    from onnxforge.steps.artifacts import save_scratch_ir
    from onnxforge.steps.quantize.lean_quant import gemm_as_matmul

    # weights stay in their files until the quantizer reads each one (numpy_helper.to_array,
    # relative to the current directory): BERT-base peaked at 2.7x its weights loaded whole
    m = load_onnx(src, weights_by_reference=True)
    gemm_as_matmul(m, src.parent)
    names = {n.name for n in m.graph.node}
    # a Gemm the user named is now its MatMul (ORT's naming, lean_quant.gemm_as_matmul)
    exclude = [e if e in names or e + "_MatMul" not in names else e + "_MatMul" for e in o.exclude_nodes]
    # B of MatMul blocked along K (axis 0); an embedding table along its width (axis 1)
    ops = dict(op_types_to_quantize=("MatMul", "Gather") if o.gather else ("MatMul",),
               quant_axes=(("MatMul", 0), ("Gather", 1)))
    if o.algorithm == "hqq":
        cfg = mq.HQQWeightOnlyQuantConfig(block_size=o.block_size, **ops)
    else:
        cfg = mq.DefaultWeightOnlyQuantConfig(block_size=o.block_size, is_symmetric=o.symmetric,
                                              accuracy_level=o.accuracy_level, **ops)
    try:
        with quiet_third_party(), working_dir(src.parent):  # it writes nothing (RTN, HQQ): it reads there
            q = mq.MatMulNBitsQuantizer(m, block_size=o.block_size, is_symmetric=o.symmetric,
                                        accuracy_level=o.accuracy_level, nodes_to_exclude=exclude,
                                        algo_config=cfg, **ops)
            q.process()
    except Exception as exc:
        raise ConversionError(f"onnxruntime's int4 quantizer failed: {type(exc).__name__}: {first_line(exc)}",
                              hint="leave the failing MatMul in fp32 with --exclude-node NAME") from None
    out = q.model.model
    save_scratch_ir(out, dst, src.parent)  # the fp32 weights left are copied from src's files one at a time
    return sum(n.op_type in ("MatMulNBits", "GatherBlockQuantized") for n in out.graph.node)


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
