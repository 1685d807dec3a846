"""Generative export with a KV cache (#28): --task text-generation-with-past on folders
that are not decoders, and options that would change the cache layout."""

from __future__ import annotations

from pathlib import Path

from cases import A, Case, _i, _o


def _setup(ws: Path) -> None:
    """A tiny BERT (an encoder) and a tiny GPT-2 (a decoder), saved with save_pretrained."""
    d = ws / "in"
    if (d / "bert").exists() and (d / "gpt2").exists():
        return
    import torch
    from transformers import BertConfig, BertForMaskedLM, GPT2Config, GPT2LMHeadModel

    torch.manual_seed(0)
    BertForMaskedLM(BertConfig(vocab_size=100, hidden_size=16, num_hidden_layers=1, num_attention_heads=2,
                               intermediate_size=32, max_position_embeddings=64)).eval().save_pretrained(d / "bert")
    GPT2LMHeadModel(GPT2Config(n_layer=1, n_head=2, n_embd=16, vocab_size=100, n_positions=64, bos_token_id=0,
                               eos_token_id=0)).eval().save_pretrained(d / "gpt2")


WITH_PAST = ("--task", "text-generation-with-past")
SEQ2SEQ = ("--task", "text2text-generation-with-past")

CASES = [
    Case("with-past on an encoder (BERT) folder", A("convert", "torch", _i("bert"), *WITH_PAST, "-o", _o("m.onnx")),
         3, "decoder-only text-generation", outputs=("out",), setup=_setup, slow=True),
    Case("with-past on a .onnx, not a folder", A("convert", "torch", _i("gpt2/config.json"), *WITH_PAST, "-o",
                                                 _o("m.onnx")),
         2, "Hugging Face folder", outputs=("out",), setup=_setup, slow=True),
    Case("with-past with --dynamic (the layout is fixed)", A("convert", "torch", _i("gpt2"), *WITH_PAST, "--dynamic",
                                                             "input_ids:0=batch", "-o", _o("m.onnx")),
         2, "--dynamic does not apply", outputs=("out",), setup=_setup, slow=True),
    Case("with-past into the source folder", A("convert", "torch", _i("gpt2"), *WITH_PAST, "-o", _i("gpt2/m.onnx")),
         3, "inputs are never modified", setup=_setup, slow=True),
    Case("--generate-tokens 0", A("convert", "torch", _i("gpt2"), *WITH_PAST, "--generate-tokens", "0", "-o",
                                  _o("m.onnx")),
         2, "generate", outputs=("out",), setup=_setup, slow=True),
    Case("text2text-with-past on a decoder-only (GPT-2) folder", A("convert", "torch", _i("gpt2"), *SEQ2SEQ, "-o",
                                                                    _o("decoder_model.onnx")),
         3, "encoder-decoder text2text", outputs=("out",), setup=_setup, slow=True),
    Case("text2text-with-past with --input-name (the layout is fixed)",
         A("convert", "torch", _i("gpt2"), *SEQ2SEQ, "--input-name", "x", "-o", _o("decoder_model.onnx")),
         2, "--input-name does not apply", outputs=("out",), setup=_setup, slow=True),
    Case("text2text-with-past -o encoder_model.onnx (the encoder's name)",
         A("convert", "torch", _i("gpt2"), *SEQ2SEQ, "-o", _o("encoder_model.onnx")),
         2, "encoder's name", outputs=("out",), setup=_setup, slow=True),
]
