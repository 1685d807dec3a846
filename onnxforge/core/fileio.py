"""Reading and writing files: the one place for atomic writes, overwrite rules,
hashes, and loading ONNX models with errors a user can act on."""

from __future__ import annotations

import contextlib
import hashlib
import os
import tempfile
from pathlib import Path
from typing import Iterator

from onnxforge.core.errors import BadInputError, first_line, UsageError
import fcntl
import shutil
import tomllib

PROTOBUF_LIMIT = 2 * 1024**3 - 1  # protobuf refuses to serialize messages >= 2 GiB


def sha256_file(path: str | os.PathLike) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def check_readable_file(path: str | os.PathLike, what: str = "file") -> Path:
    p = Path(path)
    if not p.exists():
        raise BadInputError(f"{what} not found: {p}", hint="check the path")
    if p.is_dir():
        raise BadInputError(f"{what} is a directory, not a file: {p}", hint="give the path of a file")
    if not os.access(p, os.R_OK):
        raise BadInputError(f"{what} is not readable: {p}", hint="check its permissions")
    if p.stat().st_size == 0:
        raise BadInputError(f"{what} is empty: {p}", hint="the file was probably not written completely")
    return p


def load_toml(path: str | os.PathLike, what: str) -> tuple[Path, dict]:
    """A readable TOML file (a release config, a zoo file) and its tables; bad TOML is a
    usage error naming the line."""

    p = check_readable_file(path, what)
    try:
        return p, tomllib.loads(p.read_text())
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise UsageError(f"{p}: not valid TOML ({exc})",
                         hint="fix the line named; TOML strings need quotes, tables [brackets]") from None


def same_file(a: Path, b: Path) -> bool:
    """The same file on disk: same resolved path, or the same inode (hard links)."""
    try:
        if a.resolve() == b.resolve():
            return True
        return a.exists() and b.exists() and os.path.samefile(a, b)
    except OSError:
        return False


def input_files(*items) -> list[Path]:
    """The files a command reads: paths as given, a factory's .py file, and the
    external data files of ONNX models."""
    out: list[Path] = []
    for item in items:
        if item is None or not isinstance(item, (str, os.PathLike)):
            continue
        text = str(item)
        head, sep, fn = text.rpartition(":")
        p = Path(head) if sep and head and fn.isidentifier() and not Path(text).exists() else Path(text)
        if not p.exists():
            continue
        if p.is_dir():
            out += [f for f in p.rglob("*") if f.is_file()]
            continue
        out.append(p)
        if p.suffix == ".onnx":
            try:
                m = load_onnx(p, graph_only=True)
                out += [p.parent / f for f in external_data_files(m)]
            except BadInputError:
                pass
    return out


def check_output_path(out: str | os.PathLike, *, force: bool, inputs=(), companions: tuple[str, ...] = (".data",),
                      what: str = "output") -> Path:
    """Refuse an output that is one of the command's inputs (always: inputs are never
    modified, --force or not), a folder, or an existing file (without --force). The
    files written beside it (``NAME.onnx.data``) follow the same rules. A missing
    parent folder is created (pipelines write into fresh folders)."""
    o = Path(out)
    files = [o] + [o.with_name(o.name + c) for c in companions]
    ins = input_files(*inputs)
    for f in files:
        for i in ins:
            if same_file(f, i):
                raise BadInputError(f"{what} {f} is an input of this command ({i}); inputs are never modified",
                                    hint="write to another path")
    if o.is_dir():
        raise BadInputError(f"{what} {o} is a directory", hint="give a file path such as model.onnx")
    for parent in [o.parent, *o.parent.parents]:
        if parent.exists() and not parent.is_dir():
            raise BadInputError(f"{what} {o}: {parent} is a file, not a folder", hint="write to another path")
    existing = [f for f in files if f.exists()]
    if existing and not force:
        raise BadInputError(f"{what} {existing[0]} exists", hint="pass --force to overwrite it")
    make_dirs(o.parent)
    _check_writable(o.parent, what, o)
    return o


