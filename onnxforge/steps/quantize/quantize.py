"""int8 quantization on ONNX Runtime: dynamic and static (with calibration), with
parity, speed and size measured against the fp32 model, budgets, and an
accuracy-aware fallback.

Defaults by CPU (after ORT's quantization guide):
- x86 with AVX-512 VNNI or AVX-VNNI: activations uint8, weights int8, no
  reduce_range (VNNI's u8*s8 dot products do not saturate);
- x86 with AVX2/AVX-512 but no VNNI: the same types with reduce_range (7-bit weights),
  because VPMADDUBSW saturates on u8*s8 pairs;
- ARM: int8 activations and weights (S8S8).
Dynamic quantization always has uint8 activations (ORT computes their range per
call). Static uses the QDQ format by default (portable; ORT fuses it on the CPU).

The check: by default every output's cosine similarity to the fp32 output must
be >= 0.99 (quantization noise leaves cosines above 0.999; a broken model falls
far below); ``--atol/--rtol`` add an elementwise check; ``--max-mismatch F`` requires
top-1 agreement >= 1-F on score outputs (labels compared as labels).
A model the runtime cannot load is never emitted: an op type without an int8 kernel
(ConvInteger with int8 weights, say) is left in fp32, and the report says so.
"""

from __future__ import annotations

import logging
import math
import re
import time
from contextlib import contextmanager
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Sequence

from onnxforge.core.errors import (BadInputError, ConversionError, MissingDependencyError, UsageError, first_line,
                                    require, require_submodule)
from onnxforge.steps.quantize.lean_quant import decide as decide_lean, eligible
from onnxforge.steps.quantize.options import DynamicOptions, StaticOptions
from onnxforge.core.types import ParityReport, QuantTrial, SpeedCheck, StepResult, Timings, Tolerance
from onnxforge.core.logs import quiet_third_party
from onnxforge.core.options import resolve
from onnxforge.core.progress import task
from onnxforge.core.system import available_memory, cpu_info
from onnxforge.data.specs import check_dims, model_io_specs

log = logging.getLogger("onnxforge")

HISTOGRAM_METHODS = ("entropy", "percentile", "distribution")
QUANTIZED_OPS = {"QuantizeLinear", "DequantizeLinear", "DynamicQuantizeLinear", "MatMulInteger", "ConvInteger",
                 "QLinearConv", "QLinearMatMul", "QGemm", "QAttention", "DynamicQuantizeMatMul", "MatMulNBits"}
# ORT op type produced -> the fp32 op type to leave unquantized when it has no kernel
_INTEGER_TO_FLOAT = {"ConvInteger": "Conv", "MatMulInteger": "MatMul", "QLinearConv": "Conv",
                     "QLinearMatMul": "MatMul", "QGemm": "Gemm", "QAttention": "Attention",
                     "DynamicQuantizeLSTM": "LSTM", "QLinearAdd": "Add", "QLinearMul": "Mul"}


def isa_defaults() -> dict:
    info = cpu_info()
    isa = info["isa"]
    arm = info["machine"].lower() in ("aarch64", "arm64") or isa.get("neon")
    if arm:
        return {"family": "arm", "activation_type": "int8", "weight_type": "int8", "reduce_range": False}
    vnni = isa.get("avx512_vnni") or isa.get("avx_vnni")
    family = "x86-vnni" if vnni else "x86-avx512" if isa.get("avx512f") else "x86-avx2" if isa.get("avx2") else "x86"
    return {"family": family, "activation_type": "uint8", "weight_type": "int8", "reduce_range": not vnni}


def _qtype(name: str):
    from onnxruntime.quantization import QuantType

    table = {"int8": QuantType.QInt8, "uint8": QuantType.QUInt8}
    if name not in table:
        raise UsageError(f"unknown quantization type {name!r}", hint="use int8 or uint8")
    return table[name]


def is_quantized(model) -> bool:
    ops = {n.op_type for n in model.graph.node}
    return bool(ops & QUANTIZED_OPS)


def _preprocess(src: Path, dst: Path, notes: list) -> Path:
    """ORT's recommended pre-processing (symbolic shape inference, optimization);
    on failure continue with the original model and say so."""
    from onnxruntime.quantization.shape_inference import quant_pre_process

    from onnxforge.core.fileio import working_dir

    require_submodule("onnxruntime.tools", "symbolic_shape_infer", "all")  # what it imports, without torch

    src, dst = Path(src).resolve(), Path(dst).resolve()
    try:
        if _symbolic_shapes_fail(src, dst.parent):
            raise Exception(INCOMPLETE)  # what quant_pre_process raises, without loading the weights
        with quiet_third_party(), working_dir(dst.parent):
            quant_pre_process(str(src), str(dst), save_as_external_data=True, all_tensors_to_one_file=True,
                              external_data_location=dst.name + ".data")
        return dst
    except Exception as exc:
        notes.append(f"pre-processing (quant_pre_process) failed, quantized without it: {type(exc).__name__}: "
                     f"{first_line(exc, 200)}")
        return src
    finally:
        from onnxforge.core.fileio import onnx_bytes
        from onnxforge.core.memory import release_memory

        # its model sits in reference cycles (a failure's traceback too) until a collection:
        # BERT-base's 1.6 GiB stayed under the recipe search and the quantizer that followed
        release_memory(onnx_bytes(src))


