"""A torch module as a Runner.

Outputs are flattened in torch's pytree order (tuples/lists by index, dicts and
Hugging Face ``ModelOutput``s by key, in insertion order) and named by their path: a
single tensor is ``output``; ``{"logits": t}`` gives ``logits``; ``(a, (b, c))``
gives ``output_0``, ``output_1_0``, ``output_1_1``; nested dicts join keys with ``_``.
The converter names the ONNX outputs the same way, so the two sides pair by name.
"""

from __future__ import annotations

from typing import Any, Mapping, Sequence

from onnxforge.core.errors import BadInputError, first_line
from onnxforge.backends.base import Runner, source_name
from onnxforge.backends.torch.sources import load_torch


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


def bind_inputs(module, names: Sequence[str], keyword: Sequence[str] = ()) -> tuple[tuple[str, ...], tuple[str, ...]]:
    """(names passed by position, names passed by keyword): how inputs named ``names``
    reach ``module.forward``. A program saved with keyword inputs takes ``keyword`` by
    name. Otherwise, when every name is one of forward()'s parameters, each goes to its
    parameter whatever order the names came in (by position in forward's order, by
    keyword once a parameter is skipped or for keyword-only ones): fed by position,
    ``b, a`` reached ``forward(a, b)`` swapped and a release passed with a model whose
    inputs were swapped. Names that are not all parameters (``input_0``, a program's
    own) go by position, in the order given."""
    if keyword:
        return tuple(n for n in names if n not in keyword), tuple(n for n in names if n in keyword)
    params = forward_parameters(module)
    if not names or not all(n in params for n in names):
        return tuple(names), ()
    positional, by_keyword, skipped = [], [], None
    for name, kind in params.items():
        if name not in names:
            skipped = skipped or name
        elif kind == "keyword" or skipped:
            if kind == "positional-only":
                raise BadInputError(f"input {name} is positional-only in forward() and follows {skipped}, which "
                                    "has no input", hint=f"give {skipped} too, or name the inputs input_0, input_1 "
                                    "... to bind them by position")
            by_keyword.append(name)
        else:
            positional.append(name)
    return tuple(positional), tuple(by_keyword)


def forward_parameters(module) -> dict[str, str]:
    """forward()'s named parameters: name -> "positional", "positional-only" or "keyword"
    (keyword-only)."""
    import inspect

    schema = getattr(getattr(module, "forward", None), "schema", None)
    if schema is not None:  # TorchScript: the names are in the compiled schema, not a Python signature
        return {a.name: "keyword" if a.kwarg_only else "positional" for a in schema.arguments[1:]}  # [0]: the module
    try:
        sig = inspect.signature(module.forward)
    except (TypeError, ValueError, AttributeError):
        return {}
    kinds = {inspect.Parameter.POSITIONAL_ONLY: "positional-only",
             inspect.Parameter.POSITIONAL_OR_KEYWORD: "positional", inspect.Parameter.KEYWORD_ONLY: "keyword"}
    return {p.name: kinds[p.kind] for p in sig.parameters.values() if p.kind in kinds and p.name != "self"}


def torch_runner(module, output_names: Sequence[str] | None = None, *, label: str = "torch",
                 keyword: Sequence[str] = ()) -> Runner:
    """A Runner over a module: inputs bound to forward() by name where they can be, else
    by position (bind_inputs); outputs flattened and named (see above)."""

    def run(feeds: Mapping[str, Any]) -> dict:
        tensors = {k: tensor(v) for k, v in feeds.items()}
        positional, by_keyword = bind_inputs(module, list(tensors), keyword)
        args = [tensors[k] for k in positional]
        kwargs = {k: tensors[k] for k in by_keyword}
        pairs = flatten_outputs(call_module(module, args, "the torch model fails on these inputs",
                                            "check the inputs against the model's forward()", kwargs))
        if output_names and len(output_names) == len(pairs):
            return {n: to_numpy(v) for n, (_, v) in zip(output_names, pairs)}
        return {n: to_numpy(v) for n, v in pairs}

    return Runner(label=label, kind="torch", fn=run)


def torch_source_runner(spec: Any, *, label: str | None = None, weights: str | None = None,
                        trust_pickle: bool = False, **_ignored) -> Runner:
    """A runner over a torch source in any form `convert torch` accepts."""
    loaded = load_torch(spec, weights=weights, trust_pickle=trust_pickle)
    if hasattr(loaded.module, "eval") and loaded.kind != "export":
        loaded.module.eval()  # as convert does: a reference in training mode is not the model that ships
    return torch_runner(loaded.module, label=label or f"torch:{source_name(spec)}", keyword=loaded.keyword)
