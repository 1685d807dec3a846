"""A decoder-only text-generation folder to ONNX with its key/value cache
(``--task text-generation-with-past``): Optimum's and ORT GenAI's layout, inputs
``input_ids``, ``attention_mask``, ``position_ids`` (where the model takes them),
``past_key_values.{i}.key`` / ``.value``, outputs ``logits``, ``present.{i}.key`` /
``.value``, axes batch_size, sequence_length, past_sequence_length and
``past_sequence_length + sequence_length``.

Checked twice: parity of one call with a real cache (the example), and the generation
check (checks/generation.py: greedy decoding against the folder's model). The folder's
config, generation config and tokenizer files are copied beside the ONNX model, so the
output folder opens with Hugging Face loaders; the source folder is only read.
"""

from __future__ import annotations

from pathlib import Path

from onnxforge.core.errors import BadInputError, ConversionError, UsageError
from onnxforge.core.types import StepResult
from onnxforge.steps.convert.options import ConvertTorchOptions
from dataclasses import replace
from onnxforge.backends.onnx.inspection import check_model
from onnxforge.backends.onnx.runner import onnx_runner
from onnxforge.backends.torch.hf import (
    BATCH_SIZE,
    ENCODER_LENGTH,
    PAST_LENGTH,
    SEQ2SEQ_WITH_PAST,
    SEQUENCE_LENGTH,
    TOTAL_LABEL,
    TOTAL_LENGTH,
    WITH_PAST,
    _folder,
    is_hf_source,
    load_seq2seq_with_past,
    load_with_past,
)
from onnxforge.backends.torch.runner import contiguous, to_numpy
from onnxforge.checks.compare import make_tolerance
from onnxforge.checks.generation import ATOL, ENCODER_FILE, SIDE_FILES, generation_check
from onnxforge.core.fileio import atomic_write_bytes, check_output_path, scratch_dir
from onnxforge.core.logs import quiet_third_party
from onnxforge.steps.artifacts import finish
from onnxforge.steps.convert.exporting import (
    check_once,
    check_written_opset,
    export_error,
    export_failure,
    export_hint,
    prepare_dynamo_export,
)

MAX_SIDE_BYTES = 64 * 2**20  # a tokenizer.json is a few MiB; anything far larger is not one


def refuse_options(o: ConvertTorchOptions, exporter: str = "dynamo") -> None:
    """The layout is fixed: options that would change the inputs or their names, or the
    exporter the layout needs (``exporter``), are refused, not ignored."""
    given = [flag for flag, v in (("--input", o.inputs), ("--inputs", o.example_inputs), ("--dynamic", o.dynamic),
                                  ("--input-name", o.input_names), ("--output-name", o.output_names),
                                  ("--weights", o.weights)) if v]
    if o.exporter not in ("auto", exporter):
        given.append(f"--exporter {o.exporter}")
    if given:
        raise UsageError(f"{given[0]} does not apply to --task {o.task}: its inputs, outputs, axes and exporter are "
                         "the cache layout's", hint=f"drop {given[0]}")


def side_files(source, allow_download: bool) -> list[Path]:
    """The folder's files a loader needs beside the model, regular files inside the folder
    (a Hugging Face cache snapshot links to its blobs: those are followed)."""
    folder = Path(_folder(str(source), allow_download))
    cache = folder.resolve().parent.parent if str(source).startswith("hf:") else folder.resolve()
    out = []
    for name in SIDE_FILES:
        p = folder / name
        if not p.is_file():
            continue
        real = p.resolve()
        if cache not in real.parents and real.parent != folder.resolve():
            raise BadInputError(f"{source}: {name} links outside the model folder ({real})",
                                hint="copy the real file into the folder")
        if real.stat().st_size > MAX_SIDE_BYTES:
            raise BadInputError(f"{source}: {name} is {real.stat().st_size / 2**20:.0f} MiB, over the "
                                f"{MAX_SIDE_BYTES // 2**20} MiB copied beside the model", hint=f"check {name}")
        out.append(p)
    return out


def convert_with_past(torch, source, target: Path, o: ConvertTorchOptions) -> StepResult:
    if not is_hf_source(source):
        raise UsageError(f"--task {WITH_PAST} exports a Hugging Face folder or hf:ORG/NAME",
                         hint="give the save_pretrained folder of a decoder (GPT-2, Llama ...)")
    refuse_options(o)
    files = side_files(source, o.allow_download)
    for f in files:  # refused before the export, like the model's own path
        check_output_path(target.parent / f.name, force=o.force, inputs=files, companions=(), what="side file")
    w = load_with_past(source, allow_download=o.allow_download)
    res = _export_and_check(torch, str(source), w, target, o)
    if res.written and res.passed:
        for f in files:
            atomic_write_bytes(target.parent / f.name, f.read_bytes())
        res = _with_details(res, side_files=[f.name for f in files])
    return res


