"""Decoders exported with their key/value cache (--task text-generation-with-past, #28):
tiny GPT-2 and Llama models built from configs (random weights, seed 0), the layout
Optimum and ORT GenAI use, greedy generation against the folder's model, and a model
whose cache outputs are swapped failing the generation check."""

import hashlib
import json

import numpy as np
import pytest

from conftest import json_result as result

pytestmark = [pytest.mark.slow, pytest.mark.xdist_group("with_past")]  # exports share one module fixture

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")

WITH_PAST = ("--task", "text-generation-with-past")


def _folders(d):
    from tokenizers import Tokenizer, models, pre_tokenizers

    T = transformers
    torch.manual_seed(0)
    T.GPT2LMHeadModel(T.GPT2Config(n_layer=2, n_head=2, n_embd=32, vocab_size=100, n_positions=64, bos_token_id=0,
                                   eos_token_id=0)).eval().save_pretrained(d / "gpt2")
    words = ["<|endoftext|>", *"the cat sat on a mat dog ran".split()]
    tok = Tokenizer(models.WordLevel({w: i for i, w in enumerate(words)}, unk_token="<|endoftext|>"))
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    T.PreTrainedTokenizerFast(tokenizer_object=tok, eos_token="<|endoftext|>").save_pretrained(d / "gpt2")
    torch.manual_seed(0)
    T.LlamaForCausalLM(T.LlamaConfig(hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4,
                                     num_key_value_heads=2, vocab_size=100, max_position_embeddings=64,
                                     bos_token_id=0, eos_token_id=0)).eval().save_pretrained(d / "llama")


def _digest(folder):
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(folder.iterdir())}


def _export_each(d, names, task_args, model_file) -> dict:
    """Each folder under d exported once with the CLI (in process): {name: (folder, out folder, result, source digest)}."""
    from onnxforge.cli.app import main
    import contextlib
    import io

    out = {}
    for name in names:
        before = _digest(d / name)
        buf, err = io.StringIO(), io.StringIO()
        with contextlib.redirect_stdout(buf), contextlib.redirect_stderr(err):
            code = main(["convert", "torch", str(d / name), *task_args, "-o", str(d / f"{name}-onnx" / model_file),
                         "--json"])
        assert code == 0, err.getvalue()
        out[name] = (d / name, d / f"{name}-onnx", json.loads(buf.getvalue())["result"], before)
    return out


@pytest.fixture(scope="module")
def exports(tmp_path_factory):
    d = tmp_path_factory.mktemp("with_past")
    _folders(d)
    return _export_each(d, ("gpt2", "llama"), WITH_PAST, "model.onnx")


def _dims(v):
    return [d.dim_param or d.dim_value for d in v.type.tensor_type.shape.dim]


@pytest.mark.parametrize("name,positions,kv_heads,head", [("gpt2", True, 2, 16), ("llama", True, 2, 8)])
def test_the_cache_layout_is_optimums(exports, name, positions, kv_heads, head):
    import onnx

    _, out, res, _ = exports[name]
    m = onnx.load(str(out / "model.onnx"), load_external_data=False)
    ins = {v.name: _dims(v) for v in m.graph.input}
    outs = {v.name: _dims(v) for v in m.graph.output}
    cache = [f"{i}.{kv}" for i in range(2) for kv in ("key", "value")]
    assert list(ins) == ["input_ids", "attention_mask", "position_ids", *(f"past_key_values.{c}" for c in cache)]
    assert list(outs) == ["logits", *(f"present.{c}" for c in cache)]
    assert ins["input_ids"] == ins["position_ids"] == ["batch_size", "sequence_length"]
    assert ins["attention_mask"] == ["batch_size", "past_sequence_length + sequence_length"]
    assert ins["past_key_values.1.value"] == ["batch_size", kv_heads, "past_sequence_length", head]
    assert outs["present.0.key"] == ["batch_size", kv_heads, "past_sequence_length + sequence_length", head]
    assert outs["logits"] == ["batch_size", "sequence_length", 100]
    assert res["details"]["inputs"] == list(ins) and res["details"]["outputs"] == list(outs)


