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

The program's JSON (models/*.json) holds code too: torch parses every symbolic size
(``expr_str``) with ``sympy.sympify``, which ``eval``s it; ``ep.module()`` ``exec``s the
``guards_code`` strings; and a node's ``target`` names any attribute path under
``torch``, ``operator`` or ``math`` (``torch.os.system``, ``torch.ops.import_module``), which
runs when the graph does; FX pastes parameter and subgraph names between double quotes
into the code it generates for ``.module()``, unescaped. So, unless ``trust_pickle``,
every such string is checked first: sizes and guards against a grammar of our own
(parsed with ``ast``, which evaluates nothing), targets against torch's operators, and
names (every ``*name`` key) against letters, digits, ``_`` and ``.``.

A .pt2 of a Hugging Face model needs its output classes registered with torch's
pytree before it loads; when the error names a class from an allow-listed package
(PYTREE_PACKAGES), that package is imported (which registers them) and the load is
retried, with a note. Any other module is refused unless ``trust_pickle``: importing a
module runs it (``setup.Evil`` would run setup.py from the current directory).

Before anything is read, the members' declared sizes are checked against the memory
this process may use (a 3 MB archive can declare a 3 GiB member): that holds with
``trust_pickle`` too.
"""

from __future__ import annotations

import ast
import io
import json
import re
import warnings
import zipfile
from pathlib import Path

from onnxforge.core.errors import BadInputError, MissingDependencyError, first_line
import builtins
import importlib
import logging
import types
from onnxforge.core.logs import quiet_third_party
from onnxforge.core.system import available_memory


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


# Functions torch 2.13 writes into a symbolic size (sympy's srepr of its shape
# expressions, and the torch.utils._sympy.functions it registers with sympify). sympy
# evaluates Pow(2, 10**9) eagerly and never returns, so Pow and ** take only a small
# integer exponent (torch writes Pow(s0, Integer(2)) for x.shape[0] ** 2); torch's shifts
# are left out, its PowByNatural caps at int_oo and FloatPow at inf.
SYMPY_CALLS = frozenset({
    "Integer", "Rational", "Float", "Symbol", "Add", "Mul", "Min", "Max", "Abs", "Mod",
    "FloorDiv", "CeilDiv", "CleanDiv", "PythonMod", "ModularIndexing", "Where", "IntTrueDiv",
    "FloatTrueDiv", "ToFloat", "TruncToInt", "TruncToFloat", "CeilToInt", "FloorToInt", "RoundToInt",
    "Identity", "PowByNatural", "FloatPow", "Pow", "Equality", "Unequality", "StrictLessThan",
    "StrictGreaterThan", "LessThan", "GreaterThan", "Eq", "Ne", "Lt", "Le", "Gt", "Ge", "And", "Or", "Not",
})
# what a guard may call or read: tensor sizes and plain arithmetic (torch writes
# "min(L['y'].size()[0], L['x'].size()[0]) <= L['x'].size()[0]")
GUARD_CALLS = frozenset({"min", "max", "abs", "int", "float", "Min", "Max", "FloorDiv", "Mod"})
GUARD_METHODS = frozenset({"size", "stride", "storage_offset", "dim", "numel"})
GUARD_NAMES = frozenset({"L", "math", "inf", "True", "False", "None"})
MATH_ATTRS = frozenset({"floor", "ceil", "trunc", "isnan", "isinf", "sqrt", "inf", "pi", "e"})
_BIN = (ast.Add, ast.Sub, ast.Mult, ast.Div, ast.FloorDiv, ast.Mod, ast.BitAnd, ast.BitOr)
_CMP = (ast.Eq, ast.NotEq, ast.Lt, ast.LtE, ast.Gt, ast.GtE)
_IDENT = re.compile(r"[A-Za-z_][A-Za-z0-9_]*\Z")
_NAME = re.compile(r"[A-Za-z0-9_.]{0,1000}\Z")
_NUMBER = re.compile(r"-?[0-9]+(\.[0-9]*)?([eE][-+]?[0-9]+)?\Z")


def _plain_name(name: str) -> bool:
    return bool(_IDENT.match(name)) and "__" not in name and not hasattr(builtins, name)


def _small_int(node: ast.AST) -> bool:
    """An exponent sympy can evaluate at once: 2, -1, Integer(3)."""
    if isinstance(node, ast.UnaryOp) and isinstance(node.op, ast.USub):
        node = node.operand
    if isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id == "Integer" and node.args:
        node = node.args[0]
        if isinstance(node, ast.UnaryOp) and isinstance(node.op, ast.USub):
            node = node.operand
    return isinstance(node, ast.Constant) and type(node.value) is int and node.value <= 8


def _allowed(node: ast.AST, guard: bool) -> bool:
    """Whether ``node`` is arithmetic on sizes and symbols only (see SYMPY_CALLS / GUARD_*)."""
    ok = lambda n: _allowed(n, guard)  # noqa: E731
    if isinstance(node, ast.Expression):
        return ok(node.body)
    if isinstance(node, ast.Constant):
        return type(node.value) in (int, float, bool) and len(repr(node.value)) <= 64
    if isinstance(node, ast.Name):
        return node.id in GUARD_NAMES if guard else (_plain_name(node.id) or node.id in ("True", "False"))
    if isinstance(node, ast.BinOp):
        if isinstance(node.op, ast.Pow):
            return ok(node.left) and _small_int(node.right)
        return isinstance(node.op, _BIN) and ok(node.left) and ok(node.right)
    if isinstance(node, ast.UnaryOp):
        return isinstance(node.op, (ast.USub, ast.UAdd, ast.Not, ast.Invert)) and ok(node.operand)
    if isinstance(node, ast.BoolOp):
        return all(map(ok, node.values))
    if isinstance(node, ast.Compare):
        return all(isinstance(o, _CMP) for o in node.ops) and ok(node.left) and all(map(ok, node.comparators))
    if isinstance(node, ast.Subscript) and guard:  # L['x'], .size()[0]
        key = node.slice
        return ok(node.value) and isinstance(key, ast.Constant) and (
            type(key.value) is int or isinstance(key.value, str) and bool(_IDENT.match(key.value)))
    if isinstance(node, ast.Attribute) and guard:  # math.inf
        return isinstance(node.value, ast.Name) and node.value.id == "math" and node.attr in MATH_ATTRS
    if isinstance(node, ast.Call):
        f = node.func
        if guard:
            method = isinstance(f, ast.Attribute) and f.attr in GUARD_METHODS and ok(f.value)
            named = isinstance(f, ast.Name) and f.id in GUARD_CALLS
            if not (method or named or isinstance(f, ast.Attribute) and ok(f)):  # math.floor(...)
                return False
            return not node.keywords and all(map(ok, node.args))
        if not (isinstance(f, ast.Name) and f.id in SYMPY_CALLS):
            return False
        if f.id == "Pow" and not (len(node.args) == 2 and _small_int(node.args[1])):
            return False
        # Symbol('s0', integer=True), Float('1.5', precision=53): a string only as a name or a number
        for a in node.args:
            if isinstance(a, ast.Constant) and isinstance(a.value, str):
                if not (_plain_name(a.value) or _NUMBER.match(a.value)) or len(a.value) > 64:
                    return False
            elif not ok(a):
                return False
        return all(_IDENT.match(k.arg or "") and isinstance(k.value, ast.Constant)
                   and type(k.value.value) in (bool, int) for k in node.keywords)
    return False


def _expression_ok(text, guard: bool) -> bool:
    if not isinstance(text, str) or not text.isascii() or len(text) > 100_000:
        return False
    if guard and any(c in text for c in "#\\\"\n\r"):  # pasted raw into generated code
        return False
    try:
        tree = ast.parse(text.strip(), mode="eval")
    except (SyntaxError, ValueError, RecursionError, MemoryError):
        return False
    # (a**8)**8 ... grows as 8**depth: a few powers per expression, no more
    powers = sum(isinstance(n, ast.BinOp) and isinstance(n.op, ast.Pow)
                 or isinstance(n, ast.Call) and getattr(n.func, "id", None) == "Pow" for n in ast.walk(tree))
    try:
        return powers <= 4 and _allowed(tree, guard)
    except RecursionError:
        return False


# Node targets torch resolves by attribute path: besides torch.ops.<namespace>.<op>[.<overload>],
# the symbolic-size operators torch writes (its _SYM_OPS) and the grad-mode / autocast wrappers.
TARGETS = frozenset({
    "_operator.add", "_operator.and_", "_operator.eq", "_operator.floordiv", "_operator.ge", "_operator.gt",
    "_operator.le", "_operator.lshift", "_operator.lt", "_operator.mod", "_operator.mul", "_operator.ne",
    "_operator.neg", "_operator.or_", "_operator.pos", "_operator.pow", "_operator.rshift", "_operator.sub",
    "_operator.truediv", "_operator.getitem", "math.trunc", "math.floor", "math.ceil", "math.sqrt",
    "torch._sym_sqrt", "torch.sym_float", "torch.sym_int", "torch.sym_ite", "torch.sym_max", "torch.sym_min",
    "torch.sym_not", "torch.sym_sum", "torch._C._set_grad_enabled",
    "torch.amp.autocast_mode._enter_autocast", "torch.amp.autocast_mode._exit_autocast",
})


def _target_ok(target) -> bool:
    import torch

    if not isinstance(target, str):
        return False
    if target in TARGETS:
        return True
    parts = target.split(".")
    if parts[:2] != ["torch", "ops"] or len(parts) not in (4, 5) or not all(_IDENT.match(p) for p in parts):
        return False
    # torch.ops.<namespace>: never one of torch.ops' own attributes (import_module, load_library,
    # loaded_libraries); the namespaces it has made are fine
    ns = parts[2]
    own = hasattr(type(torch.ops), ns) or not isinstance(vars(torch.ops).get(ns, torch.ops.aten), types.ModuleType)
    # aten names Python's operators __and__, __or__, ...; never a module's own dunders (__class__)
    op_ok = "__" not in parts[3] or parts[3][2:-2].isalpha() and not hasattr(types.ModuleType, parts[3])
    return "__" not in ns and "__" not in ".".join(parts[4:]) and op_ok and not own


def _program_strings(obj, found: list, key: str = "") -> None:
    """(kind, text) for every string in a program's JSON that torch evaluates or resolves."""
    stack = [(obj, key)]
    while stack:
        o, k = stack.pop()
        if isinstance(o, dict):
            for kk, v in o.items():
                if kk == "expr_str":
                    found.append(("symbolic size", v))
                elif kk == "target" and "inputs" in o:
                    found.append(("operator", v))
                elif kk == "guards_code" and isinstance(v, list):
                    found += [("guard", g) for g in v]
                elif kk == "range_constraints" and isinstance(v, dict):
                    found += [("symbolic size", r) for r in v]
                elif kk.endswith("name") and isinstance(v, str):
                    found.append(("name", v))
                elif kk in ("in_spec", "out_spec") and isinstance(v, str):
                    _spec_strings(v, found)
                else:
                    stack.append((v, kk))
        elif isinstance(o, list):
            stack += [(v, k) for v in o]


