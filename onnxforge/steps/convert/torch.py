"""torch -> ONNX, checked against the torch module.

Export: the dynamo exporter (torch.export based) by default; ``exporter="auto"``
falls back to the TorchScript exporter when dynamo fails, and says so. Outputs are
named as backends/torch/runner.py flattens them (``output``, dict keys, ``output_0`` ...).
A .pt2 saved from keyword arguments keeps them: its inputs are the keyword names,
and ``--inputs`` / ``--input`` feed them by name.
"""

from __future__ import annotations

import json
import logging
import math
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Mapping

from onnxforge.core.errors import BadInputError, ConversionError, UsageError, require
from onnxforge.core.logs import quiet_third_party
from onnxforge.backends.torch.hf import (
    SEQ2SEQ_WITH_PAST,
    WITH_PAST,
    hf_input_norms,
    hf_val_ranges,
    is_hf_source,
    load_hf,
    load_reference,
)
from onnxforge.steps.convert.exporting import (EXAMPLE_DIM, check_once, check_written_opset, export_error,
                                               export_failure, export_hint, prepare_dynamo_export)
from onnxforge.steps.convert.options import ConvertTorchOptions
from onnxforge.core.types import ParityReport, StepResult
import re
from onnxforge.backends.torch.runner import (
    bind_inputs,
    call_module,
    contiguous,
    flatten_outputs,
    forward_parameters,
    tensor,
    to_numpy,
    torch_runner,
)
from onnxforge.backends.torch.sources import LoadedTorch, load_torch
from onnxforge.core.options import resolve
from onnxforge.data.specs import input_norm, parse_dynamic, parse_spec

log = logging.getLogger("onnxforge")

SECOND_DIM = 3
BATCH, SEQUENCE = "batch", "sequence"  # as backends/torch/hf.py names a Hugging Face model's dims


@dataclass(frozen=True)
class Example:
    """Example inputs in the order the ONNX model takes them."""

    names: tuple[str, ...]
    args: tuple  # positional tensors
    kwargs: Mapping[str, Any]  # keyword tensors (a program saved with keyword inputs)

    @property
    def tensors(self) -> list:
        return [*self.args, *self.kwargs.values()]


def _forward_names(module, n: int) -> list[str]:
    names = [k for k, kind in forward_parameters(module).items() if kind != "keyword"]
    return names[:n] if len(names) >= n else [f"input_{i}" for i in range(n)]


def _tensors_by_name(arrays: Mapping[str, Any], loaded, input_names) -> Example:
    """Named arrays as an Example: by keyword for a program that takes keywords, by
    forward()'s parameter names where the arrays carry them, else by position."""
    tensors = {k: tensor(v) for k, v in arrays.items()}
    keyword = tuple(loaded.keyword)
    if keyword:  # a program saved with keyword inputs, perhaps after positional ones (forward(x, *, mask))
        positional = [k for k in tensors if k not in keyword]
        n_pos = len(loaded.example_args or ())
        if any(k not in tensors for k in keyword) or len(positional) != n_pos:
            takes = (f"{n_pos} positional input(s) and " if n_pos else "") + "keyword inputs " + ", ".join(keyword)
            raise BadInputError(f"the program takes {takes}; got {', '.join(tensors)}",
                                hint="name the arrays (or --input specs) after the keyword inputs; the others "
                                     "are positional, in order")
        return Example(tuple(positional) + keyword, tuple(tensors[k] for k in positional),
                       {k: tensors[k] for k in keyword})
    if input_names:
        return Example(tuple(input_names), tuple(tensors.values()), {})
    positional, by_keyword = bind_inputs(loaded.module, list(tensors))
    return Example(positional + by_keyword, tuple(tensors[k] for k in positional), {k: tensors[k] for k in by_keyword})