@pytest.mark.parametrize("name", ["gpt2", "llama"])
def test_greedy_generation_equals_the_folders_model(exports, name):
    _, _, res, _ = exports[name]
    example, gen = res["checks"]
    assert example["passed"] and {o["name"] for o in example["outputs"]} >= {"logits", "present.1.value"}
    g = gen["generation"]
    assert gen["passed"] and gen["check_stat"] == "generation"
    assert (g["tokens_equal"], g["tokens"], g["batch"]) == (8, 8, 2)
    assert len(g["step_errors"]) == 8 and g["max_logit_error"] < 1e-4, g
    assert g["reference_tokens"] == g["candidate_tokens"]
    print(f"{name}: {g['tokens_equal']}/{g['tokens']} tokens equal, max logit error {g['max_logit_error']:.3g}")


def test_config_and_tokenizer_files_are_copied_and_the_source_is_untouched(exports):
    src, out, res, before = exports["gpt2"]
    assert _digest(src) == before
    for f in ("config.json", "generation_config.json", "tokenizer.json", "tokenizer_config.json"):
        assert (out / f).read_bytes() == (src / f).read_bytes(), f
    assert "tokenizer.json" in res["details"]["side_files"]
    assert transformers.AutoTokenizer.from_pretrained(out)("the cat")["input_ids"] == [1, 2]
    assert transformers.AutoConfig.from_pretrained(out).model_type == "gpt2"
    assert not (out / "model.safetensors").exists()


def _swap(path, a, b, target):
    """The model with graph outputs ``a`` and ``b`` exchanged (the same shapes: the
    model still loads and runs, and its cache comes back in the wrong slots)."""
    import onnx

    m = onnx.load(str(path))
    names = {a: b, b: a}
    for node in m.graph.node:
        for i, n in enumerate(node.output):
            if n in names:
                node.output[i] = "__swap__" + names[n]
        for i, n in enumerate(node.input):
            if n in names:
                node.input[i] = "__swap__" + names[n]
    for node in m.graph.node:
        node.output[:] = [n.removeprefix("__swap__") for n in node.output]
        node.input[:] = [n.removeprefix("__swap__") for n in node.input]
    onnx.save(m, str(target))


def test_validate_runs_the_generation_check_and_fails_a_swapped_cache(exports, cli, tmp_path):
    src, out, _, _ = exports["llama"]
    r = cli("validate", src, out / "model.onnx", "--generate-tokens", "4", "--json")
    assert r.code == 0, r.err
    g = result(r)["generation"]
    assert (g["tokens_equal"], g["tokens"]) == (4, 4)
    _swap(out / "model.onnx", "present.0.key", "present.0.value", tmp_path / "swapped.onnx")
    r = cli("validate", src, tmp_path / "swapped.onnx")
    assert r.code == 1, r.out + r.err
    assert "generation:" in r.out and ("greedy tokens differ" in r.out or "logits differ" in r.out), r.out
    # an ONNX model with a cache against another: the fp32 export is the reference
    r = cli("validate", out / "model.onnx", tmp_path / "swapped.onnx", "--json")
    assert r.code == 1 and not result(r)["generation"]["passed"], r.err


def test_weights_changed_fail_the_generation_check(exports, cli, tmp_path):
    """A model whose weights differ from the folder's: greedy decoding parts or the logits do."""
    import onnx
    from onnx import numpy_helper

    src, out, _, _ = exports["gpt2"]
    m = onnx.load(str(out / "model.onnx"))
    init = max(m.graph.initializer, key=lambda t: np.prod(t.dims))
    arr = numpy_helper.to_array(init) * 1.5
    init.CopyFrom(numpy_helper.from_array(arr.astype(np.float32), init.name))
    onnx.save(m, str(tmp_path / "changed.onnx"))
    r = cli("validate", src, tmp_path / "changed.onnx", "--json")
    assert r.code == 1, r.err
    g = result(r)["generation"]
    assert not g["passed"] and g["max_logit_error"] > 1e-3


