"""An MLServer runtime that serves an ONNX model on ONNX Runtime.

``model-settings.json`` names it as ``"implementation":
"onnxforge.serving.mlserver_runtime.OnnxRuntimeModel"``. The module is not called
``mlserver`` because ``mlserver start`` puts the current folder and the model folder at
the front of ``sys.path``: a module named ``mlserver`` could shadow the server itself
when either of those is this package's folder. MLServer reloads this module when it
loads a model, so it keeps no state at module level.

This module imports mlserver, and so it runs only inside the server's process: mlserver
and ``tritonclient.grpc`` register the same ``inference.*`` protobuf symbols and cannot
share a process.

Parameters (``parameters.extra`` in model-settings.json): ``provider`` (cpu, cuda, ...;
the session fails to load rather than fall back), ``threads`` (intra-op threads),
``spinning`` (ORT's intra-op spinning; unset keeps ORT's default: on and off measured
the same within noise on the 2-core machine, under load).
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


class OnnxRuntimeModel(MLModel):
    async def load(self) -> bool:
        from onnxforge.errors import OnnxforgeError
        from onnxforge.fileio import load_onnx
        from onnxforge.runtime import create_session
        from onnxforge.serving.v2 import v2_datatype
        from onnxforge.specs import model_io_specs

        uri = await get_model_uri(self._settings, wellknown_filenames=["model.onnx"])
        extra = (self._settings.parameters.extra if self._settings.parameters else None) or {}
        threads = extra.get("threads")
        try:
            ins, outs = model_io_specs(load_onnx(uri, load_external_data=False))
            self._session = create_session(uri, extra.get("provider", "cpu"),
                                           threads=int(threads) if threads else None,
                                           spinning=extra.get("spinning"))
        except OnnxforgeError as exc:  # the server log gets one line and the hint, not a traceback
            raise RuntimeError(f"{exc.message} ({exc.hint})" if exc.hint else exc.message) from None
        self._inputs = {s.name: (s, v2_datatype(s)) for s in ins}
        self._outputs = {s.name: (s, v2_datatype(s)) for s in outs}
        return True

    def _expects(self) -> str:
        from onnxforge.serving.v2 import v2_shape

        return ", ".join(f"{n} ({dt} {v2_shape(s)})" for n, (s, dt) in self._inputs.items())

    def _decode(self, inp):
        import numpy as np

        from onnxforge.serving.v2 import as_text, numpy_of

        if inp.name not in self._inputs:
            raise InferenceError(f"unknown input {inp.name!r}; the model takes {self._expects()}")
        spec, want = self._inputs[inp.name]
        got = getattr(inp.datatype, "value", inp.datatype)
        if got != want:
            raise InferenceError(f"input {inp.name!r} is {got}, the model expects {want}")
        shape = list(inp.shape)
        if len(shape) != len(spec.shape) or any(
                isinstance(d, int) and d != s for d, s in zip(spec.shape, shape)) or any(s < 0 for s in shape):
            raise InferenceError(f"input {inp.name!r} has shape {shape}, the model expects "
                                 f"{[d if isinstance(d, int) else -1 for d in spec.shape]} (-1: any size)")
        data = getattr(inp.data, "root", inp.data)
        try:
            if want == "BYTES":
                arr = as_text(np.asarray(data, dtype=object).reshape(-1))
            else:
                arr = np.asarray(data, dtype=numpy_of(want)).reshape(-1)
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
            from onnxforge.errors import first_line

            raise InferenceError(f"the model failed on these inputs: {first_line(exc)}") from None
        return InferenceResponse(
            model_name=self.name, model_version=self.version,
            outputs=[self._encode(n, v) for n, v in zip(wanted, values)],
        )

    def _encode(self, name: str, arr) -> ResponseOutput:
        import numpy as np

        dt = self._outputs[name][1]
        arr = np.asarray(arr)
        if dt == "BYTES":
            data = [str(v).encode("utf-8") for v in arr.reshape(-1)]
        else:
            data = arr.reshape(-1).tolist()
        return ResponseOutput(name=name, shape=list(arr.shape), datatype=dt, data=data)
