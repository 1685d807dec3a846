"""Loading a torch.export archive (.pt2) without running code from it.

``torch.export.load`` unpickles parts of the archive with ``weights_only=False``: the
saved example inputs (after a ``weights_only=True`` attempt), weights and constants
saved with ``use_pickle``, opaque objects with plain ``pickle.loads``, TorchBind
objects, and AOTInductor archives hold native code. Torch's own documentation says
never to load an untrusted .pt2. So the archive is read into memory once, every part
torch would unpickle is first loaded with ``weights_only=True`` (torch's restricted
unpickler: tensors and plain containers only), parts that cannot be checked that way
are refused, and only then is the program loaded — from the same bytes. With
``trust_pickle`` the checks are skipped.

A .pt2 of a Hugging Face model needs its output classes registered with torch's
pytree before it loads; when the error names a class from an installed package, that
package is imported (which registers them) and the load is retried, with a note.
"""

from __future__ import annotations

import io
import json
import re
import warnings
import zipfile
from pathlib import Path

from onnxforge.errors import BadInputError, MissingDependencyError, first_line


def _rel(name: str) -> str:
    """Member name without the archive's root folder (torch's reader strips it)."""
    return name.split("/", 1)[1] if "/" in name else name


def _pickled_parts(z: zipfile.ZipFile) -> list[tuple[str, str]]:
    """(member, kind) for every part torch.export.load would unpickle or execute:
    kind "torch" (checkable with weights_only=True), "pickle" or "native" (not checkable)."""
    from torch.export.pt2_archive import constants as c

    names = {_rel(n): n for n in z.namelist() if not n.endswith("/")}
    parts: list[tuple[str, str]] = []
    for rel, full in names.items():
        if any(rel.startswith(d) for d in (c.AOTINDUCTOR_DIR, c.EXECUTORCH_DIR, c.MTIA_DIR)):
            parts.append((full, "native"))
        elif rel.startswith(c.SAMPLE_INPUTS_DIR) or rel.startswith("serialized_") and rel.endswith(".pt"):
            parts.append((full, "torch"))
        elif rel.endswith(".pt") and rel.startswith((c.WEIGHTS_DIR, c.CONSTANTS_DIR)):
            parts.append((full, "torch"))  # the legacy one-file weights / constants
        elif rel.startswith((c.WEIGHTS_DIR, c.CONSTANTS_DIR)) and rel.endswith("config.json"):
            parts += _config_parts(z, full, rel, names)
    return parts


def _config_parts(z, full: str, rel: str, names: dict) -> list[tuple[str, str]]:
    from torch.export.pt2_archive import constants as c

    base = c.WEIGHTS_DIR if rel.startswith(c.WEIGHTS_DIR) else c.CONSTANTS_DIR
    try:
        config = json.loads(z.read(full)).get("config", {})
    except (ValueError, UnicodeDecodeError) as exc:
        raise BadInputError(f"the archive's {rel} is not JSON ({exc})") from None
    out = []
    for meta in config.values():
        path_name = str(meta.get("path_name", ""))
        member = names.get(base + path_name, base + path_name)
        if path_name.startswith(c.CUSTOM_OBJ_FILENAME_PREFIX):
            out.append((member, "native"))
        elif path_name.startswith(c.OPAQUE_OBJ_FILENAME_PREFIX):
            out.append((member, "pickle"))
        elif meta.get("use_pickle"):
            out.append((member, "torch"))
    return out