@pytest.mark.parametrize("mode,flags,logits_type", [
    ("dynamic", ("--allow-generated-data", "--min-speedup", "0"), 1),  # int8: logits stay float32
    ("fp16", ("--fp16-io",), 10),  # fp16 I/O, but the cache stays float32
])
def test_quantize_keeps_the_cache_dtype_and_still_generates(exports, cli, tmp_path, mode, flags, logits_type):
    import onnx

    _, out, _, _ = exports["llama"]
    r = cli("quantize", mode, out / "model.onnx", "-o", tmp_path / "q.onnx", *flags, "--json")
    assert r.code == 0, r.err
    (check,) = result(r)["checks"]
    g = check["generation"]
    assert check["passed"] and (g["tokens_equal"], g["tokens"]) == (8, 8), g
    print(f"llama {mode}: {g['tokens_equal']}/{g['tokens']} tokens equal against fp32, max logit error "
          f"{g['max_logit_error']:.3g}")
    m = onnx.load(str(tmp_path / "q.onnx"), load_external_data=False)
    types = {v.name: v.type.tensor_type.elem_type for v in (*m.graph.input, *m.graph.output)}
    assert all(t == 1 for n, t in types.items() if n.startswith(("past_key_values.", "present."))), types
    assert types["logits"] == logits_type


@pytest.mark.parametrize("name", ["gpt2", "llama"])
def test_int4_keeps_the_cache_float32_and_checks_by_generation(exports, cli, tmp_path, name):
    """int4 is weight-only: the cache and logits stay float32, and its check is greedy
    generation against the fp32 export. The tiny GPT-2 keeps all 8 tokens; the tiny
    Llama's random-weight logits are so flat (top-2 gaps below int4's ~0.03 logit error)
    that a token flips: its verdict must then be exit 1 with the step named, no model."""
    import onnx

    _, out, _, _ = exports[name]
    r = cli("quantize", "int4", out / "model.onnx", "-o", tmp_path / "q4.onnx", "--block-size", "16",
            "--allow-generated-data", "--speed-budget", "0", "--json")
    res = result(r)
    (check,) = res["checks"]
    g = check["generation"]
    assert check["check_stat"] == "generation" and (g["tokens"], g["batch"]) == (8, 2), check
    assert res["details"]["int4_weights"] >= 8, res["details"]  # attention and MLP weights of both layers
    print(f"{name} int4: {g['tokens_equal']}/{g['tokens']} tokens equal against fp32, max logit error "
          f"{g['max_logit_error']:.3g}")
    assert check["passed"] == (g["tokens_equal"] == g["tokens"]) and r.code == (0 if check["passed"] else 1), r.err
    if name == "gpt2":
        assert check["passed"], g
    if not check["passed"]:
        assert "greedy tokens differ at step" in check["problems"][0] and not (tmp_path / "q4.onnx").exists()
        return
    m = onnx.load(str(tmp_path / "q4.onnx"), load_external_data=False)
    assert any(n.op_type == "MatMulNBits" for n in m.graph.node)
    types = {v.name: v.type.tensor_type.elem_type for v in (*m.graph.input, *m.graph.output)}
    cache = [n for n in types if n.startswith(("past_key_values.", "present."))]
    assert len(cache) == 8 and all(types[n] == onnx.TensorProto.FLOAT for n in [*cache, "logits"]), types


def test_a_release_gates_on_generation(exports, cli, tmp_path):
    """[gates.generation]: each ledger row greedy-decodes against the source folder, and
    the gate requires every token equal; a final model without a cache fails it."""
    src = exports["gpt2"][0]
    toml = tmp_path / "release.toml"
    steps = ('[[steps]]\nrun = "convert"\n\n[[steps]]\nrun = "quantize.dynamic"\nmin_speedup = 0\n'
             'allow_generated_data = true\nrecipe = "plain"\n')  # the gate is under test, not the recipe search
    toml.write_text(f'[model]\nsource = "{src}"\nframework = "torch"\ntask = "text-generation-with-past"\n\n{steps}\n'
                    '[gates.generation]\ntokens = 4\natol = 1.0\n')
    r = cli("release", toml, "-o", tmp_path / "out", "--json")
    assert r.code == 0, r.out[-2000:] + r.err
    res = result(r)
    gate = next(g for g in res["gates"] if g["name"] == "generation")
    assert gate["passed"] and gate["value"] == 1.0 and gate["kind"] == "generation", gate
    assert [row["parity"]["generation"]["tokens_equal"] for row in res["ledger"]] == [4, 4]
    for f in ("config.json", "generation_config.json", "tokenizer.json"):  # beside the model, not in steps/ only
        assert (tmp_path / "out" / f).read_bytes() == (src / f).read_bytes(), f
    assert transformers.AutoTokenizer.from_pretrained(tmp_path / "out")("the cat")["input_ids"] == [1, 2]
    toml.write_text(f'[model]\nsource = "{src}"\nframework = "torch"\n\n[[steps]]\nrun = "convert"\n\n'
                    '[gates.generation]\n')
    r = cli("release", toml, "-o", tmp_path / "plain", "--json")
    assert r.code == 1, r.err
    gate = next(g for g in result(r)["gates"] if g["name"] == "generation")
    assert not gate["passed"] and "takes no key/value cache" in gate["message"]


