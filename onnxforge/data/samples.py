"""Input samples loaded from files: .npz (one sample, or numbered NAME keys for
several), .npy, CSV, folders of NAME.npy and ONNX test-data folders (.pb), and
written back (``save_samples``); ``check_sample_fits`` checks one against the specs."""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Mapping, Sequence

from onnxforge.core.errors import BadInputError, first_line
from onnxforge.core.types import TensorSpec
from onnxforge.data.specs import numpy_dtype
from urllib.parse import unquote
import csv
import io
import math
import numpy as np
from onnxforge.core.fileio import atomic_write_bytes, check_readable_file


def _number(text: str) -> float | None:
    if text.strip() == "":
        return math.nan  # an empty cell in a numeric column is a missing value
    try:
        return float(text)
    except ValueError:
        return None


def read_csv(path: str | os.PathLike) -> dict:
    """A headed CSV -> {column: [N] array}: a column of numbers (empty cells are NaN)
    is float64, a column of text is str. A BOM is not part of the first name; a row
    with too few or too many fields, or a column mixing numbers and text, is bad input."""


    p = check_readable_file(path, "CSV")
    try:
        with open(p, newline="", encoding="utf-8-sig") as f:
            rows = list(csv.reader(f))
    except UnicodeDecodeError as exc:
        raise BadInputError(f"{p} is not UTF-8 text ({exc.reason} at byte {exc.start})",
                            hint="save the CSV as UTF-8") from None
    except csv.Error as exc:
        raise BadInputError(f"{p}: not a readable CSV ({exc})") from None
    rows = [r for r in rows if r]
    if len(rows) < 2 or not rows[0]:
        raise BadInputError(f"{p}: a CSV needs a header row and at least one data row")
    header = [h.strip() for h in rows[0]]
    for i, r in enumerate(rows[1:], start=2):
        if len(r) != len(header):
            raise BadInputError(f"{p} line {i}: {len(r)} fields, the header has {len(header)}",
                                hint="every row needs a value (or an empty cell) for every column")
    cols: dict = {}
    for j, name in enumerate(header):
        values = [r[j] for r in rows[1:]]
        nums = [_number(v) for v in values]
        if all(n is not None for n in nums):
            cols[name] = np.array(nums, dtype=np.float64)
        elif any(n is not None and v.strip() for n, v in zip(nums, values)):
            bad = next(i for i, n in enumerate(nums) if n is None)
            raise BadInputError(f"{p}: column {name!r} mixes numbers and text (line {bad + 2}: {values[bad]!r})",
                                hint="make the column all numbers (empty cells are missing values) or all text")
        else:
            cols[name] = np.array(values, dtype=object)
    return cols


def _read_pb_tensor(path: Path):
    import onnx
    from onnx import numpy_helper

    t = onnx.TensorProto()
    try:
        t.ParseFromString(path.read_bytes())
        return t.name, numpy_helper.to_array(t)
    except Exception as exc:
        raise BadInputError(f"{path} is not a serialized TensorProto ({exc})") from None


def _load_npy(path: Path):
    try:
        return np.load(path, allow_pickle=False)
    except Exception as exc:
        raise BadInputError(f"cannot read {path} as .npy ({exc})", hint="save arrays with numpy.save") from None


def _load_folder_sample(folder: Path, names: Sequence[str] | None, prefix: str = "input") -> dict:
    """One sample from a folder: NAME.npy files, or input_N.pb files (ONNX test data)."""
    pbs = sorted(folder.glob(f"{prefix}_*.pb"), key=lambda p: int(re.sub(r"\D", "", p.stem) or 0))
    if pbs:
        out = {}
        for i, p in enumerate(pbs):
            name, arr = _read_pb_tensor(p)
            key = names[i] if names and i < len(names) else (name or f"{prefix}_{i}")
            out[key] = arr
        return out
    npys = sorted(folder.glob("*.npy"))
    return {_unquote(p.stem): _load_npy(p) for p in npys}


def _unquote(stem: str) -> str:
    # Tensor names with '/' cannot be file names; '%2F' and '__' are the usual escapes.

    return unquote(stem)


def read_npz(path, what: str = "") -> dict:
    """Every array of a .npz, read without pickles, or a BadInputError that says what the
    file is instead (a single .npy array reached numpy's NpzFile code as a "context
    manager" error)."""

    where = f"{what}: " if what else ""
    hint = "save it with numpy.savez(path, INPUT=array, ...)"
    try:
        z = np.load(path, allow_pickle=False)
    except Exception as exc:
        raise BadInputError(f"{where}cannot read {path} as .npz ({first_line(exc)})", hint=hint) from None
    if not isinstance(z, np.lib.npyio.NpzFile):
        raise BadInputError(f"{where}{path} holds one array (.npy), not a .npz of named arrays", hint=hint)
    with z:
        try:
            return {k: z[k] for k in z.files}
        except Exception as exc:
            raise BadInputError(f"{where}cannot read {path} as .npz ({first_line(exc)})", hint=hint) from None


