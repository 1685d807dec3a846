"""Calibration data for static quantization: loading, checking, streaming, and the
memory estimate that keeps histogram methods from exhausting the machine.

Data: a ``.npz`` whose arrays carry a leading sample axis (keys = input names; for an
input whose first dim is a symbolic batch, an array of the input's own rank is read
as rows, each row a sample of batch 1), a
folder of numbered sample folders (or of ``NAME.npy`` files holding a sample axis),
or ``"random"`` (seeded generated samples: a smoke test, not a meaningful calibration).
Samples stream to ORT one at a time: an .npz's arrays are read once and sliced
(views, no copies); sample folders are read from disk as they are needed.
"""

from __future__ import annotations

import logging
import math
from pathlib import Path
from typing import Iterator, Mapping, Sequence

from onnxforge.core.errors import BadInputError
from onnxforge.core.types import TensorSpec
import numpy as np
from onnxforge.core.fileio import load_onnx
from onnxforge.data.generate import generate_inputs
from onnxforge.data.samples import check_sample_fits, load_samples

log = logging.getLogger("onnxforge")


def iter_samples(data: str | Path, specs: Sequence[TensorSpec], *, samples: int | None, seed: int = 0,
                 dims: Mapping[str, int] | None = None, val_ranges: Mapping | None = None,
                 norms: Mapping | None = None) -> tuple[int, Iterator[dict]]:
    """(number of samples, iterator over them). Every sample is checked against the
    model's inputs (names, dtype, rank, fixed dims) and for NaN/Inf before it is used."""

    names = [s.name for s in specs]
    if str(data) == "random":
        n = samples or 32
        return n, (generate_inputs(specs, seed=seed + i, dims=dims, val_ranges=val_ranges, norms=norms)
                   for i in range(n))
    p = Path(data)
    if not p.exists():
        raise BadInputError(f"calibration data not found: {p}", hint="give a .npz, a folder of samples, or 'random'")
    if p.is_file():
        if p.suffix != ".npz":
            raise BadInputError(f"calibration data {p} must be a .npz or a folder",
                                hint="numpy.savez(path, x=np.stack(samples)) with one key per input")
        try:
            z = np.load(p, allow_pickle=False)
            arrays = {k: z[k] for k in z.files}
        except Exception as exc:
            raise BadInputError(f"cannot read {p} as .npz ({exc})") from None
        missing = [n for n in names if n not in arrays]
        extra = [k for k in arrays if k not in names]
        if missing or extra:
            raise BadInputError(
                f"calibration {p}: " + "; ".join(x for x in (
                    f"missing input(s) {', '.join(missing)}" if missing else "",
                    f"unknown key(s) {', '.join(extra)}" if extra else "") if x),
                hint="keys must be the model's inputs: " + ", ".join(str(s) for s in specs) + " (with a leading sample axis)")
        counts = {k: (len(arrays[k]) if arrays[k].ndim else 0) for k in names}
        spec_rank = {s.name: len(s.shape) for s in specs}
        by_spec = {s.name: s for s in specs}
        # rows of a batch-shaped array are samples: x[200, 64] for an input x[batch, 64]
        batch_rows = all(arrays[k].ndim == spec_rank[k] and spec_rank[k] and not isinstance(by_spec[k].shape[0], int)
                         for k in names)
        for k in names:
            if batch_rows:
                continue
            if arrays[k].ndim != spec_rank[k] + 1:
                raise BadInputError(
                    f"calibration {p}: {k} has shape {list(arrays[k].shape)}; expected a leading sample axis "
                    f"on top of {next(str(s) for s in specs if s.name == k)}",
                    hint="stack samples: numpy.savez(path, NAME=np.stack(list_of_samples))")
        n_avail = min(counts.values())
        if len(set(counts.values())) != 1:
            raise BadInputError(f"calibration {p}: inputs have different sample counts {counts}")
        n = _take(n_avail, samples, p)

        def gen():
            for i in range(n):
                yield {k: arrays[k][i:i + 1] if batch_rows else arrays[k][i] for k in names}

        return n, _checked(gen(), specs, str(p))

    dirs = sorted([d for d in p.iterdir() if d.is_dir()], key=lambda d: (len(d.name), d.name))
    if dirs:
        n = _take(len(dirs), samples, p)

        def gen_dirs():
            for d in dirs[:n]:
                yield load_samples(d, names=names)[0]

        return n, _checked(gen_dirs(), specs, str(p))
    # a flat folder of NAME.npy files, each with a sample axis
    stacked = load_samples(p, names=names)[0]
    return iter_samples_from_arrays(stacked, specs, samples, str(p))