SEQ2SEQ = ("--task", "text2text-generation-with-past")


def _seq2seq_folders(d):
    """Tiny T5 and BART; weights wider than their default init, so greedy decoding does
    not repeat one token (the default's flat logits decode the start token every step)."""
    T = transformers
    torch.manual_seed(0)
    T.T5ForConditionalGeneration(T.T5Config(d_model=32, d_ff=64, d_kv=16, num_layers=2, num_heads=2, vocab_size=100,
                                            decoder_start_token_id=0, pad_token_id=0, eos_token_id=1,
                                            initializer_factor=5.0)).eval().save_pretrained(d / "t5")
    torch.manual_seed(0)
    T.BartForConditionalGeneration(T.BartConfig(d_model=32, encoder_layers=2, decoder_layers=2, encoder_ffn_dim=64,
                                                decoder_ffn_dim=64, encoder_attention_heads=2,
                                                decoder_attention_heads=2, vocab_size=100, max_position_embeddings=64,
                                                decoder_start_token_id=2, pad_token_id=1, bos_token_id=0,
                                                eos_token_id=2, init_std=0.5)).eval().save_pretrained(d / "bart")


@pytest.fixture(scope="module")
def seq2seq(tmp_path_factory):
    """T5 and BART exported once."""
    d = tmp_path_factory.mktemp("seq2seq")
    _seq2seq_folders(d)
    return _export_each(d, ("t5", "bart"), SEQ2SEQ, "decoder_model.onnx")


@pytest.mark.parametrize("name", ["t5", "bart"])
def test_seq2seq_is_an_encoder_and_a_decoder_with_its_cache(seq2seq, name):
    import onnx

    src, out, res, before = seq2seq[name]
    assert sorted(p.name for p in out.iterdir()) == ["config.json", "decoder_model.onnx", "encoder_model.onnx",
                                                      "generation_config.json"]
    assert _digest(src) == before and res["details"]["side_files"][0] == "encoder_model.onnx"
    enc = onnx.load(str(out / "encoder_model.onnx"))
    assert {v.name: _dims(v) for v in enc.graph.input} == {"input_ids": ["batch_size", "encoder_sequence_length"],
                                                            "attention_mask": ["batch_size", "encoder_sequence_length"]}
    assert [(v.name, _dims(v)) for v in enc.graph.output] == [
        ("last_hidden_state", ["batch_size", "encoder_sequence_length", 32])]
    dec = onnx.load(str(out / "decoder_model.onnx"))
    ins = {v.name: _dims(v) for v in dec.graph.input}
    outs = {v.name: _dims(v) for v in dec.graph.output}
    cache = [f"{i}.decoder.{kv}" for i in range(2) for kv in ("key", "value")]
    assert list(ins) == ["input_ids", "encoder_attention_mask", "encoder_hidden_states",
                         *(f"past_key_values.{c}" for c in cache)]
    assert list(outs) == ["logits", *(f"present.{c}" for c in cache)]
    assert ins["past_key_values.1.decoder.value"] == ["batch_size", 2, "past_sequence_length", 16]
    assert outs["present.0.decoder.key"] == ["batch_size", 2, "past_sequence_length + sequence_length", 16]
    assert outs["logits"] == ["batch_size", "sequence_length", 100]


@pytest.mark.parametrize("name", ["t5", "bart"])
def test_seq2seq_greedy_generation_equals_the_folders_model(seq2seq, name):
    _, _, res, _ = seq2seq[name]
    enc, dec, gen = res["checks"]
    assert enc["passed"] and dec["passed"] and {o["name"] for o in dec["outputs"]} >= {"logits", "present.1.decoder.value"}
    g = gen["generation"]
    assert gen["passed"] and gen["check_stat"] == "generation" and (g["tokens_equal"], g["tokens"]) == (8, 8), g
    assert g["max_logit_error"] < 1e-4 and g["reference_tokens"] == g["candidate_tokens"]
    assert len({t for row in g["reference_tokens"] for t in row}) > 1, g  # not the start token decoded every step
    print(f"{name}: {g['tokens_equal']}/{g['tokens']} tokens equal, max logit error {g['max_logit_error']:.3g}")


