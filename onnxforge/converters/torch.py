"""torch -> ONNX, checked against the torch module.

Export: the dynamo exporter (torch.export based) by default; ``exporter="auto"``
falls back to the TorchScript exporter when dynamo fails, and says so.

Output naming (when ``output_names`` is not given): the module's outputs are
flattened in torch's pytree order (tuples/lists by index, dicts and Hugging Face
``ModelOutput``s by key, in insertion order) and named by their path: a single
tensor is ``output``; ``{"logits": t}`` gives ``logits``; ``(a, (b, c))`` gives
``output_0``, ``output_1_0``, ``output_1_1``; nested dicts join keys with ``_``.
"""

from __future__ import annotations

import logging
import math
from pathlib import Path
from typing import Any, Mapping, Sequence

from onnxforge.errors import BadInputError, ConversionError, UsageError, first_line
from onnxforge.steps import quiet_third_party
from onnxforge.types import ParityReport, StepResult, TensorSpec, Tolerance

log = logging.getLogger("onnxforge")

EXPORTERS = ("auto", "dynamo", "torchscript")
EXAMPLE_DIM = 2  # torch.export specializes dims of size 0 and 1, so examples use 2
SECOND_DIM = 3


def parse_dynamic(items: Sequence[str]) -> dict[str, dict[int, str]]:
    """``x:0=batch`` -> {"x": {0: "batch"}}."""
    out: dict[str, dict[int, str]] = {}
    for item in items:
        head, eq, label = item.rpartition("=")
        name, colon, axis = head.rpartition(":")
        if not eq or not colon or not name or not axis.lstrip("-").isdigit() or not label.isidentifier():
            raise UsageError(f"bad --dynamic {item!r}", hint="write NAME:AXIS=LABEL, e.g. x:0=batch or ids:1=seq")
        out.setdefault(name, {})[int(axis)] = label
    return out


def _path_name(path) -> str:
    parts = []
    for k in path:
        for attr in ("key", "idx", "name"):
            if hasattr(k, attr):
                parts.append(str(getattr(k, attr)))
                break
    return "_".join(parts)


def flatten_outputs(out: Any) -> list[tuple[str, Any]]:
    """(name, tensor) pairs in pytree order; see the module docstring."""
    import torch
    from torch.utils import _pytree as pytree

    leaves, _ = pytree.tree_flatten_with_path(out)
    pairs = [(_path_name(p), v) for p, v in leaves if isinstance(v, torch.Tensor)]
    if len(pairs) == 1 and pairs[0][0] == "":
        return [("output", pairs[0][1])]
    return [(n if n and not n[0].isdigit() else f"output_{n}", v) for n, v in pairs]


def to_numpy(t):
    import torch

    t = t.detach().cpu()
    if t.dtype == torch.bfloat16:
        t = t.float()
    return t.numpy()


def torch_runner(module, output_names: Sequence[str] | None = None):
    """A Runner over a torch module: inputs by position (dict order), outputs flattened."""
    import torch

    def run(feeds: Mapping[str, Any]) -> dict:
        import numpy as np

        args = [torch.from_numpy(np.ascontiguousarray(v)) for v in feeds.values()]
        pairs = flatten_outputs(call_module(module, args, "the torch model fails on these inputs",
                                            "check the inputs against the model's forward()"))
        if output_names and len(output_names) == len(pairs):
            return {n: to_numpy(v) for n, (_, v) in zip(output_names, pairs)}
        return {n: to_numpy(v) for n, v in pairs}

    return run


def call_module(module, args, what: str, hint: str):
    """module(*args) without gradients; its failure is the user's input, one line."""
    import torch

    try:
        with torch.no_grad():
            return module(*args)
    except Exception as exc:
        raise BadInputError(f"{what} ({type(exc).__name__}: {first_line(exc)})", hint=hint) from None


def _forward_names(module, n: int) -> list[str]:
    import inspect

    try:
        sig = inspect.signature(module.forward)
        names = [p.name for p in sig.parameters.values()
                 if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD) and p.name != "self"]
    except (TypeError, ValueError):
        names = []
    return names[:n] if len(names) >= n else [f"input_{i}" for i in range(n)]


