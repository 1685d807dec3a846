"""Hugging Face models as torch sources: a ``save_pretrained`` folder (config.json and
safetensors weights) or ``hf:ORG/NAME`` resolved from the local Hugging Face cache.

Nothing is downloaded unless the caller allows it (``allow_download``): the cache is
read with ``local_files_only``. Models that need ``trust_remote_code`` (code shipped
with the weights) are refused: loading them would run that code. Weights load from
safetensors, or from a .bin with torch's ``weights_only`` loader (transformers' own
default).

The class is the one config.json's ``architectures`` names, looked up among
transformers' own classes (a CLIPTextModelWithProjection folder loaded through AutoModel
lost its projection head, and every check passed on the same wrong class); only a folder
that names none is loaded with the task's Auto class. An explicit ``task`` (Optimum's
names: feature-extraction, text-classification ...) wins: the task's Auto class, with a
note. The reference side of a check (``hf_runner``, the converter's parity check, the
release's source) is loaded by ``reference_class``, on its own from config.json, and
compares every output that class returns.

The inputs come from the config, the model's ``forward`` signature and its tokenizer:
``input_ids`` / ``attention_mask`` / ``token_type_ids`` (dynamic batch and sequence)
for text models, only those the folder's tokenizer (or the tokenizer class transformers
names for the model type) makes; ``pixel_values`` (dynamic batch) for vision models.
Example values are valid for the model: token ids below ``vocab_size``, token types
below ``type_vocab_size``, attention masks of ones with padding at the end of one row.

A hostile config.json is refused before transformers builds anything (check_config): a
size key below 1 (``num_hidden_layers: -1`` exported a model without layers, and passed),
more than MAX_LABELS labels or MAX_LAYERS layers (``num_labels: 10**7`` spent two minutes
and 7 GB inside AutoConfig), and then a model whose weights, counted on torch's "meta"
device, would not fit in half the available memory.
"""

from __future__ import annotations

import inspect
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from onnxforge.core.errors import BadInputError, MissingDependencyError, UsageError, first_line, require
import json
import os
from onnxforge.backends.torch.runner import torch_runner
from onnxforge.core.logs import quiet_third_party
from onnxforge.core.system import available_memory

# Hugging Face tasks (Optimum's names) -> the transformers Auto class that loads them
TASKS = {
    "feature-extraction": "AutoModel",
    "text-classification": "AutoModelForSequenceClassification",
    "token-classification": "AutoModelForTokenClassification",
    "question-answering": "AutoModelForQuestionAnswering",
    "fill-mask": "AutoModelForMaskedLM",
    "text-generation": "AutoModelForCausalLM",
    "image-classification": "AutoModelForImageClassification",
    "image-feature-extraction": "AutoModel",
    "text-generation-with-past": "AutoModelForCausalLM",  # exported with its KV cache (load_with_past)
    "text2text-generation-with-past": "AutoModelForSeq2SeqLM",  # encoder + decoder with its cache (load_seq2seq)
}
WITH_PAST = "text-generation-with-past"
SEQ2SEQ_WITH_PAST = "text2text-generation-with-past"

TEXT_INPUTS = ("input_ids", "attention_mask", "token_type_ids")
BATCH, SEQUENCE, EXAMPLE_SEQ = "batch", "sequence", 8


@dataclass(frozen=True)
class HFModel:
    module: Any
    names: tuple[str, ...]  # forward's keyword inputs, in order
    examples: dict  # name -> numpy array (batch 2)
    dynamic: dict  # name -> {axis: label}
    task: str
    notes: tuple[str, ...] = ()  # which class was loaded and why, where the inputs came from


def is_hf_source(spec: Any) -> bool:
    if not isinstance(spec, (str, Path)):
        return False
    text = str(spec)
    return text.startswith("hf:") or (Path(text).is_dir() and (Path(text) / "config.json").is_file())


def _folder(spec: str, allow_download: bool) -> str:
    if not spec.startswith("hf:"):
        return spec

    hub = require("huggingface_hub", "torch")
    repo = spec[3:]
    try:  # the cache folder is read now, not when huggingface_hub was imported
        return hub.snapshot_download(repo, local_files_only=not allow_download,
                                     cache_dir=os.environ.get("HF_HUB_CACHE") or None)
    except Exception as exc:  # not in the cache, offline, unknown repo
        raise BadInputError(f"{spec}: not in the local Hugging Face cache ({first_line(exc, 160)})",
                            hint=f"download it first (`hf download {repo}`), or pass --allow-download") from None