INCOMPLETE = "Incomplete symbolic shape inference"


def _symbolic_shapes_fail(src: Path, scratch: Path) -> bool:
    """Whether quant_pre_process's first pass fails on ``src``, tried on the graph alone
    (its weights by reference). That failure, on dynamo exports of BERT, came after
    pre-processing had held three copies of the weights (BERT-base: 1.4 GiB for 418 MiB).
    Only that error counts: a weight read from the model's folder fails here, where the
    current directory is ``scratch`` (it drops its temporary model there), and then the
    full pre-processing decides."""
    from onnxruntime.tools.symbolic_shape_infer import SymbolicShapeInference

    from onnxforge.core.fileio import load_onnx, working_dir

    graph = load_onnx(src, weights_by_reference=True)
    if next((o.version for o in graph.opset_import if o.domain in ("", "ai.onnx")), 0) <= 10:
        return False  # quant_pre_process converts these to opset 11 first: a different graph
    try:
        with quiet_third_party(), working_dir(scratch):
            SymbolicShapeInference.infer_shapes(graph, 2**31 - 1, False, False, 0)
    except Exception as exc:
        return str(exc) == INCOMPLETE
    return False


def _initializers_not_inputs(src: Path, dst: Path, notes: list) -> Path:
    """Old exporters (IR < 4) list initializers as graph inputs too; ORT's calibration
    then asks for them as feeds. Drop them from the inputs in a copy."""
    from onnxforge.core.fileio import load_onnx
    from onnxforge.steps.artifacts import save_scratch

    m = load_onnx(src, graph_only=True)  # the graph tells; the weights only when a copy is needed
    inits = {t.name for t in m.graph.initializer}
    keep = [i for i in m.graph.input if i.name not in inits]
    if len(keep) == len(m.graph.input):
        return src
    m = load_onnx(src)
    keep = [i for i in m.graph.input if i.name not in inits]
    n = len(m.graph.input) - len(keep)
    del m.graph.input[:]
    m.graph.input.extend(keep)
    if m.ir_version < 4:
        m.ir_version = 4  # IR 4 is where initializers stopped being inputs
    save_scratch(m, dst)
    notes.append(f"{n} initializer(s) were also listed as graph inputs (old exporter); removed from the inputs")
    return dst


def _load_check(path: Path) -> str | None:
    """None when ORT loads the model; else the fp32 op type that has no kernel."""
    import onnxruntime as ort

    try:
        ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
        return None
    except Exception as exc:
        text = str(exc)
        m = re.search(r"implementation for (\w+)\(", text)
        if m:
            return _INTEGER_TO_FLOAT.get(m.group(1), m.group(1))
        raise ConversionError(f"the quantized model does not load in onnxruntime ({first_line(exc)})",
                              hint="exclude the failing op with --exclude-op") from None


def quantize_dynamic(model, output: str | Path, options: DynamicOptions | None = None, /, **kwargs) -> StepResult:
    """int8 weights, activations quantized per call. Options: DynamicOptions."""
    o = resolve(DynamicOptions, options, kwargs)
    refuse_generated_data(o, "dynamic")
    return _quantize(model, output, o, "dynamic")


def quantize_static(model, output: str | Path, options: StaticOptions | None = None, /, **kwargs) -> StepResult:
    """int8 weights and activations, ranges from calibration data. Options: StaticOptions."""
    o = resolve(StaticOptions, options, kwargs)
    if not o.calibration:
        raise UsageError("static quantization needs calibration data",
                         hint="pass --calibration data.npz (or --calibration random for a smoke test)")
    refuse_generated_data(o, "static")
    return _quantize(model, output, o, "static")


_DATA_FLAGS = {"inputs": "--inputs DATA", "calibration": "--calibration DATA",
               "allow_generated_data": "--allow-generated-data"}


def refuse_generated_data(o, mode: str, flag=_DATA_FLAGS.get) -> None:
    """An int8 verdict is signed on real data only: --inputs, or (static) calibration
    data, which the check then runs on. Noise flattered int8 (mobilenet_v3 passed at
    cosine 0.994 on [0, 1) noise and failed on ImageNet-normalised images). The
    choice of data is the user's to make, so its absence is a usage error (exit 2).
    ``flag`` names the keys as the caller's door spells them (a TOML's)."""
    real_calibration = mode == "static" and o.calibration and str(o.calibration) != "random"
    if o.inputs or real_calibration or o.allow_generated_data:
        return
    data = f"{flag('inputs')} or real {flag('calibration')}" if mode == "static" else flag("inputs")
    kind = "an int8" if mode in ("dynamic", "static") else "an int4" if mode == "int4" else f"a {mode}"
    raise UsageError(f"quantize {mode}: {kind} verdict needs real input data, and none was given "
                     f"({'calibration is random, ' if mode == 'static' else ''}the check would run on generated "
                     "inputs)", hint=f"give {data} (samples of what the model will see), or "
                                     f"{flag('allow_generated_data')} to accept a verdict on generated inputs")