def _bad_key(obj) -> str | None:
    """A dict key (the saved example inputs' keyword names) torch's guard code would paste
    into the code it generates; None when every key is a plain name."""
    stack = [obj]
    while stack:
        o = stack.pop()
        if isinstance(o, dict):
            for k, v in o.items():
                if isinstance(k, str) and not _NAME.match(k):
                    return k
                stack.append(v)
        elif isinstance(o, (list, tuple)):
            stack += list(o)
    return None


def _spec_strings(text, found: list) -> None:
    """Every string in a pytree spec (in_spec / out_spec: JSON in a string, whose contexts
    are JSON in strings again): types, keyword and field names."""
    try:
        stack = [json.loads(text)]
    except (ValueError, TypeError, RecursionError):
        found.append(("name", text))
        return
    while stack:
        o = stack.pop()
        if isinstance(o, dict):
            # torch imports the module of an enum (its JSON hook) and of a defaultdict's factory
            if "__enum__" in o:
                found.append(("module", str(o.get("fqn", "")).partition(":")[0]))
            if "default_factory_module" in o:
                found.append(("module", str(o["default_factory_module"])))
            for k, v in o.items():
                if k == "context" and isinstance(v, str):
                    try:
                        v = json.loads(v)
                    except (ValueError, RecursionError):
                        pass
                stack.append(v)
        elif isinstance(o, list):
            stack += o
        elif isinstance(o, str):
            found.append(("name", o))


