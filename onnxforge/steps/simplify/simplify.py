"""ONNX -> simpler ONNX: onnxsim, ONNX Runtime's offline optimizer, transformer fusions.

Engines run in order: transformer fusions (when asked), onnxsim, ort. Fusions go
first because their patterns match the exporter's graph: on a dynamo-exported BERT,
onnxscript fused 2 of 2 attention blocks in the raw export and 0 after onnxsim had
rewritten it; onnxsim runs fine on the fused model. Each engine's output is checked
against the model before it; a step that raises or fails its check falls back to
the model before it and is reported as failed (exit 1), or as skipped with
``allow_skip`` (exit 0). The final model is checked against the input model.

- ``onnxsim``: constant folding, shape inference, dead-node and common
  subexpression elimination, fusions. Dynamic dims stay dynamic unless ``shapes``
  pins them; constants larger than ``max_constant_size`` are not folded. Models
  over 2 GB are skipped (onnxsim cannot hold them).
- ``ort`` (``ort_level``): ONNX Runtime's offline graph optimization. ``basic``
  keeps a portable ONNX model; ``extended``/``all`` produce ORT-only ops
  (com.microsoft domain) and the model is marked ``onnxforge.ort_only=true``.
- ``transformer`` (model type: bert, gpt2, vit ...): onnxruntime.transformers'
  fusions (Attention, SkipLayerNormalization, BiasGelu ...). On dynamo exports that
  optimizer does not fuse attention (it is exported as SDPA); when it leaves no
  Attention node, onnxscript's ``optimize_for_ort`` fusions are tried as well, and
  the result with more attention fused that still passes its check is kept.
"""

from __future__ import annotations

import inspect
import sys
import time
from pathlib import Path
from typing import Callable, Mapping, Sequence

from onnxforge.core.errors import BadInputError, StepNotApplicable, UsageError, first_line, require_submodule
from onnxforge.core.logs import swallowed, native_stderr, quiet_third_party
from onnxforge.steps.simplify.cleanup import run_cleanup
from onnxforge.steps.simplify.unfuse import unfuse_in_file
from onnxforge.steps.simplify.options import SimplifyOptions
from onnxforge.core.types import EngineRun, StepResult
from onnxforge.core.options import resolve
from onnxforge.data.specs import check_dims, model_io_specs
from onnxforge.steps.quantize.lean_quant import gemm_as_matmul


FUSED_OPS = ("Attention", "MultiHeadAttention", "GroupQueryAttention", "SkipLayerNormalization",
             "SkipSimplifiedLayerNormalization", "LayerNormalization", "EmbedLayerNormalization", "BiasGelu",
             "FastGelu", "Gelu", "BiasSplitGelu", "RotaryEmbedding", "SimplifiedLayerNormalization")


GROWTH_ALLOWANCE = 1 << 20  # a folded constant may add at most the model's own size + 1 MB by default


def _onnx_simplifier():
    """onnxsim's simplifier module, not onnxsim's __init__ (it imports torch). Its model_info
    imports sympy, which it takes as optional and uses only to print symbolic sizes in
    onnxsim's own CLI: 0.3-0.45 s of every process that simplifies. Where nothing has
    imported sympy yet, it is hidden from that one import (a later ``import sympy``, torch's
    among them, loads it as usual)."""
    if "sympy" in sys.modules:
        return require_submodule("onnxsim", "onnx_simplifier", "all")
    sys.modules["sympy"] = None  # what makes `import sympy` raise ImportError
    try:
        return require_submodule("onnxsim", "onnx_simplifier", "all")
    finally:
        if sys.modules.get("sympy", 0) is None:
            del sys.modules["sympy"]