def _task(config, task: str | None) -> str:
    if task is not None:
        if task not in TASKS:
            raise UsageError(f"unknown task {task!r}", hint="use one of: " + ", ".join(TASKS))
        return task
    arch = (getattr(config, "architectures", None) or [""])[0]
    for suffix, t in (("ForSequenceClassification", "text-classification"),
                      ("ForTokenClassification", "token-classification"),
                      ("ForQuestionAnswering", "question-answering"), ("ForMaskedLM", "fill-mask"),
                      ("ForCausalLM", "text-generation"), ("LMHeadModel", "text-generation"),
                      ("ForImageClassification", "image-classification")):
        if arch.endswith(suffix):
            return t
    return "feature-extraction"


def _refuse_remote_code(spec, folder, found: bool = False) -> None:
    """A config.json with ``auto_map`` names Python files of the folder that transformers
    would import: refused before any transformers loader reads the folder."""
    if not found:
        try:
            found = bool(json.loads((Path(folder) / "config.json").read_text(encoding="utf-8")).get("auto_map"))
        except (OSError, ValueError, AttributeError):
            return  # no readable config: AutoConfig says so in its own words
    if found:
        raise BadInputError(f"{spec}: the model needs trust_remote_code (its code ships with the weights)",
                            hint="onnxforge does not run code from a model folder; export it with a factory instead")


# Keys that size a model (top level or in a sub-config such as text_config): each must be
# a positive integer where present.
SIZE_KEYS = ("num_hidden_layers", "num_layers", "n_layer", "n_layers", "encoder_layers", "decoder_layers",
             "hidden_size", "n_embd", "d_model", "dim", "hidden_dim", "embedding_size", "intermediate_size",
             "num_attention_heads", "n_head", "n_heads", "encoder_attention_heads", "decoder_attention_heads",
             "num_key_value_heads", "vocab_size", "max_position_embeddings", "n_positions", "num_labels",
             "image_size", "patch_size", "num_channels")
LAYER_KEYS = SIZE_KEYS[:6]
# Documented maxima, far above any published model (ImageNet-22k has 21,843 labels; the
# deepest models have a few hundred layers): AutoConfig spends seconds per 10**5 labels.
MAX_LABELS = 100_000
MAX_LAYERS = 1_000
MAX_CONFIG_BYTES = 32 * 2**20


def check_config(spec, folder) -> None:
    """Refuse a config.json whose sizes are not positive or would take minutes and
    gigabytes to build, reading it as JSON (nothing of transformers runs)."""
    path = Path(folder) / "config.json"
    try:
        if path.stat().st_size > MAX_CONFIG_BYTES:
            raise BadInputError(f"{spec}: config.json is {path.stat().st_size / 2**20:.0f} MiB (a model's config "
                                f"is a few KiB; at most {MAX_CONFIG_BYTES // 2**20} MiB is read)",
                                hint="check the file: it was not written by save_pretrained")
        raw = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError, RecursionError):
        return  # AutoConfig says what is wrong in its own words
    _check_sizes(spec, raw, "")


def _check_sizes(spec, raw, where: str, depth: int = 0) -> None:
    if not isinstance(raw, dict) or depth > 4:
        return
    for key, value in raw.items():
        name = where + key
        if isinstance(value, dict) and key not in ("id2label", "label2id"):
            _check_sizes(spec, value, name + ".", depth + 1)
        if key in SIZE_KEYS and isinstance(value, int) and not isinstance(value, bool) and value < 1:
            raise BadInputError(f"{spec}: config.json sets {name} = {value}; a model size must be at least 1",
                                hint=f"fix {name} in config.json (the model would be built without it)")
        if key in LAYER_KEYS and isinstance(value, int) and value > MAX_LAYERS:
            raise BadInputError(f"{spec}: config.json sets {name} = {value}, over the {MAX_LAYERS} layers "
                                "onnxforge builds", hint=f"check {name} in config.json")
    labels = raw.get("num_labels"), raw.get("id2label"), raw.get("label2id")
    n = max([labels[0] if isinstance(labels[0], int) else 0]
            + [len(x) for x in labels[1:] if isinstance(x, (dict, list))])
    if n > MAX_LABELS:
        raise BadInputError(f"{spec}: config.json declares {n} labels ({where}num_labels / id2label), over the "
                            f"{MAX_LABELS} onnxforge builds", hint="check num_labels and id2label in config.json")