def _example(loaded, o: ConvertTorchOptions, dyn: dict) -> Example:
    from onnxforge.data.generate import generate_inputs
    from onnxforge.data.samples import load_samples

    if o.example_inputs is not None:
        return _tensors_by_name(load_samples(o.example_inputs)[0], loaded, o.input_names)
    if o.inputs:
        specs = [parse_spec(s) for s in o.inputs]
        strings = [s.name for s in specs if s.dtype == "str"]
        if strings:
            raise UsageError(f"--input {strings[0]}: a torch model cannot take strings",
                             hint="torch inputs are tensors: float32, int64, bool ...")
        for s in specs:  # symbolic dims in --input are dynamic axes
            for axis, d in enumerate(s.shape):
                if isinstance(d, str):
                    dyn.setdefault(s.name, {}).setdefault(axis, d)
        dims = {label: EXAMPLE_DIM for axes in dyn.values() for label in axes.values()}
        arrays = generate_inputs(specs, seed=o.seed, dims=dims, default_dim=EXAMPLE_DIM, val_ranges=o.val_ranges,
                                 norms=o.input_norms)
        return _tensors_by_name(arrays, loaded, o.input_names)
    if loaded.example_args is not None:
        args = tuple(loaded.example_args)
        names = tuple(o.input_names or _forward_names(loaded.module, len(args))) + tuple(loaded.keyword)
        return Example(names, args, dict(loaded.example_kwargs))
    raise UsageError("no example inputs", hint="pass --input NAME:DTYPE:SHAPE (repeatable) or --inputs sample.npz")


def _check_dynamic(dyn: dict, ex: Example) -> None:
    unknown = set(dyn) - set(ex.names)
    if unknown:
        raise UsageError(f"--dynamic names unknown input(s): {', '.join(sorted(unknown))}",
                         hint=f"inputs are: {', '.join(ex.names)}")
    for n, axes in dyn.items():
        rank = ex.tensors[ex.names.index(n)].dim()
        for axis in axes:
            if not -rank <= axis < rank:
                raise UsageError(f"--dynamic {n}:{axis}: input {n} has rank {rank}")


def _load(source, o: ConvertTorchOptions, notes: list) -> tuple[Any, dict, dict, dict]:
    """(the loaded source, its dynamic axes, its input value ranges, its input norms). A
    Hugging Face folder or hf:ID brings its own inputs, axes, ranges and norms (its
    image processor's; backends/torch/hf.py); --dynamic, --val-range and --input-norm override
    them name by name."""
    dyn = parse_dynamic(o.dynamic)
    if is_hf_source(source):
        import torch

        given = bool(o.inputs) or o.example_inputs is not None
        m = load_hf(str(source), task=o.task, allow_download=o.allow_download, inputs_given=given)
        notes.append(f"Hugging Face {type(m.module).__name__} (task {m.task}): {'; '.join(m.notes)}")
        kw = {k: torch.from_numpy(v) for k, v in m.examples.items()}
        norms, pixel_ranges = hf_input_norms(source, m.names, o.allow_download)
        if norms:
            notes.append("checks generate pixel_values as the image processor makes them (preprocessor_config.json: "
                         "image_mean, image_std, rescale_factor); recorded in the model")
        ranges = {**pixel_ranges, **{k: v for k, v in hf_val_ranges(m.module.config).items() if k in m.names}}
        # --input specs name their own dynamic axes (symbolic dims); the folder's apply to its own inputs
        return (LoadedTorch(m.module, "huggingface", (), None, kw), {**({} if given else m.dynamic), **dyn},
                {**ranges, **o.val_ranges}, {**norms, **o.input_norms})
    loaded = load_torch(source, weights=o.weights, trust_pickle=o.trust_pickle, notes=notes)
    if getattr(loaded.module, "training", False) and loaded.kind != "export":
        notes.append("the model was in training mode; exported in eval mode (dropout off, BatchNorm running stats)")
    if hasattr(loaded.module, "eval") and loaded.kind != "export":
        loaded.module.eval()
    return loaded, dyn, dict(o.val_ranges), dict(o.input_norms)