def convert_torch(
    source: Any,
    output: str | Path,
    *,
    inputs: Sequence[str | TensorSpec] = (),
    example_inputs: str | Mapping[str, Any] | None = None,
    dynamic: Sequence[str] | Mapping[str, Mapping[int, str]] = (),
    opset: int | None = None,
    exporter: str = "auto",
    input_names: Sequence[str] | None = None,
    output_names: Sequence[str] | None = None,
    external_data: bool | None = None,
    weights: str | None = None,
    trust_pickle: bool = False,
    check: bool = True,
    tolerance: Tolerance | None = None,
    seed: int = 0,
    val_ranges: Mapping[str, tuple[float, float]] | None = None,
    force: bool = False,
    keep_failed: bool = False,
) -> StepResult:
    """Export a torch model to ONNX and check it against the module.

    ``source``: an nn.Module, an ExportedProgram, a .pt2 / TorchScript path, a factory
    ``module:function`` (with ``weights``), or a pickled module (``trust_pickle``).
    """
    import numpy as np

    from onnxforge.converters.loading import load_torch
    from onnxforge.errors import require
    from onnxforge.fileio import check_output_path, scratch_dir
    from onnxforge.steps import finish
    from onnxforge.specs import generate_inputs, load_samples, parse_spec
    from onnxforge.validators.parity import DEFAULT_TOLERANCE

    torch = require("torch", "torch")
    if exporter not in EXPORTERS:
        raise UsageError(f"unknown exporter {exporter!r}", hint="use auto, dynamo or torchscript")
    target = check_output_path(output, force=force, inputs=(source if isinstance(source, (str, Path)) else None,))
    loaded = load_torch(source, weights=weights, trust_pickle=trust_pickle)
    module = loaded.module
    notes: list[str] = []
    if getattr(module, "training", False):
        notes.append("the model was in training mode; exported in eval mode (dropout off, BatchNorm running stats)")
    if hasattr(module, "eval") and loaded.kind != "export":
        module.eval()
    specs = [parse_spec(s) if isinstance(s, str) else s for s in inputs]
    dyn = parse_dynamic(dynamic) if not isinstance(dynamic, Mapping) else {k: dict(v) for k, v in dynamic.items()}

    # example inputs, in forward order
    if example_inputs is not None:
        sample = load_samples(example_inputs)[0] if isinstance(example_inputs, (str, Path)) else dict(example_inputs)
        names = list(input_names or sample.keys())
        args = tuple(torch.from_numpy(np.ascontiguousarray(sample[k])) for k in sample)
    elif specs:
        names = list(input_names or [s.name for s in specs])
        for s in specs:  # symbolic dims in --input are dynamic axes
            for axis, d in enumerate(s.shape):
                if isinstance(d, str):
                    dyn.setdefault(s.name, {}).setdefault(axis, d)
        dims = {label: EXAMPLE_DIM for axes in dyn.values() for label in axes.values()}
        arrays = generate_inputs(specs, seed=seed, dims=dims, default_dim=EXAMPLE_DIM, val_ranges=val_ranges)
        args = tuple(torch.from_numpy(arrays[s.name]) for s in specs)
    elif loaded.example_args is not None:
        args = tuple(loaded.example_args)
        names = list(input_names or _forward_names(module, len(args)))
    else:
        raise UsageError("no example inputs", hint="pass --input NAME:DTYPE:SHAPE (repeatable) or --inputs sample.npz")
    if len(names) != len(args):
        raise UsageError(f"{len(names)} input name(s) for {len(args)} input(s)")
    unknown = set(dyn) - set(names)
    if unknown:
        raise UsageError(f"--dynamic names unknown input(s): {', '.join(sorted(unknown))}",
                         hint=f"inputs are: {', '.join(names)}")
    for n, axes in dyn.items():
        rank = args[names.index(n)].dim()
        for axis in axes:
            if not -rank <= axis < rank:
                raise UsageError(f"--dynamic {n}:{axis}: input {n} has rank {rank}")

    # run the module once: proves the inputs fit, and names the outputs
    flat = flatten_outputs(call_module(module, args, "the model fails on the example inputs",
                                       "check --input shapes and dtypes against the model's forward()"))
    if not flat:
        raise ConversionError("the model returns no tensors")
    out_names = list(output_names) if output_names else [n for n, _ in flat]
    if len(out_names) != len(flat):
        raise UsageError(f"{len(out_names)} output name(s) given for {len(flat)} output tensor(s)")

    weight_bytes = sum(p.numel() * p.element_size() for p in module.parameters()) if hasattr(module, "parameters") else 0
    if external_data is None:
        external_data = weight_bytes >= 2 * 1024**3 - 1
    source_kind = loaded.kind
    exportable = module if loaded.program is None else loaded.program
    del loaded

    with scratch_dir(target) as tmp:
        tmp_model = tmp / target.name
        # The scratch model always keeps its weights in a data file: the exporter then
        # streams them to disk, and the checker, ORT and our own loads never hold a
        # second in-memory protobuf copy of the weights. Inlined (if wanted) at the end.
        used = _export(torch, exportable, args, tmp_model, names, out_names, dyn, opset, exporter, notes)
        del exportable
        from onnxforge.validators.checker import check_model

        check_model(tmp_model)
        checks: list[ParityReport] = []
        if check:
            tol = tolerance or DEFAULT_TOLERANCE
            checks = _parity_checks(module, tmp_model, names, args, dyn, out_names, tol, seed)
        if not check:
            notes.append("parity check skipped (--no-check)")
        return finish(tmp_model, target, step="convert:torch", passed=all(c.passed for c in checks),
                      keep_failed=keep_failed, force=force, external_data=external_data, lineage=("convert:torch",),
                      checks=checks, notes=notes,
                      details={"exporter": used, "source_kind": source_kind, "inputs": names, "outputs": out_names,
                               "dynamic": {k: {str(a): v for a, v in ax.items()} for k, ax in dyn.items()},
                               "weight_bytes": weight_bytes})