def _check_writable(folder: Path, what: str, o: Path) -> None:
    """Write and remove a file in ``folder``: before any work, so a run whose --report
    cannot be written does not leave its model behind (permissions alone do not tell:
    root passes os.access on an immutable or read-only folder)."""
    try:
        fd, name = tempfile.mkstemp(prefix=".onnxforge-probe-", dir=folder)
    except OSError as exc:
        raise BadInputError(f"cannot write {what} {o} ({exc.strerror or exc})",
                            hint="check the folder's permissions, or write elsewhere") from None
    os.close(fd)
    os.unlink(name)


_CREATED: list[Path] = []  # folders this process created, removed again if they stay empty


def make_dirs(folder: Path) -> None:
    missing = [p for p in [folder, *folder.parents] if not p.exists()]
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise BadInputError(f"cannot create folder {folder} ({exc.strerror or exc})",
                            hint="check the path and its permissions") from None
    _CREATED.extend(reversed(missing))


def remove_created_dirs() -> None:
    """Remove the folders this run created and left empty (a failed run leaves no
    empty output folder behind)."""
    for d in reversed(_CREATED):
        try:
            d.rmdir()
        except OSError:
            pass
    _CREATED.clear()


@contextlib.contextmanager
def atomic_path(target: str | os.PathLike, suffix: str = "", *, overwrite: bool = True) -> Iterator[Path]:
    """Yield a temporary path beside ``target``; rename it into place on success.

    On any exception (Ctrl-C included) the temporary file is removed and the target is
    left as it was. With ``overwrite=False`` an existing target is never replaced,
    even one that appeared while we worked (another run): the rename is a link that
    fails when the name is taken.
    """
    target = Path(target)
    make_dirs(target.parent)
    try:
        fd, tmp = tempfile.mkstemp(prefix=f".{target.name}.", suffix=suffix or ".tmp", dir=target.parent)
    except OSError as exc:
        raise BadInputError(f"cannot write {target} ({exc.strerror or exc})",
                            hint="check that the folder exists, is writable and has space") from None
    os.close(fd)
    tmp_path = Path(tmp)
    try:
        try:
            yield tmp_path
            if tmp_path.exists():  # mkstemp makes 0600 files; give the usual umask-based mode
                os.chmod(tmp_path, 0o666 & ~_umask())
            place(tmp_path, target, overwrite=overwrite)
        except OSError as exc:
            raise BadInputError(f"cannot write {target} ({exc.strerror or exc})",
                                hint="check that the folder is writable and has space") from None
    finally:
        if tmp_path.exists():
            tmp_path.unlink()


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def place(src: Path, target: Path, *, overwrite: bool) -> None:
    """Rename ``src`` to ``target``; without ``overwrite``, fail if the name is taken."""
    if overwrite:
        os.replace(src, target)
        return
    try:
        os.link(src, target)
    except FileExistsError:
        raise BadInputError(f"{target} exists (another run wrote it while this one worked)",
                            hint="pass --force to overwrite it") from None
    os.unlink(src)


def atomic_write_text(target: str | os.PathLike, text: str) -> None:
    with atomic_path(target) as tmp:
        tmp.write_text(text)


def atomic_write_bytes(target: str | os.PathLike, data: bytes) -> None:
    with atomic_path(target) as tmp:
        tmp.write_bytes(data)