def run_onnxsim(src: Path, dst: Path, *, skip: Sequence[str] = (), shapes: Mapping[str, list] | None = None,
                max_constant_size: int | None = None) -> dict:
    """onnxsim, with a size guard: constant folding materializes tensors, and a model
    that generates its weights (ONNX's vgg19 test model: 9.3 KB) grew to 513 MB. By
    default no constant larger than the model's own size + 1 MB is folded;
    ``max_constant_size`` sets the limit instead."""
    from onnxforge.steps.artifacts import save_scratch
    from onnxforge.core.fileio import PROTOBUF_LIMIT, external_data_files, load_onnx

    onnxsim = _onnx_simplifier()
    small = load_onnx(src, graph_only=True)
    size = Path(src).stat().st_size + sum(external_data_files(small).values())
    if size >= PROTOBUF_LIMIT:
        raise StepNotApplicable("onnxsim cannot hold models over 2 GB (protobuf limit); skipped it")
    limit = max_constant_size if max_constant_size is not None else size + GROWTH_ALLOWANCE
    options = dict(check_n=0, skipped_optimizers=list(skip) or None,
                   overwrite_input_shapes=dict(shapes) if shapes else None, tensor_size_threshold=f"{limit}B")
    # onnxsim >= 0.5 goes file to file in its C++ core: no Python copy of the weights,
    # serialized again and parsed again on the way in (BERT-base: 2.4 -> 1.2 GiB peak)
    by_path = "output_path" in inspect.signature(onnxsim.simplify).parameters
    out = dst.with_name(f"onnxsim-{dst.name}")
    with quiet_third_party(), native_stderr("onnxsim"):
        if by_path:
            simplified, _ = onnxsim.simplify(str(src), output_path=str(out), **options)
        else:
            simplified, _ = onnxsim.simplify(load_onnx(src), **options)
    if by_path and external_data_files(simplified):  # a result it wrote with external data: read them in
        simplified = load_onnx(out)
    unfolded = _constant_nodes(simplified)
    save_scratch(simplified, dst)
    for f in (out, out.with_name(out.name + ".data")):
        f.unlink(missing_ok=True)
    return {"constant_size_limit": limit, "unfolded": unfolded} if unfolded else {}


def _constant_nodes(model) -> int:
    """Nodes whose inputs are all constants: what folding left because of the size limit."""
    consts = {t.name for t in model.graph.initializer} | {o for n in model.graph.node if n.op_type == "Constant"
                                                          for o in n.output}
    return sum(1 for n in model.graph.node
               if n.op_type != "Constant" and n.input and all(i in consts or not i for i in n.input))


def run_ort(src: Path, dst: Path, *, level: str) -> dict:
    import onnxruntime as ort

    from onnxforge.backends.onnx.runtime import session_options

    so = session_options(optimization=level)
    so.optimized_model_filepath = str(dst)
    so.add_session_config_entry("session.optimized_model_external_initializers_file_name", dst.name + ".data")
    so.add_session_config_entry("session.optimized_model_external_initializers_min_size_in_bytes", "1024")
    ort.InferenceSession(str(src), sess_options=so, providers=["CPUExecutionProvider"])
    if level == "basic":
        return {"ort_only": False}
    return {"ort_only": True, "unfused": unfuse_in_file(dst)}  # unfuse.py


def run_transformer(src: Path, dst: Path, *, model_type: str, num_heads: int = 0, hidden_size: int = 0) -> dict:
    from onnxruntime.transformers.optimizer import optimize_model

    from onnxforge.steps.artifacts import save_scratch
    from onnxforge.core.fileio import working_dir

    src = Path(src).resolve()  # before the chdir below: a relative path would resolve inside it
    with quiet_third_party(), working_dir(Path(dst).resolve().parent):
        opt = optimize_model(str(src), model_type=model_type, num_heads=num_heads,
                             hidden_size=hidden_size, opt_level=0, use_gpu=False)
    _declare_domains(opt.model)
    save_scratch(opt.model, dst)
    return {"engine": "onnxruntime.transformers"}


def op_count(ops: Mapping[str, int], name: str) -> int:
    """Count of an op type in a summary, whatever its domain (com.microsoft.Attention)."""
    return sum(v for k, v in ops.items() if k == name or k.endswith("." + name))


ATTENTION_OPS = ("Attention", "MultiHeadAttention", "GroupQueryAttention")


def _declare_domains(model) -> None:
    """The fusers add com.microsoft nodes without always importing the domain, which
    other tools (onnxsim, onnx.checker) then refuse."""
    have = {o.domain for o in model.opset_import}
    for domain in sorted({n.domain for n in model.graph.node if n.domain} - have - {"ai.onnx"}):
        model.opset_import.add(domain=domain, version=1)


