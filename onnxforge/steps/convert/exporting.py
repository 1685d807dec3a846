"""What the torch converters share: one parity check of an export on given feeds, and
an exporter's failure turned into one line and a hint (exit 4)."""

from __future__ import annotations

from pathlib import Path

from onnxforge.core.errors import BadInputError, ConversionError, first_line
from onnxforge.core.types import ParityReport
from dataclasses import replace
import re
from onnxforge.backends import Runner

EXAMPLE_DIM = 2  # torch.export specializes dims of size 0 and 1, so examples use 2


def prepare_dynamo_export() -> None:
    """Before each dynamo export: set-up torch repeats on every call, done once per process."""
    reuse_torchlib_ops()
    list_cia_ops_once()


def reuse_torchlib_ops() -> None:
    """Make the dynamo exporter read onnxscript's op table once per process.

    torch.onnx.export rebuilds its registry on every call, and onnxscript's
    ``get_torchlib_ops`` re-parses the source of about 500 functions to do it: 0.7-0.9 s
    of a 1.4 s export of a small MLP, paid again by every export after the first in one
    process (an encoder-decoder pair, a library user's loop, the tests). The table depends
    only on the installed onnxscript (a function registered into onnxscript's torchlib
    registry after the first export would not be seen: torch's ``custom_translation_table``
    is the way to add one, and it is unaffected). Where torch or onnxscript lay it out
    otherwise, nothing changes."""
    import functools
    import importlib

    try:
        from torch.onnx._internal import _lazy_import

        apis = importlib.import_module(_lazy_import.onnxscript_apis._name)
        ops = apis.get_torchlib_ops
    except (ImportError, AttributeError):
        return
    if getattr(ops, "onnxforge_once", False):
        return
    once = functools.cache(ops)

    def get_torchlib_ops():
        return list(once())  # a fresh list each call, as the original returns

    get_torchlib_ops.onnxforge_once = True
    apis.get_torchlib_ops = get_torchlib_ops


def list_cia_ops_once() -> None:
    """Make torch.export read the dispatcher's CompositeImplicitAutograd ops once per
    listing of them, not once per namespace of ``torch.ops``.

    Every dynamo export lists those ops twice (``run_decompositions``), and for each
    namespace ``torch.ops`` has ever been asked for, torch reads all ~2000 registrations
    from the dispatcher again and looks each one up. Any ``getattr(torch.ops, name)`` adds
    a namespace, found or not: importing skops.io in a process that has torch adds 230 (it
    looks for scipy's ufunc names in every module), and each export then spends 0.5-0.9 s
    more listing (0.02 s in a fresh process). Reading them once at the start of a listing
    gives the same ops: nothing registers between two namespaces of one listing, and an op
    once looked up stays in its namespace. Where torch lays it out otherwise, nothing
    changes."""
    try:
        import torch._export.utils as utils
        import torch.export.decomp_utils as decomp_utils
        import torch.export.exported_program as exported_program
    except ImportError:
        return
    listing = getattr(utils, "_collect_all_valid_cia_ops", None)
    materialize = getattr(utils, "_materialize_cpp_cia_ops", None)
    if listing is None or materialize is None or getattr(listing, "onnxforge_once", False):
        return

    def once_per_listing():
        materialize()
        utils._materialize_cpp_cia_ops = _read_already
        try:
            return listing()
        finally:
            utils._materialize_cpp_cia_ops = materialize

    once_per_listing.onnxforge_once = True
    once_per_listing.__wrapped__ = listing
    for module in (utils, exported_program, decomp_utils):
        if getattr(module, "_collect_all_valid_cia_ops", None) is listing:
            module._collect_all_valid_cia_ops = once_per_listing


def _read_already() -> None:
    """The ops were read at the start of this listing."""


