"""Graph surgery, each result proven: `onnxforge surgeon extract | set-outputs | rename |
sanitize` (what Polygraphy's surgeon offers, and what people use to cut a failing model
down to the part that fails).

Every output is checked twice: ONNX Runtime must load it, and it must compute what the
original computes. The check taps the original model (a copy with the tensors in
question made outputs, as ``validate --localize`` does) and runs it beside the new one on
the original's inputs (``--inputs`` or generated): an extracted sub-graph is fed the
tensors the original computed at its inputs and must give what the original computed at
its outputs; new outputs must equal the original's tensors of those names; renamed
tensors their old selves; a sanitized model the original's outputs.
"""

from __future__ import annotations

from pathlib import Path
from typing import Mapping, Sequence

from onnxforge.core.errors import BadInputError, UsageError, did_you_mean
from onnxforge.steps.surgeon.options import SurgeonOptions
from onnxforge.core.types import StepResult, Tolerance
import copy
from onnxforge.backends.base import Runner
from onnxforge.core.options import resolve
from onnxforge.data.specs import check_dims, model_io_specs
from onnxforge.steps.simplify.cleanup import run_cleanup

OPERATIONS = ("extract", "set-outputs", "rename", "sanitize")


def _tensor_names(model) -> set[str]:
    g = model.graph
    return ({i.name for i in g.input} | {t.name for t in g.initializer}
            | {o for n in g.node for o in n.output if o})


def _check_names(model, names: Sequence[str], flag: str) -> None:
    if not names:
        raise UsageError(f"{flag} names no tensor", hint=f"give {flag} NAME[,NAME...]")
    known = _tensor_names(model)
    for name in names:
        if name not in known:
            near = did_you_mean(name, known)
            raise UsageError(f"{flag}: the model has no tensor {name!r}",
                             hint=near or "`onnxforge inspect MODEL --json` lists its inputs and outputs")


def _graph_inputs(model) -> list[str]:
    inits = {t.name for t in model.graph.initializer}
    return [i.name for i in model.graph.input if i.name not in inits]


def _extract(model, inputs: Sequence[str], outputs: Sequence[str]):
    """The sub-graph from ``inputs`` to ``outputs`` with its types inferred; refused when
    it reads a tensor it neither computes nor takes (the hint names it)."""
    import onnx
    from onnx.utils import Extractor

    typed = onnx.shape_inference.infer_shapes(model)  # the Extractor types a cut tensor from value_info
    untyped = sorted((set(inputs) | set(outputs)) - ({v.name for v in (*typed.graph.value_info, *typed.graph.input,
                                                                       *typed.graph.output)}))
    if untyped:
        raise BadInputError(f"shape inference cannot type {', '.join(untyped)}, so the cut has no declared type there",
                            hint="cut at other tensors, or `surgeon sanitize` the model first")
    try:
        sub = Extractor(typed).extract_model(list(inputs), list(outputs))
    except Exception as exc:  # onnx raises plain errors for unknown or untyped tensors
        raise BadInputError(f"cannot cut that sub-graph: {type(exc).__name__}: {exc}",
                            hint="pick tensors `onnxforge inspect` shows, or run `surgeon sanitize` first") from None
    # IR 3 wanted every initializer among the graph inputs; a cut takes only some of them
    sub.ir_version = max(sub.ir_version, 4)
    made = set(inputs) | {t.name for t in sub.graph.initializer} | {o for n in sub.graph.node for o in n.output}
    wanting = sorted({i for n in sub.graph.node for i in n.input if i and i not in made})
    if wanting:
        raise BadInputError(f"the sub-graph also reads {', '.join(wanting)}, which it neither computes nor takes",
                            hint=f"add {', '.join(wanting)} to --inputs")
    return onnx.shape_inference.infer_shapes(sub)


