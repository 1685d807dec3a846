from __future__ import annotations

from typing import Annotated, Optional

import typer

from onnxforge.cli.common import (
    AtolOpt, ForceOpt, FormatOpt, InputSpecOpt, InputsOpt, JsonOpt, KeepFailedOpt, NoCheckOpt, OutputOpt,
    PrintStepOpt, ReportOpt, RtolOpt, SeedOpt, TrustPickleOpt, ValRangeOpt, emit, print_step, wants_json,
)

app = typer.Typer(help="Convert a torch or scikit-learn model to ONNX, checked against the source.",
                  no_args_is_help=True)


@app.command("torch")
def torch_cmd(
    source: Annotated[str, typer.Argument(help="A .pt2 (torch.export.save), a TorchScript file, a factory module:function or file.py:function, or a pickled model (--trust-pickle).", metavar="SOURCE")],
    output: OutputOpt,
    input_: InputSpecOpt = None,
    inputs: InputsOpt = None,
    dynamic: Annotated[Optional[list[str]], typer.Option("--dynamic", help="Dynamic axis NAME:AXIS=LABEL, e.g. x:0=batch (repeatable).", metavar="NAME:AXIS=LABEL")] = None,
    opset: Annotated[Optional[int], typer.Option("--opset", help="ai.onnx opset (default: the exporter's).", min=7)] = None,
    exporter: Annotated[str, typer.Option("--exporter", help="auto (dynamo, then TorchScript on failure), dynamo, torchscript.")] = "auto",
    input_name: Annotated[Optional[list[str]], typer.Option("--input-name", help="ONNX input names, in forward() order (repeatable).")] = None,
    output_name: Annotated[Optional[list[str]], typer.Option("--output-name", help="ONNX output names, in flattened order (repeatable).")] = None,
    external_data: Annotated[Optional[bool], typer.Option("--external-data/--no-external-data", help="Weights in a separate file (default: only past 2 GB).")] = None,
    weights: Annotated[Optional[str], typer.Option("--weights", help="state_dict for a factory, loaded with weights_only=True.", metavar="PATH")] = None,
    trust_pickle: TrustPickleOpt = False,
    no_check: NoCheckOpt = False,
    atol: AtolOpt = None,
    rtol: RtolOpt = None,
    seed: SeedOpt = 0,
    val_range: ValRangeOpt = None,
    force: ForceOpt = False,
    keep_failed: KeepFailedOpt = False,
    print_step_: PrintStepOpt = False,
    json_: JsonOpt = False,
    fmt: FormatOpt = "table",
    report: ReportOpt = None,
) -> None:
    """Export a torch model to ONNX, then check it against the module on the example
    inputs and at a second size of every dynamic axis."""
    from onnxforge.converters.torch import convert_torch
    from onnxforge.specs import parse_val_ranges
    from onnxforge.validators.parity import parse_tolerances

    as_json = wants_json(json_, fmt)
    if print_step_:
        print_step("convert", {"opset": opset, "exporter": exporter if exporter != "auto" else None,
                               "input_names": input_name, "output_names": output_name, "external_data": external_data},
                   model={"source": source, "framework": "torch", "inputs": input_ or None, "dynamic": dynamic,
                          "weights": weights, "trust_pickle": trust_pickle or None})
        return
    res = convert_torch(
        source, output, inputs=input_ or (), example_inputs=str(inputs) if inputs else None,
        dynamic=dynamic or (), opset=opset, exporter=exporter, input_names=input_name or None,
        output_names=output_name or None, external_data=external_data, weights=weights,
        trust_pickle=trust_pickle, check=not no_check, tolerance=parse_tolerances(atol, rtol), seed=seed,
        val_ranges=parse_val_ranges(val_range or []), force=force, keep_failed=keep_failed,
    )
    emit(res, as_json=as_json, report=report, passed=res.passed)


@app.command("sklearn")
def sklearn_cmd(
    source: Annotated[str, typer.Argument(help="A .skops file, a factory module:function returning a fitted estimator, or a .joblib/.pkl (--trust-pickle).", metavar="SOURCE")],
    output: OutputOpt,
    sample: Annotated[Optional[str], typer.Option("--sample", help="Sample data: X.npy / .npz (one input X) or a headed CSV (one input per column).", metavar="PATH")] = None,
    input_: InputSpecOpt = None,
    zipmap: Annotated[bool, typer.Option("--zipmap/--no-zipmap", help="Classifier probabilities as ZipMap (list of dicts) or a plain tensor (default).")] = False,
    option: Annotated[Optional[list[str]], typer.Option("--option", help="skl2onnx option for the final estimator: KEY=VALUE (repeatable).", metavar="KEY=VALUE")] = None,
    target_opset: Annotated[Optional[int], typer.Option("--target-opset", help="ai.onnx opset for skl2onnx.")] = None,
    double: Annotated[bool, typer.Option("--double", help="Double-precision inputs (fixes float32 threshold flips in trees).")] = False,
    trust: Annotated[Optional[list[str]], typer.Option("--trust", help="A type a .skops file may load (repeatable).", metavar="TYPE")] = None,
    trust_pickle: TrustPickleOpt = False,
    no_check: NoCheckOpt = False,
    atol: AtolOpt = None,
    rtol: RtolOpt = None,
    seed: SeedOpt = 0,
    force: ForceOpt = False,
    keep_failed: KeepFailedOpt = False,
    print_step_: PrintStepOpt = False,
    json_: JsonOpt = False,
    fmt: FormatOpt = "table",
    report: ReportOpt = None,
) -> None:
    """Convert a fitted scikit-learn estimator or pipeline to ONNX, then check it against
    predict / predict_proba / transform."""
    from onnxforge.converters.sklearn import convert_sklearn
    from onnxforge.specs import parse_key_values
    from onnxforge.validators.parity import parse_tolerances

    as_json = wants_json(json_, fmt)
    if print_step_:
        print_step("convert", {"zipmap": zipmap or None, "options": parse_key_values(option or [], "--option") or None,
                               "target_opset": target_opset, "double": double or None},
                   model={"source": source, "framework": "sklearn", "sample": sample, "inputs": input_ or None,
                          "trust": trust, "trust_pickle": trust_pickle or None})
        return
    res = convert_sklearn(
        source, output, sample=sample, inputs=input_ or (), zipmap=zipmap,
        options=parse_key_values(option or [], "--option"), target_opset=target_opset, double=double,
        trust=trust or (), trust_pickle=trust_pickle, check=not no_check,
        tolerance=parse_tolerances(atol, rtol), seed=seed, force=force, keep_failed=keep_failed,
    )
    emit(res, as_json=as_json, report=report, passed=res.passed)