def load_onnx(path: str | os.PathLike, *, load_external_data: bool = True, graph_only: bool = False,
              weights_by_reference: bool = False):
    """Load an ONNX model, turning every way it can be wrong into a one-line BadInputError.
    ``graph_only``: without any weights, external or inline (the top-level initializers
    keep name, type and dims, not their bytes): what reading the graph, its inputs or its
    metadata needs. A model with inline weights otherwise costs twice their size to load
    (the file's bytes and the parsed message), on every load.
    ``weights_by_reference``: every inline top-level initializer of REF_MIN_BYTES or more
    becomes external data that points at its own bytes in ``path`` (location, offset,
    length), never read; weights already external stay where they are. For code that
    reads weights one at a time (lean_quant.py, onnx_ir's lazy tensors). Such a model
    must not go to save_onnx, which renames every external location."""
    import onnx

    p = check_readable_file(path, "model")
    try:
        model = _load_graph_only(p) if graph_only else _load_by_reference(p) if weights_by_reference else None
        model = model if model is not None else onnx.load(str(p), load_external_data=False)
    except Exception as exc:  # protobuf raises DecodeError, RuntimeError or others
        raise BadInputError(
            f"{p} is not a valid ONNX model ({type(exc).__name__}: {first_line(exc)})",
            hint="the file may be truncated or not an ONNX protobuf; re-export it",
        ) from None
    if not model.graph.node and not model.graph.output:
        raise BadInputError(
            f"{p} is not a valid ONNX model (no graph: the bytes parsed as an empty ModelProto)",
            hint="the file is probably not ONNX (text, or another format renamed .onnx)",
        )
    files = external_data_files(model, p)  # walks every graph once, within the budget (walk_graphs)
    outside = [f for f in files if not _inside(p.parent, f)]
    if outside:
        raise BadInputError(f"{p}: external data {outside[0]!r} lies outside the model's folder",
                            hint="a model may only read data files in its own folder; this one may be hostile")
    missing = [f for f in files if not (p.parent / f).is_file()]
    if missing:
        raise BadInputError(
            f"{p}: external data file(s) missing: {', '.join(sorted(missing))} "
            f"(looked in {p.parent})",
            hint="keep the data file(s) beside the model, with the names the model records",
        )
    if load_external_data and files and not graph_only and not weights_by_reference:
        from onnx.external_data_helper import load_external_data_for_model

        try:
            load_external_data_for_model(model, str(p.parent))
        except Exception as exc:
            raise BadInputError(f"{p}: cannot read external data ({first_line(exc)})") from None
    return model


def _load_graph_only(p: Path):
    """The model in ``p`` without the raw_data of its top-level initializers, read
    field by field and seeking past those bytes, so they are never read; None when the
    file does not read as expected (the full load then says what is wrong)."""
    import onnx

    try:
        with open(p, "rb", buffering=1 << 16) as f:
            data = _strip_fields(f, p.stat().st_size, {7: {5: {9: None}}})
    except (ValueError, OSError):
        return None
    return onnx.load_model_from_string(data)


REF_MIN_BYTES = 1024  # smaller tensors stay in the message, as onnx.save_model's size_threshold keeps them


def _load_by_reference(p: Path):
    """The model in ``p``, its inline initializers of REF_MIN_BYTES or more as external
    data pointing into ``p``; None when the file does not read as expected."""
    import numpy as np
    import onnx
    from onnx import TensorProto

    spans: list[tuple[int, int]] = []
    try:
        with open(p, "rb", buffering=1 << 16) as f:
            data = _strip_fields(f, p.stat().st_size, {7: {5: {9: spans}}})
    except (ValueError, OSError):
        return None
    model = onnx.load_model_from_string(data)
    # the stripped tensors, in file order: data-less, not external, and not empty
    stripped = [t for t in model.graph.initializer if t.data_location != TensorProto.EXTERNAL
                and not t.raw_data and not _typed_data(t) and int(np.prod(t.dims)) > 0]
    if len(stripped) != len(spans):
        return None  # a tensor with no data at all (an invalid model): the full load says so
    for t, (offset, length) in zip(stripped, spans):
        if t.data_type in _ITEMSIZE and int(np.prod(t.dims)) * _ITEMSIZE[t.data_type] != length:
            return None
        t.data_location = TensorProto.EXTERNAL
        for k, v in (("location", p.name), ("offset", str(offset)), ("length", str(length))):
            t.external_data.add(key=k, value=v)
    return model


# TensorProto.DataType -> bytes per element, where whole bytes (4- and 2-bit types are packed)
_ITEMSIZE = {1: 4, 2: 1, 3: 1, 4: 2, 5: 2, 6: 4, 7: 8, 9: 1, 10: 2, 11: 8, 12: 4, 13: 8, 14: 8, 15: 16, 16: 2,
             17: 1, 18: 1, 19: 1, 20: 1, 24: 1}


_NUMPY_TYPES = (1, 2, 3, 4, 5, 6, 7, 9, 10, 11, 12, 13, 14, 15)  # read straight into numpy (np.fromfile)