def check_program(z: zipfile.ZipFile, path: Path) -> None:
    """Refuse a program whose JSON holds a string torch would run as code (see above)."""
    for info in z.infolist():
        rel = _rel(info.filename)
        if not (rel.startswith("models/") and rel.endswith(".json")):
            continue
        try:
            program = json.loads(z.read(info))
        except (ValueError, UnicodeDecodeError, RecursionError) as exc:
            raise BadInputError(f"{path}: {rel} is not JSON ({first_line(exc, 120)})",
                                hint="save it with torch.export.save") from None
        found: list = []
        _program_strings(program, found)
        for kind, text in found:
            if kind == "operator":
                bad = not _target_ok(text)
            elif kind == "name":  # FX pastes attribute names into the code it generates, quotes unescaped
                bad = not _NAME.match(text)
            elif kind == "module":
                bad = text.split(".")[0] not in (*PYTREE_PACKAGES, "builtins", "collections")
            else:
                bad = not _expression_ok(text, guard=kind == "guard")
            if bad:
                shown = str(text) if len(str(text)) <= 160 else str(text)[:160] + "..."
                what = {"operator": "an operator outside torch.ops and the size operators",
                        "name": "a name that is not letters, digits, _ and .",
                        "module": f"a module to import outside {', '.join(PYTREE_PACKAGES)}"}.get(
                    kind, f"a {kind} that is not plain arithmetic on sizes")
                raise BadInputError(
                    f"{path}: {rel} holds {what} ({shown!r}); torch would run it as Python, "
                    "so the archive is refused",
                    hint="pass --trust-pickle if you trust the file (and where it came from)")