def convert_torch(source: Any, output: str | Path, options: ConvertTorchOptions | None = None, /,
                  **kwargs) -> StepResult:
    """Export a torch model to ONNX and check it against the module.

    ``source``: an nn.Module, an ExportedProgram, a .pt2 / TorchScript path, a factory
    ``module:function`` (with ``weights``), a Hugging Face folder or ``hf:ID``, or a
    pickled module (``trust_pickle``).
    Options: ConvertTorchOptions, as an object or keyword arguments.
    """
    from onnxforge.core.fileio import check_output_path
    torch = require("torch", "torch")
    o = resolve(ConvertTorchOptions, options, kwargs)
    target = check_output_path(output, force=o.force, inputs=(source if isinstance(source, (str, Path)) else None,
                                                              o.weights, o.example_inputs))
    if o.task == WITH_PAST:
        from onnxforge.steps.convert.with_past import convert_with_past

        return convert_with_past(torch, source, target, o)
    if o.task == SEQ2SEQ_WITH_PAST:
        from onnxforge.steps.convert.with_past import convert_seq2seq_with_past

        return convert_seq2seq_with_past(torch, source, target, o)
    notes: list[str] = []
    loaded, dyn, ranges, norms = _load(source, o, notes)
    if ranges != o.val_ranges or norms != o.input_norms:
        o = replace(o, val_ranges=ranges, input_norms=norms)
    ex = _example(loaded, o, dyn)
    empty = [n for n, t in zip(ex.names, ex.tensors) if t.numel() == 0]
    if empty:
        raise BadInputError(f"example input {empty[0]} has no elements: there is nothing to check the export on",
                            hint="give every dim a size of at least 1 (symbolic dims are exported at 2)")
    _check_dynamic(dyn, ex)

    # run the module once: proves the inputs fit, and names the outputs
    flat = flatten_outputs(call_module(loaded.module, ex.args, "the model fails on the example inputs",
                                       "check --input shapes and dtypes against the model's forward()", ex.kwargs))
    if not flat:
        raise ConversionError("the model returns no tensors")
    out_names = list(o.output_names) if o.output_names else [n for n, _ in flat]
    if len(out_names) != len(flat):
        raise UsageError(f"{len(out_names)} output name(s) given for {len(flat)} output tensor(s)")
    reference = _hf_reference(str(source), o) if loaded.kind == "huggingface" else None
    held = [loaded]  # handed over, not kept here: the checks let the module go before ONNX Runtime loads
    del loaded, flat
    return _export_and_check(torch, held, ex, dyn, out_names, target, o, notes, reference)


def _hf_reference(source: str, o: ConvertTorchOptions):
    """The reference of a Hugging Face source's parity checks, loaded when they run (not
    beside the export): the class config.json declares (or --task's), chosen apart from
    the converter's load, every output it returns compared by name, so a wrong class
    cannot agree with itself. ``make(module)`` reuses the converter's module when it is
    of that class."""
    def make(module):
        ref = load_reference(source, task=o.task, allow_download=o.allow_download, loaded=module)
        return torch_runner(ref, o.output_names or None)
    return make


def _export_and_check(torch, held: list, ex: Example, dyn, out_names, target: Path, o, notes,
                      reference=None) -> StepResult:
    """``held``: [the loaded source], which the parity checks take and let go of."""
    from onnxforge.steps.artifacts import finish
    from onnxforge.core.fileio import scratch_dir
    from onnxforge.backends.onnx.inspection import check_model
    from onnxforge.checks.compare import make_tolerance

    loaded = held[0]
    module = loaded.module
    weight_bytes = sum(p.numel() * p.element_size() for p in module.parameters()) if hasattr(module, "parameters") else 0
    if o.external_data is None:
        o = replace(o, external_data=weight_bytes >= 2 * 1024**3 - 1)
    exportable = module if loaded.program is None else loaded.program
    kind, keyword, program, example_data = loaded.kind, loaded.keyword, loaded.program is not None, \
        _example_data(loaded, o)
    del loaded
    with scratch_dir(target) as tmp:
        tmp_model = tmp / target.name
        # The scratch model always keeps its weights in a data file: the exporter then
        # streams them to disk, and the checker, ORT and our own loads never hold a
        # second in-memory protobuf copy of the weights. Inlined (if wanted) at the end.
        wide, widened = widen_dynamic_example(ex, dyn)
        if widened:
            notes.append(f"exported with {', '.join(f'{k}={EXAMPLE_DIM}' for k in widened)}: torch.export "
                         f"specializes dynamic dims of size 0 and 1, so the example was widened to {EXAMPLE_DIM} "
                         f"on them; checked at the example's own size too")
        try:
            used = _export(torch, exportable, wide, tmp_model, out_names, dyn, o.opset, o.exporter, notes)
            del wide
            del exportable
            check_model(tmp_model)
        except (BadInputError, ConversionError) as exc:  # the model we wrote is at fault, not the user's input
            raise export_failure(exc, widened, tmp_model, target) from None
        del module
        if program:
            named = name_program_dims(tmp_model)
            if named:
                notes.append("dynamic dims of the program named after their role: "
                             + ", ".join(f"{old}={new}" for old, new in named.items()))
        checks: list[ParityReport] = []
        if o.check:
            checks = _parity_checks(held, tmp_model, ex, dyn, out_names, make_tolerance(o.atol, o.rtol), o.seed,
                                    keyword, o.val_ranges, reference, example_data)
        else:
            held.clear()
            notes.append("parity check skipped (--no-check)")
        return finish(tmp_model, target, step="convert:torch", passed=all(c.passed for c in checks), options=o,
                      lineage=("convert:torch",), checks=checks, notes=notes, metadata=_recorded_inputs(o),
                      details={"exporter": used, "source_kind": kind, "inputs": list(ex.names),
                               "outputs": out_names,
                               "dynamic": {k: {str(a): v for a, v in ax.items()} for k, ax in dyn.items()},
                               "weight_bytes": weight_bytes})