def initializer_value(t, base: str | os.PathLike):
    """A tensor's value, reading only its own bytes when it is external (a data file, or
    the model file itself after weights_by_reference). ``base``: the model's folder."""
    import numpy as np
    from onnx import TensorProto, helper, numpy_helper
    from onnx.external_data_helper import load_external_data_for_tensor, uses_external_data

    if not uses_external_data(t):
        return numpy_helper.to_array(t)
    if t.data_type in _NUMPY_TYPES:  # one copy: the array, not the bytes and then the array
        info = {e.key: e.value for e in t.external_data}
        count = int(np.prod(t.dims)) if len(t.dims) else 1
        arr = np.fromfile(Path(base) / info["location"], dtype=helper.tensor_dtype_to_np_dtype(t.data_type),
                          count=count, offset=int(info.get("offset", 0) or 0))
        return arr.reshape(tuple(t.dims))
    c = TensorProto()  # packed and exotic types: onnx's own decoding
    c.CopyFrom(t)
    load_external_data_for_tensor(c, str(base))
    c.data_location = TensorProto.DEFAULT
    del c.external_data[:]
    return numpy_helper.to_array(c)


def _typed_data(t) -> bool:
    return any(len(getattr(t, f)) for f in ("float_data", "int32_data", "string_data", "int64_data", "double_data",
                                             "uint64_data"))


def _strip_fields(f, end: int, plan: dict) -> bytes:
    """Protobuf message bytes from ``f`` up to ``end``, less the fields ``plan`` drops:
    field number -> None (skipped unread), a list (skipped unread when REF_MIN_BYTES or
    more, its (offset, length) appended), or the plan of the sub-message to strip
    (ModelProto.graph 7 > GraphProto.initializer 5 > TensorProto.raw_data 9)."""
    out = bytearray()
    while f.tell() < end:
        tag = _read_varint(f)
        number, wire = tag >> 3, tag & 7
        if wire == 2:
            size = _read_varint(f)
            rule = plan.get(number, ...)
            if rule is None or (isinstance(rule, list) and size >= REF_MIN_BYTES):
                if rule is not None:
                    rule.append((f.tell(), size))
                f.seek(size, os.SEEK_CUR)
                continue
            if isinstance(rule, dict):
                body = _strip_fields(f, f.tell() + size, rule)
            else:
                body = f.read(size)
                if len(body) != size:
                    raise ValueError("truncated")
            out += _varint(tag) + _varint(len(body)) + body
        elif wire in (0, 1, 5):
            raw = _varint(_read_varint(f)) if wire == 0 else f.read(8 if wire == 1 else 4)
            out += _varint(tag) + raw
        else:  # groups (wire types 3, 4) are not in onnx.proto
            raise ValueError(f"wire type {wire}")
    if f.tell() != end:
        raise ValueError("a field runs past its message")
    return bytes(out)


def _read_varint(f) -> int:
    n = shift = 0
    while True:
        b = f.read(1)
        if not b:
            raise ValueError("truncated")
        n |= (b[0] & 0x7F) << shift
        if b[0] < 0x80:
            return n
        shift += 7
        if shift > 63:
            raise ValueError("varint too long")


def _inside(base: Path, location: str) -> bool:
    if not location or Path(location).is_absolute():
        return False
    root = base.resolve()
    target = (base / location).resolve()
    return target == root or root in target.parents


def onnx_bytes(path: str | os.PathLike) -> int:
    """The model file's bytes and the external data bytes it references."""
    return Path(path).stat().st_size + sum(external_data_files(load_onnx(path, graph_only=True)).values())


def external_data_files(model, where=None) -> dict[str, int]:
    """External data file name -> bytes the model references in it."""
    from onnx.external_data_helper import uses_external_data

    files: dict[str, int] = {}
    for t in _all_tensors(model, where):
        if uses_external_data(t):
            info = {e.key: e.value for e in t.external_data}
            loc = info.get("location", "")
            files[loc] = files.get(loc, 0) + int(info.get("length", 0) or 0)
    return files