# A member deflated more than this (and bigger than BOMB_MIN once inflated) is a zip bomb's
# shape: torch.export.save stores members uncompressed, and even all-zero weights
# deflate ~1000:1 only because they are nothing but zeros.
BOMB_RATIO = 100
BOMB_MIN = 64 * 2**20


def check_sizes(path: Path) -> None:
    """Refuse an archive whose declared (uncompressed) sizes do not fit in the memory
    this process may use, or that inflates like a zip bomb, before reading any member.
    The file's bytes and every member's are held at once (the archive is read into
    memory, then torch reads each member out of it), against what is available (the
    cgroup's limit included)."""
    budget = available_memory()
    try:
        size = path.stat().st_size
        with zipfile.ZipFile(path) as z:
            infos = z.infolist()
    except zipfile.BadZipFile:
        raise BadInputError(f"{path} is not a .pt2 archive (not a zip file)",
                            hint="save it with torch.export.save(torch.export.export(model, args), path)") from None
    except OSError as exc:
        raise BadInputError(f"cannot read {path} ({exc.strerror or exc})",
                            hint="check the path and its permissions") from None
    total = size + sum(i.file_size for i in infos)
    big = max(infos, key=lambda i: i.file_size, default=None)
    gib = lambda n: f"{n / 2**30:.2f} GiB"  # noqa: E731
    packed = sum(i.compress_size for i in infos)
    if total - size > BOMB_MIN and total - size > BOMB_RATIO * max(1, packed):  # many small bombs add up too
        raise BadInputError(f"{path}: its members declare {gib(total - size)} from {packed} compressed bytes "
                            f"(largest: {_rel(big.filename)}, {gib(big.file_size)}): a zip bomb's shape; "
                            "refused before reading it",
                            hint="torch.export.save writes members uncompressed: re-save the program with it")
    if total > budget:
        raise BadInputError(f"{path}: the archive's members declare {gib(total - size)} (largest: "
                            f"{_rel(big.filename)}, {gib(big.file_size)}); with the file that is over the "
                            f"{gib(budget)} of memory available",
                            hint="run it where more memory is free (a larger container), or check the file")


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
                    loaded = torch.load(io.BytesIO(z.read(member)), weights_only=True)
                bad = _bad_key(loaded)
                if bad is None:
                    continue
                why = f"holds the input name {bad[:160]!r}, not letters, digits, _ and . (torch pastes it into code)"
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
        self.errors: list[str] = []
        self.handler = logging.Handler()
        self.handler.emit = self._emit

    def _emit(self, record) -> None:
        if record.exc_info and record.exc_info[1] is not None:
            self.errors.append(str(record.exc_info[1]))

    def __enter__(self):
        lg = logging.getLogger("torch.export")
        self.saved = lg.level, lg.propagate, list(lg.handlers)
        lg.setLevel(logging.WARNING)
        lg.propagate = False  # ours to read, not for stderr (torch attaches its own stderr handler here)
        lg.handlers[:] = [self.handler]
        return self

    def __exit__(self, *exc):
        lg = logging.getLogger("torch.export")
        lg.setLevel(self.saved[0])
        lg.propagate = self.saved[1]
        lg.handlers[:] = self.saved[2]


