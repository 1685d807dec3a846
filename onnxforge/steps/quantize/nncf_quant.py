"""Static int8 by NNCF's ONNX path (``quantize static --engine nncf``): ``nncf.quantize``
on the ONNX model with the calibration samples, written back as a QDQ ONNX model that
ORT and OpenVINO both run. NNCF chooses its own ranges (min-max statistics), quantizes
weights per channel and corrects biases; onnxforge's checks then judge the result
exactly as they judge ORT's (parity budget, fallback, speed budget, the release's
ledger). A graph with attention (Softmax beside MatMul) gets NNCF's transformer scheme. nncf (and the torch it imports) load inside the function."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from onnxforge.core.errors import UsageError, require
from onnxforge.core.fileio import load_onnx, save_onnx
from onnxforge.core.logs import quiet_third_party
from onnxforge.core.progress import task
from onnxforge.steps.quantize.calibration import iter_samples


def check_nncf_options(o: Any) -> None:
    """Before any work: NNCF installed, and none of ORT's calibrator knobs that mean
    nothing to NNCF (refused rather than ignored)."""
    if o.method != "minmax":
        raise UsageError(f"--method {o.method} picks ORT's calibrator; NNCF keeps its own min-max ranges",
                         hint="drop --method, or use --engine ort")
    given = [f for f in ("weight_type", "activation_type", "reduce_range") if getattr(o, f) is not None]
    if given:
        flag = "--" + given[0].replace("_", "-")
        raise UsageError(f"{flag} is ORT's; NNCF picks int8 weights per channel, and int8 or uint8 activations "
                         "per tensor itself", hint=f"drop {flag}, or use --engine ort")
    if o.quant_format != "qdq":
        raise UsageError("NNCF writes QDQ models; --quant-format qoperator is ORT's", hint="drop --quant-format")
    require("nncf", "openvino")


def run_nncf(job: Any, out: Path, nodes_excluded: list[str], ops_excluded: list[str]) -> None:
    import nncf


    o = job.o
    n, it = iter_samples(o.calibration, job.specs, samples=o.samples, seed=o.seed, dims=o.dims,
                         val_ranges=job.val_ranges, norms=job.norms)
    model = load_onnx(job.base)
    skip_types = list(ops_excluded)
    if o.op_types:  # NNCF is told what to leave out: every other op type of the graph
        skip_types += sorted({nd.op_type for nd in model.graph.node} - set(o.op_types) - set(skip_types))
    kwargs: dict[str, Any] = {}
    if nodes_excluded or skip_types:
        kwargs["ignored_scope"] = nncf.IgnoredScope(names=list(nodes_excluded), types=skip_types, validate=False)
    ops = {nd.op_type for nd in model.graph.node}
    if "Softmax" in ops and "MatMul" in ops:  # attention: NNCF's transformer scheme (SmoothQuant, fp32 where it hurts)
        kwargs["model_type"] = nncf.ModelType.TRANSFORMER
    with task("calibration", total=n) as bar:
        samples = []
        for s in it:  # NNCF walks the data more than once (statistics, then bias correction): a list
            samples.append(s)
            bar.update(len(samples))
        with quiet_third_party():
            quantized = nncf.quantize(model, nncf.Dataset(samples), subset_size=n, **kwargs)
    save_onnx(quantized, out, external_data=job.external)