def test_seq2seq_generation_fails_a_swapped_cache(seq2seq, tmp_path):
    from onnxforge.checks.generation import generation_check

    src, out, _, _ = seq2seq["t5"]
    _swap(out / "decoder_model.onnx", "present.0.decoder.key", "present.1.decoder.key", tmp_path / "swapped.onnx")
    model = transformers.T5ForConditionalGeneration.from_pretrained(src).eval()
    rep = generation_check(model, tmp_path / "swapped.onnx", encoder=out / "encoder_model.onnx")
    assert not rep.passed and rep.generation.max_logit_error > 1e-2, rep.generation
    assert "differ" in rep.problems[0]


def test_seq2seq_refusals(seq2seq, exports, cli, tmp_path):
    t5 = seq2seq["t5"][0]
    r = cli("convert", "torch", t5, *SEQ2SEQ, "-o", tmp_path / "encoder_model.onnx")
    assert r.code == 2 and "encoder's name" in r.err, r.err
    r = cli("convert", "torch", t5, *SEQ2SEQ, "--exporter", "dynamo", "-o", tmp_path / "d.onnx")
    assert r.code == 2 and "--exporter dynamo" in r.err, r.err
    r = cli("convert", "torch", t5, *WITH_PAST, "-o", tmp_path / "d.onnx")
    assert r.code == 3 and "text2text-generation-with-past" in r.err, r.err
    r = cli("convert", "torch", exports["gpt2"][0], *SEQ2SEQ, "-o", tmp_path / "d.onnx")
    assert r.code == 3 and "encoder-decoder" in r.err, r.err
    r = cli("convert", "torch", t5, *SEQ2SEQ, "-o", seq2seq["t5"][1] / "decoder_model.onnx")
    assert r.code == 3 and "exists" in r.err, r.err  # without --force
    assert not list(tmp_path.iterdir())


def _pair_without_encoder(out, folder, swap=None):
    """The decoder alone in ``folder`` (with the config), its cache outputs swapped if asked."""
    import shutil

    folder.mkdir()
    shutil.copy(out / "config.json", folder)
    if swap:
        _swap(out / "decoder_model.onnx", *swap, folder / "decoder_model.onnx")
    else:
        shutil.copy(out / "decoder_model.onnx", folder)
    return folder / "decoder_model.onnx"


def test_validate_decodes_an_encoder_decoder_with_the_encoder_beside(seq2seq, cli, tmp_path):
    """validate FOLDER decoder_model.onnx and validate fp32 candidate: the seq2seq greedy
    check (the encoder beside each decoder, or the reference's for a candidate without
    one, noted); a decoder whose cache comes back in the wrong slots fails (exit 1)."""
    import shutil

    src, out, _, _ = seq2seq["t5"]
    r = cli("validate", src, out / "decoder_model.onnx", "--generate-tokens", "4", "--json")
    assert r.code == 0, r.err
    g = result(r)["generation"]
    assert (g["tokens_equal"], g["tokens"]) == (4, 4) and g["max_logit_error"] < 1e-4, g
    broken = _pair_without_encoder(out, tmp_path / "broken", ("present.0.decoder.key", "present.1.decoder.key"))
    shutil.copy(out / "encoder_model.onnx", broken.parent)
    r = cli("validate", src, broken)
    assert r.code == 1, r.out + r.err
    assert "generation:" in r.out and ("greedy tokens differ" in r.out or "logits differ" in r.out), r.out
    alone = _pair_without_encoder(out, tmp_path / "alone")
    r = cli("validate", out / "decoder_model.onnx", alone, "--json")
    assert r.code == 0, r.err
    res = result(r)
    assert res["generation"]["tokens_equal"] == 8 and any("reference's encoder" in n for n in res["notes"]), res
    r = cli("validate", src, alone)  # against the folder, a decoder needs its own encoder
    assert r.code == 3 and "no encoder_model.onnx is beside it" in r.err, r.err