def check_model_memory(spec, cls, config) -> None:
    """Count the model's weights on torch's "meta" device (no memory, no initialization
    cost) and refuse one that would not fit in half the available memory."""
    import torch


    try:
        build = getattr(cls, "from_config", None) or cls._from_config  # Auto classes / a model class itself
        with torch.device("meta"):
            meta = build(config)
        need = sum(t.numel() * t.element_size() for t in (*meta.parameters(), *meta.buffers()))
    except Exception:  # transformers' own load reports what is wrong with the config
        return
    free = available_memory()
    if need > free // 2:
        raise BadInputError(f"{spec}: the model's weights would take {need / 2**30:.1f} GiB; "
                            f"{free / 2**30:.1f} GiB of memory is available",
                            hint="check the sizes in config.json, or run it where more memory is free")


def _open_folder(spec, allow_download: bool):
    """(transformers, folder, config) once the folder is known to run no code of its own
    and its config.json to be sane (read as JSON before transformers builds anything)."""
    transformers = require("transformers", "torch")
    transformers.utils.logging.disable_progress_bar()  # it draws tqdm bars on stderr while loading
    transformers.utils.logging.set_verbosity_error()
    folder = _folder(str(spec), allow_download)
    _refuse_remote_code(spec, folder)
    check_config(spec, folder)
    try:  # trust_remote_code=False: transformers would otherwise ask on the terminal, and run the code on "y"
        config = transformers.AutoConfig.from_pretrained(folder, local_files_only=not allow_download,
                                                         trust_remote_code=False)
    except Exception as exc:
        raise BadInputError(f"{spec}: cannot read the Hugging Face config ({first_line(exc, 200)})",
                            hint="a save_pretrained folder holds config.json and the weights") from None
    if getattr(config, "auto_map", None):
        _refuse_remote_code(spec, folder, found=True)
    return transformers, folder, config


def load_hf(spec: str, *, task: str | None = None, allow_download: bool = False, inputs_given: bool = False) -> HFModel:
    """The folder's model and its example inputs. ``inputs_given``: the caller has --input
    specs or --inputs data, so a model whose inputs the config does not tell still loads."""
    transformers, folder, config = _open_folder(spec, allow_download)
    t = _task(config, task)
    arch = _architecture(config)
    if task is not None or not arch:
        cls = getattr(transformers, TASKS[t])
        why = (f"--task {t}: loaded with {TASKS[t]}, not the folder's {arch} (an explicit task wins)" if arch and task
               else f"loaded with {TASKS[t]} (task {t})" + ("" if arch else ": config.json names no architectures"))
    else:
        cls, why = declared_class(transformers, spec, arch), f"loaded as {arch}, the class config.json declares"
    check_model_memory(spec, cls, config)
    module = _from_pretrained(cls, spec, folder, allow_download, f"as {cls.__name__}")
    try:
        names, examples, dynamic, source = _inputs(module, config, _token_inputs(transformers, folder, config))
    except BadInputError:
        if not inputs_given:
            raise
        names, examples, dynamic, source = (), {}, {}, "from --input"
    inputs = "inputs from --input / --inputs" if inputs_given else f"inputs {', '.join(names)} ({source})"
    return HFModel(module, names, examples, dynamic, t, (why, inputs))


def _architecture(config) -> str:
    return str((getattr(config, "architectures", None) or [""])[0] or "")


def declared_class(transformers, spec, arch: str):
    """The class ``arch`` names, if transformers itself defines it: a name that is not
    one of its models (a folder's own code, a newer transformers' class) is refused, not
    replaced by a guess that exports a different model."""
    cls = getattr(transformers, arch, None) if arch.isidentifier() else None
    if not (isinstance(cls, type) and issubclass(cls, transformers.PreTrainedModel)
            and cls.__module__.startswith("transformers.models.")):
        raise BadInputError(f"{spec}: config.json declares architecture {arch!r}, which is not a model class of "
                            f"transformers {transformers.__version__}",
                            hint="upgrade transformers if it is a newer model, or pass --task to load it with that "
                                 "task's Auto class")
    return cls