def _with_details(res: StepResult, **extra) -> StepResult:
    return replace(res, details={**res.details, **extra})


def _export_and_check(torch, source: str, w, target: Path, o: ConvertTorchOptions) -> StepResult:
    notes = [*w.notes, "exported with the dynamo exporter (the cache layout needs torch.export's dynamic shapes)"]
    with scratch_dir(target) as tmp:
        tmp_model = tmp / target.name
        try:
            try:
                prepare_dynamo_export()
                with quiet_third_party():
                    torch.onnx.export(w.module, w.examples, str(tmp_model), input_names=list(w.names),
                                      output_names=list(w.outputs), opset_version=o.opset, dynamo=True,
                                      external_data=True, dynamic_shapes=w.dynamic, verbose=False)
            except Exception as exc:
                msg = export_error(exc, o.opset)
                raise ConversionError(f"export failed: {msg}", hint=export_hint(msg, o.opset, tried=("dynamo",))) \
                    from None
            check_written_opset(tmp_model, o.opset)
            check_model(tmp_model)
        except (BadInputError, ConversionError) as exc:
            raise export_failure(exc, [], tmp_model, target) from None
        _name_axes(tmp_model)
        checks = _checks(source, w, tmp_model, o) if o.check else []
        if not o.check:
            notes.append("parity and generation checks skipped (--no-check)")
        return finish(tmp_model, target, step="convert:torch", passed=all(c.passed for c in checks), options=o,
                      lineage=("convert:torch",), checks=checks, notes=notes,
                      details={"exporter": "dynamo", "source_kind": "huggingface", "task": o.task,
                               "inputs": list(w.names), "outputs": list(w.outputs), "layers": w.layers,
                               "weight_bytes": sum(p.numel() * p.element_size() for p in w.model.parameters())})


def _name_axes(path: Path) -> None:
    """torch.export names a Dim after an identifier: the attention mask's length becomes
    Optimum's ``past_sequence_length + sequence_length``, the name the exporter already
    gives the present outputs' length."""
    import onnx


    m = onnx.load(str(path), load_external_data=False)
    for v in (*m.graph.input, *m.graph.output, *m.graph.value_info):
        for d in v.type.tensor_type.shape.dim:
            if d.HasField("dim_param") and d.dim_param == TOTAL_LABEL:
                d.dim_param = TOTAL_LENGTH
    onnx.save_model(m, str(path))


def _checks(source: str, w, model_path: Path, o: ConvertTorchOptions) -> list:
    """One call on the example (a real cache of 4 tokens, 3 new ones), then greedy
    decoding against the folder's model run without a cache."""
    def reference(feeds):
        import torch

        with torch.no_grad():
            out = w.module(*[torch.from_numpy(feeds[n]) for n in w.names])
        return {n: contiguous(to_numpy(t)) for n, t in zip(w.outputs, out)}

    feeds = {n: contiguous(to_numpy(t)) for n, t in zip(w.names, w.examples)}
    tol = make_tolerance(o.atol, o.rtol)
    example = check_once(reference, onnx_runner(model_path, "cpu", label="onnx"), feeds, tol,
                     "example inputs, a cache of 4 tokens", {"source": "generated", "how": "4 prompt tokens (seed 0) "
                                                             "run through the model for a real cache, then 3 new"})
    atol = tol.for_output("logits")[0] if o.atol else ATOL
    gen = generation_check(w.model, model_path, tokens=o.generate_tokens, atol=atol, seed=o.seed,
                           reference_label=f"hf:{Path(source).name}", candidate_label="onnx (greedy, with its cache)")
    return [example, gen]


def convert_seq2seq_with_past(torch, source, target: Path, o: ConvertTorchOptions) -> StepResult:
    """An encoder-decoder folder (T5, BART) as two models: ``-o`` names the decoder with
    its cache (Optimum calls it decoder_model.onnx), and encoder_model.onnx is written
    beside it with the folder's config and tokenizer files, once every check passed."""
    if not is_hf_source(source):
        raise UsageError(f"--task {SEQ2SEQ_WITH_PAST} exports a Hugging Face folder or hf:ORG/NAME",
                         hint="give the save_pretrained folder of an encoder-decoder (T5, BART ...)")
    if target.name == ENCODER_FILE:
        raise UsageError(f"-o {target}: {ENCODER_FILE} is the encoder's name beside the decoder",
                         hint=f"name the decoder, e.g. -o {target.parent / 'decoder_model.onnx'}")
    refuse_options(o, exporter="torchscript")
    files = side_files(source, o.allow_download)
    encoder_out = check_output_path(target.parent / ENCODER_FILE, force=o.force, inputs=files, what="encoder")
    for f in files:
        check_output_path(target.parent / f.name, force=o.force, inputs=files, companions=(), what="side file")
    w = load_seq2seq_with_past(source, allow_download=o.allow_download)
    res, encoder = _export_seq2seq(torch, str(source), w, target, o)
    if res.written and res.passed:
        atomic_write_bytes(encoder_out, encoder)
        for f in files:
            atomic_write_bytes(target.parent / f.name, f.read_bytes())
        res = _with_details(res, side_files=[ENCODER_FILE, *(f.name for f in files)])
    return res