def run_onnxscript_fusions(src: Path, dst: Path) -> dict:
    import onnx_ir as ir
    from onnxscript.rewriter import ort_fusions

    from onnxforge.steps.artifacts import save_scratch_ir
    from onnxforge.core.fileio import load_onnx, onnx_bytes
    from onnxforge.core.memory import release_memory

    # weights stay in src's files until written to dst's: BERT-base peaked at 3.6x its
    # weights holding the loaded, the deserialized and the serialized copy
    proto = load_onnx(src, weights_by_reference=True)
    # onnxscript 0.7 drops the Reshapes around the dynamo export of GPT-2's Conv1D
    # (Reshape -> Gemm -> Reshape) and leaves a Gemm on a rank-3 input, which ORT refuses;
    # MatMul takes any rank, and ORT fuses MatMul + Add back into Gemm where it can
    as_matmul = gemm_as_matmul(proto, Path(src).parent)
    model = ir.serde.deserialize_model(proto)
    ir.external_data.set_base_dir(model.graph, Path(src).parent)
    del proto
    with quiet_third_party():
        fused, counts = ort_fusions.optimize_for_ort(model)
    for domain in sorted({n.domain for n in fused.graph.all_nodes() if n.domain} - set(fused.opset_imports)
                         - {"ai.onnx"}):
        fused.opset_imports[domain] = 1  # as _declare_domains
    save_scratch_ir(fused, dst)
    del model, fused
    release_memory(onnx_bytes(src))  # onnxscript's rule objects keep the graph they last matched, weights included
    return {"engine": "onnxscript.ort_fusions", "fusions": {k: v for k, v in counts.items() if v},
            "gemm_as_matmul": as_matmul}


def _attention(src: Path, dst: Path) -> dict:
    from onnxforge.steps.quantize.attention import run_attention_rewrite  # numpy: not on --help's path

    return run_attention_rewrite(src, dst)


def _plan(o: SimplifyOptions, pin: Mapping[str, list]) -> list[tuple[str, Callable]]:
    plan = []
    if o.transformer:  # first: its patterns match the exporter's graph, which onnxsim rewrites
        plan.append((f"transformer:{o.transformer}", lambda s, d, ctx: _fusion_engines(
            s, d, ctx, model_type=o.transformer, num_heads=o.num_heads, hidden_size=o.hidden_size)))
        # fused Attention into the form that quantizes to QAttention (quantize/attention.py), kept only if it passes
        plan.append(("attention", _attention))
    if o.onnxsim:
        plan.append(("onnxsim", lambda s, d: run_onnxsim(s, d, skip=o.skip, shapes=pin,
                                                         max_constant_size=o.max_constant_size)))
        plan.append(("cleanup", run_cleanup))  # cleanup.py
    if o.ort_level:
        plan.append((f"ort:{o.ort_level}", lambda s, d: run_ort(s, d, level=o.ort_level)))
    return plan


def _run_engine(name: str, fn, current: Path, dst: Path, ctx: dict) -> tuple[Path, dict, list]:
    """Run one engine and check its output against its input. Returns (the model
    after it, its record, its checks); an engine that raises or fails its check falls
    back to ``current``."""
    from onnxforge.backends.onnx.inspection import summary
    from onnxforge.checks.parity import check_against

    if name.startswith("transformer"):
        return fn(current, dst, ctx)
    rec: dict = {"step": name, "status": "ok"}
    try:
        rec["info"] = fn(current, dst) or {}
        checks = check_against(current, dst, label=f"after {name}", **ctx)
    except StepNotApplicable as exc:
        return current, {**rec, "status": "not applicable", "reason": str(exc)}, []
    except (KeyboardInterrupt, UsageError):
        raise
    except Exception as exc:  # an engine's own failure: fall back, report
        swallowed(name)
        msg = getattr(exc, "message", None) or first_line(exc)
        return current, {**rec, "status": "failed", "reason": f"{type(exc).__name__}: {msg}"}, []
    if not all(c.passed for c in checks):
        return current, {**rec, "status": "failed", "reason": "parity check failed"}, checks
    if name == "onnxsim":
        n_before, n_after = summary(current).nodes, summary(dst).nodes
        if n_after > n_before:
            # onnxsim's MatMul+Add -> Gemm rewrite adds Reshapes on 3-D inputs (measured:
            # a TransformerEncoder export went 103 -> 115 nodes); a simplifier must not
            return current, {**rec, "status": "reverted", "reason": f"onnxsim increased the node count "
                                                                     f"({n_before} -> {n_after})"}, checks
    return dst, {**rec, "after": summary(dst)}, checks