def reference_class(transformers, spec, config, task: str | None):
    """The class the reference side of every check loads, decided here from config.json
    alone and not from what the converter loaded: the declared architecture, the task's
    Auto class when the user named a task (or the folder names no architecture)."""
    arch = _architecture(config)
    if task is None and arch:
        return declared_class(transformers, spec, arch)
    auto = getattr(transformers, TASKS[task or "feature-extraction"])
    try:  # the concrete class: a head the folder lacks is initialised at random, so only the same module agrees
        return auto._model_mapping[type(config)]
    except (AttributeError, KeyError):
        return auto


def _from_pretrained(cls, spec, folder, allow_download: bool, what: str):
    try:
        with quiet_third_party():
            module = cls.from_pretrained(folder, local_files_only=not allow_download, use_safetensors=None,
                                         trust_remote_code=False)
    except Exception as exc:
        unsafe = any(w in str(exc) for w in ("weights_only", "Unpickl", "pickle"))
        raise BadInputError(f"{spec}: cannot load the model {what} ({first_line(exc, 200)})",
                            hint="its weights file is a pickle that does not load safely (weights_only); nothing "
                                 "in it ran. Save the weights as safetensors (save_pretrained(safe_serialization=True))"
                            if unsafe else "check --task against the model's architecture") from None
    module.eval()
    if hasattr(module.config, "use_cache"):
        module.config.use_cache = False  # past key/values are not an export input here
    return module


def _token_inputs(transformers, folder, config) -> tuple[tuple[str, ...] | None, str]:
    """(the inputs the model's tokenizer makes, where that was read): the folder's own
    tokenizer (local files, no code from the folder), else the ``model_input_names`` of
    the tokenizer class transformers names for the model type; (None, ...) when neither
    tells. A RoBERTa exported with token_type_ids took an input its tokenizer never makes."""

    tok_config = Path(folder) / "tokenizer_config.json"
    try:
        remote = bool(json.loads(tok_config.read_text(encoding="utf-8")).get("auto_map"))
    except (OSError, ValueError, AttributeError):
        remote = tok_config.exists()  # unreadable: not loaded
    if not remote and ((Path(folder) / "tokenizer.json").is_file() or tok_config.is_file()):
        try:
            with quiet_third_party():
                tok = transformers.AutoTokenizer.from_pretrained(folder, local_files_only=True, trust_remote_code=False)
            return tuple(tok.model_input_names), f"from the folder's {type(tok).__name__}"
        except Exception:  # a tokenizer that does not load: fall back to the class's own names
            pass
    from transformers.models.auto.tokenization_auto import TOKENIZER_MAPPING_NAMES

    name = TOKENIZER_MAPPING_NAMES.get(getattr(config, "model_type", ""))
    if isinstance(name, (tuple, list)):  # transformers 4: (slow, fast)
        name = next((n for n in name if n), None)
    names = getattr(getattr(transformers, name, None), "model_input_names", None) if name else None
    if names:
        return tuple(names), f"those {name} makes"
    return None, "from forward() and the config"


def _inputs(module, config, tokenizer: tuple) -> tuple[tuple[str, ...], dict, dict, str]:
    import numpy as np

    params = inspect.signature(module.forward).parameters
    made, source = tokenizer
    rng = np.random.default_rng(0)
    examples, dynamic = {}, {}
    if "input_ids" in params and getattr(config, "vocab_size", None):
        vocab = int(config.vocab_size)
        examples["input_ids"] = rng.integers(0, vocab, size=(2, EXAMPLE_SEQ), dtype=np.int64)
        mask = np.ones((2, EXAMPLE_SEQ), dtype=np.int64)
        mask[1, EXAMPLE_SEQ - 3:] = 0  # one padded row: a mask that is all ones proves nothing
        if "attention_mask" in params and (made is None or "attention_mask" in made):
            examples["attention_mask"] = mask
        types = int(getattr(config, "type_vocab_size", 0) or 0)
        # with no tokenizer to ask, one token type means none is ever fed (RoBERTa's type_vocab_size is 1)
        if "token_type_ids" in params and (types > 1 or types == 1 and made is not None) and \
                (made is None or "token_type_ids" in made):
            examples["token_type_ids"] = rng.integers(0, types, size=(2, EXAMPLE_SEQ), dtype=np.int64)
        dynamic = {n: {0: BATCH, 1: SEQUENCE} for n in examples}
    elif "pixel_values" in params:
        size = getattr(config, "image_size", 224)
        size = size if isinstance(size, int) else size[0]
        channels = int(getattr(config, "num_channels", 3))
        examples["pixel_values"] = rng.standard_normal((2, channels, size, size)).astype(np.float32)
        dynamic = {"pixel_values": {0: BATCH}}
        source = "from the config"
    elif "input_features" in params and "decoder_input_ids" not in params and _mel_shape(config):
        # speech encoders with a head (WhisperForAudioClassification): what the feature extractor
        # makes, log-mel frames [batch, num_mel_bins, 2 * max_source_positions] (the encoder takes no other length)
        examples["input_features"] = rng.standard_normal((2, *_mel_shape(config))).astype(np.float32)
        dynamic = {"input_features": {0: BATCH}}
        source = "the feature extractor's, shaped from the config"
    else:
        raise BadInputError(f"cannot tell the inputs of {type(module).__name__} (its forward takes "
                            f"{', '.join(list(params)[:6])})",
                            hint="name them with --input NAME:DTYPE:SHAPE (or --inputs sample.npz)")
    return tuple(examples), examples, dynamic, source


