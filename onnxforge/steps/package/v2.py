"""The V2 (Open Inference) protocol's tensors: datatypes, JSON and gRPC encodings.

Shared by the MLServer runtime (server side) and serve_check (client side), so both
agree on one mapping. Only numpy here; the gRPC message module is passed in, because
which generated module may be imported depends on the process (see check.py).
"""

from __future__ import annotations

import struct
from typing import Mapping, Sequence

from onnxforge.core.errors import BadInputError
from onnxforge.core.types import TensorSpec
import numpy as np

V2_DATATYPES = {
    "bool": "BOOL", "uint8": "UINT8", "uint16": "UINT16", "uint32": "UINT32", "uint64": "UINT64",
    "int8": "INT8", "int16": "INT16", "int32": "INT32", "int64": "INT64",
    "float16": "FP16", "float32": "FP32", "float64": "FP64", "str": "BYTES",
}
NUMPY_OF = {v: k for k, v in V2_DATATYPES.items()}

# InferTensorContents field per datatype (FP16 has none: it travels as raw bytes)
_CONTENTS = {
    "BOOL": "bool_contents", "UINT8": "uint_contents", "UINT16": "uint_contents", "UINT32": "uint_contents",
    "UINT64": "uint64_contents", "INT8": "int_contents", "INT16": "int_contents", "INT32": "int_contents",
    "INT64": "int64_contents", "FP32": "fp32_contents", "FP64": "fp64_contents", "BYTES": "bytes_contents",
}


def v2_datatype(spec: TensorSpec) -> str:
    """The V2 datatype of a model tensor, or a BadInputError for one V2 cannot carry."""
    if spec.dtype not in V2_DATATYPES:
        raise BadInputError(
            f"tensor {spec.name} is {spec.dtype}, which the V2 inference protocol cannot carry",
            hint="sequence/map outputs (sklearn ZipMap) need re-converting without --zipmap; "
                 "bfloat16 tensors need a float32 or float16 interface",
        )
    return V2_DATATYPES[spec.dtype]


def v2_shape(spec: TensorSpec) -> list[int]:
    """Model-metadata shape: symbolic and unknown dims are -1."""
    return [d if isinstance(d, int) else -1 for d in spec.shape]


def numpy_of(datatype: str):
    name = NUMPY_OF[datatype]
    return np.dtype(object) if name == "str" else np.dtype(name)


def as_text(values):
    """Strings and bytes -> a numpy object array of str (ORT's string tensors)."""
    flat = [v.decode("utf-8") if isinstance(v, (bytes, bytearray)) else str(v) for v in values]
    return np.array(flat, dtype=object)


def datatype_of(arr) -> str:
    kind = arr.dtype.kind
    if kind in "OUS":
        return "BYTES"
    if arr.dtype.name not in V2_DATATYPES:
        raise BadInputError(f"no V2 datatype for numpy {arr.dtype}")
    return V2_DATATYPES[arr.dtype.name]


# ----------------------------------------------------------------------------- JSON


def json_tensor(name: str, arr) -> dict:
    arr = np.asarray(arr)
    dt = datatype_of(arr)
    data = [str(v) for v in arr.reshape(-1)] if dt == "BYTES" else arr.reshape(-1).tolist()
    return {"name": name, "shape": list(arr.shape), "datatype": dt, "data": data}


def json_request(feeds: Mapping[str, object]) -> dict:
    return {"inputs": [json_tensor(k, v) for k, v in feeds.items()]}


def from_json_tensor(t: Mapping) -> "object":
    dt, shape, data = t["datatype"], t["shape"], t["data"]
    if dt == "BYTES":
        return as_text(np.asarray(data, dtype=object).reshape(-1)).reshape(shape)
    if dt.startswith("FP"):  # JSON has no NaN: MLServer writes null, which must stay a NaN (parity names it)
        data = [float("nan") if v is None else v for v in np.asarray(data, dtype=object).reshape(-1)]
    return np.asarray(data, dtype=numpy_of(dt)).reshape(shape)


# ----------------------------------------------------------------------------- gRPC


def raw_bytes(arr, datatype: str) -> bytes:
    """One tensor as raw_input_contents: little-endian values, or for BYTES each
    element's 4-byte length and then its bytes."""
    flat = np.asarray(arr).reshape(-1)
    if datatype == "BYTES":
        items = [v if isinstance(v, bytes) else str(v).encode("utf-8") for v in flat]
        return b"".join(struct.pack("<I", len(b)) + b for b in items)
    return flat.astype(numpy_of(datatype).newbyteorder("<")).tobytes()


def grpc_request(pb, model_name: str, feeds: Mapping[str, object], *, datatypes: Mapping[str, str] | None = None,
                 shapes: Mapping[str, Sequence[int]] | None = None, raw: bool = False):
    """A ModelInferRequest from ``pb`` (a generated ``inference`` service module).
    ``datatypes``/``shapes`` override what the arrays say (for malformed requests).
    ``raw`` sends every input as raw_input_contents, and so asks for raw outputs: FP16
    has no typed field in InferTensorContents (MLServer would fail to put an FP16
    output in one), so a model with an FP16 tensor needs it; a request mixes no forms."""
    req = pb.ModelInferRequest(model_name=model_name)
    arrays = {name: np.asarray(arr) for name, arr in feeds.items()}
    dts = {name: (datatypes or {}).get(name) or datatype_of(arr) for name, arr in arrays.items()}
    raw = raw or "FP16" in dts.values()
    for name, arr in arrays.items():
        dt = dts[name]
        t = req.inputs.add(name=name, datatype=dt, shape=list((shapes or {}).get(name, arr.shape)))
        if raw:
            req.raw_input_contents.append(raw_bytes(arr, dt))
            continue
        flat = arr.reshape(-1)
        if dt == "BYTES":
            values = [v if isinstance(v, bytes) else str(v).encode("utf-8") for v in flat]
        else:
            values = flat.tolist()
        getattr(t.contents, _CONTENTS[dt]).extend(values)
    return req


def from_grpc_response(resp) -> dict:
    """Output arrays of a ModelInferResponse (typed contents or raw_output_contents)."""
    out = {}
    for i, o in enumerate(resp.outputs):
        shape = list(o.shape)
        if resp.raw_output_contents:
            raw = resp.raw_output_contents[i]
            if o.datatype == "BYTES":
                values, pos = [], 0
                while pos < len(raw):
                    (n,) = struct.unpack_from("<I", raw, pos)
                    values.append(raw[pos + 4:pos + 4 + n])
                    pos += 4 + n
                out[o.name] = as_text(values).reshape(shape)
            else:
                out[o.name] = np.frombuffer(raw, dtype=numpy_of(o.datatype)).reshape(shape)
            continue
        field = _CONTENTS.get(o.datatype, "bytes_contents")
        values = list(getattr(o.contents, field))
        if o.datatype == "BYTES":
            out[o.name] = as_text(values).reshape(shape)
        elif o.datatype == "FP16":
            out[o.name] = np.frombuffer(b"".join(values), dtype=np.float16).reshape(shape)
        else:
            out[o.name] = np.asarray(values, dtype=numpy_of(o.datatype)).reshape(shape)
    return out