def load_program(path: Path, *, trust_pickle: bool = False, notes: list | None = None):
    """The ExportedProgram in a .pt2, loaded safely unless ``trust_pickle``."""
    import torch


    check_sizes(path)
    data = path.read_bytes()
    if not trust_pickle:
        check_archive(data, path)
        check_program(zipfile.ZipFile(io.BytesIO(data)), path)
    for attempt in range(3):
        with quiet_third_party(), _Capture() as cap:
            try:
                return torch.export.load(io.BytesIO(data))
            except Exception as exc:
                error = "; ".join([*cap.errors, str(exc)])
                failure = exc
        typename = _unregistered_type(error)
        if typename is None or attempt == 2:
            raise BadInputError(f"{path}: cannot load as a torch.export program "
                                f"({first_line(Exception(cap.errors[0])) if cap.errors else first_line(failure)})",
                                hint="check that it was written by torch.export.save with a compatible torch "
                                     "version") from None
        module = typename.rsplit(".", 1)[0]
        _import_for_pytree(typename, path, trust_pickle)
        if notes is not None:
            notes.append(f"imported {module} to register its output types with torch's pytree, then loaded")
    raise AssertionError("unreachable")


def _unregistered_type(text: str) -> str | None:
    """The class torch's pytree did not know, from the load error
    ("Deserializing transformers.modeling_outputs.BaseModelOutput in pytree is not registered")."""
    m = re.search(r"Deserializing ((?:[A-Za-z_]\w*\.)+[A-Za-z_]\w*) in pytree is not registered", text)
    return m.group(1) if m else None


# Packages whose output classes a .pt2 of their models names (transformers' ModelOutput,
# diffusers' and timm's outputs): importing one registers those classes with torch's
# pytree. Any other module named by an archive is refused unless --trust-pickle:
# importing it runs it.
PYTREE_PACKAGES = ("torch", "transformers", "diffusers", "timm", "torchvision")


def _import_for_pytree(typename: str, path: Path, trust_pickle: bool = False) -> None:
    module = typename.rsplit(".", 1)[0]
    top = module.split(".")[0]
    if top not in PYTREE_PACKAGES and not trust_pickle:
        raise BadInputError(f"{path}: its inputs or outputs are of type {typename}, from module {module}, which is not "
                            f"one of the packages onnxforge imports to load a program ({', '.join(PYTREE_PACKAGES)}); "
                            "importing it would run it, so the archive is refused",
                            hint="pass --trust-pickle if you trust the file and that module")
    if importlib.util.find_spec(top) is None:
        raise MissingDependencyError(f"{path} needs {top} (its outputs are {top} classes), which is not installed",
                                     hint=f"pip install {top}")
    importlib.import_module(module)
