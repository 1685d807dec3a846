"""Verdicts on made-up data (#24): an int8 verdict is never signed on generated inputs
alone unless asked (exit 2 before any work, naming the data flags), and an input
normalisation that cannot be read is a usage error naming the flag or the key."""

from __future__ import annotations

from cases import A, Case, T, _o, release_config

CASES = [
    Case("dynamic int8 without data", A("quantize", "dynamic", T, "-o", _o("q.onnx")), 2, "--allow-generated-data"),
    Case("static int8 on random calibration without data",
         A("quantize", "static", T, "-o", _o("q.onnx"), "--calibration", "random"), 2, "needs real input data"),
    Case("release int8 step without data",
         A("release", lambda ws: release_config(ws, "nodata", **{"steps.1.allow_generated_data": False}), "-o",
           _o("rel")), 2, "steps[1].allow_generated_data = true", outputs=("out/rel",)),
    Case("unknown input norm preset", A("validate", T, T, "--input-norm", "x:imagenett"), 2, "--input-norm for x"),
    Case("input norm of mismatched lengths",
         A("quantize", "dynamic", T, "-o", _o("q.onnx"), "--allow-generated-data", "--input-norm", "0.5,0.5/0.2"), 2,
         "2 mean(s), 1 std(s)"),
    Case("input norm with a zero std", A("validate", T, T, "--input-norm", "x:0.5/0"), 2, "positive stds"),
    Case("input norm on an input with no channel axis", A("validate", T, T, "--input-norm", "x:imagenet"), 2,
         "no axis of 3 channels"),
    Case("release input norm that is no norm",
         A("release", lambda ws: release_config(ws, "badnorm", **{"model.input_norms": {"x": "imagenett"}}), "-o",
           _o("rel2")), 2, "imagenett", outputs=("out/rel2",)),
]