def _mel_shape(config) -> tuple[int, int] | None:
    mels, positions = getattr(config, "num_mel_bins", None), getattr(config, "max_source_positions", None)
    return (int(mels), 2 * int(positions)) if isinstance(mels, int) and isinstance(positions, int) else None


def hf_val_ranges(config) -> dict:
    """Ranges that keep generated inputs valid for the model (used by later checks)."""
    out = {}
    if getattr(config, "vocab_size", None):
        out["input_ids"] = (0.0, float(config.vocab_size - 1))
        out["attention_mask"] = (1.0, 1.0)
        types = int(getattr(config, "type_vocab_size", 0) or 0)
        if types:
            out["token_type_ids"] = (0.0, float(types - 1))
    return out


def hf_input_norms(spec, names, allow_download: bool = False) -> tuple[dict, dict]:
    """(norms, ranges) of pixel inputs from the folder's preprocessor_config.json (read as
    JSON; nothing runs): an image processor rescales to [0, 255 * rescale_factor] and
    normalises with image_mean/image_std, so checks generate pixel_values that way."""
    path = Path(_folder(str(spec), allow_download)) / "preprocessor_config.json"
    if "pixel_values" not in names or not path.is_file():
        return {}, {}
    try:
        cfg = json.loads(path.read_text())
    except (OSError, ValueError, UnicodeDecodeError):
        return {}, {}
    if not isinstance(cfg, dict):
        return {}, {}
    mean, std = cfg.get("image_mean"), cfg.get("image_std")
    scale = cfg.get("rescale_factor", 1 / 255) if cfg.get("do_rescale", True) else 1.0
    hi = 255 * float(scale) if isinstance(scale, (int, float)) and not isinstance(scale, bool) else 1.0
    ranges = {} if abs(hi - 1.0) < 1e-6 else {"pixel_values": (0.0, hi)}
    if cfg.get("do_normalize", True) is False or mean is None or std is None:
        return {}, ranges
    to_list = (lambda v: v if isinstance(v, list) else [v])
    return {"pixel_values": {"mean": to_list(mean), "std": to_list(std), "label": ""}}, ranges


def load_reference(spec, *, task: str | None = None, allow_download: bool = False, loaded: Any = None):
    """The module the reference side of a check runs: ``reference_class`` loaded
    straight from the folder (``loaded``, a module of exactly that class, is used
    as it is rather than loaded twice)."""
    transformers, folder, config = _open_folder(spec, allow_download)
    cls = reference_class(transformers, spec, config, task)
    if loaded is not None and type(loaded) is cls:
        return loaded
    check_model_memory(spec, cls, config)
    return _from_pretrained(cls, spec, folder, allow_download, f"as {cls.__name__} for the reference")


def hf_runner(spec, *, label: str | None = None, task: str | None = None, allow_download: bool = False, **_ignored):
    """The reference runner of a Hugging Face source: its inputs bind to forward() by
    name, and every output the class returns is compared."""
    module = load_reference(spec, task=task, allow_download=allow_download)
    return torch_runner(module, label=label or f"hf:{Path(str(spec)).name}")