def _export(torch, model, args, path: Path, names, out_names, dyn, opset, exporter, notes) -> str:
    order = ["dynamo", "torchscript"] if exporter == "auto" else [exporter]
    errors = []
    for which in order:
        try:
            if which == "dynamo":
                shapes = None
                if dyn and isinstance(model, torch.nn.Module):  # a program carries its own
                    dims = {}
                    shapes = tuple(
                        {axis: dims.setdefault(label, torch.export.Dim(label)) for axis, label in dyn.get(n, {}).items()} or None
                        for n in names
                    )
                with quiet_third_party():
                    torch.onnx.export(model, args, str(path), input_names=names, output_names=out_names,
                                      opset_version=opset, dynamo=True, external_data=True,
                                      dynamic_shapes=shapes, verbose=False)
            else:
                if not isinstance(model, torch.nn.Module):
                    raise ConversionError("the TorchScript exporter needs an nn.Module")
                axes = {n: dict(a) for n, a in dyn.items()}
                with quiet_third_party():
                    torch.onnx.export(model, args, str(path), input_names=names, output_names=out_names,
                                      opset_version=opset or 17, dynamo=False, dynamic_axes=axes or None)
            if errors:
                notes.append(f"the dynamo exporter failed ({errors[0]}); exported with the TorchScript exporter")
            return which
        except Exception as exc:
            msg = _export_error(exc, opset)
            errors.append(msg)
            log.info("%s exporter failed: %s", which, msg)
            for p in path.parent.iterdir():
                p.unlink()
    raise ConversionError(f"export failed: {'; then '.join(errors)}", hint=_export_hint(" ".join(errors), opset))


def _export_error(exc: BaseException, opset) -> str:
    text = str(exc)
    import re

    m = re.search(r"(aten::[\w.]+|torch\.ops\.aten\.[\w.]+)", text)
    unsupported = "not supported" in text.lower() or "unsupported" in text.lower() or "no decomposition" in text.lower()
    core = first_line(exc)
    if "Exception summary" in text:
        after = text.split("Exception summary", 1)[1].strip().splitlines()
        core = next((l for l in after if l.strip()), core)[:300]
    if m and unsupported:
        return f"operator {m.group(1)} is not supported at opset {opset or 'default'} ({core})"
    if "TorchExportError" in type(exc).__name__ or "torch.export" in text[:200]:
        return f"torch.export could not capture the model: {core}"
    return f"{type(exc).__name__}: {core}"