def quantize(model, output: str | Path, *, mode: str = "dynamic", **kwargs) -> StepResult:
    """quantize_dynamic or quantize_static by ``mode``, with their options as keywords."""
    if mode not in ("dynamic", "static"):
        raise UsageError(f"unknown mode {mode!r}", hint="use dynamic or static (fp16: quantize_fp16; int4: "
                                                        "quantize_int4)")
    if mode == "dynamic" and kwargs.get("calibration") is None:
        kwargs.pop("calibration", None)  # one call site for both modes
    return (quantize_dynamic if mode == "dynamic" else quantize_static)(model, output, **kwargs)


def _types(o, mode: str) -> dict:
    chosen = isa_defaults()
    return {"family": chosen["family"], "weight_type": o.weight_type or chosen["weight_type"],
            "activation_type": (getattr(o, "activation_type", None) or chosen["activation_type"])
            if mode == "static" else "uint8",
            "reduce_range": chosen["reduce_range"] if o.reduce_range is None else o.reduce_range,
            "per_channel": bool(o.per_channel)}  # static: _static_plan may turn it on for a transformer


def _non_fp32_weights(m) -> tuple[str, int]:
    """Why int8 cannot quantize this model, as (type, count) of the weights feeding the ops
    it quantizes (read without the data): any float16/bfloat16 ones, or float64 ones when
    none is float32 (nothing would be quantized); ("", 0) when it can."""
    from onnx import TensorProto

    kinds = {TensorProto.FLOAT: "float32", TensorProto.FLOAT16: "float16", TensorProto.BFLOAT16: "bfloat16",
             TensorProto.DOUBLE: "float64"}
    types = {t.name: kinds[t.data_type] for t in m.graph.initializer if t.data_type in kinds}
    found = [types[i] for n in m.graph.node if n.op_type in ("MatMul", "Gemm", "Conv", "Gather", "Attention")
             for i in n.input[:2] if i in types]
    half = [t for t in found if t in ("float16", "bfloat16")]
    if half:  # any: a mostly-fp16 model "passed" with one Conv in int8
        return half[0], len(half)
    if found and "float32" not in found:  # float64 only: nothing would be quantized
        return "float64", len(found)
    return "", 0  # float64 beside float32 weights (a float64 lookup table) stays as it is


def fp32_source(model, output, o, mode: str):
    """The checks every quantization mode makes of its input: (src, specs, external data?,
    recorded ranges, input norms, target)."""
    from onnxforge.steps.artifacts import model_path
    from onnxforge.core.fileio import check_output_path, external_data_files, load_onnx

    src = model_path(model)
    m = load_onnx(src, graph_only=True)
    if is_quantized(m):
        ops = sorted({n.op_type for n in m.graph.node} & QUANTIZED_OPS)
        raise BadInputError(f"{src} is already quantized (it has {', '.join(ops)})", hint="quantize the fp32 model")
    kind, count = _non_fp32_weights(m)
    # ORT's quantizers skip weights that are not float32: the model "passed" unquantized
    # (float64: PASSED, size unchanged) or barely quantized, or failed to load (float16)
    if kind:
        raise BadInputError(f"{src} has {kind} weights ({count} of them): {mode} quantization needs an fp32 model",
                            hint="export the model in float32 (model.float() in torch)" if kind == "float64" else
                            "quantize the fp32 model; fp16 and int8 are alternatives, not steps in a row")
    specs, _ = model_io_specs(m)

    check_dims(o.dims, specs)
    has_ext = bool(external_data_files(m))
    from onnxforge.backends.onnx.runner import recorded_input_norms, recorded_val_ranges

    ranges = recorded_val_ranges(m)  # generated inputs stay valid: a BERT's token_type_ids in [0, 1]
    # generated images normalised as the model expects (int4 has no --input-norm)
    norms = getattr(o, "input_norms", None) or recorded_input_norms(m)
    del m
    target = check_output_path(output, force=o.force, inputs=(src, o.inputs, getattr(o, "calibration", None)))
    return src, specs, has_ext, ranges, norms, target


@contextmanager
def low_bit_job(model, output, o, mode: str):
    """The job of a weight-only mode (int4): the input checked as for int8, a scratch
    folder, no calibration."""
    from onnxforge.core.fileio import scratch_dir

    clock = _Clock()
    src, specs, has_ext, ranges, norms, target = fp32_source(model, output, o, mode)
    with scratch_dir(target) as tmp:
        with clock.on("work"):
            base = _initializers_not_inputs(src, tmp / "norm.onnx", [])
        yield _Job(mode, src, base, tmp, specs, has_ext, {}, o, False, ranges, norms, *_parity_budget(o),
                   target=target, clock=clock)


def run_low_bit(job: _Job, model, q: Path, seconds: float, details: dict, notes: list) -> StepResult:
    """Load, check and time a weight-only model against fp32, with the int8 modes' budgets."""
    from onnxforge.backends.onnx.inspection import summary

    job.clock.work += seconds
    with job.clock.on("checks"):
        _load_check(q)
        checks = _checks(job, q)
        speed = _speed(job, q)
    ok = all(c.passed for c in checks)
    rec = QuantTrial(0, tuple(job.o.exclude_nodes), (), ok, _min_cos(checks), *_figures(speed), round(seconds, 3))
    return _finish_quantized(job, model, job.target, rec, q, checks, speed, [rec], None, summary(job.src), notes,
                             details)