def _example_data(loaded, o: ConvertTorchOptions) -> dict:
    """Where the example inputs came from, as every check states it (ParityReport.data)."""
    from onnxforge.data.generate import describe_generated

    if o.example_inputs is not None:
        return {"source": "given", "how": f"example inputs {o.example_inputs}"}
    if o.inputs:
        return {"source": "generated", "how": describe_generated([parse_spec(s) for s in o.inputs], seed=o.seed,
                                                                  val_ranges=o.val_ranges, norms=o.input_norms)}
    if loaded.kind == "huggingface":
        return {"source": "generated", "how": "generated (example inputs from the model's config)"}
    return {"source": "saved", "how": "the program's own example inputs"}


def _recorded_inputs(o: ConvertTorchOptions) -> dict:
    """What later checks need to generate valid, realistic inputs, as metadata_props:
    value ranges (a mask stays a mask) and image normalisations."""
    out = {"onnxforge.val_ranges": json.dumps(o.val_ranges)} if o.val_ranges else {}
    if o.input_norms:
        out["onnxforge.input_norms"] = json.dumps({k: input_norm(v) for k, v in o.input_norms.items()})
    return out


def role_names(inputs) -> dict[str, str]:
    """Names for the symbols torch.export gives a program's dynamic dims (s77, s43): the
    dim at axis 0 of every input is ``batch``, axis 1 of an integer input of rank 2 (token
    ids, masks) ``sequence``, any other ``dimN`` after its axis (``INPUT_dimN`` where two
    symbols share an axis). ``inputs``: (name, is_integer, dims) with dims as ints or
    symbols, in input order."""
    first: dict[str, tuple[str, int]] = {}
    for name, _, dims in inputs:
        for axis, d in enumerate(dims):
            if isinstance(d, str):
                first.setdefault(d, (name, axis))
    ranked = [dims for _, _, dims in inputs if dims]
    out: dict[str, str] = {}
    for sym, (name, axis) in first.items():
        if axis == 0 and all(dims[0] == sym for dims in ranked):
            out[sym] = BATCH
        elif any(integer and len(dims) == 2 and dims[1] == sym for _, integer, dims in inputs):
            out[sym] = SEQUENCE
        else:
            out[sym] = f"dim{axis}"
    taken = list(out.values())
    for sym, (name, axis) in first.items():
        if taken.count(out[sym]) > 1 and out[sym] not in (BATCH, SEQUENCE):
            out[sym] = f"{name}_dim{axis}"
    if list(out.values()).count(SEQUENCE) > 1:  # two token lengths: each keeps its input's name
        out = {sym: f"{first[sym][0]}_sequence" if v == SEQUENCE else v for sym, v in out.items()}
    return out


def name_program_dims(path: Path) -> dict[str, str]:
    """Rename torch's symbols (``s77``) in an exported program's ONNX model after their
    role (role_names), everywhere they appear; returns old -> new."""
    import onnx

    m = onnx.load(str(path), load_external_data=False)
    symbol = re.compile(r"s\d+")

    def dims(v):
        return [d.dim_param if d.HasField("dim_param") else d.dim_value for d in v.type.tensor_type.shape.dim]

    integer = {onnx.TensorProto.INT64, onnx.TensorProto.INT32}
    specs = [(v.name, v.type.tensor_type.elem_type in integer,
              [d if isinstance(d, int) or symbol.fullmatch(d) else 0 for d in dims(v)]) for v in m.graph.input]
    names = role_names(specs)
    taken = {d for v in (*m.graph.input, *m.graph.output) for d in dims(v) if isinstance(d, str)} - set(names)
    names = {k: v if v not in taken else f"{v}_{k}" for k, v in names.items()}
    if not names:
        return {}
    for v in (*m.graph.input, *m.graph.output, *m.graph.value_info):
        for d in v.type.tensor_type.shape.dim:
            if d.HasField("dim_param") and d.dim_param in names:
                d.dim_param = names[d.dim_param]
    onnx.save_model(m, str(path))
    return names