def _tap(model, names: Sequence[str], label: str, rename: Mapping[str, str] | None = None):
    """A Runner of the original model that returns its tensors ``names`` (as
    ``rename`` calls them), on the original's inputs."""
    import tempfile

    from onnxforge.backends.onnx.runtime import run_session
    from onnxforge.checks.localize import _session_for, _with_all_outputs

    tapped = _with_all_outputs(copy.deepcopy(model), set(names))
    have = {o.name for o in tapped.graph.output}
    for name in names:  # a graph input or an initializer is no node's output: pass it through
        if name not in have:
            from onnx import helper

            tapped.graph.node.append(helper.make_node("Identity", [name], [f"{name}__tap"]))
            tapped.graph.output.append(helper.make_empty_tensor_value_info(f"{name}__tap"))
    with tempfile.TemporaryDirectory() as tmp:
        sess = _session_for(tapped, "cpu", tmp)
    fetch = [n if n in have else f"{n}__tap" for n in names]
    rename = rename or {}

    def run(feeds):
        out = run_session(sess, feeds, fetch)
        return {rename.get(n, n): out[f] for n, f in zip(names, fetch)}

    return Runner(label=label, kind="onnx", inputs=model_io_specs(model)[0], outputs=tuple(rename.get(n, n) for n in names),
                  fn=run)


def _fed(original, sub_path: Path, label: str):
    """The extracted sub-graph as a Runner of the original's inputs: the original computes
    the sub-graph's inputs, the sub-graph the rest."""
    from onnxforge.backends.onnx.runtime import create_session, run_session

    sess = create_session(sub_path, "cpu")
    ins = [i.name for i in sess.get_inputs()]
    outs = [o.name for o in sess.get_outputs()]
    feeder = _tap(original, ins, "feeder")
    return Runner(label=label, kind="onnx", inputs=model_io_specs(original)[0], outputs=tuple(outs),
                  fn=lambda feeds: run_session(sess, feeder(feeds), outs))


def _rename(model, mapping: Mapping[str, str]):
    """Every reference to a renamed tensor, in every graph (subgraph bodies too)."""
    from onnxforge.core.fileio import walk_graphs

    clash = sorted(set(mapping.values()) & (_tensor_names(model) - set(mapping)))
    if clash:
        raise UsageError(f"--map: the model already has a tensor named {clash[0]!r}", hint="pick another new name")
    for g, _ in walk_graphs(model):
        if not hasattr(g, "initializer"):  # a local function: its tensor names are its own
            continue
        for v in (*g.input, *g.output, *g.value_info, *g.initializer):
            v.name = mapping.get(v.name, v.name)
        for n in g.node:
            n.input[:] = [mapping.get(i, i) for i in n.input]
            n.output[:] = [mapping.get(o, o) for o in n.output]
    return model


def _sanitize(src: Path, dst: Path):
    """onnxforge's clean-ups (Identity, no-op Dropout and Add, shape slices), dead nodes
    and unused initializers dropped, shapes inferred."""
    import onnx

    from onnxforge.core.fileio import has_subgraphs, load_onnx

    counts = run_cleanup(src, dst)
    m = load_onnx(dst)
    live = _extract(m, _graph_inputs(m), [o.name for o in m.graph.output]) if not has_subgraphs(m.graph) else m
    return onnx.shape_inference.infer_shapes(live, data_prop=True), counts


SURGERY_TOLERANCE = (1e-5, 1e-4)  # the same ops on the same values: only a fused kernel's summation order differs


def _operate(operation: str, m, src: Path, inputs: list, outputs: list, mapping: dict, notes: list):
    """The new graph (None for sanitize, which works on files), names checked first."""
    from onnxforge.core.fileio import load_onnx

    if operation == "extract":
        _check_names(m, inputs, "--inputs")
        _check_names(m, outputs, "--outputs")
        return _extract(m, inputs, outputs)
    if operation == "set-outputs":
        _check_names(m, outputs, "--outputs")
        new = _extract(m, _graph_inputs(m), outputs)
        dropped = len(m.graph.node) - len(new.graph.node)
        if dropped:
            notes.append(f"{dropped} node(s) no output needs any more were dropped")
        return new
    if operation == "rename":
        _check_names(m, list(mapping), "--map")
        return _rename(load_onnx(src), mapping)
    if operation == "sanitize":
        return None
    raise UsageError(f"unknown surgery {operation!r}", hint=did_you_mean(operation, OPERATIONS) or
                     "extract, set-outputs, rename or sanitize")