def _quantize(model, output, o, mode: str) -> StepResult:
    from onnxforge.core.fileio import scratch_dir
    from onnxforge.backends.onnx.inspection import summary

    clock = _Clock()
    src, specs, has_ext, ranges, norms, target = fp32_source(model, output, o, mode)
    types = _types(o, mode)
    notes: list[str] = []
    details: dict = {"mode": mode, "cpu_family": types["family"], "weight_type": types["weight_type"],
                     "activation_type": types["activation_type"] if mode == "static" else "uint8 (dynamic)",
                     "reduce_range": types["reduce_range"]}
    if mode == "static" and o.engine == "nncf":
        from onnxforge.steps.quantize.nncf_quant import check_nncf_options

        check_nncf_options(o)
        details.update(engine="nncf", format="qdq", method="nncf (min-max, bias correction)", per_channel=True,
                       weight_type="int8", activation_type="int8 or uint8 (NNCF's choice per tensor)",
                       reduce_range=False)
    if mode == "static" and o.speed_runtime == "openvino" and speed_budget(o) is not None:
        require("openvino", "openvino")  # before any work
    if mode == "static" and o.engine != "nncf":
        details.update(format=o.quant_format, method=o.method)
        if str(o.calibration) == "random":
            notes.append("calibration on random data: a smoke test, not a meaningful calibration")
    log.info("quantize %s: weights %s, activations %s, reduce_range %s (%s)", mode, types["weight_type"],
             details["activation_type"], types["reduce_range"], types["family"])
    before = summary(src)
    with scratch_dir(target) as tmp:
        with clock.on("work"):
            base = _initializers_not_inputs(src, tmp / "norm.onnx", notes)
            # models too large for ORT's quantizer to hold quantize one initializer at a time (lean_quant.py)
            lean = mode == "dynamic" and decide_lean(src, o.op_types, types["per_channel"], types["weight_type"],
                                                     notes)
            # ORT's pre-processing is for ORT's quantizer: NNCF's own ORT session failed on its
            # output (tiny BERT at fixed shapes: "Attempt to replace the existing tensor")
            ort_engine = getattr(o, "engine", "ort") == "ort"
            if mode == "static" and ort_engine:
                from onnxforge.steps.quantize.lean_static import decide as decide_lean_static

                lean = decide_lean_static(src, o.method, notes)
            base = _preprocess(base, tmp / "pre.onnx", notes) if o.preprocess and ort_engine and not lean else base
        if mode == "static":
            _check_calibration_memory(base, specs, o, notes, ranges, norms)
        job = _Job(mode, src, base, tmp, specs, has_ext, types, o, lean, ranges, norms, *_parity_budget(o),
                   tuple(o.op_types), clock=clock)
        if mode == "static" and o.engine != "nncf":  # NNCF has its own transformer scheme
            job = _static_plan(job, details, notes)
        details.setdefault("per_channel", job.types["per_channel"])
        if mode == "dynamic":
            job = _recipe(job, details, notes)
        rec, qpath, checks, speed, trials, ranking = _trials(job, notes)
        return _finish_quantized(job, model, target, rec, qpath, checks, speed, trials, ranking, before, notes,
                                 details)


class _Clock:
    """Seconds spent on the work and on the checks of one step (StepResult.timings)."""

    def __init__(self):
        self.start, self.work, self.checks = time.perf_counter(), 0.0, 0.0

    @contextmanager
    def on(self, what: str):
        t0 = time.perf_counter()
        try:
            yield
        finally:
            setattr(self, what, getattr(self, what) + time.perf_counter() - t0)

    def timings(self) -> Timings:
        return Timings(round(self.work, 3), round(self.checks, 3), round(time.perf_counter() - self.start, 3))


@dataclass(frozen=True)
class _Job:
    """What every quantization trial shares."""

    mode: str
    src: Path
    base: Path  # the (pre-processed) fp32 model ORT's quantizer reads
    tmp: Path
    specs: tuple
    external: bool
    types: dict
    o: Any
    lean: bool = False
    val_ranges: Any = None  # what the converter recorded (onnxforge.val_ranges)
    norms: Any = None  # --input-norm, else what the converter recorded (onnxforge.input_norms)
    tolerance: Tolerance | None = None  # the parity budget, every trial's and every recipe candidate's
    criteria: Any = None  # checks.compare.Criteria
    op_types: tuple = ()  # what ORT's quantizer quantizes (empty: its defaults)
    keep_fp32: tuple = ()  # nodes left in fp32 by design (the attention-mask path), apart from the user's
    mask_inputs: tuple = ()  # graph inputs that select the mask's fill value: checked on padded samples too
    unit_range: tuple = ()  # attention probabilities: quantized over [0, 1], not their calibrated range
    target: Path | None = None  # where the weight-only modes publish
    clock: Any = None  # a _Clock, shared by the jobs a step derives from its first


def _parity_budget(o) -> tuple[Tolerance, Any]:
    """The int8 model against fp32: cosine and labels; elementwise only when asked (one
    bound given leaves the other at 0)."""
    from onnxforge.checks.compare import LOOSE, Criteria, make_tolerance

    tol = make_tolerance(o.atol, o.rtol, Tolerance(0.0, 0.0)) if (o.atol is not None or o.rtol is not None) else LOOSE
    return tol, Criteria.budget(o.min_cosine or None, o.max_mismatch)


