"""Saved (golden) outputs as a Runner: a .npz (keys = output names; ``I/NAME`` for
several samples) or an ONNX test-data folder (``input_N.pb`` / ``output_N.pb``,
optionally in ``test_data_set_N`` folders, beside or without a model.onnx)."""

from __future__ import annotations

from pathlib import Path

from onnxforge.core.errors import BadInputError
from onnxforge.backends.base import Runner


def saved_runner(path) -> Runner:
    from onnxforge.data.samples import load_samples

    p = Path(path)
    if not p.exists():
        raise BadInputError(f"not found: {p}", hint="check the path")
    if p.is_dir():
        if not (any(p.glob("output_*.pb")) or any(p.glob("*/output_*.pb"))):
            raise BadInputError(f"{p}: no output_N.pb files",
                                hint="an ONNX test-data folder holds input_N.pb and output_N.pb")
        outs = load_samples(p, prefix="output")
        has_inputs = any(p.glob("input_*.pb")) or any(p.glob("*/input_*.pb"))
        ins = load_samples(p, prefix="input") if has_inputs else []
        return Runner(label=str(p), kind="saved", saved_inputs=tuple(ins), saved_outputs=tuple(outs), path=str(p))
    outs = load_samples(p)
    return Runner(label=str(p), kind="saved", outputs=tuple(outs[0]), saved_outputs=tuple(outs), path=str(p))
