"""Loading torch sources (.pt2, TorchScript, factories, pickles). `convert`, `validate`
and the release share this code.

Unpickling runs arbitrary code, so whole pickled models load only with
``trust_pickle``; a .pt2 is checked part by part first (pt2.py). A factory
(``module:function``) runs its own code by design: the user names it to build the
model. See docs/security.md.
"""

from __future__ import annotations

import zipfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping, Sequence

from onnxforge.backends.base import call_factory, cwd_importable, is_factory
from onnxforge.core.errors import BadInputError, first_line, require
import json
import re

TORCH_SUFFIXES = (".pt2", ".pt", ".pth", ".ts", ".jit", ".bin")


@dataclass(frozen=True)
class LoadedTorch:
    module: Any  # nn.Module (an ExportedProgram's .module() for .pt2)
    kind: str  # "export" | "torchscript" | "factory" | "pickle" | "module"
    example_args: tuple | None = None  # from a .pt2's saved example inputs
    program: Any = None  # the ExportedProgram for .pt2
    example_kwargs: Mapping[str, Any] = field(default_factory=dict)  # a .pt2 saved from keyword arguments

    @property
    def keyword(self) -> tuple[str, ...]:
        """Inputs the module takes by name (a program exported with keyword arguments)."""
        return tuple(self.example_kwargs)


def _zip_names(path: Path) -> list[str]:
    try:
        with zipfile.ZipFile(path) as z:
            return z.namelist()
    except (zipfile.BadZipFile, OSError):
        return []


def is_pt2_archive(path: Path, names: Sequence[str]) -> bool:
    """A torch.export archive, told by the markers torch.export.save writes
    (pt2_archive.constants: an archive_format file holding "pt2"; older torch: a
    serialized_exported_program.json), not by path substrings: TorchScript archives hold
    the saving module's path (code/__torch__/torchvision/models/...), and every
    torchvision model was refused as a corrupted .pt2."""
    from torch.export.pt2_archive import constants as c

    from onnxforge.backends.torch.pt2 import _rel

    rel = {_rel(n): n for n in names}
    if "serialized_exported_program.json" in rel:
        return True
    if c.ARCHIVE_FORMAT_PATH not in rel:
        return False
    try:
        with zipfile.ZipFile(path) as z:
            return z.read(rel[c.ARCHIVE_FORMAT_PATH]).strip() == c.ARCHIVE_FORMAT_VALUE.encode()
    except (zipfile.BadZipFile, OSError, KeyError):
        return False


def pt2_input_dims(path: Path) -> list[tuple[str, bool, list]] | None:
    """A .pt2's user inputs as (name, is_integer, dims: ints, or torch's symbols such as
    ``s77``), read from the archive's program JSON without loading it; None when the
    archive does not tell."""
    from onnxforge.backends.torch.pt2 import _rel

    names = _zip_names(path)
    if not is_pt2_archive(path, names):
        return None
    rel = {_rel(n): n for n in names}
    member = rel.get("models/model.json") or rel.get("serialized_exported_program.json")
    try:
        with zipfile.ZipFile(path) as z:
            program = json.loads(z.read(member))
        graph, sig = program["graph_module"]["graph"], program["graph_module"]["signature"]
        out = []
        for spec in sig["input_specs"]:
            arg = spec.get("user_input", {}).get("arg", {}).get("as_tensor")
            if arg is None:
                continue
            meta = graph["tensor_values"][arg["name"]]
            dims = []
            for d in meta["sizes"]:  # an int, or a symbol as sympy writes it: Symbol('s23', positive=True, ...)
                m = None if "as_int" in d else re.fullmatch(r"s\d+|Symbol\('(s\d+)'[^)]*\)",
                                                            d.get("as_expr", {}).get("expr_str", ""))
                dims.append(d["as_int"] if "as_int" in d else (m.group(1) or m.group(0)) if m else 0)
            out.append((arg["name"], meta["dtype"] in (4, 5), dims))  # serde ScalarType INT, LONG
        return out
    except (zipfile.BadZipFile, OSError, KeyError, TypeError, ValueError, AttributeError):
        return None


def _is_torchscript(names: Sequence[str]) -> bool:
    from onnxforge.backends.torch.pt2 import _rel  # below the archive's root folder, as for a .pt2

    return any(_rel(n).startswith("code/") or _rel(n) == "constants.pkl" for n in names)