def _static_plan(job: _Job, details: dict, notes: list) -> _Job:
    """Static int8: leave the attention-mask path in fp32 (masks.py) and, on a
    transformer (--recipe auto|transformer), quantize MatMul and Gemm only (the
    attention products included: MatMulConstBOnly off) with per-channel weights.
    Measured on a tiny BERT with peaked attention, padded inputs: every op type 0.961
    with the mask path quantized, 0.9994 without it; MatMul/Gemm only 0.9995 per
    tensor, 0.9997 per channel. The ops left out run fp32 between Q/DQ pairs anyway."""
    from onnxforge.core.fileio import load_onnx
    from onnxforge.steps.quantize.masks import MATMUL_OPS, is_transformer, mask_path, probability_tensors

    o = job.o
    m = load_onnx(job.base, weights_by_reference=True)  # mask_path reads constants from job.base.parent
    keep, mask_inputs, unnamed = mask_path(m, job.base.parent)
    recipe = o.recipe if o.recipe != "auto" else "transformer" if is_transformer(m) else "plain"
    probs = probability_tensors(m, job.base.parent)
    del m
    op_types, types = job.op_types, dict(job.types)
    if recipe == "transformer":
        op_types = op_types or MATMUL_OPS
        types["per_channel"] = True if o.per_channel is None else o.per_channel
    details.update(recipe=recipe, op_types=list(op_types) or "ORT's defaults", mask_path_fp32=keep,
                   mask_inputs=mask_inputs, unit_range=probs)
    if keep:
        notes.append(f"attention-mask path left in fp32 ({len(keep)} node(s) reading or writing the mask's fill "
                     f"value: quantized, its scale would round every attention score to 0)")
    if unnamed:
        notes.append(f"{unnamed} node(s) of the attention-mask path have no name and could not be left in fp32: "
                     "name the graph's nodes (onnxforge surgeon sanitize) if parity suffers")
    return replace(job, op_types=tuple(op_types), keep_fp32=tuple(keep), mask_inputs=tuple(mask_inputs), types=types,
                   unit_range=tuple(probs))


def _recipe(job: _Job, details: dict, notes: list) -> _Job:
    """The graph the dynamic quantizer gets: on a transformer, the candidates of
    recipes.py (plain int8; fused attention that quantizes to QAttention), timed, and
    the fastest that keeps the parity budget (--recipe auto|plain|fused)."""
    from onnxforge.steps.quantize.recipes import choose_dynamic_recipe

    o = job.o
    quantizing = _Clock()  # the candidates' quantizer runs are work; the rest of the search checks them

    def quantize(fp32, out):
        with quantizing.on("work"):
            _run_ort_quantizer(_for_graph(job, fp32), out, list(o.exclude_nodes), list(o.exclude_ops))

    t0 = time.perf_counter()
    choice = choose_dynamic_recipe(
        job.src, job.base, job.tmp, recipe=o.recipe, tolerance=job.tolerance, criteria=job.criteria,
        dims=o.dims, inputs=o.inputs, samples=o.check_samples, seed=o.seed, bench_seconds=o.bench_seconds,
        quantize=quantize)
    job.clock.work += quantizing.work
    job.clock.checks += time.perf_counter() - t0 - quantizing.work
    details["recipe"] = choice.as_dict()
    notes.extend(choice.notes)
    chosen = _for_graph(job, choice.fp32_model)
    if job.lean and not chosen.lean:
        notes.append(f"the {choice.chosen} graph is quantized by ORT's quantizer, not one initializer at a time "
                     f"(it holds the model in memory)")
    return chosen


def _for_graph(job: _Job, fp32) -> _Job:
    """The job for another fp32 graph (a recipe candidate). The lean path only where
    that graph is eligible (lean_quant.eligible: an Attention with a computed weight,
    say, goes to ORT's quantizer, which holds the model in memory)."""
    from onnxforge.core.fileio import load_onnx

    lean = job.lean and eligible(load_onnx(fp32, graph_only=True), op_types=job.o.op_types or None,
                                 per_channel=job.types["per_channel"], weight_type=job.types["weight_type"]) is None
    return replace(job, base=Path(fp32), lean=lean)


def _trials(job: _Job, notes: list):
    """Quantize, check, time; with --fallback, again with the most sensitive nodes left
    in fp32 until parity passes or the trials run out. Returns the best trial."""
    o = job.o
    excluded, excluded_ops = list(o.exclude_nodes), list(o.exclude_ops)
    trials: list[QuantTrial] = []
    ranking: list[str] | None = None
    best = None
    for trial in range(o.max_trials if o.fallback else 1):
        qpath = job.tmp / f"q{trial}.onnx"
        t0 = time.perf_counter()
        with job.clock.on("work"):
            _quantize_loadable(job, qpath, excluded, excluded_ops, notes)
        seconds = time.perf_counter() - t0
        with job.clock.on("checks"):
            checks = _checks(job, qpath)
            speed = _speed(job, qpath)
        parity_ok = all(c.passed for c in checks)
        rec = QuantTrial(trial, tuple(excluded), tuple(excluded_ops), parity_ok, _min_cos(checks), *_figures(speed),
                         round(seconds, 3))
        trials.append(rec)
        if best is None or _better(rec, best[0]):
            best = (rec, qpath, checks, speed)
        if parity_ok and speed_verdict(speed, speed_budget(o)) == "passed":
            best = (rec, qpath, checks, speed)
            break
        if not o.fallback or parity_ok:  # excluding nodes cannot make a model faster
            break
        if ranking is None:
            with job.clock.on("checks"):
                ranking = rank_sensitive_nodes(job.src, qpath, job.specs, o.dims, o.seed, job.val_ranges, job.norms)
        batch = [n for n in ranking if n not in excluded][: max(1, 2 ** trial)]
        if not batch:
            break
        excluded.extend(batch)
    return (*best, trials, ranking)