def widen_dynamic_example(ex: Example, dyn) -> tuple[Example, list[str]]:
    """The example to export with: a dim declared dynamic whose example size is 1 is
    widened to EXAMPLE_DIM (torch.export specializes sizes 0 and 1, baking the dim in as
    a constant; size 0 is refused earlier). Every axis sharing the label is widened
    alike, repeating the example's own values. Returns (example, the widened labels)."""
    import numpy as np
    import torch


    tensors = dict(zip(ex.names, ex.tensors))
    sizes: dict[str, set[int]] = {}
    for n, axes in dyn.items():
        for axis, label in axes.items():
            sizes.setdefault(label, set()).add(int(tensors[n].shape[axis]))
    small = sorted(label for label, s in sizes.items() if min(s) < EXAMPLE_DIM)
    if not small:
        return ex, []
    wide = {}
    for n, t in tensors.items():
        shape = list(t.shape)
        for axis, label in dyn.get(n, {}).items():
            if label in small:
                shape[axis] = EXAMPLE_DIM
        if list(t.shape) == shape:
            wide[n] = t
            continue
        # np.resize repeats the example along the widened axes, so the values stay real
        wide[n] = torch.from_numpy(np.ascontiguousarray(np.resize(to_numpy(t), shape))).to(t.dtype)
    args = tuple(wide[n] for n in ex.names[:len(ex.args)])
    return Example(ex.names, args, {k: wide[k] for k in ex.kwargs}), small


def _export(torch, model, ex: Example, path: Path, out_names, dyn, opset, exporter, notes) -> str:
    order = ["dynamo", "torchscript"] if exporter == "auto" else [exporter]
    errors = []
    for which in order:
        try:
            if which == "dynamo":
                shapes = _dynamic_shapes(torch, ex, dyn) if isinstance(model, torch.nn.Module) else None
                prepare_dynamo_export()
                with quiet_third_party():
                    torch.onnx.export(model, ex.args, str(path), kwargs=dict(ex.kwargs) or None,
                                      input_names=list(ex.names), output_names=out_names, opset_version=opset,
                                      dynamo=True, external_data=True, dynamic_shapes=shapes, verbose=False)
                check_written_opset(path, opset)
            else:
                if not isinstance(model, torch.nn.Module):
                    raise ConversionError("the TorchScript exporter needs an nn.Module")
                axes = {n: dict(a) for n, a in dyn.items()}
                args = (*ex.args, dict(ex.kwargs)) if ex.kwargs else ex.args  # a trailing dict: keyword inputs
                with quiet_third_party():
                    torch.onnx.export(model, args, str(path), input_names=list(ex.names), output_names=out_names,
                                      opset_version=opset or 17, dynamo=False, dynamic_axes=axes or None)
            if errors:
                notes.append(f"the dynamo exporter failed ({errors[0]}); exported with the TorchScript exporter")
            return which
        except Exception as exc:
            msg = export_error(exc, opset)
            errors.append(msg)
            log.info("%s exporter failed: %s", which, msg)
            for p in path.parent.iterdir():
                p.unlink()
    raise ConversionError(f"export failed: {'; then '.join(errors)}",
                          hint=export_hint(" ".join(errors), opset, tried=order))


def _dynamic_shapes(torch, ex: Example, dyn):
    """torch.export's dynamic_shapes: one Dim per label, shared where a label repeats
    (a program carries its own, so this is for modules only)."""
    if not dyn:
        return None
    dims: dict = {}

    def axes(n):
        return {axis: dims.setdefault(label, torch.export.Dim(label)) for axis, label in dyn.get(n, {}).items()} or None

    positional = tuple(axes(n) for n in ex.names[:len(ex.args)])
    if not ex.kwargs:
        return positional
    return {**dict(zip(ex.names, positional)), **{n: axes(n) for n in ex.kwargs}}