def save_onnx(model, target: str | os.PathLike, *, external_data: bool | None = None, overwrite: bool = True) -> Path:
    """Write a model atomically. External data is used when asked or when the model
    would pass the protobuf limit; its file is named after the model and lies beside it.
    With external data, ``model``'s tensors are moved out of it (onnx does that): pass
    a model you no longer need in memory.
    """
    import onnx

    target = Path(target)
    if external_data is None:
        external_data = model.ByteSize() >= PROTOBUF_LIMIT or bool(external_data_files(model))
    data_name = target.name + ".data"
    with atomic_path(target, suffix=".onnx", overwrite=overwrite) as tmp:
        if external_data:
            # The location recorded in the model is relative, so the pair can move together.
            data_tmp = target.parent / f".{data_name}.tmp"
            try:
                onnx.save_model(model, str(tmp), save_as_external_data=True, all_tensors_to_one_file=True,
                                location=data_tmp.name, size_threshold=1024)
                # rewrite the location to the final name, then move both into place
                m2 = onnx.load(str(tmp), load_external_data=False)
                for t in _all_tensors(m2):
                    for e in t.external_data:
                        if e.key == "location":
                            e.value = data_name
                onnx.save_model(m2, str(tmp))
                if data_tmp.exists():  # no file when every tensor was under the size threshold
                    os.chmod(data_tmp, 0o666 & ~_umask())
                    place(data_tmp, target.parent / data_name, overwrite=overwrite)
            finally:
                data_tmp.unlink(missing_ok=True)  # nothing half-written left beside the target
        else:
            onnx.save_model(model, str(tmp))
    return target


def _all_tensors(model, where=None):
    """Every tensor of a model: initializers and attribute tensors (Constant values) of
    every graph and function, subgraphs included, within the budget (walk_graphs)."""
    for g, _ in walk_graphs(model, where):
        yield from getattr(g, "initializer", ())
        for n in g.node:
            for a in n.attribute:
                kind = a.type or _kind(a)
                if kind == _TENSOR:
                    yield a.t
                elif kind == _TENSORS:
                    yield from a.tensors


# What onnxforge reads of a model. A graph is walked in full by every tool (ours, onnx's
# shape inference, ORT's session), and subgraphs are what grows without bound: If
# branches nested 20 deep in both branches make 2^20 subgraphs, and ORT took 246 s to
# load (twice, for simplify's checks) a 2 MB model nested 14 deep. Past any of these
# numbers a model is refused (exit 3) when it is loaded, before any tool sees it.
MAX_GRAPH_DEPTH = 16  # subgraphs (If branches, Loop and Scan bodies) inside subgraphs
MAX_SUBGRAPHS = 1024  # subgraphs in all
MAX_NODES = 1_000_000  # nodes in all: the main graph, local functions and every subgraph
_TENSOR, _GRAPH, _TENSORS, _GRAPHS = 4, 5, 9, 10  # onnx.AttributeProto.AttributeType


def has_subgraphs(graph) -> bool:
    """Whether a node of ``graph`` holds a body (If, Loop, Scan): the graph rewrites leave
    such graphs alone, since a body may read any outer name or define one."""
    return any(a.HasField("g") or len(a.graphs) for n in graph.node for a in n.attribute)


def walk_graphs(model, where=None):
    """(graph or local function, depth) for each of a model's graphs, its subgraphs
    included; a BadInputError naming ``where`` (the model's path) as soon as the model
    passes MAX_GRAPH_DEPTH, MAX_SUBGRAPHS or MAX_NODES. Iterative: a deep model does not
    reach Python's recursion limit."""
    stack = [(model.graph, 0), *((f, 0) for f in model.functions)]
    nodes = subgraphs = 0
    while stack:
        g, depth = stack.pop()
        nodes += len(g.node)
        if nodes > MAX_NODES:
            raise _over_budget(where, f"more than {MAX_NODES:,} nodes")
        yield g, depth
        for n in g.node:
            for a in n.attribute:
                kind = a.type or _kind(a)
                subs = [a.g] if kind == _GRAPH else a.graphs if kind == _GRAPHS else ()
                for sub in subs:
                    subgraphs += 1
                    if depth + 1 > MAX_GRAPH_DEPTH:
                        raise _over_budget(where, f"subgraphs nested more than {MAX_GRAPH_DEPTH} levels deep")
                    if subgraphs > MAX_SUBGRAPHS:
                        raise _over_budget(where, f"more than {MAX_SUBGRAPHS} subgraphs (If, Loop, Scan bodies)")
                    stack.append((sub, depth + 1))


def _kind(a) -> int:
    """The type of an attribute that does not declare one (old exporters), from its fields."""
    return _GRAPH if a.HasField("g") else _GRAPHS if a.graphs else _TENSOR if a.HasField("t") else \
        _TENSORS if a.tensors else 0