def _quantize_loadable(job: _Job, qpath: Path, excluded: list, excluded_ops: list, notes: list) -> None:
    """Run ORT's quantizer until the result loads: an op type without an int8 kernel
    here is left in fp32 (and the report says so)."""
    while True:
        _run_ort_quantizer(job, qpath, excluded, excluded_ops)
        missing = _load_check(qpath)
        if missing is None:
            return
        if missing in excluded_ops:
            raise ConversionError(f"the quantized model still has no kernel for {missing}")
        excluded_ops.append(missing)
        notes.append(f"onnxruntime has no int8 kernel for quantized {missing} here "
                     f"(weights {job.types['weight_type']}); left {missing} in fp32")


def _finish_quantized(job, model, target, rec, qpath, checks, speed, trials, ranking, before, notes, details):
    from onnxforge.steps.artifacts import finish, lineage_of
    from onnxforge.backends.onnx.inspection import summary

    o = job.o
    lab = label(job.mode)
    budget = speed_budget(o)
    fast = speed_verdict(speed, budget)
    passed = rec.parity_passed and fast == "passed"
    status = "failed" if not rec.parity_passed else fast
    figures = f"{speed.speedup:.2f}x fp32's speed (95% CI {speed.ci95[0]:.2f}-{speed.ci95[1]:.2f})" if speed else ""
    if fast == "failed":
        notes.append(f"speed budget missed: {lab} runs at {figures}, below --speed-budget {budget:g} "
                     f"(fp32 p50 {speed.reference_p50_ms:.4g} ms, {lab} {speed.p50_ms:.4g} ms): try `quantize static` "
                     "(calibrated QDQ) or --per-channel, or --exclude-op for the ops whose int8 kernels are slow "
                     "here; --speed-budget 0 accepts a slower model")
    elif fast == "inconclusive":
        from onnxforge.core.stats import contention_line

        notes.append(f"speed budget not decided: {lab} at {figures}, budget {budget:g}x, but the machine was busy "
                     f"({contention_line(speed.contention)}; a quiet machine would measure between "
                     f"{speed.bounds[0]:.2f}x and {speed.bounds[1]:.2f}x): rerun when it is quiet, or give it more "
                     "--bench-seconds")
    elif speed is not None and speed.speedup < 1.0:
        notes.append(f"the {lab} model is slower than fp32 here ({speed.speedup:.2f}x): "
                     "on this CPU the quantized kernels do not pay for their overhead on this model")
    after = summary(qpath)
    timings = job.clock.timings() if job.clock else None
    if after.file_bytes > before.file_bytes:
        notes.append(f"the {lab} model is larger than fp32 ({before.file_bytes} -> {after.file_bytes} bytes): its "
                     f"weights are small ({before.initializer_bytes} bytes), so the scales, zero points and "
                     f"{after.nodes - before.nodes} added quantization nodes outweigh the smaller weights")
    details.update(excluded_nodes=list(rec.excluded_nodes), excluded_ops=list(rec.excluded_ops))
    if ranking:
        details["sensitivity"] = ranking[:20]
    if budget is not None:
        details["speed_budget"] = budget
    return finish(qpath, target, step=f"quantize:{job.mode}", passed=passed, options=o, inherit_from=job.src,
                  lineage=(*lineage_of(model), f"quantize:{job.mode}"), checks=checks, notes=notes, before=before,
                  after=after, speed=speed, trials=tuple(trials), details=details, status=status, timings=timings,
                  seconds=timings.total_s if timings else 0.0)


def label(mode: str) -> str:
    return "int8" if mode in ("dynamic", "static") else mode


def speed_budget(o) -> float | None:
    """The speed budget of a quantize step: --speed-budget; 1.0 (never slower than fp32)
    when not given; 0 turns it off (a release's steps: its latency gate decides once)."""
    return 1.0 if o.speed_budget is None else (o.speed_budget or None)


def speed_verdict(speed: SpeedCheck | None, budget: float | None) -> str:
    """passed, failed or inconclusive. On clean rounds the measured speed-up decides; on
    a busy machine the bounds its rounds prove (gates.settle) decide, or nothing does."""
    if budget is None or speed is None:  # no budget: nothing was timed
        return "passed"
    if speed.contention is None or speed.contention.clean or speed.bounds is None:
        return "passed" if speed.speedup >= budget else "failed"
    lo, hi = speed.bounds
    return "passed" if lo >= budget else "failed" if hi < budget else "inconclusive"


