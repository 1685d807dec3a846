"""An MLServer runtime that serves an ONNX model on ONNX Runtime.

This file is self-contained: it imports only mlserver, onnxruntime, numpy and the
standard library, because ``onnxforge package`` copies it byte for byte into every
MLServer (and MLflow) folder as ``onnxforge_runtime.py``, and ``model-settings.json``
names ``"implementation": "onnxforge_runtime.OnnxRuntimeModel"``: a folder serves where
onnxforge is not installed (its requirements.txt pins mlserver, onnxruntime, numpy).
The copy is the one source of truth: serve-check runs it without --trust-code only when
its sha256 equals this file's. Nothing from onnxforge may be imported here.

The module is not called ``mlserver`` because ``mlserver start`` puts the current folder
and the model folder at the front of ``sys.path``: a module named ``mlserver`` would
shadow the server itself. MLServer reloads this module when it loads a model, so it
keeps no state at module level. It imports mlserver, so it runs only inside the server's
process: mlserver and ``tritonclient.grpc`` register the same ``inference.*`` protobuf
symbols and cannot share a process.

Parameters (``parameters.extra`` in model-settings.json): ``provider`` (cpu, cuda, ...,
or a full ORT name; the model fails to load rather than fall back to another provider),
``threads`` (intra-op threads), ``spinning`` (ORT's intra-op spinning; unset keeps ORT's
default: on and off measured the same within noise on the 2-core machine, under load).
Requests are checked against the model before ORT sees them: an unknown or missing
input, a wrong datatype, a wrong rank or fixed dim, data that does not fill the shape,
or an unknown requested output is a 400 (gRPC INVALID_ARGUMENT) naming the tensor and
what the model expects.
"""

from __future__ import annotations

import math

from mlserver import MLModel
from mlserver.errors import InferenceError
from mlserver.types import InferenceRequest, InferenceResponse, ResponseOutput
from mlserver.utils import get_model_uri
import re
import numpy as np

# ORT's tensor type -> V2 datatype (the table of onnxforge.serving.v2, which a test holds equal)
V2_OF_ORT = {
    "tensor(bool)": "BOOL", "tensor(uint8)": "UINT8", "tensor(uint16)": "UINT16", "tensor(uint32)": "UINT32",
    "tensor(uint64)": "UINT64", "tensor(int8)": "INT8", "tensor(int16)": "INT16", "tensor(int32)": "INT32",
    "tensor(int64)": "INT64", "tensor(float16)": "FP16", "tensor(float)": "FP32", "tensor(double)": "FP64",
    "tensor(string)": "BYTES",
}
NUMPY_OF_V2 = {"BOOL": "bool", "UINT8": "uint8", "UINT16": "uint16", "UINT32": "uint32", "UINT64": "uint64",
               "INT8": "int8", "INT16": "int16", "INT32": "int32", "INT64": "int64", "FP16": "float16",
               "FP32": "float32", "FP64": "float64", "BYTES": "object"}
PROVIDERS = {"cpu": "CPUExecutionProvider", "cuda": "CUDAExecutionProvider", "tensorrt": "TensorrtExecutionProvider",
             "openvino": "OpenVINOExecutionProvider", "dml": "DmlExecutionProvider", "rocm": "ROCMExecutionProvider",
             "coreml": "CoreMLExecutionProvider", "qnn": "QNNExecutionProvider"}


def _session(uri: str, provider: str, threads, spinning):
    """An InferenceSession on ``provider`` or a one-line RuntimeError: never a silent fallback."""
    import onnxruntime as ort

    full = PROVIDERS.get(str(provider).lower(), provider)
    if full not in ort.get_available_providers():
        raise RuntimeError(f"execution provider {provider} ({full}) is not available; "
                           f"available: {', '.join(ort.get_available_providers())}")
    so = ort.SessionOptions()
    if threads:
        so.intra_op_num_threads = int(threads)
    if spinning is not None:
        so.add_session_config_entry("session.intra_op.allow_spinning", "1" if spinning else "0")
        so.add_session_config_entry("session.inter_op.allow_spinning", "1" if spinning else "0")
    so.log_severity_level = 3
    providers = [full] + (["CPUExecutionProvider"] if full != "CPUExecutionProvider" else [])
    try:
        sess = ort.InferenceSession(uri, sess_options=so, providers=providers)
    except Exception as exc:  # the server log gets one line, not a traceback
        raise RuntimeError(f"onnxruntime cannot load {uri}: {_first_line(exc)}") from None
    if sess.get_providers()[:1] != [full]:
        raise RuntimeError(f"{full} was requested but the session runs on {', '.join(sess.get_providers())}")
    return sess


