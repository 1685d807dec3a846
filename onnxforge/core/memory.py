"""Giving memory back between steps of one process (the release runs every step in one).

Two things keep a large model's bytes resident after the step that used them is done:

- onnxscript's pattern rewriters are module-level objects, and their matchers keep the
  last graph they matched (``SimplePatternMatcher._graph``, ``_current_node``, ...). After
  torch.onnx's dynamo export that graph's initializers wrap the torch module's
  parameters, so a GPT-2-large module (3.1 GB) stayed alive after convert returned;
  after ``optimize_for_ort`` it is the fused model's weights.
- rule objects keep per-match state on themselves: onnxscript's MultiHeadAttention fusion
  keeps the last ``mask`` Value it saw, and a Value reaches its whole graph (BERT-base:
  840 MB after a fusion pass, under ORT's quantizer that followed).
- glibc keeps freed heap memory (torch tensors of up to 32 MB come from the heap once the
  dynamic mmap threshold has risen) unless asked to trim.
"""

from __future__ import annotations

import sys
import gc


def drop_rewriter_caches() -> int:
    """Clear the graph references onnxscript's matchers and rules keep; returns how many
    held one. Only touches what is already imported."""
    mod = sys.modules.get("onnxscript.rewriter._matcher")
    if mod is None or not hasattr(mod, "SimplePatternMatcher"):
        return 0

    rules = getattr(sys.modules.get("onnxscript.rewriter._rewrite_rule"), "RewriteRuleClassBase", None)
    cleared = 0
    for obj in gc.get_objects():
        # type(), not isinstance(): isinstance asks a weak proxy for its referent's class,
        # and a proxy whose referent is gone raises ReferenceError (a release failed so)
        if issubclass(type(obj), mod.SimplePatternMatcher):
            held = False
            for attr in ("_graph", "_current_node", "_tracer", "_match"):
                if getattr(obj, attr, None) is not None:
                    setattr(obj, attr, None)
                    held = True
            cleared += held
        elif rules is not None and issubclass(type(obj), rules):
            ir_state = [k for k, v in vars(obj).items() if type(v).__module__.startswith("onnx_ir")]
            for k in ir_state:  # set by each match before use: None between runs is harmless
                setattr(obj, k, None)
            cleared += bool(ir_state)
    return cleared


def release_memory() -> None:
    """Drop the rewriters' graphs, collect, and hand free heap pages back to the OS."""
    drop_rewriter_caches()
    gc.collect()
    trim_heap()


def trim_heap() -> None:
    if sys.platform.startswith("linux"):
        import ctypes

        try:
            ctypes.CDLL("libc.so.6").malloc_trim(0)
        except (OSError, AttributeError):  # not glibc (musl): nothing to trim
            pass