def missing_transformers() -> MissingDependencyError:
    return MissingDependencyError("Hugging Face sources need transformers", hint="pip install transformers")


# Optimum's and ORT GenAI's names for a decoder's cache inputs, outputs and axes
PAST, PRESENT = "past_key_values", "present"
BATCH_SIZE, SEQUENCE_LENGTH, PAST_LENGTH = "batch_size", "sequence_length", "past_sequence_length"
TOTAL_LENGTH = "past_sequence_length + sequence_length"
TOTAL_LABEL = "total_sequence_length"  # what torch.export calls it (a Dim name is an identifier); renamed after export
PAST_EXAMPLE, STEP_EXAMPLE = 4, 3  # cache length and new tokens of the example (torch.export specializes 0 and 1)


def cache_names(layers: int, prefix: str) -> list[str]:
    return [f"{prefix}.{i}.{kv}" for i in range(layers) for kv in ("key", "value")]


@dataclass(frozen=True)
class WithPast:
    """A decoder wrapped to take and return its cache as flat tensors."""

    module: Any  # the wrapper (nn.Module): forward(input_ids, attention_mask, [position_ids,] *past)
    model: Any  # the causal LM inside it
    names: tuple[str, ...]  # ONNX input names, in forward order
    outputs: tuple[str, ...]  # logits, present.{i}.key / .value
    examples: tuple  # torch tensors, in forward order: a real cache from a prefill of PAST_EXAMPLE tokens
    dynamic: tuple  # torch.export dynamic_shapes, in forward order (the past as one nested tuple)
    layers: int
    notes: tuple[str, ...] = ()


def load_with_past(spec, *, allow_download: bool = False) -> WithPast:
    """A decoder-only text-generation folder (GPT-2, Llama ...) wrapped so its KV cache
    is an input and an output: the layout of Optimum's text-generation-with-past. A model
    of another kind (an encoder, an encoder-decoder) is refused: it has no such cache."""
    transformers, folder, config = _open_folder(spec, allow_download)
    arch = _architecture(config)
    if getattr(config, "is_encoder_decoder", False) or _task(config, None) != "text-generation":
        raise BadInputError(f"{spec}: --task {WITH_PAST} exports a decoder-only text-generation model; config.json "
                            f"declares {arch or 'no architecture'}"
                            + (" (an encoder-decoder)" if getattr(config, "is_encoder_decoder", False) else ""),
                            hint=f"use --task {SEQ2SEQ_WITH_PAST} for an encoder-decoder (T5, BART), or drop --task "
                                 "for the folder's own task")
    cls = declared_class(transformers, spec, arch)
    check_model_memory(spec, cls, config)
    model = _from_pretrained(cls, spec, folder, allow_download, f"as {cls.__name__}")
    return _wrap_with_past(transformers, spec, model)


def _cache_arg(model) -> str:
    params = inspect.signature(model.forward).parameters
    return "cache" if "cache" in params else "past_key_values"  # transformers 5 renamed it


def _flat_cache(cache) -> list:
    layers = getattr(cache, "layers", None)
    if layers is not None:  # transformers 5: one object per layer
        return [t for layer in layers for t in (layer.keys, layer.values)]
    return [t for kv in cache.to_legacy_cache() for t in kv[:2]]


