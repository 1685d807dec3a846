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

# What a Hugging Face loader reads beside the weights (Optimum's ORTModelForCausalLM, AutoTokenizer)
SIDE_FILES = ("config.json", "generation_config.json", "tokenizer.json", "tokenizer_config.json",
              "special_tokens_map.json", "added_tokens.json", "vocab.json", "merges.txt", "vocab.txt",
              "tokenizer.model", "spiece.model", "chat_template.jinja")
MAX_SIDE_BYTES = 64 * 2**20  # a tokenizer.json is a few MiB; anything far larger is not one


def refuse_options(o: ConvertTorchOptions) -> None:
    """The layout is fixed: options that would change the inputs or their names are refused, not ignored."""
    from onnxforge.backends.torch.hf import WITH_PAST

    given = [flag for flag, v in (("--input", o.inputs), ("--inputs", o.example_inputs), ("--dynamic", o.dynamic),
                                  ("--input-name", o.input_names), ("--output-name", o.output_names),
                                  ("--weights", o.weights)) if v]
    if o.exporter == "torchscript":
        given.append("--exporter torchscript")
    if given:
        raise UsageError(f"{given[0]} does not apply to --task {WITH_PAST}: its inputs, outputs and axes are "
                         "the cache layout's", hint=f"drop {given[0]}")


def side_files(source, allow_download: bool) -> list[Path]:
    """The folder's files a loader needs beside the model, regular files inside the folder
    (a Hugging Face cache snapshot links to its blobs: those are followed)."""
    from onnxforge.backends.torch.hf import _folder

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
    from onnxforge.backends.torch.hf import WITH_PAST, is_hf_source, load_with_past
    from onnxforge.core.fileio import atomic_write_bytes, check_output_path

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
    from dataclasses import replace

    return replace(res, details={**res.details, **extra})


def _export_and_check(torch, source: str, w, target: Path, o: ConvertTorchOptions) -> StepResult:
    from onnxforge.backends.onnx.inspection import check_model
    from onnxforge.core.fileio import scratch_dir
    from onnxforge.core.logs import quiet_third_party
    from onnxforge.steps.artifacts import finish
    from onnxforge.steps.convert.exporting import check_written_opset, export_error, export_failure, export_hint

    notes = [*w.notes, "exported with the dynamo exporter (the cache layout needs torch.export's dynamic shapes)"]
    with scratch_dir(target) as tmp:
        tmp_model = tmp / target.name
        try:
            try:
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

    from onnxforge.backends.torch.hf import TOTAL_LABEL, TOTAL_LENGTH

    m = onnx.load(str(path), load_external_data=False)
    for v in (*m.graph.input, *m.graph.output, *m.graph.value_info):
        for d in v.type.tensor_type.shape.dim:
            if d.HasField("dim_param") and d.dim_param == TOTAL_LABEL:
                d.dim_param = TOTAL_LENGTH
    onnx.save_model(m, str(path))


def _checks(source: str, w, model_path: Path, o: ConvertTorchOptions) -> list:
    """One call on the example (a real cache of 4 tokens, 3 new ones), then greedy
    decoding against the folder's model run without a cache."""
    from onnxforge.backends.onnx.runner import onnx_runner
    from onnxforge.backends.torch.runner import contiguous, to_numpy
    from onnxforge.checks.compare import make_tolerance
    from onnxforge.checks.generation import ATOL, generation_check
    from onnxforge.steps.convert.exporting import check_once

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
