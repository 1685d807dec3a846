"""validate --layerwise / --save-intermediates: names no tensor, a half-given pair of
flags, a side that is not an ONNX model: usage errors before anything is written."""

from __future__ import annotations

from cases import A, Case, _i, _o

CH = _i("chain.onnx")

CASES = [
    Case("save-intermediates of a tensor the models lack", A("validate", CH, CH, "--save-intermediates", "h1,nope",
                                                             "--save-intermediates-to", _o("i.npz")),
         2, "h0, t0, h1"),
    Case("save-intermediates without a path", A("validate", CH, CH, "--save-intermediates", "all"), 2,
         "--save-intermediates-to"),
    Case("save-intermediates-to without names", A("validate", CH, CH, "--save-intermediates-to", _o("i.npz")), 2,
         "go together"),
    Case("layerwise with saved outputs as a side", A("validate", _i("x.npz"), CH, "--layerwise"), 2,
         "two ONNX models"),
]