def _wrap_with_past(transformers, spec, model) -> WithPast:
    import torch

    config = model.config
    params = inspect.signature(model.forward).parameters
    takes_positions = "position_ids" in params
    arg = _cache_arg(model)
    vocab = int(getattr(config, "vocab_size", 0) or 0)
    if "input_ids" not in params or vocab < 1:
        raise BadInputError(f"{spec}: {type(model).__name__} takes no input_ids with a vocabulary",
                            hint=f"--task {WITH_PAST} exports token-in, logits-out decoders")
    gen = torch.Generator().manual_seed(0)
    prompt = torch.randint(0, vocab, (2, PAST_EXAMPLE + STEP_EXAMPLE), generator=gen)
    with torch.no_grad():
        try:
            out = model(input_ids=prompt[:, :PAST_EXAMPLE], use_cache=True, return_dict=True)
            past = _flat_cache(out.past_key_values)
        except Exception as exc:
            raise BadInputError(f"{spec}: {type(model).__name__} does not return a key/value cache "
                                f"({first_line(exc, 160)})", hint=f"--task {WITH_PAST} needs a model with use_cache") from None
    layers = len(past) // 2

    def make_cache(flat):
        pairs = [(flat[2 * i], flat[2 * i + 1]) for i in range(layers)]
        try:
            return transformers.DynamicCache(ddp_cache_data=pairs, config=config)
        except TypeError:  # transformers 4
            return transformers.DynamicCache.from_legacy_cache(tuple(pairs))

    class DecoderWithPast(torch.nn.Module):
        """The cache as flat tensors in and out, around a model that takes a Cache object."""

        def __init__(self, lm):
            super().__init__()
            self.lm = lm

        def forward(self, input_ids, attention_mask, *rest):
            positions, flat = (rest[0], rest[1:]) if takes_positions else (None, rest)
            kw = {"position_ids": positions} if takes_positions else {}
            out = self.lm(input_ids=input_ids, attention_mask=attention_mask, use_cache=True, return_dict=True,
                          **{arg: make_cache(list(flat))}, **kw)
            return (out.logits, *_flat_cache(out.past_key_values))

    step = prompt[:, PAST_EXAMPLE:]
    mask = torch.ones(prompt.shape, dtype=torch.int64)
    positions = torch.arange(PAST_EXAMPLE, PAST_EXAMPLE + STEP_EXAMPLE).expand(2, STEP_EXAMPLE).contiguous()
    dims = {k: torch.export.Dim(k) for k in (BATCH_SIZE, SEQUENCE_LENGTH, PAST_LENGTH, TOTAL_LABEL)}
    tokens = {0: dims[BATCH_SIZE], 1: dims[SEQUENCE_LENGTH]}
    heads = [tuple(t.shape) for t in past[:2]]
    names = ("input_ids", "attention_mask", *(("position_ids",) if takes_positions else ()), *cache_names(layers, PAST))
    examples = (step, mask, *((positions,) if takes_positions else ()), *past)
    # forward's *rest (position_ids, then the cache) is one nested entry of dynamic_shapes
    dynamic = (tokens, {0: dims[BATCH_SIZE], 1: dims[TOTAL_LABEL]},
               (*((tokens,) if takes_positions else ()), *({0: dims[BATCH_SIZE], 2: dims[PAST_LENGTH]} for _ in past)))
    note = (f"{type(model).__name__} exported with its key/value cache: {layers} layers, cache "
            f"[{BATCH_SIZE}, {heads[0][1]}, {PAST_LENGTH}, {heads[0][3]}] per key and value")
    return WithPast(DecoderWithPast(model).eval(), model, names, ("logits", *cache_names(layers, PRESENT)),
                    examples, dynamic, layers, (note,))


ENCODER_LENGTH = "encoder_sequence_length"


@dataclass(frozen=True)
class Seq2SeqWithPast:
    """An encoder-decoder split in two modules: the encoder (input_ids, attention_mask ->
    last_hidden_state) and the decoder with its self-attention cache as flat tensors."""

    model: Any  # the *ForConditionalGeneration inside both
    encoder: Any  # nn.Module: forward(input_ids, attention_mask)
    decoder: Any  # nn.Module: forward(input_ids, encoder_attention_mask, encoder_hidden_states, *past)
    encoder_examples: tuple
    decoder_names: tuple[str, ...]
    decoder_outputs: tuple[str, ...]  # logits, present.{i}.decoder.key / .value
    decoder_examples: tuple  # a real cache from PAST_EXAMPLE decoder tokens, then STEP_EXAMPLE new ones
    layers: int
    notes: tuple[str, ...] = ()


def load_seq2seq_with_past(spec, *, allow_download: bool = False) -> Seq2SeqWithPast:
    """An encoder-decoder text2text folder (T5, BART: a *ForConditionalGeneration whose
    config says is_encoder_decoder) as an encoder and a decoder with its cache."""
    transformers, folder, config = _open_folder(spec, allow_download)
    arch = _architecture(config)
    if not getattr(config, "is_encoder_decoder", False) or not arch.endswith("ForConditionalGeneration"):
        raise BadInputError(f"{spec}: --task {SEQ2SEQ_WITH_PAST} exports an encoder-decoder text2text model "
                            f"(T5, BART); config.json declares {arch or 'no architecture'}",
                            hint=f"use --task {WITH_PAST} for a decoder-only model")
    cls = declared_class(transformers, spec, arch)
    check_model_memory(spec, cls, config)
    model = _from_pretrained(cls, spec, folder, allow_download, f"as {cls.__name__}")
    return _wrap_seq2seq(transformers, spec, model)