def simplify(model, output: str | Path, options: SimplifyOptions | None = None, /, **kwargs) -> StepResult:
    """Run the engines in order, each checked; see the module docstring. ``model``: a
    path or the ModelArtifact of the step before. Options: SimplifyOptions."""
    from onnxforge.steps.artifacts import model_path
    from onnxforge.core.fileio import check_output_path, load_onnx, scratch_dir
    from onnxforge.backends.onnx.inspection import summary
    from onnxforge.checks.compare import make_tolerance

    o = resolve(SimplifyOptions, options, kwargs)
    if not (o.onnxsim or o.ort_level or o.transformer):
        raise UsageError("no engine to run", hint="keep onnxsim, or add --ort LEVEL or --transformer TYPE")
    src = model_path(model)
    load_onnx(src, graph_only=True)  # clear errors for bad input before anything else
    target = check_output_path(output, force=o.force, inputs=(src, o.inputs))
    pin, check_dims = _pins(src, o.shapes, o.dims)
    ctx = dict(tolerance=make_tolerance(o.atol, o.rtol), inputs=o.inputs, samples=o.samples, seed=o.seed,
               dims=check_dims, second_shape=not pin)
    before = summary(src)
    t_all = time.perf_counter()
    with scratch_dir(target) as tmp:
        current, engines, checks, notes = src, [], [], []
        for i, (name, fn) in enumerate(_plan(o, pin)):
            t0 = time.perf_counter()
            current, rec, step_checks = _run_engine(name, fn, current, tmp / f"step{i}.onnx", ctx)
            rec["seconds"] = round(time.perf_counter() - t0, 3)
            checks.extend(step_checks)
            if rec["status"] in ("failed",):
                rec["status"] = "skipped" if o.allow_skip else "failed"
                notes.append(f"{name} {rec['status']} ({rec['reason']}); kept the model from before it")
            elif rec["status"] in ("reverted", "not applicable"):
                notes.append(rec["reason"] + ("; kept the model before it" if rec["status"] == "reverted" else ""))
            engines.append(_engine_run(rec))
        return _finish(src, current, target, tmp, o, ctx, model, before, engines, checks, notes, t_all)


def _engine_run(rec: dict) -> EngineRun:
    info = dict(rec.get("info", {}))
    return EngineRun(step=rec["step"], status=rec["status"], seconds=rec.get("seconds", 0.0),
                     reason=rec.get("reason", ""), engine=str(info.pop("engine", "")), after=rec.get("after"),
                     info=info)


def _finish(src, current, target, tmp, o, ctx, model, before, engines, checks, notes, t_all) -> StepResult:
    from onnxforge.steps.artifacts import finish, lineage_of, save_scratch
    from onnxforge.core.fileio import load_onnx
    from onnxforge.backends.onnx.inspection import summary
    from onnxforge.checks.parity import check_against

    if current == src:  # nothing applied: the output is a copy of the input
        current = tmp / "copy.onnx"
        save_scratch(load_onnx(src), current)
    final = check_against(src, current, label="output", **ctx)
    passed = all(e.status != "failed" for e in engines) and all(c.passed for c in final)
    after = summary(current)
    fused = {op: (op_count(before.ops, op), op_count(after.ops, op))
             for op in FUSED_OPS if op_count(before.ops, op) != op_count(after.ops, op)}
    ort_only = any(e.status == "ok" and e.info.get("ort_only") for e in engines)
    for e in engines:
        if e.status == "ok" and e.info.get("unfolded"):
            notes.append(f"{e.info['unfolded']} node(s) with constant inputs were left unfolded: their outputs are over "
                         f"{e.info['constant_size_limit']} bytes (the model's size + 1 MB), and folding would grow "
                         "the model; --max-constant-size BYTES folds them")
    if ort_only:
        notes.append("ORT-only ops (com.microsoft): this model runs on onnxruntime only; marked onnxforge.ort_only=true")
    applied = [e.step for e in engines if e.status == "ok"]
    lineage = (*lineage_of(model), "simplify:" + ("+".join(applied) if applied else "none"))
    return finish(current, target, step="simplify", passed=passed, options=o, lineage=lineage, inherit_from=src,
                  checks=[*checks, *final], notes=notes, metadata={"onnxforge.ort_only": "true"} if ort_only else {},
                  before=before, after=after, engines=tuple(engines), fusions=fused,
                  seconds=round(time.perf_counter() - t_all, 3))