def _sides(operation: str, m, new, src: Path, dst: Path, outputs: list, mapping: dict):
    """(reference, candidate) Runners over the original's inputs: the original tapped at
    the tensors in question, and the result (fed by the original, for a sub-graph)."""
    from onnxforge.backends.onnx.runner import onnx_runner

    label = Path(src).name
    try:
        cand = onnx_runner(dst, "cpu", label=f"after {operation}")
    except Exception as exc:  # noqa: BLE001 - ORT's refusal is the verdict
        raise BadInputError(f"onnxruntime cannot load the {operation} result: {exc}",
                            hint="pick other tensors; `surgeon sanitize` the original first") from None
    if operation == "extract":
        return _tap(m, outputs, label), _fed(m, dst, f"after {operation}")
    if operation == "set-outputs":
        return _tap(m, outputs, label), cand
    if operation == "rename":
        names = [o.name for o in m.graph.output]
        names += [n for n in mapping if n not in names]
        return _tap(m, names, label, mapping), _tap(new, [mapping.get(n, n) for n in names], f"after {operation}")
    return onnx_runner(src, "cpu", label=label), cand


def surgeon(operation: str, model, output: str | Path, options: SurgeonOptions | None = None, /, *,
            input_names: Sequence[str] = (), output_names: Sequence[str] = (),
            mapping: Mapping[str, str] | None = None, **kwargs) -> StepResult:
    """Cut (``extract``: from ``input_names`` to ``output_names``), re-point
    (``set-outputs``), rename (``mapping`` old -> new) or clean (``sanitize``) ``model``;
    the result must load in ONNX Runtime and compute what the original computes (see the
    module docstring). Options: SurgeonOptions (``inputs`` is the check's data)."""
    import onnx

    from onnxforge.steps.artifacts import finish, lineage_of, model_path, save_scratch
    from onnxforge.core.fileio import check_output_path, load_onnx, scratch_dir
    from onnxforge.backends.onnx.inspection import summary
    from onnxforge.checks.compare import make_tolerance
    from onnxforge.checks.parity import validate

    o = resolve(SurgeonOptions, options, kwargs)
    outputs, mapping = list(output_names), dict(mapping or {})
    src = model_path(model)
    m = load_onnx(src)
    target = check_output_path(output, force=o.force, inputs=(src, o.inputs))
    check_dims(o.dims, model_io_specs(m)[0])
    notes: list[str] = []
    new = _operate(operation, m, src, list(input_names), outputs, mapping, notes)
    with scratch_dir(target) as tmp:
        dst = tmp / "surgery.onnx"
        if new is None:
            new, counts = _sanitize(src, tmp / "clean.onnx")
            notes += [f"{k}: {v}" for k, v in counts.items() if v]
        try:
            onnx.checker.check_model(new)
        except onnx.checker.ValidationError as exc:
            raise BadInputError(f"the {operation} result is not a valid model: {str(exc).splitlines()[0]}",
                                hint="`onnxforge inspect` the original; `surgeon sanitize` it first") from None
        save_scratch(new, dst)
        ref, cand = _sides(operation, m, new, src, dst, outputs, mapping)
        input_map = {k: v for k, v in mapping.items() if k in _graph_inputs(m)}
        check = validate(ref, cand, inputs=o.inputs, samples=o.samples, seed=o.seed, dims=o.dims,
                         tolerance=make_tolerance(o.atol, o.rtol, Tolerance(*SURGERY_TOLERANCE)),
                         input_map=input_map or None)
        return finish(dst, target, step=f"surgeon:{operation}", passed=check.passed, options=o, inherit_from=src,
                      lineage=(*lineage_of(model), f"surgeon:{operation}"), checks=(check,), notes=notes,
                      before=summary(src), after=summary(dst),
                      details={"inputs": _graph_inputs(new),
                               "outputs": [x.name for x in new.graph.output]})