def _seq2seq_cache(transformers, config, pairs):
    """An EncoderDecoderCache whose cross-attention half is empty: the decoder computes the
    encoder's keys and values from encoder_hidden_states at every call, so only the
    self-attention cache crosses the ONNX boundary."""
    try:
        own, cross = transformers.DynamicCache(ddp_cache_data=pairs, config=config), \
            transformers.DynamicCache(config=config)
    except TypeError:  # transformers 4
        own, cross = transformers.DynamicCache.from_legacy_cache(tuple(pairs)), transformers.DynamicCache()
    return transformers.EncoderDecoderCache(own, cross)


def _wrap_seq2seq(transformers, spec, model) -> Seq2SeqWithPast:
    import torch

    config, arg = model.config, _cache_arg(model)
    vocab, start = int(getattr(config, "vocab_size", 0) or 0), getattr(config, "decoder_start_token_id", None)
    if vocab < 1 or start is None:
        raise BadInputError(f"{spec}: {type(model).__name__} has no vocabulary or decoder_start_token_id",
                            hint=f"--task {SEQ2SEQ_WITH_PAST} exports token-in, logits-out encoder-decoders")

    class Encoder(torch.nn.Module):
        def __init__(self, lm):
            super().__init__()
            self.encoder = lm.get_encoder()

        def forward(self, input_ids, attention_mask):
            return self.encoder(input_ids=input_ids, attention_mask=attention_mask, return_dict=True).last_hidden_state

    class DecoderWithPast(torch.nn.Module):
        def __init__(self, lm):
            super().__init__()
            self.lm = lm

        def forward(self, input_ids, encoder_attention_mask, encoder_hidden_states, *flat):
            pairs = [(flat[2 * i], flat[2 * i + 1]) for i in range(len(flat) // 2)]
            out = self.lm(decoder_input_ids=input_ids, attention_mask=encoder_attention_mask,
                          encoder_outputs=(encoder_hidden_states,), use_cache=True, return_dict=True,
                          **{arg: _seq2seq_cache(transformers, config, pairs)})
            return (out.logits, *_flat_cache(out.past_key_values.self_attention_cache))

    gen = torch.Generator().manual_seed(0)
    ids = torch.randint(0, vocab, (2, 6), generator=gen)
    mask = torch.ones_like(ids)
    dec_ids = torch.randint(0, vocab, (2, PAST_EXAMPLE + STEP_EXAMPLE), generator=gen)
    encoder, decoder = Encoder(model).eval(), DecoderWithPast(model).eval()
    with torch.no_grad():
        try:
            hidden = encoder(ids, mask)
            out = model(decoder_input_ids=dec_ids[:, :PAST_EXAMPLE], attention_mask=mask,
                        encoder_outputs=(hidden,), use_cache=True, return_dict=True)
            past = _flat_cache(out.past_key_values.self_attention_cache)
        except Exception as exc:
            raise BadInputError(f"{spec}: {type(model).__name__} does not return a decoder key/value cache "
                                f"({first_line(exc, 160)})",
                                hint=f"--task {SEQ2SEQ_WITH_PAST} needs a model with use_cache") from None
    layers = len(past) // 2
    names = ("input_ids", "encoder_attention_mask", "encoder_hidden_states", *seq2seq_cache_names(layers, PAST))
    note = (f"{type(model).__name__} exported as encoder_model.onnx and a decoder with its self-attention cache: "
            f"{layers} layers, [{BATCH_SIZE}, {past[0].shape[1]}, {PAST_LENGTH}, {past[0].shape[3]}] per key and "
            "value; the cross-attention keys and values are computed from encoder_hidden_states at each step")
    return Seq2SeqWithPast(model, encoder, decoder, (ids, mask), names,
                           ("logits", *seq2seq_cache_names(layers, PRESENT)),
                           (dec_ids[:, PAST_EXAMPLE:], mask, hidden, *past), layers, (note,))


def seq2seq_cache_names(layers: int, prefix: str) -> list[str]:
    """Optimum's names for a seq2seq decoder's self-attention cache."""
    return [f"{prefix}.{i}.decoder.{kv}" for i in range(layers) for kv in ("key", "value")]
