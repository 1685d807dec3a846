"""The options of every quantization mode (dynamic and static int8, int4, bf16, fp16)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated, Literal, Optional

from annotated_types import Ge, Le

from onnxforge.core.errors import UsageError
from onnxforge.core.options import (CalibrationSamples, Fraction, Names, NonNegFloat, Percent, Samples, Seconds,
                                    Tolerance, Trials, option)
from onnxforge.data.specs import parse_bytes, parse_comma_list
from onnxforge.steps.base import CheckOptions, input_norms_option, tol_option


@dataclass(frozen=True)
class Fp16Options(CheckOptions):
    keep_io_types: bool = option(True, "Keep fp32 inputs and outputs (default) or make them fp16.",
                                 flag="--keep-io-types/--fp16-io", example=("--fp16-io",))
    block_ops: Names = option((), "An op type to keep in fp32 (repeatable; added to ORT's default list).",
                              flag="--block-op", metavar="OP", example=("--block-op", "Softmax"))
    block_nodes: Names = option((), "A node name to keep in fp32 (repeatable).", flag="--block-node", metavar="NAME",
                                example=("--block-node", "node_0"))
    samples: Samples = option(1, "Random input samples for the check.", example=("--samples", "2"))
    atol: Optional[Tolerance] = tol_option("atol", "1e-2: fp16 keeps about 3 digits")
    rtol: Optional[Tolerance] = tol_option("rtol", "1e-2")


IntType = Optional[Literal["int8", "uint8"]]


@dataclass(frozen=True)
class QuantOptions(CheckOptions):
    """What dynamic and static int8 quantization share."""

    weight_type: IntType = option(None, "int8 or uint8 (default: chosen for this CPU).", example=("--weight-type", "uint8"))
    per_channel: Optional[bool] = option(None, "Per-channel weight scales (default: on for static int8 of a "
                                               "transformer, else off).", flag="--per-channel/--no-per-channel",
                                         example=("--per-channel",))
    reduce_range: Optional[bool] = option(None, "7-bit weights (default: on for x86 without VNNI).",
                                          flag="--reduce-range/--no-reduce-range", example=("--reduce-range",))
    op_types: Names = option((), "Only quantize these op types: MatMul,Gemm,...", metavar="A,B",
                             parse=parse_comma_list, example=("--op-types", "MatMul,Gemm"))
    exclude_nodes: Names = option((), "A node to leave in fp32 (repeatable).", flag="--exclude-node", metavar="NAME",
                                  example=("--exclude-node", "node_0"))
    exclude_ops: Names = option((), "An op type to leave in fp32 (repeatable).", flag="--exclude-op", metavar="TYPE",
                                example=("--exclude-op", "Conv"))
    preprocess: bool = option(True, "Run ORT's quant_pre_process (shape inference and optimization) first "
                                    "(ORT's engine; NNCF takes the model as it is).",
                              flag="--preprocess/--no-preprocess", example=("--no-preprocess",))
    check_samples: Samples = option(4, "Random samples for the parity check (when no --inputs).",
                                   example=("--check-samples", "8"))
    input_norms: dict[str, str] = input_norms_option("Generated check inputs of that input are normalised images "
                                               "(default: what the converter recorded).")
    allow_generated_data: bool = option(
        False, "Sign an int8 verdict taken on generated inputs (without it, int8 needs --inputs, or real "
               "--calibration data for static).", example=("--allow-generated-data",))
    min_cosine: Optional[Fraction] = option(0.99, "Budget: cosine similarity of every output to fp32 (0 turns it "
                                                  "off).", example=("--min-cosine", "0.995"))
    max_mismatch: Optional[Fraction] = option(None, "Budget: fraction of top-1 labels allowed to change (e.g. 0.01).",
                                              example=("--max-mismatch", "0.02"))
    # Was min_speedup / --min-speedup, which is the latency gate of benchmark and release.
    speed_budget: Optional[NonNegFloat] = option(
        None, "Budget: int8 at least this fast against fp32, timed side by side (default 1.0: never slower; 0 "
              "turns it off, and the int8 model is then not timed against fp32; in a release no budget unless set: its "
              "latency gate decides).",
        example=("--speed-budget", "1.1"), deprecated=("--min-speedup",))
    fallback: bool = option(False, "On a failed parity budget, leave the most sensitive nodes in fp32, a few more "
                                   "each trial.", flag="--fallback/--no-fallback", example=("--fallback",))
    max_trials: Trials = option(4, "Trials for --fallback.", example=("--max-trials", "6"))
    bench_seconds: Seconds = option(2.0, "Seconds of interleaved fp32/int8 timing (for the speed budget, and each --recipe candidate).",
                                     example=("--bench-seconds", "0.5"))
    atol: Optional[Tolerance] = tol_option("atol", "off: int8 is judged on cosine; one bound given leaves the other at 0")
    rtol: Optional[Tolerance] = tol_option("rtol", "off")


@dataclass(frozen=True)
class DynamicOptions(QuantOptions):
    recipe: Literal["auto", "plain", "fused"] = option(
        "auto", "On a transformer, auto times plain int8 against fused attention that quantizes to QAttention and "
                "keeps the fastest that passes the budget; plain quantizes the graph as given; fused the fused "
                "graph.", example=("--recipe", "plain"))


def _check_calibration(v: str) -> None:
    if not v:
        raise UsageError("empty calibration path", hint="give a .npz, a folder of samples, or 'random'")


@dataclass(frozen=True)
class StaticOptions(QuantOptions):
    calibration: Optional[str] = option(None, "Calibration data: .npz with a sample axis, a folder of samples, or "
                                              "'random' (a smoke test).", metavar="DATA", toml="data.calibration",
                                        path=True, check=_check_calibration, example=("--calibration", "random"))
    method: Literal["minmax", "entropy", "percentile", "distribution"] = option(
        "minmax", "Calibration method: minmax, entropy, percentile, distribution.", example=("--method", "entropy"))
    percentile: Percent = option(99.999, "For --method percentile: the percentile kept (0-100].",
                                 example=("--percentile", "99.9"))
    quant_format: Literal["qdq", "qoperator"] = option(
        "qdq", "qdq (default) or qoperator. (--format is the output format, as everywhere.)", toml="format",
        example=("--quant-format", "qoperator"))
    samples: Optional[CalibrationSamples] = option(None, "Calibration samples to use (default: all).",
                                       example=("--samples", "16"))
    activation_type: IntType = option(None, "int8 or uint8 (default: chosen for this CPU).",
                                      example=("--activation-type", "int8"))
    engine: Literal["ort", "nncf"] = option(
        "ort", "Who quantizes: ort (onnxruntime.quantization) or nncf (NNCF's ONNX path, extra onnxforge[openvino]; "
               "its own ranges, per-channel weights, bias correction). Either way the same checks judge the result.",
        example=("--engine", "nncf"))
    speed_runtime: Literal["ort", "openvino"] = option(
        "ort", "What times the speed budget: ort (ONNX Runtime's CPU provider) or openvino (the openvino package, "
               "CPU; extra onnxforge[openvino]): the runtime the int8 model will be deployed on. NNCF's int8 of "
               "BERT-base ran at 0.42x fp32 on ORT and 4.05x on OpenVINO.",
        example=("--speed-runtime", "openvino"))
    recipe: Literal["auto", "plain", "transformer"] = option(
        "auto", "auto: the transformer recipe on a graph with attention (a Softmax and a MatMul of two activations), "
                "else plain; transformer: int8 MatMul and Gemm only, the attention products included, per-channel "
                "weights; plain: every op type ORT quantizes. Either way the attention-mask path stays fp32.",
        example=("--recipe", "plain"))
    max_memory: Optional[int | str] = option(None, "Refuse histogram calibration estimated above this (e.g. 4GiB; "
                                                   "default: half the available memory).", metavar="SIZE",
                                             normalize=parse_bytes, example=("--max-memory", "1GiB"))


def _check_block_size(v: int) -> None:
    if v < 16 or v & (v - 1):
        raise UsageError(f"must be a power of two, at least 16 (got {v})",
                         hint="use 16, 32, 64, 128 or 256 (MatMulNBits' block sizes)")


@dataclass(frozen=True)
class LowBitOptions(CheckOptions):
    """What int4 and bf16 share: the parity and speed budgets of the int8 modes."""

    check_samples: Samples = option(4, "Random samples for the parity check (when no --inputs).",
                                    example=("--check-samples", "8"))
    allow_generated_data: bool = option(
        False, "Sign a verdict taken on generated inputs (without it, --inputs is needed).",
        example=("--allow-generated-data",))
    min_cosine: Optional[Fraction] = option(0.99, "Budget: cosine similarity of every output to fp32 (0 turns it "
                                                  "off).", example=("--min-cosine", "0.995"))
    max_mismatch: Optional[Fraction] = option(None, "Budget: fraction of top-1 labels allowed to change (e.g. 0.01).",
                                              example=("--max-mismatch", "0.02"))
    speed_budget: Optional[NonNegFloat] = option(
        None, "Budget: at least this fast against fp32, timed side by side (default 1.0: never slower; 0 turns "
              "it off, and the model is then not timed).", example=("--speed-budget", "1.1"), deprecated=("--min-speedup",))
    bench_seconds: Seconds = option(2.0, "Seconds of interleaved timing against fp32 (for the speed budget).",
                                    example=("--bench-seconds", "0.5"))
    exclude_nodes: Names = option((), "A node to leave in fp32 (repeatable).", flag="--exclude-node", metavar="NAME",
                                  example=("--exclude-node", "node_0"))
    atol: Optional[Tolerance] = tol_option("atol", "off: judged on cosine; one bound given leaves the other at 0")
    rtol: Optional[Tolerance] = tol_option("rtol", "off")


AccuracyLevel = Annotated[int, Ge(0), Le(4)]


@dataclass(frozen=True)
class Int4Options(LowBitOptions):
    block_size: int = option(32, "Weights per scale along K: a power of two, at least 16.", check=_check_block_size,
                             example=("--block-size", "64"))
    accuracy_level: Optional[AccuracyLevel] = option(
        None, "MatMulNBits' compute type: 0 unset, 1 fp32, 2 fp16, 3 bf16, 4 int8 (default: ORT's).",
        example=("--accuracy-level", "4"))
    algorithm: Literal["rtn", "hqq", "gptq"] = option(
        "rtn", "rtn (round to nearest, ORT's blockwise kernel), hqq (half-quadratic, needs torch); gptq is refused: "
               "ORT's offline GPTQ fails on MatMuls of different K.", example=("--algorithm", "hqq"))
    symmetric: bool = option(False, "Symmetric 4-bit weights (no zero points).", flag="--symmetric/--asymmetric",
                             example=("--symmetric",))
    gather: bool = option(False, "Also 4-bit embedding tables: Gather of a constant table becomes "
                                 "GatherBlockQuantized (the model's opset is lifted to 21).",
                          flag="--gather/--no-gather", example=("--gather",))


@dataclass(frozen=True)
class Bf16Options(LowBitOptions):
    pass
