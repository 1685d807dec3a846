"""Hugging Face models as torch sources: a ``save_pretrained`` folder (config.json and
safetensors weights) or ``hf:ORG/NAME`` resolved from the local Hugging Face cache.

Nothing is downloaded unless the caller allows it (``allow_download``): the cache is
read with ``local_files_only``. Models that need ``trust_remote_code`` (code shipped
with the weights) are refused: loading them would run that code. Weights load from
safetensors, or from a .bin with torch's ``weights_only`` loader (transformers' own
default).

The inputs come from the config and the model's ``forward`` signature:
``input_ids`` / ``attention_mask`` / ``token_type_ids`` (dynamic batch and sequence)
for text models, ``pixel_values`` (dynamic batch) for vision models. Example values
are valid for the model: token ids below ``vocab_size``, token types below
``type_vocab_size``, attention masks of ones with padding at the end of one row.
``task`` takes Optimum's names (feature-extraction, text-classification ...).

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

from onnxforge.errors import BadInputError, MissingDependencyError, UsageError, first_line, require

from onnxforge.registry import HF_TASKS as TASKS

TEXT_INPUTS = ("input_ids", "attention_mask", "token_type_ids")
BATCH, SEQUENCE, EXAMPLE_SEQ = "batch", "sequence", 8


@dataclass(frozen=True)
class HFModel:
    module: Any
    names: tuple[str, ...]  # forward's keyword inputs, in order
    examples: dict  # name -> numpy array (batch 2)
    dynamic: dict  # name -> {axis: label}
    task: str


def is_hf_source(spec: Any) -> bool:
    if not isinstance(spec, (str, Path)):
        return False
    text = str(spec)
    return text.startswith("hf:") or (Path(text).is_dir() and (Path(text) / "config.json").is_file())


def _folder(spec: str, allow_download: bool) -> str:
    if not spec.startswith("hf:"):
        return spec
    import os

    hub = require("huggingface_hub", "torch")
    repo = spec[3:]
    try:  # the cache folder is read now, not when huggingface_hub was imported
        return hub.snapshot_download(repo, local_files_only=not allow_download,
                                     cache_dir=os.environ.get("HF_HUB_CACHE") or None)
    except Exception as exc:  # not in the cache, offline, unknown repo
        raise BadInputError(f"{spec}: not in the local Hugging Face cache ({first_line(exc, 160)})",
                            hint="download it first (huggingface-cli download), or pass --allow-download") from None


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
    import json

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
    import json

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

    from onnxforge.system import available_memory

    try:
        with torch.device("meta"):
            meta = cls.from_config(config)
        need = sum(t.numel() * t.element_size() for t in (*meta.parameters(), *meta.buffers()))
    except Exception:  # transformers' own load reports what is wrong with the config
        return
    free = available_memory()
    if need > free // 2:
        raise BadInputError(f"{spec}: the model's weights would take {need / 2**30:.1f} GiB; "
                            f"{free / 2**30:.1f} GiB of memory is available",
                            hint="check the sizes in config.json, or run it where more memory is free")


def load_hf(spec: str, *, task: str | None = None, allow_download: bool = False) -> HFModel:
    transformers = require("transformers", "torch")
    from onnxforge.logs import quiet_third_party

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
    t = _task(config, task)
    cls = getattr(transformers, TASKS[t])
    check_model_memory(spec, cls, config)
    try:
        with quiet_third_party():
            module = cls.from_pretrained(folder, local_files_only=not allow_download, use_safetensors=None,
                                         trust_remote_code=False)
    except Exception as exc:
        unsafe = any(w in str(exc) for w in ("weights_only", "Unpickl", "pickle"))
        raise BadInputError(f"{spec}: cannot load the model for task {t} ({first_line(exc, 200)})",
                            hint="its weights file is a pickle that does not load safely (weights_only); nothing "
                                 "in it ran. Save the weights as safetensors (save_pretrained(safe_serialization=True))"
                            if unsafe else "check --task against the model's architecture") from None
    module.eval()
    if hasattr(module.config, "use_cache"):
        module.config.use_cache = False  # past key/values are not an export input here
    names, examples, dynamic = _inputs(module, config)
    return HFModel(module, names, examples, dynamic, t)


def _inputs(module, config) -> tuple[tuple[str, ...], dict, dict]:
    import numpy as np

    params = inspect.signature(module.forward).parameters
    rng = np.random.default_rng(0)
    examples, dynamic = {}, {}
    if "input_ids" in params and getattr(config, "vocab_size", None):
        vocab = int(config.vocab_size)
        examples["input_ids"] = rng.integers(0, vocab, size=(2, EXAMPLE_SEQ), dtype=np.int64)
        mask = np.ones((2, EXAMPLE_SEQ), dtype=np.int64)
        mask[1, EXAMPLE_SEQ - 3:] = 0  # one padded row: a mask that is all ones proves nothing
        if "attention_mask" in params:
            examples["attention_mask"] = mask
        types = int(getattr(config, "type_vocab_size", 0) or 0)
        if "token_type_ids" in params and types > 0:
            examples["token_type_ids"] = rng.integers(0, types, size=(2, EXAMPLE_SEQ), dtype=np.int64)
        dynamic = {n: {0: BATCH, 1: SEQUENCE} for n in examples}
    elif "pixel_values" in params:
        size = getattr(config, "image_size", 224)
        size = size if isinstance(size, int) else size[0]
        channels = int(getattr(config, "num_channels", 3))
        examples["pixel_values"] = rng.standard_normal((2, channels, size, size)).astype(np.float32)
        dynamic = {"pixel_values": {0: BATCH}}
    else:
        raise BadInputError(f"cannot tell the inputs of {type(module).__name__} (its forward takes "
                            f"{', '.join(list(params)[:6])})", hint="export it from a factory with --input specs")
    return tuple(examples), examples, dynamic


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


def hf_runner(spec, *, label: str | None = None, task: str | None = None, allow_download: bool = False, **_ignored):
    from onnxforge.runners.torch import torch_runner

    m = load_hf(spec, task=task, allow_download=allow_download)
    return torch_runner(m.module, label=label or f"hf:{Path(str(spec)).name}", keyword=m.names)


def missing_transformers() -> MissingDependencyError:
    return MissingDependencyError("Hugging Face sources need transformers", hint="pip install transformers")