@pytest.mark.parametrize("name", ["t5", "bart"])
@pytest.mark.parametrize("mode,flags", [
    ("dynamic", ("--allow-generated-data", "--speed-budget", "0")),
    # fp16 logits; the cache and encoder_hidden_states stay float32. The T5's logits reach 79
    # (weights initialised 5x wider), so fp16's three digits are off by ~0.06: atol 0.5
    ("fp16", ("--fp16-io", "--atol", "0.5")),
])
def test_quantize_an_encoder_decoders_decoder(seq2seq, cli, tmp_path, name, mode, flags):
    """The quantized decoder is checked by greedy decoding against the fp32 pair, and
    its folder gets the fp32 encoder and config files beside it (it opens as the input's)."""
    import onnx

    _, out, _, _ = seq2seq[name]
    q = tmp_path / "q" / "decoder_model.onnx"
    r = cli("quantize", mode, out / "decoder_model.onnx", "-o", q, *flags, "--json")
    res = result(r)
    (check,) = res["checks"]
    g = check["generation"]
    print(f"{name} {mode}: {g['tokens_equal']}/{g['tokens']} tokens equal against fp32, max logit error "
          f"{g['max_logit_error']:.3g}")
    assert r.code == 0 and check["passed"] and (g["tokens_equal"], g["tokens"]) == (8, 8), (r.err, g)
    assert any("reference's encoder" in n for n in check["notes"]), check
    assert sorted(p.name for p in q.parent.iterdir()) == ["config.json", "decoder_model.onnx", "encoder_model.onnx",
                                                        "generation_config.json"]
    assert (q.parent / "encoder_model.onnx").read_bytes() == (out / "encoder_model.onnx").read_bytes()
    assert any(n.startswith("copied ") and "encoder_model.onnx" in n for n in res["notes"]), res["notes"]
    m = onnx.load(str(q), load_external_data=False)
    types = {v.name: v.type.tensor_type.elem_type for v in (*m.graph.input, *m.graph.output)}
    kept = [n for n in types if n.startswith(("past_key_values.", "present.", "encoder_hidden_states"))]
    assert len(kept) == 9 and all(types[n] == onnx.TensorProto.FLOAT for n in kept), types
    assert types["logits"] == (onnx.TensorProto.FLOAT16 if mode == "fp16" else onnx.TensorProto.FLOAT)
    r = cli("validate", out / "decoder_model.onnx", q, "--generate-tokens", "4", "--json")  # int8 logits: past 1e-3
    res = result(r)
    assert res["generation"]["tokens_equal"] == 4 and not res["notes"], res  # the folder holds its own encoder now


def test_a_release_of_an_encoder_decoder_publishes_the_pair(seq2seq, cli, tmp_path):
    """task = text2text-generation-with-past: each ledger row and [gates.generation] decode
    with the encoder, and the published folder holds the encoder, the decoder (model.onnx)
    and the config files: it validates against the source folder by itself."""
    src = seq2seq["t5"][0]
    toml = tmp_path / "release.toml"
    toml.write_text(f'[model]\nsource = "{src}"\nframework = "torch"\ntask = "text2text-generation-with-past"\n\n'
                    '[[steps]]\nrun = "convert"\n\n[[steps]]\nrun = "quantize.dynamic"\nspeed_budget = 0\n'
                    'allow_generated_data = true\n\n[gates.generation]\ntokens = 4\natol = 5.0\n')
    out = tmp_path / "out"  # atol 5: int8 is off by ~2 on logits up to 79, every token equal
    r = cli("release", toml, "-o", out, "--json")
    res = result(r)
    assert r.code == 0, [(row["parity"]["problems"], row["parity"]["generation"], row["parity"]["notes"]) for row in res["ledger"]]
    gate = next(g for g in res["gates"] if g["name"] == "generation")
    assert gate["passed"] and gate["value"] == 1.0, gate
    assert [row["parity"]["generation"]["tokens_equal"] for row in res["ledger"]] == [4, 4]
    assert {"model.onnx", "encoder_model.onnx", "config.json", "generation_config.json", "manifest.json"} <= \
        {p.name for p in out.iterdir()}
    manifest = json.loads((out / "manifest.json").read_text())
    assert set(manifest["files"]) == {"encoder_model.onnx", "config.json", "generation_config.json"}, manifest
    assert transformers.AutoConfig.from_pretrained(out).model_type == "t5"
    r = cli("validate", src, out / "model.onnx", "--generate-tokens", "4", "--atol", "5")
    assert r.code == 0, r.out + r.err