def export_failure(exc, widened: list[str], tmp_model: Path, target: Path) -> ConversionError:
    """An export that failed, or wrote a model onnx.checker refuses, as a conversion
    error (exit 4) naming the output, not the scratch file; when the example was widened,
    the likely cause: a forward() that needs size 1 on that axis."""
    message = exc.message.replace(str(tmp_model), target.name).replace(f"{tmp_model.parent.name}/", "")
    hint = exc.hint
    if widened:
        labels = ", ".join(widened)
        hint = (f"onnxforge exported with {labels} widened from 1 to {EXAMPLE_DIM} (torch.export bakes sizes 0 and 1 "
                f"in as constants); if forward() needs size 1 there (view(1, ...), squeeze(0)), drop --dynamic "
                f"for {labels}, or make forward() work at any size")
    return ConversionError(message, hint=hint)


def check_written_opset(path: Path, opset: int | None) -> None:
    """The dynamo exporter converts to a requested opset and, when its converter fails,
    silently keeps its own (18): a model at another opset than asked is a failure."""
    from onnxforge.core.fileio import load_onnx

    if opset is None:
        return
    got = next((o.version for o in load_onnx(path, graph_only=True).opset_import if o.domain in ("", "ai.onnx")), 0)
    if got != opset:
        raise ConversionError(f"the dynamo exporter wrote opset {got}, not the requested {opset} "
                              "(its version converter could not convert the graph)")


def export_error(exc: BaseException, opset) -> str:
    text = str(exc)

    m = re.search(r"(aten::[\w.]+|torch\.ops\.aten\.[\w.]+)", text)
    unsupported = "not supported" in text.lower() or "unsupported" in text.lower() or "no decomposition" in text.lower()
    core = first_line(exc)
    if "Exception summary" in text:
        after = text.split("Exception summary", 1)[1].strip().splitlines()
        core = next((l for l in after if l.strip()), core)[:300]
    if m and unsupported:
        return f"operator {m.group(1)} is not supported at {f'opset {opset}' if opset else 'the default opset'} ({core})"
    if "TorchExportError" in type(exc).__name__ or "torch.export" in text[:200]:
        return f"torch.export could not capture the model: {core}"
    return f"{type(exc).__name__}: {core}"


def export_hint(text: str, opset, tried=("dynamo", "torchscript")) -> str:
    """What to try next: only options that were not already tried."""
    other = [f"--exporter {e}" for e in ("dynamo", "torchscript") if e not in tried]
    m = re.search(r"added in version (\d+)", text)
    if m and (opset is None or opset < int(m.group(1))):
        return f"export with --opset {m.group(1)} or newer"
    w = re.search(r"wrote opset (\d+), not the requested", text)
    if w:
        return f"use --opset {w.group(1)} (or newer)" + (f", or {other[0]} for opset {opset}" if other else "")
    if "operator" in text and "not supported" in text:
        newer = "try a newer --opset (e.g. --opset 20)" if opset is None or opset < 20 else ""
        return ", or ".join(x for x in (newer, *other) if x) or "the operator has no ONNX export; rewrite that part of the model"
    if "dynamic" in text.lower() or "constraint" in text.lower() or "specializ" in text.lower():
        return "the model fixes a dim you marked dynamic; drop that --dynamic axis or fix the model"
    return ", or ".join(["rerun with --debug -v for the exporter's full error", *other])


def check_once(ref, cand, feeds: dict, tol, label: str, data: dict | None = None) -> ParityReport:
    """One parity check of the ONNX model against torch outputs on ``feeds``: the
    module runs first (its failure is the user's), then the ONNX model (its failure is
    a failed check, reported). ``ref``: the torch runner, or its outputs already taken
    (convert runs the module on every input, then lets it go before ORT loads)."""
    from onnxforge.checks.parity import validate

    torch_out = ref(feeds) if callable(ref) else ref
    saved = Runner(label="torch", kind="saved", outputs=tuple(torch_out), saved_outputs=(torch_out,))
    try:
        rep = validate(saved, cand, input_samples=[feeds], tolerance=tol, data=data)
    except BadInputError as exc:
        return ParityReport("torch", f"onnx ({label})", 1, (), False, problems=(f"{label}: {exc.message}",))

    return replace(rep, candidate=f"onnx ({label})")