def check_archive(data: bytes, path: Path) -> None:
    """Refuse an archive with a part that would run code when loaded (see above)."""
    import torch

    try:
        z = zipfile.ZipFile(io.BytesIO(data))
    except zipfile.BadZipFile:
        raise BadInputError(f"{path} is not a .pt2 archive (not a zip file)",
                            hint="save it with torch.export.save(torch.export.export(model, args), path)") from None
    for member, kind in _pickled_parts(z):
        why = {"native": "holds native code or a TorchBind object", "pickle": "holds a plain pickle"}.get(kind)
        if why is None:
            try:
                with warnings.catch_warnings():
                    warnings.simplefilter("ignore")  # torch warns about pickle protocols it reads anyway
                    torch.load(io.BytesIO(z.read(member)), weights_only=True)
                continue
            except KeyError:
                raise BadInputError(f"{path}: the archive lists {_rel(member)} but does not hold it") from None
            except Exception as exc:
                m = re.search(r"Unsupported global: GLOBAL ([\w.]+)", str(exc))
                w = re.search(r"WeightsUnpickler error:\s*(.+)", str(exc))
                what = f"calls {m.group(1)}" if m else w.group(1).strip()[:120] if w else first_line(exc, 120)
                why = f"holds a pickle that torch's safe loader refuses ({what})"
        raise BadInputError(
            f"{path}: {_rel(member)} {why}; loading it runs code from the file, so the archive is refused",
            hint="pass --trust-pickle if you trust the file (and where it came from)")


class _Capture:
    """Collects the exceptions torch.export.load logs and swallows (the real reason a
    load failed: it reports only that deserializing failed)."""

    def __init__(self):
        import logging

        self.errors: list[str] = []
        self.handler = logging.Handler()
        self.handler.emit = self._emit

    def _emit(self, record) -> None:
        if record.exc_info and record.exc_info[1] is not None:
            self.errors.append(str(record.exc_info[1]))

    def __enter__(self):
        import logging

        lg = logging.getLogger("torch.export")
        self.saved = lg.level, lg.propagate, list(lg.handlers)
        lg.setLevel(logging.WARNING)
        lg.propagate = False  # ours to read, not for stderr (torch attaches its own stderr handler here)
        lg.handlers[:] = [self.handler]
        return self

    def __exit__(self, *exc):
        import logging

        lg = logging.getLogger("torch.export")
        lg.setLevel(self.saved[0])
        lg.propagate = self.saved[1]
        lg.handlers[:] = self.saved[2]


def load_program(path: Path, *, trust_pickle: bool = False, notes: list | None = None):
    """The ExportedProgram in a .pt2, loaded safely unless ``trust_pickle``."""
    import torch

    from onnxforge.logs import quiet_third_party

    data = path.read_bytes()
    if not trust_pickle:
        check_archive(data, path)
    for attempt in range(3):
        with quiet_third_party(), _Capture() as cap:
            try:
                return torch.export.load(io.BytesIO(data))
            except Exception as exc:
                error = "; ".join([*cap.errors, str(exc)])
                failure = exc
        module = _unregistered_module(error)
        if module is None or attempt == 2:
            raise BadInputError(f"{path}: cannot load as a torch.export program "
                                f"({first_line(Exception(cap.errors[0])) if cap.errors else first_line(failure)})",
                                hint="check that it was written by torch.export.save with a compatible torch "
                                     "version") from None
        _import_for_pytree(module, path)
        if notes is not None:
            notes.append(f"imported {module} to register its output types with torch's pytree, then loaded")
    raise AssertionError("unreachable")


def _unregistered_module(text: str) -> str | None:
    """The module of a class torch's pytree did not know, from the load error
    ("Deserializing transformers.modeling_outputs.BaseModelOutput in pytree is not registered")."""
    m = re.search(r"Deserializing ((?:[A-Za-z_]\w*\.)+)[A-Za-z_]\w* in pytree is not registered", text)
    return m.group(1).rstrip(".") if m else None


def _import_for_pytree(module: str, path: Path) -> None:
    import importlib
    import importlib.util

    top = module.split(".")[0]
    if importlib.util.find_spec(top) is None:
        raise MissingDependencyError(f"{path} needs {top} (its outputs are {top} classes), which is not installed",
                                     hint=f"pip install {top}")
    importlib.import_module(module)