def _better(a: QuantTrial, b: QuantTrial) -> bool:
    return (a.parity_passed, a.min_cosine or 0, a.speedup or 0) > (b.parity_passed, b.min_cosine or 0, b.speedup or 0)


def _figures(speed: SpeedCheck | None) -> tuple:
    return (speed.speedup, speed.ci95) if speed else (None, None)


def _min_cos(checks: Sequence[ParityReport]) -> float | None:
    vals = [o.cosine for c in checks for o in c.outputs if o.label_agreement is None or o.topk_agreement is not None]
    return min(vals) if vals else None


def _checks(job: _Job, q: Path) -> list[ParityReport]:
    """Cosine (and labels / elementwise when asked) of the int8 model against fp32."""
    from onnxforge.checks.parity import check_against

    o = job.o
    calibration = getattr(o, "calibration", None)
    if not o.inputs and calibration and str(calibration) != "random":
        checks = [_check_on_calibration(job, q, calibration)]
    else:
        checks = check_against(job.src, q, inputs=o.inputs, samples=o.check_samples, seed=o.seed, dims=o.dims,
                               label=label(job.mode), second_shape=False, input_norms=job.norms,
                               tolerance=job.tolerance, criteria=job.criteria)
    return [*checks, _check_padded(job, q)] if job.mask_inputs else checks


def _check_padded(job: _Job, q: Path) -> ParityReport:
    """The model against fp32 on samples whose masks hold zeros (right padding, holes):
    calibration data without padding, or generated masks of ones, would never show a
    quantized mask path."""
    from onnxforge.backends.onnx.runner import onnx_runner
    from onnxforge.checks.parity import validate
    from onnxforge.steps.quantize.attention import padded_mask_inputs

    sym = {d for s in job.specs for d in s.shape if isinstance(d, str)}
    dims = {**{k: 8 for k in sym}, **dict(job.o.dims or {})}
    feeds = padded_mask_inputs(job.specs, job.mask_inputs, dims=dims, seed=job.o.seed, val_ranges=job.val_ranges)
    return validate(onnx_runner(job.src, "cpu", label=job.src.name), onnx_runner(q, "cpu", label=label(job.mode)),
                    input_samples=feeds, data={"source": "generated", "how": f"{len(feeds)} sample(s) with zeros in "
                                               f"{', '.join(job.mask_inputs)} (right padding, holes)"},
                    tolerance=job.tolerance, criteria=job.criteria)


def _check_on_calibration(job: _Job, q: Path, calibration) -> ParityReport:
    """Static int8 with real calibration data and no --inputs is checked on the first
    --check-samples calibration samples: real data, though the ranges were fitted on it."""
    from onnxforge.steps.quantize.calibration import iter_samples
    from onnxforge.backends.onnx.runner import onnx_runner
    from onnxforge.checks.parity import validate

    o = job.o
    n, it = iter_samples(calibration, job.specs, samples=min(o.check_samples, o.samples or o.check_samples),
                         seed=o.seed, dims=o.dims)
    feeds = [dict(s) for s, _ in zip(it, range(n))]
    return validate(onnx_runner(job.src, "cpu", label=job.src.name), onnx_runner(q, "cpu", label=label(job.mode)),
                    input_samples=feeds, data={"source": "given", "how": f"calibration data {calibration} (first "
                                               f"{len(feeds)} sample(s); the ranges were fitted on them)"},
                    tolerance=job.tolerance, criteria=job.criteria)


def _speed(job: _Job, q: Path) -> SpeedCheck | None:
    """fp32 against ``q``, timed side by side; None without a speed budget (--speed-budget
    0, or a release step that sets none): the timing would decide nothing, and a
    release's latency gate times the final model anyway."""
    from onnxforge.checks.benchmark import benchmark

    o = job.o
    if speed_budget(o) is None:
        return None
    runtime = getattr(o, "speed_runtime", "ort")
    rep = benchmark([str(job.src), str(q)], dims=o.dims, inputs=o.inputs, duration=o.bench_seconds, warmup=5,
                    val_ranges=job.val_ranges, runtimes=(runtime,))
    c = rep.comparisons[0]
    return SpeedCheck(rep.results[0].latency.p50, rep.results[1].latency.p50, round(c.speedup, 4),
                      (round(c.ci95[0], 4), round(c.ci95[1], 4)), rep.results[0].latency.n, rep.contention, c.bounds,
                      rep.results[1].runtime)


def _check_calibration_memory(model, specs, o, notes, val_ranges=None, norms=None) -> None:
    from onnxforge.steps.quantize.calibration import activation_bytes, histogram_memory_estimate, iter_samples

    n, it = iter_samples(o.calibration, specs, samples=o.samples, seed=o.seed, dims=o.dims, val_ranges=val_ranges,
                         norms=norms)
    first = next(iter(it))
    per, unknown = activation_bytes(model, o.dims or {}, {k: v.shape for k, v in first.items()})
    if o.method not in HISTOGRAM_METHODS:
        return
    need = histogram_memory_estimate(per, n)
    limit = o.max_memory if o.max_memory is not None else available_memory() // 2
    if unknown:
        notes.append(f"memory estimate for {o.method} calibration leaves out {unknown} tensor(s) of unknown shape")
    if need > limit:
        raise BadInputError(
            f"{o.method} calibration on {n} samples needs about {need / 2**30:.2f} GiB "
            f"({per / 2**20:.1f} MiB of activations per sample), over the limit of {limit / 2**30:.2f} GiB",
            hint=f"use fewer samples (--samples {max(1, int(limit // max(1, 2 * per)))}) or --method minmax, "
            "or raise --max-memory")