def _export_hint(text: str, opset) -> str:
    import re

    m = re.search(r"added in version (\d+)", text)
    if m:
        return f"export with --opset {m.group(1)} or newer"
    if "operator" in text and "not supported" in text:
        return "try a newer --opset (e.g. --opset 20)" + ("" if "TorchScript" in text else ", or --exporter torchscript")
    if "dynamic" in text.lower() or "constraint" in text.lower() or "specializ" in text.lower():
        return "the model fixes a dim you marked dynamic; drop that --dynamic axis or fix the model"
    return "rerun with --debug -v for the exporter's full error"


def _parity_checks(module, model_path: Path, names, args, dyn, out_names, tol, seed) -> list[ParityReport]:
    """Parity on the example inputs, then once per dynamic label at a second size."""
    import numpy as np

    from onnxforge.runtime import create_session
    from onnxforge.specs import model_io_specs
    from onnxforge.fileio import load_onnx
    from onnxforge.validators.parity import compare

    sess = create_session(model_path, "cpu")
    onnx_inputs, _ = model_io_specs(load_onnx(model_path, load_external_data=False))
    onnx_names = [s.name for s in onnx_inputs]
    run_ref = torch_runner(module, out_names)

    def run_pair(feeds: dict, label: str) -> ParityReport:
        ref = run_ref(feeds)
        try:
            onnx_feeds = {n: feeds[n] for n in onnx_names}
            values = sess.run(out_names, onnx_feeds)
        except KeyError as exc:
            return ParityReport("torch", "onnx", 1, (), False, problems=(f"{label}: the ONNX model takes {onnx_names}, missing {exc}",))
        except Exception as exc:
            return ParityReport("torch", f"onnx ({label})", 1, (), False,
                                problems=(f"{label}: the ONNX model fails ({first_line(exc)})",))
        rep = compare(ref, dict(zip(out_names, values)), tol, reference="torch", candidate=f"onnx ({label})")
        return rep

    base = {n: np.ascontiguousarray(to_numpy(a)) for n, a in zip(names, args)}
    reports = [run_pair(base, "example inputs")]
    rng = np.random.default_rng(seed + 1)
    for label in sorted({l for axes in dyn.values() for l in axes.values()}):
        where = [(n, a) for n, axes in dyn.items() for a, l in axes.items() if l == label]
        fixed = [f"{n}:{a}" for n, a in where if isinstance(_dim(onnx_inputs, n, a), int)]
        if fixed:
            reports.append(ParityReport("torch", f"onnx ({label})", 0, (), False, problems=(
                f"dynamic axis {label} ({', '.join(fixed)}) was exported as a fixed size "
                f"{_dim(onnx_inputs, *where[0])}: the model works at the export shape only",)))
            continue
        feeds = {}
        for n, arr in base.items():
            shape = list(arr.shape)
            for wn, a in where:
                if wn == n:
                    shape[a] = SECOND_DIM if shape[a] != SECOND_DIM else SECOND_DIM + 1
            feeds[n] = _resample(arr, tuple(shape), rng)
        rep = run_pair(feeds, f"{label}={feeds[where[0][0]].shape[where[0][1]]}")
        if not rep.passed and not rep.outputs:
            rep = ParityReport(rep.reference, rep.candidate, 1, (), False, problems=tuple(
                p + f" — the exporter may have baked dynamic axis {label} in as a constant" for p in rep.problems))
        reports.append(rep)
    return reports


def _dim(specs, name, axis):
    for s in specs:
        if s.name == name:
            return s.shape[axis] if -len(s.shape) <= axis < len(s.shape) else None
    return None


def _resample(arr, shape, rng):
    """An array of a new shape with values like ``arr``'s (same dtype and range)."""
    import numpy as np

    if arr.dtype == np.bool_:
        return rng.random(shape) < 0.5
    if arr.dtype.kind in "iu":
        lo, hi = (int(arr.min()), int(arr.max())) if arr.size else (0, 1)
        return rng.integers(lo, hi, size=shape, endpoint=True).astype(arr.dtype)
    lo, hi = (float(arr.min()), float(arr.max())) if arr.size else (0.0, 1.0)
    if math.isclose(lo, hi):
        hi = lo + 1.0
    return (lo + (hi - lo) * rng.random(shape)).astype(arr.dtype)
