"""An ONNX model on an execution provider, as a Runner."""

from __future__ import annotations

from onnxforge.backends.base import Runner
import json
from onnxforge.backends.onnx.runtime import create_session, run_session
from onnxforge.core.errors import UsageError


def onnx_runner(path, provider: str = "cpu", *, label: str | None = None, threads: int | None = None,
                optimization: str = "all", hold: bool = True) -> Runner:
    """``hold=False``: the session is made at the first call and let go by ``release()``,
    so a check can run two models' sessions one after the other, never both in memory."""
    from onnxforge.core.fileio import load_onnx
    from onnxforge.data.specs import model_io_specs

    model = load_onnx(path, graph_only=True)  # clear errors before ORT's
    ins, _ = model_io_specs(model)
    ranges, norms = recorded_val_ranges(model), recorded_input_norms(model)
    held: dict = {}

    def session():
        if "s" not in held:
            held["s"] = create_session(path, provider, threads=threads, optimization=optimization)
        return held["s"]

    names = [o.name for o in session().get_outputs()] if hold else [o.name for o in model.graph.output]
    return Runner(label=label or f"{path}@{provider}", kind="onnx", inputs=ins, outputs=tuple(names),
                  fn=lambda feeds: _tensors(run_session(session(), feeds, names)), path=str(path), provider=provider,
                  val_ranges=ranges, input_norms=norms, release=None if hold else held.clear)


def inputs_and_ranges(path) -> tuple[list, dict | None]:
    """A model file's input specs and the input ranges its converter recorded, read
    without its weights: what every place that generates inputs for it needs."""
    from onnxforge.core.fileio import load_onnx
    from onnxforge.data.specs import model_io_specs

    model = load_onnx(path, graph_only=True)
    return model_io_specs(model)[0], recorded_val_ranges(model)


def input_norms_of(path) -> dict | None:
    """The input normalisations a model file's converter recorded, read without its weights."""
    from onnxforge.core.fileio import load_onnx

    return recorded_input_norms(load_onnx(path, graph_only=True))


def recorded_val_ranges(model) -> dict | None:
    """Valid input values the converter recorded (onnxforge.val_ranges): later checks
    generate inputs within them, so a BERT's attention mask stays a mask."""
    found = _recorded(model, "onnxforge.val_ranges")
    try:
        return {k: tuple(v) for k, v in found.items()} if found is not None else None
    except (TypeError, AttributeError):
        return None


def recorded_input_norms(model) -> dict | None:
    """Input normalisations the converter recorded (onnxforge.input_norms: an image
    processor's mean/std, or --input-norm): later checks generate normalised images
    rather than [0, 1) noise. An entry that does not read as one is dropped."""
    from onnxforge.data.specs import input_norm

    found = _recorded(model, "onnxforge.input_norms")
    if not isinstance(found, dict):
        return None
    out = {}
    for k, v in found.items():
        try:
            out[k] = input_norm(v, "recorded input norm")
        except UsageError:
            continue
    return out or None


def _recorded(model, key: str):
    for p in model.metadata_props:
        if p.key == key:
            try:
                return json.loads(p.value)
            except ValueError:
                return None
    return None


def _tensors(outputs: dict) -> dict:
    """A ZipMap output (a list of {class: probability}) becomes a [N, classes] array,
    columns in the maps' key order, so it compares with predict_proba."""
    import numpy as np

    out = {}
    for k, v in outputs.items():
        if isinstance(v, list) and v and isinstance(v[0], dict):
            keys = list(v[0])
            v = np.array([[row[c] for c in keys] for row in v], dtype=np.float64)
        out[k] = v
    return out
