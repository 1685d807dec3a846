"""fp32 -> fp16 for GPU targets, through onnxruntime.transformers.float16.

Ops on ORT's default block list (and ``block_ops``) stay fp32, with casts around
them. The check uses fp16-sized tolerances: fp16 keeps ~3 significant digits, so
atol 1e-2 / rtol 1e-2 by default. On a CPU-only machine the model is checked on
the CPU provider (ORT runs fp16 there by casting, slowly); on a GPU use
``provider="cuda"`` through `onnxforge validate` / `benchmark`.
"""

from __future__ import annotations

from pathlib import Path

from onnxforge.core.errors import BadInputError, ConversionError, first_line
from onnxforge.steps.quantize.options import Fp16Options
from onnxforge.core.types import StepResult, Tolerance
import time
from onnxforge.core.options import resolve
from onnxforge.data.specs import check_dims, model_io_specs

FP16_TOLERANCE = Tolerance(atol=1e-2, rtol=1e-2)
# a decoder exported with its cache (convert --task text-generation-with-past), and an encoder-decoder's
# decoder: what its fp32 encoder feeds it
CACHE_IO = ("past_key_values.", "present.", "encoder_hidden_states")


def quantize_fp16(model, output: str | Path, options: Fp16Options | None = None, /, **kwargs) -> StepResult:
    """fp32 -> fp16, checked with fp16 tolerances. Options: Fp16Options."""
    from onnxruntime.transformers.float16 import DEFAULT_OP_BLOCK_LIST, convert_float_to_float16

    from onnxforge.steps.artifacts import finish, lineage_of, model_path, save_scratch
    from onnxforge.core.fileio import check_output_path, load_onnx, scratch_dir
    from onnxforge.backends.onnx.inspection import summary
    from onnxforge.checks.compare import make_tolerance
    from onnxforge.checks.parity import check_against

    o = resolve(Fp16Options, options, kwargs)
    src = model_path(model)
    m = load_onnx(src)
    target = check_output_path(output, force=o.force, inputs=(src, o.inputs))
    kinds = {t.data_type for t in m.graph.initializer}
    if 1 not in kinds and kinds & {10, 11}:  # no float32 weight: nothing would be converted, and it "passed"
        raise BadInputError(f"{src} is already fp16" if 10 in kinds else f"{src} has float64 weights: fp16 conversion "
                            "converts float32 only", hint="convert the fp32 model (model.float() in torch)")

    check_dims(o.dims, model_io_specs(m)[0])
    before = summary(src)
    blocked = sorted(set(DEFAULT_OP_BLOCK_LIST) | set(o.block_ops))
    # a decoder's key/value cache keeps its dtype even with --fp16-io: a runtime allocates the
    # empty cache from the model it had and feeds present.* back as past_key_values.*
    cache = [v.name for v in (*m.graph.input, *m.graph.output) if v.name.startswith(CACHE_IO)]
    keep = cache if cache and not o.keep_io_types else o.keep_io_types
    t0 = time.perf_counter()
    try:
        converted = convert_float_to_float16(m, keep_io_types=keep, op_block_list=blocked,
                                             node_block_list=list(o.block_nodes) or None)
    except Exception as exc:
        raise ConversionError(f"fp16 conversion failed: {type(exc).__name__}: {first_line(exc)}",
                              hint="block the op that fails with --block-op OP") from None
    seconds = time.perf_counter() - t0
    with scratch_dir(target) as tmp:
        dst = tmp / "fp16.onnx"
        save_scratch(converted, dst)
        checks = check_against(src, dst, tolerance=make_tolerance(o.atol, o.rtol, FP16_TOLERANCE), inputs=o.inputs,
                               samples=o.samples, seed=o.seed, dims=o.dims, label="fp16")
        notes = ["checked on the CPU provider; run `onnxforge validate --provider cuda` on a GPU machine"]
        if not o.keep_io_types:
            notes.append("inputs and outputs are fp16: feed float16 arrays"
                         + (" (the key/value cache, past_key_values.* and present.*, and an encoder's "
                            "encoder_hidden_states stay float32)" if cache else ""))
        return finish(dst, target, step="quantize:fp16", passed=all(c.passed for c in checks), options=o, inherit_from=src,
                      lineage=(*lineage_of(model), "quantize:fp16"), checks=checks, notes=notes, before=before,
                      after=summary(dst), details={"keep_io_types": o.keep_io_types, "blocked_ops": blocked},
                      seconds=round(seconds, 3))