def _pins(src, shapes, dims) -> tuple[dict, dict]:
    """Input shapes to fix (from --shape, and from --dim for inputs whose symbolic dims
    it all covers), and the symbolic-dim values the checks must use with them."""
    from onnxforge.core.fileio import load_onnx


    ins, _ = model_io_specs(load_onnx(src, graph_only=True))
    check_dims(dims, ins)
    dims = dict(dims or {})
    pin: dict[str, list] = {}
    for s in ins:
        if shapes and s.name in shapes:
            shape = list(shapes[s.name])
            if len(shape) != len(s.shape):
                raise BadInputError(f"--shape {s.name}: rank {len(shape)}, the model's input has rank {len(s.shape)} ({s})")
            for d, v in zip(s.shape, shape):
                if isinstance(d, int) and d != v:
                    raise BadInputError(f"--shape {s.name}: the model fixes a dim to {d}, got {v} ({s})")
                if isinstance(d, str):
                    dims.setdefault(d, v)
            pin[s.name] = shape
        elif dims and any(isinstance(d, str) for d in s.shape) and all(
                not isinstance(d, str) or d in dims for d in s.shape):
            pin[s.name] = [dims[d] if isinstance(d, str) else (d if d is not None else 1) for d in s.shape]
    unknown = set(shapes or {}) - {s.name for s in ins}
    if unknown:
        raise BadInputError(f"--shape names unknown input(s): {', '.join(sorted(unknown))}",
                            hint="inputs are: " + ", ".join(s.name for s in ins))
    return pin, dims


def _fusion_engines(current: Path, dst: Path, ctx: dict, *, model_type: str, num_heads: int,
                    hidden_size: int) -> tuple[Path, dict, list]:
    """Transformer fusions, each engine tried on its own: ORT's optimizer, then
    onnxscript's ort_fusions (which fuse dynamo exports' SDPA attention that ORT's
    optimizer leaves, and have broken models ORT's did not). The first whose output
    passes parity and fuses attention wins, else the first that passes; an engine that
    raises or fails is named in the record (its traceback in the log with --debug)."""
    from onnxforge.backends.onnx.inspection import summary
    from onnxforge.checks.parity import check_against

    engines = [("onnxruntime.transformers", lambda s, d: run_transformer(s, d, model_type=model_type,
                                                                         num_heads=num_heads, hidden_size=hidden_size)),
               ("onnxscript.ort_fusions", run_onnxscript_fusions)]
    passed, failed = [], []
    for i, (engine, fn) in enumerate(engines):
        out = dst if i == 0 else dst.with_name(f"{dst.stem}_{i}.onnx")
        try:
            info = {**(fn(current, out) or {}), "unfused": unfuse_in_file(out)}  # unfuse.py
            checks = check_against(current, out, label=f"after {engine}", **ctx)
        except (KeyboardInterrupt, UsageError):
            raise
        except Exception as exc:
            swallowed(engine)
            failed.append(f"{engine} raised {type(exc).__name__}: {getattr(exc, 'message', None) or first_line(exc)}")
            continue
        if not all(c.passed for c in checks):
            failed.append(f"{engine} failed its parity check")
            continue
        attention = sum(op_count(summary(out).ops, op) for op in ATTENTION_OPS)
        passed.append((attention, -i, out, {**info, "engine": engine}, checks))
        if attention:
            break
    rec: dict = {"step": f"transformer:{model_type}", "status": "ok"}
    if failed:
        rec["info"] = {"engines_failed": failed}
    if not passed:
        return current, {**rec, "status": "failed", "reason": "; ".join(failed)}, []
    _, _, out, info, checks = max(passed, key=lambda p: (p[0] > 0, p[1]))
    return out, {**rec, "info": {**rec.get("info", {}), **info}, "after": summary(out)}, checks