def _over_budget(where, what: str) -> BadInputError:
    return BadInputError(f"{where or 'the model'}: {what}, past what onnxforge reads",
                         hint=f"onnxforge reads models of at most {MAX_GRAPH_DEPTH} nested subgraph levels, "
                              f"{MAX_SUBGRAPHS} subgraphs and {MAX_NODES:,} nodes (docs/security.md); "
                              "a model this large in control flow may be hostile, or re-export it with the "
                              "branches unrolled")


def publish_model(src: str | os.PathLike, target: str | os.PathLike, *, overwrite: bool = True) -> Path:
    """Move a model (and its external data files) from a scratch folder to ``target``.

    Data files are moved first and the model last, so a reader never sees a model
    whose data is not there yet. When the target name differs, the data file is
    renamed after it and the (small) model proto rewritten to point at it.
    """
    import onnx

    src, target = Path(src), Path(target)
    model = onnx.load(str(src), load_external_data=False)
    files = external_data_files(model)
    if not files:
        os.chmod(src, 0o666 & ~_umask())
        place(src, target, overwrite=overwrite)
        return target
    renames = {}
    for i, f in enumerate(sorted(files)):
        new = target.name + ".data" if len(files) == 1 else f"{target.name}.data{i}"
        os.chmod(src.parent / f, 0o666 & ~_umask())  # the same mode as the model, not a temp file's 0600
        place(src.parent / f, target.parent / new, overwrite=overwrite)
        renames[f] = new
    for t in _all_tensors(model):
        for e in t.external_data:
            if e.key == "location":
                e.value = renames.get(e.value, e.value)
    with atomic_path(target, suffix=".onnx", overwrite=overwrite) as tmp:
        onnx.save_model(model, str(tmp))
    return target


def copy_model(model: Path, target: Path) -> None:
    """Copy a model with its external data files (their recorded names are kept)."""
    target.parent.mkdir(parents=True, exist_ok=True)
    shutil.copy(model, target)
    for f in external_data_files(load_onnx(model, graph_only=True)):
        dest = target.parent / f
        dest.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(model.parent / f, dest)


def failed_name(target: str | os.PathLike) -> Path:
    """Where --keep-failed puts a model whose checks failed: ``NAME.failed.onnx``."""
    t = Path(target)
    return t.with_name(f"{t.stem}.failed{t.suffix or '.onnx'}")


@contextlib.contextmanager
def scratch_dir(near: str | os.PathLike) -> Iterator[Path]:
    """A temp folder on the target's filesystem (so publishing is a rename), removed after."""
    parent = Path(near).parent
    make_dirs(parent)
    try:
        d = Path(tempfile.mkdtemp(prefix=".onnxforge-", dir=parent))
    except OSError as exc:
        raise BadInputError(f"cannot write in {parent} ({exc.strerror or exc})",
                            hint="check that the folder is writable and has space") from None
    try:
        yield d
    finally:
        shutil.rmtree(d, ignore_errors=True)


@contextlib.contextmanager
def folder_lock(folder: str | os.PathLike, what: str = "onnxforge run") -> Iterator[None]:
    """Hold ``folder`` for this process: a second run writing there fails at once
    (exit 3) instead of interleaving two results. The lock is an flock on
    ``.onnxforge-lock-NAME`` beside the folder (the folder itself may not exist yet,
    and a refused run must not create it): the kernel drops it when the process dies,
    even by SIGKILL, so a dead run's file never blocks the next one. The file is
    removed on every exit this process sees (Ctrl-C and SIGTERM unwind through here)."""
    target = Path(folder).resolve()  # one lock for every spelling of the folder (./out, a link to it)
    path = target.parent / f".onnxforge-lock-{target.name}"
    make_dirs(target.parent)
    while True:
        try:
            fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
        except OSError as exc:
            raise BadInputError(f"cannot write in {target.parent} ({exc.strerror or exc})",
                                hint="check that the folder is writable") from None
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            pid = os.read(fd, 32).decode(errors="replace").strip() or "unknown"
            os.close(fd)
            raise BadInputError(f"{folder} is being written by another {what} (pid {pid})",
                                hint="wait for it to finish, or write to another folder") from None
        try:  # the holder before us removes the file before unlocking: ours must still be the file at that name
            if os.stat(path).st_ino == os.fstat(fd).st_ino:
                break
        except FileNotFoundError:
            pass
        os.close(fd)
    try:
        os.ftruncate(fd, 0)
        os.write(fd, f"{os.getpid()}\n".encode())
        yield
    finally:
        with contextlib.suppress(OSError):
            path.unlink()
        os.close(fd)