def load_torch(source: Any, *, weights: str | None = None, trust_pickle: bool = False,
               notes: list | None = None) -> LoadedTorch:
    torch = require("torch", "torch")
    if isinstance(source, torch.nn.Module):
        if weights:  # a factory's module, built by the caller
            _load_weights(source, weights)
        return LoadedTorch(source, "module")
    if hasattr(source, "module") and type(source).__name__ == "ExportedProgram":
        args, kwargs = _example_inputs(source)
        return LoadedTorch(source.module(), "export", args, source, kwargs)
    spec = str(source)
    if is_factory(spec):
        model = call_factory(spec, "a torch.nn.Module")
        if not isinstance(model, torch.nn.Module):
            raise BadInputError(f"factory {spec} returned {type(model).__name__}, not a torch.nn.Module",
                                hint="return the model instance (the weights can come from --weights)")
        if weights:
            _load_weights(model, weights)
        return LoadedTorch(model, "factory")
    from onnxforge.core.fileio import check_readable_file

    path = check_readable_file(spec, "torch source")
    names = _zip_names(path)
    if is_pt2_archive(path, names) or path.suffix == ".pt2" and not _is_torchscript(names):
        from onnxforge.backends.torch.pt2 import load_program

        ep = load_program(path, trust_pickle=trust_pickle, notes=notes)
        args, kwargs = _example_inputs(ep)
        return LoadedTorch(ep.module(), "export", args, ep, kwargs)
    if _is_torchscript(names):
        try:
            return LoadedTorch(torch.jit.load(str(path), map_location="cpu"), "torchscript")
        except Exception as exc:
            raise BadInputError(f"{path}: cannot load as TorchScript ({first_line(exc)})",
                                hint="TorchScript may call only torch's own ops; export the model with "
                                     "torch.export.save (a .pt2) or give its factory") from None
    if not names and not _legacy_torch_save(path):
        raise BadInputError(f"{path} is not a torch file (.pt2, TorchScript or torch.save archive)",
                            hint="give a .pt2 (torch.export.save), a TorchScript file, or a factory module:function")
    # a torch.save archive: a state_dict (safe) or a pickled module (runs code)
    try:
        obj = torch.load(str(path), map_location="cpu", weights_only=True)
    except Exception:
        obj = None
    if isinstance(obj, dict):
        raise BadInputError(f"{path} holds a state_dict, not a model",
                            hint="give the factory that builds the model and pass this file as --weights")
    if not trust_pickle:
        raise BadInputError(
            f"{path} is a pickled model; unpickling runs arbitrary code, so it is refused",
            hint="pass --trust-pickle if you trust the file, or use a safe format: .pt2 (torch.export.save), "
            "TorchScript, or a factory module:function with --weights state_dict.pt",
        )
    try:
        with cwd_importable():
            model = torch.load(str(path), map_location="cpu", weights_only=False)
    except Exception as exc:
        raise BadInputError(f"{path}: cannot unpickle ({type(exc).__name__}: {first_line(exc)})",
                            hint="the classes it needs must be importable from the current directory") from None
    if not isinstance(model, torch.nn.Module):
        raise BadInputError(f"{path} holds {type(model).__name__}, not a torch.nn.Module")
    return LoadedTorch(model, "pickle")


# torch.save(..., _use_new_zipfile_serialization=False): a pickle (protocol 2) of torch's
# legacy magic number, then the objects; torch.load reads it like the zip archive
LEGACY_TORCH_SAVE = b"\x80\x02\x8a\nl\xfc\x9cF\xf9 j\xa8P\x19"


def _legacy_torch_save(path: Path) -> bool:
    with open(path, "rb") as f:
        return f.read(len(LEGACY_TORCH_SAVE)) == LEGACY_TORCH_SAVE


def _example_inputs(ep) -> tuple[tuple | None, dict]:
    """A program's saved example inputs: (positional args or None, keyword args)."""
    ex = getattr(ep, "example_inputs", None)
    if not ex:
        return None, {}
    args, kwargs = ex if isinstance(ex, tuple) and len(ex) == 2 and isinstance(ex[1], dict) else (ex, {})
    return (tuple(args) if args or kwargs else None), dict(kwargs)


def _load_weights(model, weights: str) -> None:
    import torch

    from onnxforge.core.fileio import check_readable_file

    p = check_readable_file(weights, "weights")
    try:
        state = torch.load(str(p), map_location="cpu", weights_only=True)
    except Exception as exc:
        raise BadInputError(f"{p}: cannot load weights with weights_only=True ({first_line(exc)})",
                            hint="save them with torch.save(model.state_dict(), path)") from None
    if isinstance(state, dict) and "state_dict" in state and isinstance(state["state_dict"], dict):
        state = state["state_dict"]
    if not isinstance(state, dict):
        raise BadInputError(f"{p} is not a state_dict (got {type(state).__name__})")
    try:
        model.load_state_dict(state, strict=True)
    except RuntimeError as exc:
        text = str(exc)
        missing = text.split("Missing key(s) in state_dict:")[-1].split(".\n")[0].strip() if "Missing key" in text else ""
        unexpected = text.split("Unexpected key(s) in state_dict:")[-1].split(".\n")[0].strip() if "Unexpected key" in text else ""
        sizes = "size mismatch" in text
        parts = [f"missing {missing[:150]}" if missing else "", f"unexpected {unexpected[:150]}" if unexpected else "",
                 "shape mismatches" if sizes else ""]
        raise BadInputError(f"weights {p} do not match the model: " + "; ".join(x for x in parts if x),
                            hint="the factory must build the architecture the weights were saved from") from None