def _run_ort_quantizer(job: _Job, out: Path, excluded: list, excluded_ops: list) -> None:
    from onnxruntime.quantization import quantize_dynamic

    from onnxforge.core.fileio import load_onnx, onnx_bytes
    from onnxforge.core.memory import release_memory

    release_memory(onnx_bytes(job.base))  # ORT's quantizer holds the model several times: start it from what is in use
    o = job.o
    nodes_excluded = list(excluded) + [n for n in job.keep_fp32 if n not in excluded]
    if excluded_ops:
        m = load_onnx(job.base, graph_only=True)
        nodes_excluded += [n.name for n in m.graph.node if n.op_type in excluded_ops and n.name]
    types = [t for t in job.op_types if t not in excluded_ops] if job.op_types else None
    common = dict(op_types_to_quantize=types, per_channel=job.types["per_channel"],
                  reduce_range=job.types["reduce_range"],
                  weight_type=_qtype(job.types["weight_type"]), nodes_to_exclude=nodes_excluded or None,
                  use_external_data_format=job.external)
    try:
        if job.mode == "dynamic" and job.lean:
            from onnxforge.steps.quantize.lean_quant import quantize_dynamic_lean

            quantize_dynamic_lean(job.base, out, weight_type=job.types["weight_type"],
                                  reduce_range=job.types["reduce_range"], op_types=types,
                                  nodes_to_exclude=nodes_excluded)
        elif job.mode == "dynamic":
            with quiet_third_party():
                quantize_dynamic(str(job.base), str(out), **common)
        elif getattr(o, "engine", "ort") == "nncf":
            from onnxforge.steps.quantize.nncf_quant import run_nncf

            run_nncf(job, out, nodes_excluded, excluded_ops)
        else:
            _run_static(job, out, common)
    except (BadInputError, UsageError, MissingDependencyError):
        raise
    except Exception as exc:
        who = "NNCF's quantize" if getattr(o, "engine", "ort") == "nncf" else f"onnxruntime's quantize_{job.mode}"
        raise ConversionError(f"{who} failed: {type(exc).__name__}: {first_line(exc)}",
                              hint="exclude the failing node or op type (--exclude-node / --exclude-op)") from None


def _run_static(job: _Job, out: Path, common: dict) -> None:
    import numpy as np
    from onnxruntime.quantization import CalibrationMethod, QuantFormat, quantize_static

    from onnxforge.steps.quantize.calibration import StreamingReader, iter_samples

    o = job.o
    n, it = iter_samples(o.calibration, job.specs, samples=o.samples, seed=o.seed, dims=o.dims,
                         val_ranges=job.val_ranges, norms=job.norms)
    methods = {"minmax": CalibrationMethod.MinMax, "entropy": CalibrationMethod.Entropy,
               "percentile": CalibrationMethod.Percentile, "distribution": CalibrationMethod.Distribution}
    unit = [{"rmin": np.float32(0), "rmax": np.float32(1)}]
    extra = {"MatMulConstBOnly": False,  # the attention products multiply two activations
             "TensorQuantOverrides": {t: unit for t in job.unit_range},
             **({"CalibPercentile": o.percentile} if o.method == "percentile" else {})}
    fmt = QuantFormat.QDQ if o.quant_format == "qdq" else QuantFormat.QOperator
    with task("calibration", total=n) as bar:
        reader = StreamingReader(it, n, on_sample=lambda seen, total: bar.update(seen))
        with quiet_third_party():
            if job.lean:  # large models: weights read from their files (lean_static.py)
                from onnxforge.steps.quantize.lean_static import quantize_static_lean

                quantize_static_lean(job.base, out, reader, tmp=job.tmp, quant_format=fmt,
                                     activation_type=_qtype(job.types["activation_type"]), extra_options=extra,
                                     **common)
            else:
                quantize_static(str(job.base), str(out), reader, quant_format=fmt,
                                activation_type=_qtype(job.types["activation_type"]),
                                calibrate_method=methods[o.method], extra_options=extra, **common)


def rank_sensitive_nodes(fp32_path, q_path, specs, dims, seed, val_ranges=None, norms=None) -> list[str]:
    """fp32 nodes ordered by how much error quantization adds at their output: the
    growth of checks.localize.layerwise (what ORT's qdq_loss_debug measures for QDQ
    models, here for QDQ, QOperator and dynamic models)."""
    from onnxforge.data.generate import generate_inputs
    from onnxforge.checks.localize import layerwise

    lw = layerwise(fp32_path, q_path, generate_inputs(specs, seed=seed, dims=dims, val_ranges=val_ranges,
                                                      norms=norms))
    best: dict[str, float] = {}
    for r in lw.rows:
        if r.node:
            best[r.node] = max(best.get(r.node, -math.inf), r.growth)
    return sorted(best, key=lambda n: (-best[n], n))
