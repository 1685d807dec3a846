"""A torch module as a Runner.

Outputs are flattened in torch's pytree order (tuples/lists by index, dicts and
Hugging Face ``ModelOutput``s by key, in insertion order) and named by their path: a
single tensor is ``output``; ``{"logits": t}`` gives ``logits``; ``(a, (b, c))``
gives ``output_0``, ``output_1_0``, ``output_1_1``; nested dicts join keys with ``_``.
The converter names the ONNX outputs the same way, so the two sides pair by name.
"""

from __future__ import annotations

from typing import Any, Mapping, Sequence

from onnxforge.errors import BadInputError, first_line
from onnxforge.runners import Runner


def _path_name(path) -> str:
    parts = []
    for k in path:
        for attr in ("key", "idx", "name"):
            if hasattr(k, attr):
                parts.append(str(getattr(k, attr)))
                break
    return "_".join(parts)


def flatten_outputs(out: Any) -> list[tuple[str, Any]]:
    """(name, tensor) pairs in pytree order; see the module docstring."""
    import torch
    from torch.utils import _pytree as pytree

    leaves, _ = pytree.tree_flatten_with_path(out)
    pairs = [(_path_name(p), v) for p, v in leaves if isinstance(v, torch.Tensor)]
    if len(pairs) == 1 and pairs[0][0] == "":
        return [("output", pairs[0][1])]
    return [(n if n and not n[0].isdigit() else f"output_{n}", v) for n, v in pairs]


def contiguous(a):
    """A C-contiguous array of the same shape (np.ascontiguousarray makes a 0-d array 1-d)."""
    import numpy as np

    a = np.asarray(a)
    return a if a.flags.c_contiguous else a.copy(order="C")


def tensor(a):
    import torch

    return torch.from_numpy(contiguous(a))


def to_numpy(t):
    import torch

    t = t.detach().cpu()
    if t.dtype == torch.bfloat16:
        t = t.float()
    return t.numpy()


def call_module(module, args, what: str, hint: str, kwargs: Mapping[str, Any] | None = None):
    """module(*args, **kwargs) without gradients; its failure is the user's input, one line."""
    import torch

    try:
        with torch.no_grad():
            return module(*args, **(kwargs or {}))
    except Exception as exc:
        raise BadInputError(f"{what} ({type(exc).__name__}: {first_line(exc)})", hint=hint) from None


def torch_runner(module, output_names: Sequence[str] | None = None, *, label: str = "torch",
                 keyword: Sequence[str] = ()) -> Runner:
    """A Runner over a module: inputs by position (feed order), except those named in
    ``keyword``, which are passed by name; outputs flattened and named (see above)."""

    def run(feeds: Mapping[str, Any]) -> dict:
        tensors = {k: tensor(v) for k, v in feeds.items()}
        args = [t for k, t in tensors.items() if k not in keyword]
        kwargs = {k: t for k, t in tensors.items() if k in keyword}
        pairs = flatten_outputs(call_module(module, args, "the torch model fails on these inputs",
                                            "check the inputs against the model's forward()", kwargs))
        if output_names and len(output_names) == len(pairs):
            return {n: to_numpy(v) for n, (_, v) in zip(output_names, pairs)}
        return {n: to_numpy(v) for n, v in pairs}

    return Runner(label=label, kind="torch", fn=run)


def torch_source_runner(spec: Any, *, label: str | None = None, weights: str | None = None,
                        trust_pickle: bool = False, **_ignored) -> Runner:
    """A runner over a torch source in any form `convert torch` accepts."""
    from onnxforge.runners.sources import load_torch, source_name

    loaded = load_torch(spec, weights=weights, trust_pickle=trust_pickle)
    if hasattr(loaded.module, "eval") and loaded.kind != "export":
        loaded.module.eval()  # as convert does: a reference in training mode is not the model that ships
    return torch_runner(loaded.module, label=label or f"torch:{source_name(spec)}", keyword=loaded.keyword)