def _export_seq2seq(torch, source: str, w, target: Path, o: ConvertTorchOptions) -> tuple[StepResult, bytes]:
    """Both halves exported and checked in a scratch folder: (the decoder's StepResult, the encoder's bytes)."""
    tokens, enc = {0: BATCH_SIZE, 1: SEQUENCE_LENGTH}, {0: BATCH_SIZE, 1: ENCODER_LENGTH}
    notes = [*w.notes, "exported with the TorchScript exporter (torch.export fails on T5's attention reshape "
                       "with a symbolic length, torch 2.13)"]
    opset = o.opset or 17
    with scratch_dir(target) as tmp:
        enc_model, tmp_model = tmp / ENCODER_FILE, tmp / target.name
        jobs = ((w.encoder, w.encoder_examples, enc_model, ("input_ids", "attention_mask"), ("last_hidden_state",),
                 {"input_ids": enc, "attention_mask": enc, "last_hidden_state": enc}),
                (w.decoder, w.decoder_examples, tmp_model, w.decoder_names, w.decoder_outputs,
                 {"input_ids": tokens, "encoder_attention_mask": enc, "encoder_hidden_states": enc, "logits": tokens,
                  **{n: {0: BATCH_SIZE, 2: PAST_LENGTH} for n in w.decoder_names[3:]},
                  **{n: {0: BATCH_SIZE, 2: f"{PAST_LENGTH} + {SEQUENCE_LENGTH}"} for n in w.decoder_outputs[1:]}}))
        for module, examples, path, names, outputs, axes in jobs:
            try:
                try:
                    with quiet_third_party(), torch.no_grad():
                        torch.onnx.export(module, examples, str(path), input_names=list(names),
                                          output_names=list(outputs), opset_version=opset, dynamo=False,
                                          dynamic_axes=axes)
                except Exception as exc:
                    msg = export_error(exc, opset)
                    raise ConversionError(f"export failed ({path.name}): {msg}",
                                          hint=export_hint(msg, opset, tried=("torchscript",))) from None
                check_written_opset(path, o.opset)
                check_model(path)
            except (BadInputError, ConversionError) as exc:
                raise export_failure(exc, [], path, target) from None
        checks = _seq2seq_checks(source, w, enc_model, tmp_model, o) if o.check else []
        if not o.check:
            notes.append("parity and generation checks skipped (--no-check)")
        encoder = enc_model.read_bytes()
        res = finish(tmp_model, target, step="convert:torch", passed=all(c.passed for c in checks), options=o,
                     lineage=("convert:torch",), checks=checks, notes=notes,
                     details={"exporter": "torchscript", "source_kind": "huggingface", "task": o.task,
                              "encoder": ENCODER_FILE, "inputs": list(w.decoder_names),
                              "outputs": list(w.decoder_outputs), "layers": w.layers,
                              "weight_bytes": sum(p.numel() * p.element_size() for p in w.model.parameters())})
    return res, encoder


def _seq2seq_checks(source: str, w, enc_model: Path, dec_model: Path, o: ConvertTorchOptions) -> list:
    """Each half on its example (the decoder with a real cache of 4 tokens, 3 new ones),
    then greedy decoding against the folder's model run without a cache."""
    def half(module, names, outputs):
        def run(feeds):
            import torch

            with torch.no_grad():
                out = module(*[torch.from_numpy(feeds[n]) for n in names])
            return {n: contiguous(to_numpy(t)) for n, t in zip(outputs, out if isinstance(out, tuple) else (out,))}
        return run

    tol = make_tolerance(o.atol, o.rtol)
    checks = []
    for module, names, outputs, examples, path, what in (
            (w.encoder, ("input_ids", "attention_mask"), ("last_hidden_state",), w.encoder_examples, enc_model,
             "encoder example"),
            (w.decoder, w.decoder_names, w.decoder_outputs, w.decoder_examples, dec_model,
             "decoder example, a cache of 4 tokens")):
        feeds = {n: contiguous(to_numpy(t)) for n, t in zip(names, examples)}
        checks.append(check_once(half(module, names, outputs), onnx_runner(path, "cpu", label=path.name), feeds,
                                 tol, what, {"source": "generated", "how": what + " (seed 0)"}))
    atol = tol.for_output("logits")[0] if o.atol else ATOL
    checks.append(generation_check(w.model, dec_model, encoder=enc_model, tokens=o.generate_tokens, atol=atol,
                                   seed=o.seed, reference_label=f"hf:{Path(source).name}",
                                   candidate_label="onnx encoder + decoder (greedy, with its cache)"))
    return checks