def _varint(n: int) -> bytes:
    out = bytearray()
    while True:
        b = n & 0x7F
        n >>= 7
        if n:
            out.append(b | 0x80)
        else:
            out.append(b)
            return bytes(out)


def inline_external_data(src: str | os.PathLike, target: str | os.PathLike, *, overwrite: bool = True) -> Path:
    """Write ``src`` (a model with external data) as one self-contained file,
    copying each tensor's bytes from its data file in chunks.

    Loading the model with its data and serializing it would hold the weights twice
    (the protobuf and its bytes). Protobuf fields may come in any order, so the graph
    is written as its small part followed by each initializer, and each initializer
    as its small part followed by its ``raw_data`` field, streamed from disk.
    """
    import onnx
    from onnx.external_data_helper import uses_external_data

    src, target = Path(src), Path(target)
    model = onnx.load(str(src), load_external_data=False)
    n_top = sum(uses_external_data(t) for t in model.graph.initializer)
    if sum(uses_external_data(t) for t in _all_tensors(model)) != n_top:
        # external tensors outside the top-level initializers (subgraphs, attributes): plain path
        save_onnx(load_onnx(src), target, external_data=False, overwrite=overwrite)
        return target

    parts = []  # (head bytes, data file, offset, length) per initializer
    for t in model.graph.initializer:
        small = onnx.TensorProto()
        small.ParseFromString(t.SerializeToString())  # its own arena: nothing shared with `model`
        if not uses_external_data(small):
            parts.append((small.SerializeToString(), None, 0, 0))
            continue
        info = {e.key: e.value for e in small.external_data}
        data_file = src.parent / info["location"]
        offset = int(info.get("offset", 0) or 0)
        length = int(info["length"]) if info.get("length") else data_file.stat().st_size - offset
        del small.external_data[:]
        small.ClearField("data_location")
        parts.append((small.SerializeToString(), data_file, offset, length))

    graph_small = onnx.GraphProto()
    graph_small.ParseFromString(model.graph.SerializeToString())
    del graph_small.initializer[:]
    g0 = graph_small.SerializeToString()
    sizes = [len(h) + (1 + len(_varint(n)) + n if f is not None else 0) for h, f, _, n in parts]
    graph_len = len(g0) + sum(1 + len(_varint(s)) + s for s in sizes)
    if graph_len >= PROTOBUF_LIMIT:
        raise BadInputError(f"{src}: the weights exceed 2 GB; the model must keep external data",
                            hint="pass --external-data")
    head = onnx.ModelProto()
    head.ParseFromString(model.SerializeToString())
    head.ClearField("graph")
    with atomic_path(target, suffix=".onnx", overwrite=overwrite) as tmp:
        with open(tmp, "wb") as out:
            out.write(head.SerializeToString())
            out.write(b"\x3a" + _varint(graph_len))  # ModelProto.graph (7), length-delimited
            out.write(g0)
            for (h, data_file, offset, length), size in zip(parts, sizes):
                out.write(b"\x2a" + _varint(size))  # GraphProto.initializer (5)
                out.write(h)
                if data_file is None:
                    continue
                out.write(b"\x4a" + _varint(length))  # TensorProto.raw_data (9)
                copy_range(data_file, offset, length, out)
    return target


def copy_range(src, offset: int, length: int, out) -> None:
    """Copy ``length`` bytes of ``src`` from ``offset`` into the open file ``out``, 16 MiB
    at a time (an external-data tensor of several GB never sits in memory whole)."""
    with open(src, "rb") as f:
        f.seek(offset)
        left = length
        while left:
            chunk = f.read(min(left, 1 << 24))
            if not chunk:
                raise BadInputError(f"{src} is shorter than the model says", hint="the external data file is truncated")
            out.write(chunk)
            left -= len(chunk)


@contextlib.contextmanager
def working_dir(folder: Path) -> Iterator[None]:
    """Run third-party code with ``folder`` as the current directory: ORT's symbolic
    shape inference drops ``sym_shape_infer_temp.onnx`` and its data into the current
    directory when it gives up, and no command may write outside its outputs."""
    previous = os.getcwd()
    os.chdir(folder)
    try:
        yield
    finally:
        os.chdir(previous)
