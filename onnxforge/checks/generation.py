"""Generation parity for decoders exported with their key/value cache: both sides
greedy-decode the same new tokens from the same prompt ids, and the ONNX side does it
the way a runtime does (a prefill with an empty cache, then one token per step feeding
``present.*`` back as ``past_key_values.*``). An elementwise check on one call cannot see
a cache that is written in the wrong order or read at the wrong positions; decoding does.

The reference is the Hugging Face folder (its declared class, decoding without a cache:
every step recomputes the whole text, so the reference shares no cache code with the
export) or another ONNX model with a cache (a quantized model against its fp32 export).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from onnxforge.backends import Runner
from onnxforge.core.errors import BadInputError, UsageError
from onnxforge.core.types import GenerationCheck, ParityReport, TensorSpec
from dataclasses import replace
import numpy as np
from onnxforge.backends.onnx.runner import inputs_and_ranges, onnx_runner
from onnxforge.backends.torch.hf import load_reference
from onnxforge.core.fileio import external_data_files, load_onnx
from onnxforge.core.progress import task
from onnxforge.data.specs import model_io_specs, numpy_dtype

PAST, PRESENT = "past_key_values.", "present."
ENCODER_FILE = "encoder_model.onnx"  # an encoder-decoder's encoder, beside its decoder (Optimum's name)
ENCODER_STATES = "encoder_hidden_states"  # the input only an encoder-decoder's decoder takes
# What a Hugging Face loader reads beside the weights (Optimum's ORT model classes, AutoTokenizer)
SIDE_FILES = ("config.json", "generation_config.json", "tokenizer.json", "tokenizer_config.json",
              "special_tokens_map.json", "added_tokens.json", "vocab.json", "merges.txt", "vocab.txt",
              "tokenizer.model", "spiece.model", "chat_template.jinja")
TOKENS = 8  # new tokens decoded by default
PROMPT = (2, 5)  # prompts, prompt length: two rows prove the batch axis
ATOL = 1e-3  # logits of an fp32 export (a cache path that is wrong is off by whole units)


def has_past(specs) -> bool:
    return any(s.name.startswith(PAST) for s in specs)


def is_seq2seq(specs) -> bool:
    return any(s.name == ENCODER_STATES for s in specs)


def encoder_beside(decoder) -> Path | None:
    p = Path(str(decoder)).parent / ENCODER_FILE
    return p if p.is_file() else None


def companions(model) -> list[Path]:
    """The files beside a model with a key/value cache that belong with it: the encoder
    of an encoder-decoder's decoder (and its weights file), and the config and tokenizer
    files a Hugging Face loader reads. Empty for any other model."""
    specs = model_io_specs(load_onnx(model, graph_only=True))[0]
    if not has_past(specs):
        return []
    folder = Path(str(model)).parent
    out = [folder / n for n in SIDE_FILES if (folder / n).is_file()]
    enc = encoder_beside(model) if is_seq2seq(specs) else None
    if enc is not None:
        out += [enc, *(folder / f for f in external_data_files(load_onnx(enc, graph_only=True)))]
    return out


def is_with_past(path: Any) -> bool:
    """Whether ``path`` is an ONNX model that takes a key/value cache."""
    if not (isinstance(path, (str, Path)) and str(path).endswith(".onnx") and Path(path).is_file()):
        return False

    try:
        return has_past(inputs_and_ranges(path)[0])
    except BadInputError:
        return False


def _fixed(spec: TensorSpec, axis: int, what: str) -> int:
    d = spec.shape[axis] if len(spec.shape) == 4 else None
    if not isinstance(d, int):
        raise BadInputError(f"{spec.name} has no fixed {what} (shape {spec})",
                            hint="a cache input is [batch_size, heads, past_sequence_length, head_dim]")
    return d


def greedy_onnx(runner, prompt, tokens: int) -> tuple[Any, list]:
    """(new token ids [batch, tokens], the last position's logits of each step) of an ONNX
    decoder with a cache, run as a runtime runs it."""

    specs = {s.name: s for s in runner.inputs}
    past = [s for s in runner.inputs if s.name.startswith(PAST)]
    missing = [PRESENT + s.name[len(PAST):] for s in past if PRESENT + s.name[len(PAST):] not in runner.outputs]
    if "logits" not in runner.outputs or missing or "input_ids" not in specs:
        raise BadInputError(f"{runner.label} does not have a decoder's cache layout (input_ids, past_key_values.*, "
                            f"logits, present.*): missing {', '.join(missing or ['logits or input_ids'])}",
                            hint="export it with --task text-generation-with-past")
    batch = prompt.shape[0]
    cache = {s.name: np.zeros((batch, _fixed(s, 1, "heads"), 0, _fixed(s, 3, "head size")), numpy_dtype(s.dtype))
             for s in past}
    ids, done, steps, new = prompt, 0, [], []
    for _ in range(tokens):
        n = ids.shape[1]
        feeds = {"input_ids": ids.astype(np.int64), **cache}
        if "attention_mask" in specs:
            feeds["attention_mask"] = np.ones((batch, done + n), np.int64)
        if "position_ids" in specs:
            feeds["position_ids"] = np.broadcast_to(np.arange(done, done + n, dtype=np.int64), (batch, n)).copy()
        out = runner(feeds)
        logits = np.asarray(out["logits"])[:, -1, :].astype(np.float64)
        steps.append(logits)
        new.append(logits.argmax(-1))
        cache = {s.name: out[PRESENT + s.name[len(PAST):]] for s in past}
        done += n
        ids = new[-1][:, None]
    return np.stack(new, 1), steps


def greedy_torch(model, prompt, tokens: int) -> tuple[Any, list]:
    """The same from a transformers causal LM, without a cache: each step runs the
    whole text again, so a wrong cache on the other side cannot agree with it."""
    import torch

    ids, steps, new = torch.from_numpy(prompt.astype(np.int64)), [], []
    with torch.no_grad():
        for _ in range(tokens):
            logits = model(input_ids=ids, attention_mask=torch.ones_like(ids), use_cache=False,
                           return_dict=True).logits[:, -1, :]
            steps.append(logits.double().numpy())
            new.append(steps[-1].argmax(-1))
            ids = torch.cat([ids, torch.from_numpy(new[-1])[:, None]], 1)
    return np.stack(new, 1), steps


def compare_generation(ref: tuple, cand: tuple, *, atol: float) -> GenerationCheck:
    """Token ids step by step; logits at each step while every earlier token agreed."""
    (rt, rl), (ct, cl) = ref, cand
    errors, equal = [], 0
    for i, (r, c) in enumerate(zip(rl, cl)):
        if i and not (rt[:, :i] == ct[:, :i]).all():
            break  # the texts differ from here on
        errors.append(float(np.abs(r - c).max()) if np.isfinite(c).all() else float("inf"))
        if (rt[:, i] == ct[:, i]).all():
            equal += 1
    n = rt.shape[1]
    worst = max(errors, default=0.0)
    return GenerationCheck(n, rt.shape[0], 0, equal, worst, tuple(errors), atol, equal == n and worst <= atol,
                           tuple(tuple(int(t) for t in row) for row in rt),
                           tuple(tuple(int(t) for t in row) for row in ct))


def generation_check(reference: Any, candidate: Any, *, tokens: int = TOKENS, atol: float = ATOL, seed: int = 0,
                     provider: str = "cpu", allow_download: bool = False, reference_label: str = "",
                     candidate_label: str = "", encoder: Any = None) -> ParityReport:
    """Greedy-decode ``tokens`` new tokens from seeded prompt ids with ``reference`` (a
    Hugging Face folder, a transformers model, or an ONNX model with a cache) and
    ``candidate`` (an ONNX model with a cache) and compare: a ParityReport whose
    ``generation`` holds the figures, failed when a token differs or a step's logits
    differ by more than ``atol``. An encoder-decoder's decoder (it takes
    encoder_hidden_states) decodes with ``encoder``, else the encoder_model.onnx beside
    it (_seq2seq_check)."""

    cand = candidate if isinstance(candidate, Runner) else \
        onnx_runner(candidate, provider, label=candidate_label or Path(str(candidate)).name)
    if is_seq2seq(cand.inputs):
        return _seq2seq_check(reference, cand, tokens=tokens, atol=atol, seed=seed, allow_download=allow_download,
                              reference_label=reference_label, encoder=encoder)
    ref_onnx = isinstance(reference, Runner) or is_with_past(reference)
    with task("generation check", detail=True):
        if ref_onnx:
            ref = reference if isinstance(reference, Runner) else \
                onnx_runner(reference, "cpu", label=reference_label or Path(str(reference)).name)
            vocab, label = _vocab(ref.path), ref.label
        else:
            model = reference if hasattr(reference, "forward") else _hf_model(reference, allow_download)
            vocab, label = int(model.config.vocab_size), reference_label or _label(reference, model)
            _check_positions(model.config, tokens)
        rng = np.random.default_rng(seed)
        prompt = rng.integers(0, vocab, size=PROMPT, dtype=np.int64)
        ref_out = greedy_onnx(ref, prompt, tokens) if ref_onnx else greedy_torch(model, prompt, tokens)
        cand_out = greedy_onnx(cand, prompt, tokens)
    return _report(label, cand.label, ref_out, cand_out, atol=atol,
                   how=f"{PROMPT[0]} prompts of {PROMPT[1]} token ids below {vocab} (seed {seed}), {tokens} new tokens "
                       "greedy")


def _report(ref_label: str, cand_label: str, ref_out, cand_out, *, atol: float, how: str, notes=()) -> ParityReport:
    gen = replace(compare_generation(ref_out, cand_out, atol=atol), prompt_length=PROMPT[1])
    return ParityReport(ref_label, cand_label, PROMPT[0], (), gen.passed, check_stat="generation",
                        problems=() if gen.passed else (_why(gen),), notes=tuple(notes),
                        data={"source": "generated", "how": how}, generation=gen)


def _check_positions(config, tokens: int) -> None:
    """A prompt and its new tokens past the model's positions would index out of its
    position table: refused with the number it holds."""
    most = next((getattr(config, k) for k in ("n_positions", "max_position_embeddings")
                 if isinstance(getattr(config, k, None), int)), None)
    if most is not None and PROMPT[1] + tokens > most:
        raise UsageError(f"--generate-tokens {tokens}: with a {PROMPT[1]}-token prompt that is {PROMPT[1] + tokens} "
                         f"positions; the model holds {most}", hint=f"use at most {most - PROMPT[1]}")


def _why(gen: GenerationCheck) -> str:
    if gen.tokens_equal < gen.tokens:
        step = next(i for i, (r, c) in enumerate(zip(zip(*gen.reference_tokens), zip(*gen.candidate_tokens)))
                    if r != c)
        return (f"greedy tokens differ at step {step + 1} of {gen.tokens} ({gen.tokens_equal}/{gen.tokens} equal; "
                f"logit error {gen.max_logit_error:.3g} before it)")
    step = gen.step_errors.index(gen.max_logit_error) + 1
    return f"logits differ by {gen.max_logit_error:.3g} at step {step}, over atol {gen.atol:g} (every token equal)"


def _vocab(path) -> int:
    logits = next((s for s in model_io_specs(load_onnx(path, graph_only=True))[1] if s.name == "logits"),
                  None)
    if logits is None or not logits.shape or not isinstance(logits.shape[-1], int):
        raise BadInputError(f"{Path(str(path)).name}: its logits output has no fixed vocabulary size",
                            hint="the generation check draws prompt ids below it")
    return logits.shape[-1]


def _hf_model(spec, allow_download: bool):
    return load_reference(str(spec), task=None, allow_download=allow_download)


def _label(spec, model) -> str:
    return f"hf:{Path(str(spec)).name}" if isinstance(spec, (str, Path)) else type(model).__name__


def greedy_seq2seq_onnx(encoder, decoder, prompt, start: int, tokens: int) -> tuple[Any, list]:
    """An encoder-decoder as a runtime runs it: the encoder once, then the decoder from
    ``start``, one token per step, ``present.*`` fed back as ``past_key_values.*``."""

    past = [s for s in decoder.inputs if s.name.startswith(PAST)]
    names = {s.name for s in encoder.inputs}
    if "last_hidden_state" not in encoder.outputs or names != {"input_ids", "attention_mask"}:
        raise BadInputError(f"{encoder.label} does not have an encoder's layout (input_ids, attention_mask -> "
                            "last_hidden_state)", hint=f"use the {ENCODER_FILE} convert wrote with the decoder")
    mask = np.ones(prompt.shape, np.int64)
    states = next(s for s in decoder.inputs if s.name == ENCODER_STATES)
    hidden = encoder({"input_ids": prompt.astype(np.int64), "attention_mask": mask})["last_hidden_state"]
    hidden = np.asarray(hidden).astype(numpy_dtype(states.dtype))  # an fp32 encoder feeding an fp16-io decoder
    batch = prompt.shape[0]
    cache = {s.name: np.zeros((batch, _fixed(s, 1, "heads"), 0, _fixed(s, 3, "head size")), numpy_dtype(s.dtype))
             for s in past}
    ids, steps, new = np.full((batch, 1), start, np.int64), [], []
    for _ in range(tokens):
        out = decoder({"input_ids": ids, "encoder_attention_mask": mask, "encoder_hidden_states": hidden, **cache})
        steps.append(np.asarray(out["logits"])[:, -1, :].astype(np.float64))
        new.append(steps[-1].argmax(-1))
        cache = {s.name: out[PRESENT + s.name[len(PAST):]] for s in past}
        ids = new[-1][:, None].astype(np.int64)
    return np.stack(new, 1), steps


def greedy_seq2seq_torch(model, prompt, tokens: int) -> tuple[Any, list]:
    """The same from the transformers model without a cache: the decoder runs the whole
    text again at each step (what generate(do_sample=False, num_beams=1) decodes, without
    the folder's generation_config processors)."""
    import torch

    ids = torch.from_numpy(prompt.astype(np.int64))
    mask = torch.ones_like(ids)
    dec = torch.full((ids.shape[0], 1), int(model.config.decoder_start_token_id), dtype=torch.int64)
    steps, new = [], []
    with torch.no_grad():
        hidden = model.get_encoder()(input_ids=ids, attention_mask=mask, return_dict=True).last_hidden_state
        for _ in range(tokens):
            logits = model(decoder_input_ids=dec, attention_mask=mask, encoder_outputs=(hidden,), use_cache=False,
                           return_dict=True).logits[:, -1, :]
            steps.append(logits.double().numpy())
            new.append(steps[-1].argmax(-1))
            dec = torch.cat([dec, torch.from_numpy(new[-1])[:, None]], 1)
    return np.stack(new, 1), steps


def _seq2seq_check(reference, cand, *, tokens: int, atol: float, seed: int, allow_download: bool,
                   reference_label: str, encoder) -> ParityReport:
    """An encoder-decoder: its encoder once on seeded source ids, then its decoder from
    the decoder start token. The reference is the transformers model (a folder) or another
    such ONNX decoder with its encoder beside it; a candidate without an encoder of its own
    decodes with the reference's (a quantized decoder keeps the fp32 encoder), noted."""
    notes = []
    cand_enc = encoder or encoder_beside(cand.path)
    if isinstance(reference, Runner) or is_with_past(reference):
        ref = reference if isinstance(reference, Runner) else \
            onnx_runner(reference, "cpu", label=reference_label or Path(str(reference)).name)
        if not is_seq2seq(ref.inputs):
            raise BadInputError(f"{cand.label} is an encoder-decoder's decoder and {ref.label} is not",
                                hint="compare it with the decoder it was made from, or with the source folder")
        ref_enc = _need_encoder(ref)
        if cand_enc is None:
            cand_enc = ref_enc
            notes.append(f"no {ENCODER_FILE} beside {cand.label}: it decoded with the reference's encoder ({ref_enc})")
        start, vocab, label = _start_token(ref.path, cand.path), _vocab(ref.path), ref.label
        ref_encoder = onnx_runner(ref_enc, "cpu", label=f"{ref.label}'s {ENCODER_FILE}")

        def run_ref(prompt):
            return greedy_seq2seq_onnx(ref_encoder, ref, prompt, start, tokens)
    else:
        model = reference if hasattr(reference, "forward") else _hf_model(reference, allow_download)
        if not getattr(model.config, "is_encoder_decoder", False):
            raise BadInputError(f"{cand.label} is an encoder-decoder's decoder and {_label(reference, model)} is "
                                "not an encoder-decoder", hint="compare it with the folder it was converted from")
        cand_enc = cand_enc or _need_encoder(cand)
        _check_positions(model.config, tokens)
        start, vocab = int(model.config.decoder_start_token_id), int(model.config.vocab_size)
        label = reference_label or _label(reference, model)

        def run_ref(prompt):
            return greedy_seq2seq_torch(model, prompt, tokens)
    enc = onnx_runner(cand_enc, "cpu", label=ENCODER_FILE)
    with task("generation check", detail=True):
        prompt = np.random.default_rng(seed).integers(0, vocab, size=PROMPT, dtype=np.int64)
        ref_out = run_ref(prompt)
        cand_out = greedy_seq2seq_onnx(enc, cand, prompt, start, tokens)
    return _report(label, cand.label, ref_out, cand_out, atol=atol, notes=notes,
                   how=f"{PROMPT[0]} source texts of {PROMPT[1]} token ids below {vocab} (seed {seed}), {tokens} new "
                       "tokens greedy")


def _need_encoder(decoder: Runner) -> Path:
    enc = encoder_beside(decoder.path)
    if enc is None:
        raise BadInputError(f"{decoder.label} is an encoder-decoder's decoder and no {ENCODER_FILE} is beside it: "
                            "its generation check runs the encoder first",
                            hint=f"put the {ENCODER_FILE} that convert wrote with it in {Path(decoder.path).parent}")
    return enc


def _start_token(*decoders) -> int:
    """The decoder start token of ONNX decoders, from the config.json beside them (convert
    copies the folder's)."""
    for d in decoders:
        try:
            config = json.loads((Path(str(d)).parent / "config.json").read_text())
        except (OSError, ValueError, RecursionError):
            continue
        if isinstance(config, dict) and isinstance(config.get("decoder_start_token_id"), int):
            return config["decoder_start_token_id"]
    raise BadInputError(f"no config.json with a decoder_start_token_id beside {Path(str(decoders[0])).name}: "
                        "decoding starts from that token", hint="copy the source folder's config.json beside it "
                                                                "(convert writes it there)")