def _first_line(exc: BaseException) -> str:
    """onnxforge.errors.first_line, copied: this file imports nothing of onnxforge."""
    text = str(exc).strip()
    line = text.splitlines()[0] if text else type(exc).__name__
    return re.sub(r"^\[ONNXRuntimeError\] : \d+ : \w+ : ", "", line)[:300]


def _tensors(args) -> dict:
    """name -> (shape with None for a symbolic dim, V2 datatype)."""
    out = {}
    for a in args:
        if a.type not in V2_OF_ORT:
            raise RuntimeError(f"tensor {a.name} is {a.type}, which the V2 inference protocol cannot carry")
        out[a.name] = ([d if isinstance(d, int) else None for d in a.shape], V2_OF_ORT[a.type])
    return out


class OnnxRuntimeModel(MLModel):
    async def load(self) -> bool:
        uri = await get_model_uri(self._settings, wellknown_filenames=["model.onnx"])
        extra = (self._settings.parameters.extra if self._settings.parameters else None) or {}
        self._session = _session(uri, extra.get("provider", "cpu"), extra.get("threads"), extra.get("spinning"))
        self._inputs = _tensors(self._session.get_inputs())
        self._outputs = _tensors(self._session.get_outputs())
        return True

    def _expects(self) -> str:
        return ", ".join(f"{n} ({dt} {[-1 if d is None else d for d in shape]})"
                         for n, (shape, dt) in self._inputs.items())

    def _decode(self, inp):
        if inp.name not in self._inputs:
            raise InferenceError(f"unknown input {inp.name!r}; the model takes {self._expects()}")
        dims, want = self._inputs[inp.name]
        got = getattr(inp.datatype, "value", inp.datatype)
        if got != want:
            raise InferenceError(f"input {inp.name!r} is {got}, the model expects {want}")
        shape = list(inp.shape)
        if len(shape) != len(dims) or any(d is not None and d != s for d, s in zip(dims, shape)) or any(
                s < 0 for s in shape):
            raise InferenceError(f"input {inp.name!r} has shape {shape}, the model expects "
                                 f"{[-1 if d is None else d for d in dims]} (-1: any size)")
        data = getattr(inp.data, "root", inp.data)
        try:
            if want == "BYTES":  # ORT's string tensors take str objects
                flat = np.asarray(data, dtype=object).reshape(-1)
                arr = np.array([v.decode("utf-8") if isinstance(v, (bytes, bytearray)) else str(v) for v in flat],
                               dtype=object)
            else:
                arr = np.asarray(data, dtype=NUMPY_OF_V2[want]).reshape(-1)
        except (ValueError, TypeError) as exc:
            raise InferenceError(f"input {inp.name!r}: data is not {want} ({exc})") from None
        if arr.size != math.prod(shape):
            raise InferenceError(f"input {inp.name!r}: {arr.size} values do not fill shape {shape}")
        return arr.reshape(shape)

    async def predict(self, payload: InferenceRequest) -> InferenceResponse:
        feeds = {}
        for inp in payload.inputs:
            if inp.name in feeds:
                raise InferenceError(f"input {inp.name!r} given twice")
            feeds[inp.name] = self._decode(inp)
        missing = [n for n in self._inputs if n not in feeds]
        if missing:
            raise InferenceError(f"missing input(s) {', '.join(missing)}; the model takes {self._expects()}")
        wanted = [o.name for o in payload.outputs] if payload.outputs else list(self._outputs)
        unknown = [n for n in wanted if n not in self._outputs]
        if unknown:
            raise InferenceError(f"unknown output(s) {', '.join(unknown)}; the model has {', '.join(self._outputs)}")
        # Run inline: the session's own intra-op threads do the work, and a hop to an
        # executor thread would add latency to every request.
        try:
            values = self._session.run(wanted, feeds)
        except Exception as exc:  # ORT's message for inputs it refuses (e.g. a wrong symbolic relation)
            raise InferenceError(f"the model failed on these inputs: {_first_line(exc)}") from None
        return InferenceResponse(
            model_name=self.name, model_version=self.version,
            outputs=[self._encode(n, v) for n, v in zip(wanted, values)],
        )

    def _encode(self, name: str, arr) -> ResponseOutput:
        dt = self._outputs[name][1]
        arr = np.asarray(arr)
        if dt == "BYTES":
            data = [str(v).encode("utf-8") for v in arr.reshape(-1)]
        else:
            data = arr.reshape(-1).tolist()
        return ResponseOutput(name=name, shape=list(arr.shape), datatype=dt, data=data)