def iter_samples_from_arrays(arrays, specs, samples, where):
    n_avail = min(len(v) for v in arrays.values())
    n = _take(n_avail, samples, where)
    return n, _checked(({k: v[i] for k, v in arrays.items()} for i in range(n)), specs, where)


def _take(available: int, wanted: int | None, where) -> int:
    if available == 0:
        raise BadInputError(f"calibration data {where} holds no samples")
    if wanted is not None and wanted > available:
        raise BadInputError(f"calibration data {where} holds {available} sample(s), --samples asks for {wanted}",
                            hint=f"pass --samples {available} or add data")
    return wanted or available


def _checked(it: Iterator[dict], specs, where) -> Iterator[dict]:

    for i, sample in enumerate(it):
        check_sample_fits(sample, specs, source=f"calibration sample {i} of {where}")
        for k, v in sample.items():
            a = np.asarray(v)
            if a.dtype.kind == "f" and not np.isfinite(a).all():
                raise BadInputError(f"calibration sample {i} of {where}: input {k} holds NaN or Inf",
                                    hint="clean the data: calibration ranges would be meaningless")
        yield sample


class StreamingReader:
    """An ORT CalibrationDataReader over an iterator, with an optional progress callback."""

    def __init__(self, it: Iterator[dict], total: int, on_sample=None):
        self._it = iter(it)
        self.total = total
        self.seen = 0
        self._on = on_sample

    def get_next(self):
        sample = next(self._it, None)
        if sample is not None:
            self.seen += 1
            if self._on:
                self._on(self.seen, self.total)
        return sample

    def rewind(self):  # ORT calls it for multi-pass methods; a stream cannot rewind
        raise RuntimeError("calibration data is streamed once")


def activation_bytes(model_path, dims: Mapping[str, int], sample_shapes: Mapping[str, tuple]) -> tuple[int, int]:
    """(bytes of float activations for one sample, count of tensors whose size is unknown),
    from ONNX shape inference at the calibration shapes."""
    import onnx
    from onnx import shape_inference


    m = load_onnx(model_path, weights_by_reference=True)  # small constants (Reshape shapes) stay in it
    for vi in m.graph.input:
        if vi.name in sample_shapes:
            dims_proto = vi.type.tensor_type.shape.dim
            for d, v in zip(dims_proto, sample_shapes[vi.name]):
                d.ClearField("dim_param")
                d.dim_value = int(v)
    try:
        inferred = shape_inference.infer_shapes(m, strict_mode=False)
    except Exception:
        inferred = m
    total, unknown = 0, 0
    for vi in list(inferred.graph.value_info) + list(inferred.graph.output):
        tt = vi.type.tensor_type
        if tt.elem_type not in (onnx.TensorProto.FLOAT, onnx.TensorProto.FLOAT16):
            continue
        shape = [d.dim_value if d.HasField("dim_value") else None for d in tt.shape.dim]
        if not tt.HasField("shape") or any(s is None for s in shape):
            unknown += 1
            continue
        total += math.prod(shape) * 4
    return total, unknown


def histogram_memory_estimate(per_sample: int, samples: int) -> int:
    """ORT's histogram calibraters keep every sample's activations before building
    histograms, and concatenate them per tensor: about twice the activations of all
    samples at the peak."""
    return 2 * per_sample * samples
