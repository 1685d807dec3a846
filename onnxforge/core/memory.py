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

Scanning the heap and collecting cost 0.5-1.5 s with torch loaded (the release called it
ten times on a model of kilobytes: 16 of its 37 s), so callers say how many bytes of
model are at stake and below RELEASE_MIN_BYTES nothing is done.
"""

from __future__ import annotations

import sys
import gc

RELEASE_MIN_BYTES = 64 << 20  # below this a model's copies cost less than finding them


def drop_rewriter_caches() -> int:
    """Clear the graph references onnxscript's matchers and rules keep; returns how many
    held one. Only touches what is already imported."""
    mod = sys.modules.get("onnxscript.rewriter._matcher")
    if mod is None or not hasattr(mod, "SimplePatternMatcher"):
        return 0

    rules = getattr(sys.modules.get("onnxscript.rewriter._rewrite_rule"), "RewriteRuleClassBase", None)
    matchers = _subclasses(mod.SimplePatternMatcher)
    rule_types = _subclasses(rules) if rules is not None else set()
    cleared = 0
    for obj in gc.get_objects():
        # type() looked up in a set, not isinstance(): isinstance asks a weak proxy for its
        # referent's class, and a proxy whose referent is gone raises ReferenceError (a
        # release failed so); issubclass() through ABCMeta cost 1 s per scan
        kind = type(obj)
        if kind in matchers:
            held = False
            for attr in ("_graph", "_current_node", "_tracer", "_match"):
                if getattr(obj, attr, None) is not None:
                    setattr(obj, attr, None)
                    held = True
            cleared += held
        elif kind in rule_types:
            ir_state = [k for k, v in vars(obj).items() if type(v).__module__.startswith("onnx_ir")]
            for k in ir_state:  # set by each match before use: None between runs is harmless
                setattr(obj, k, None)
            cleared += bool(ir_state)
    return cleared


def _subclasses(cls) -> set:
    out, todo = set(), [cls]
    while todo:
        c = todo.pop()
        if c not in out:
            out.add(c)
            todo.extend(c.__subclasses__())
    return out


def release_memory(at_stake: int) -> None:
    """Drop the rewriters' graphs, collect, and hand free heap pages back to the OS, when
    the model the caller is done with holds ``at_stake`` bytes or more."""
    if at_stake < RELEASE_MIN_BYTES:
        return
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