def _parity_checks(held: list, model_path: Path, ex: Example, dyn, out_names, tol, seed, keyword,
                   ranges, reference=None, example_data=None) -> list[ParityReport]:
    """Parity on the example inputs, then once per dynamic label at a second size.
    ``reference(module)`` makes the reference runner when it is not the exported module.
    The module runs on every input first and is let go (``held`` is emptied) before ONNX
    Runtime loads the model: the torch weights and the session's never sit side by side."""
    import numpy as np

    from onnxforge.backends.onnx.runner import inputs_and_ranges, onnx_runner
    from onnxforge.core.memory import release_memory
    from onnxforge.data.generate import looks_like_mask, padding_mask

    module = held.pop().module
    at_stake = sum(t.numel() * t.element_size() for t in module.state_dict().values()) if hasattr(module, "state_dict") else 0
    ref = reference(module) if reference else torch_runner(module, out_names, keyword=keyword)
    del module
    specs = inputs_and_ranges(model_path)[0]
    base = {n: contiguous(to_numpy(t)) for n, t in zip(ex.names, ex.tensors)}
    runs: list = [(base, "example inputs", example_data, None)]  # (feeds, check, data, axis), or a report
    rng = np.random.default_rng(seed + 1)
    for label in sorted({l for axes in dyn.values() for l in axes.values()}):
        where = [(n, a) for n, axes in dyn.items() for a, l in axes.items() if l == label]
        fixed = [f"{n}:{a}" for n, a in where if isinstance(_dim(specs, n, a), int)]
        if fixed:
            runs.append(ParityReport("torch", f"onnx ({label})", 0, (), False, problems=(
                f"dynamic axis {label} ({', '.join(fixed)}) was exported as a fixed size "
                f"{_dim(specs, *where[0])}: the model works at the export shape only",)))
            continue
        feeds = {}
        for n, arr in base.items():
            shape = list(arr.shape)
            for wn, a in where:
                if wn == n:
                    shape[a] = SECOND_DIM if shape[a] != SECOND_DIM else SECOND_DIM + 1
            valid = ranges.get(n, ranges.get(""))
            mask = valid is None and looks_like_mask(n, shape, arr.dtype)
            feeds[n] = padding_mask(tuple(shape)).astype(arr.dtype) if mask else _resample(arr, tuple(shape), rng, valid)
        size = f"{label}={feeds[where[0][0]].shape[where[0][1]]}"
        runs.append((feeds, size, {"source": "generated", "how": f"generated (uniform within each example "
                                                                 f"input's range, at {size}, seed {seed + 1})"}, label))
    torch_outs = [None if isinstance(r, ParityReport) else ref(r[0]) for r in runs]
    del ref
    release_memory(at_stake)  # the exporter's graph (onnxscript's rewriters keep it) wraps the module's weights
    cand = onnx_runner(model_path, "cpu", label="onnx")
    reports = []
    for run, torch_out in zip(runs, torch_outs):
        if isinstance(run, ParityReport):
            reports.append(run)
            continue
        feeds, check, data, label = run
        rep = check_once(torch_out, cand, feeds, tol, check, data)
        if not rep.passed and not rep.outputs and label:
            rep = ParityReport(rep.reference, rep.candidate, 1, (), False, problems=tuple(
                p + f" — the exporter may have baked dynamic axis {label} in as a constant" for p in rep.problems))
        reports.append(rep)
    return reports


def _dim(specs, name, axis):
    for s in specs:
        if s.name == name:
            return s.shape[axis] if -len(s.shape) <= axis < len(s.shape) else None
    return None


def _resample(arr, shape, rng, valid=None):
    """An array of a new shape with values like ``arr``'s (same dtype and range), or
    within ``valid`` when the input has a declared range (an attention mask stays ones)."""
    import numpy as np

    if arr.dtype == np.bool_:
        return rng.random(shape) < 0.5
    if arr.dtype.kind in "iu":
        lo, hi = (int(valid[0]), int(valid[1])) if valid else (int(arr.min()), int(arr.max())) if arr.size else (0, 1)
        return rng.integers(lo, hi, size=shape, endpoint=True).astype(arr.dtype)
    lo, hi = valid if valid else (float(arr.min()), float(arr.max())) if arr.size else (0.0, 1.0)
    if math.isclose(lo, hi) and not valid:
        hi = lo + 1.0
    return (lo + (hi - lo) * rng.random(shape)).astype(arr.dtype)