def load_samples(
    path: str | os.PathLike,
    *,
    names: Sequence[str] | None = None,
    stacked: bool = False,
    prefix: str = "input",
) -> list[dict]:
    """Load input samples. Returns a list of {name: array}.

    - ``.npz``: keys are tensor names. With ``stacked`` the arrays carry a leading
      sample axis and are split into samples (calibration data); otherwise the file
      is one sample fed as is.
    - ``.npy``: one array, for a model with a single input (``names`` gives its name).
    - a folder of ``NAME.npy`` files: one sample.
    - a folder of numbered sample folders (``0/``, ``1/``, or ONNX's
      ``test_data_set_0/``): one sample each, holding ``NAME.npy`` or ``input_N.pb``.
    - a folder of ``input_N.pb`` files: one sample (names by position from ``names``).
    """
    p = Path(path)
    if not p.exists():
        raise BadInputError(f"inputs not found: {p}", hint="check the path")
    if p.is_file():
        check_ok = p.stat().st_size > 0
        if not check_ok:
            raise BadInputError(f"inputs file is empty: {p}")
        if p.suffix == ".npz":
            arrays = read_npz(p)
            if not arrays:
                raise BadInputError(f"{p} holds no arrays")
            grouped = _group_sample_keys(arrays)
            if grouped is not None:
                return grouped
            if not stacked:
                return [arrays]
            counts = {k: len(v) if v.ndim else 0 for k, v in arrays.items()}
            n = min(counts.values())
            if n == 0 or len(set(counts.values())) != 1:
                raise BadInputError(
                    f"{p}: arrays must share a leading sample axis, got {counts}",
                    hint="stack samples along axis 0: numpy.savez(path, x=np.stack(samples))",
                )
            return [{k: v[i] for k, v in arrays.items()} for i in range(n)]
        if p.suffix == ".npy":
            arr = _load_npy(p)
            if not names or len(names) != 1:
                raise BadInputError(f"{p}: a single .npy needs a model with exactly one input", hint="use a .npz with one key per input")
            return [{names[0]: a} for a in arr] if stacked else [{names[0]: arr}]
        if p.suffix == ".pb":
            name, arr = _read_pb_tensor(p)
            key = names[0] if names and len(names) == 1 else name
            return [{key: arr}]
        if p.suffix == ".csv":  # one [N, 1] input per column (ColumnTransformer pipelines)
            return [{k: v.reshape(-1, 1) for k, v in read_csv(p).items()}]
        raise BadInputError(f"unsupported inputs file {p}", hint="use .npz, .npy, .csv, or a folder of .npy files")
    subdirs = sorted([d for d in p.iterdir() if d.is_dir() and re.search(r"\d+$", d.name)],
                     key=lambda d: int(re.search(r"(\d+)$", d.name).group(1)))
    if subdirs:
        samples = [_load_folder_sample(d, names, prefix) for d in subdirs]
        samples = [s for s in samples if s]
    else:
        one = _load_folder_sample(p, names, prefix)
        samples = [one] if one else []
    if not samples:
        raise BadInputError(
            f"no samples in {p}",
            hint="put NAME.npy files there, or numbered folders 0/, 1/ ... each holding them",
        )
    return samples


_SAMPLE_KEY = re.compile(r"^(\d+)/(.+)$")


def _group_sample_keys(arrays: Mapping[str, object]) -> list[dict] | None:
    """Keys ``0/x``, ``1/x`` ... hold one sample each (what save_samples writes for
    several samples, whose shapes may differ); None when the keys are plain names."""
    matches = {k: _SAMPLE_KEY.match(k) for k in arrays}
    if not all(matches.values()):
        return None
    groups: dict[int, dict] = {}
    for k, m in matches.items():
        groups.setdefault(int(m.group(1)), {})[m.group(2)] = arrays[k]
    return [groups[i] for i in sorted(groups)]


def save_samples(path: str | os.PathLike, samples: Sequence[Mapping[str, object]]) -> None:
    """Write samples as one .npz: one sample with plain keys (NAME), several with
    keys ``I/NAME`` so samples of different shapes fit. load_samples reads both."""


    if len(samples) == 1:
        arrays = dict(samples[0])
    else:
        arrays = {f"{i}/{k}": v for i, s in enumerate(samples) for k, v in s.items()}
    buf = io.BytesIO()
    np.savez(buf, **arrays)
    atomic_write_bytes(path, buf.getvalue())


def check_sample_fits(sample: Mapping[str, object], specs: Sequence[TensorSpec], source: str = "inputs") -> None:
    """Name, dtype and rank/fixed-dim checks before running, so the error names the
    tensor and the expected spec instead of ORT's message."""
    want = {s.name: s for s in specs}
    missing = [n for n in want if n not in sample]
    extra = [n for n in sample if n not in want]
    if missing:
        raise BadInputError(
            f"{source}: missing input(s) {', '.join(missing)}; got {', '.join(sample) or 'nothing'}",
            hint="expected " + ", ".join(str(s) for s in specs),
        )
    if extra:
        raise BadInputError(
            f"{source}: unknown input(s) {', '.join(extra)}; the model takes {', '.join(want)}",
            hint="rename the arrays to the model's input names",
        )
    for name, s in want.items():
        arr = np.asarray(sample[name])
        if len(arr.shape) != len(s.shape):
            raise BadInputError(
                f"{source}: input {name} has shape {list(arr.shape)}, the model expects rank {len(s.shape)} ({s})",
                hint="reshape the data or check the input order",
            )
        for i, (got, exp) in enumerate(zip(arr.shape, s.shape)):
            if isinstance(exp, int) and exp != got:
                raise BadInputError(
                    f"{source}: input {name} dim {i} is {got}, the model fixes it to {exp} ({s})",
                    hint="resize the data to the model's shape",
                )
        if s.dtype not in ("str", "unknown") and arr.dtype != numpy_dtype(s.dtype):
            raise BadInputError(
                f"{source}: input {name} is {arr.dtype}, the model expects {s.dtype}",
                hint=f"cast it: arr.astype('{s.dtype}')",
            )
