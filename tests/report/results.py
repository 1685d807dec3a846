"""One result of every kind a command prints, filled with awkward values: long names,
tiny and huge numbers, NaN, several rows. Built by hand (no model runs), so rendering
tests are fast and cover cases a tiny model never produces."""

from __future__ import annotations

import math

from onnxforge.backends.environment import DoctorReport, ExtraStatus, ProviderCheck
from onnxforge.steps.serve_check.check import LoadStats, RequestCheck, ServeCheckReport
from onnxforge.steps.package.package import PackageResult
from onnxforge.core.types import (
    BenchmarkReport, BenchmarkResult, Comparison, EngineRun, GateResult, GraphSummary, LatencyStats, LedgerRow,
    ModelInfo, OutputDiff, ParityReport, QuantTrial, ReleaseReport, SpeedCheck, StepResult, TensorSpec,
)

LONG = "a_rather_long_model_name_from_a_training_pipeline.int8.onnx"
ENV = {"cpu": {"model": "Intel(R) Xeon(R) Platinum 8488C with a long marketing name", "machine": "x86_64",
               "isa": {"avx2": True, "avx512f": True, "avx512_vnni": True, "amx_int8": True}},
       "cpu_quota": 2, "onnxruntime": "1.32.0", "device": "CPU", "providers": ["CPUExecutionProvider"]}


def latency(p50: float, spread: float = 0.1, n: int = 1234) -> LatencyStats:
    return LatencyStats(n=n, mean=p50 * 1.02, std=p50 * spread, min=p50 * 0.8, p50=p50, p90=p50 * 1.1,
                        p95=p50 * 1.2, p99=p50 * 1.9, max=p50 * 7, ci95=(p50 * 0.99, p50 * 1.013))


def diff(name: str, max_abs: float, cosine: float, passed: bool = True, **kw) -> OutputDiff:
    hist = kw.pop("error_histogram", (3, 0, 12, 40, 7, 1))
    edges = kw.pop("error_edges", (0.0, 1e-9, 1e-8, 1e-7, 1e-6, 1e-5, max(max_abs, 1e-5)))
    return OutputDiff(name, max_abs, max_abs * 13.7, max_abs / 9.1, max_abs * 0.87, 0.0 if passed else 0.03125,
                      cosine, passed, shape=(64, 10), atol=1e-4, rtol=1e-3, error_histogram=hist,
                      error_edges=edges, **kw)


def parity(candidate: str = LONG, passed: bool = False) -> ParityReport:
    outs = (diff("logits", 1.2345678e-7, 0.99999994), diff("probabilities_after_softmax_layer", 3.4567e-5, 0.9993),
            diff("y", 0.0123456, 0.98765, passed=passed, message="20 of 640 elements outside atol 0.0001 + "
                 "rtol 0.001*|ref| (max abs 0.0123)"),
            diff("label", 1.0, 0.96875, passed=True, label_agreement=0.96875),
            diff("nan_out", math.nan, math.nan, passed=False, nonfinite="candidate has 3 NaN",
                 message="non-finite values: candidate has 3 NaN", error_histogram=(), error_edges=()))
    return ParityReport("model.onnx@cpu", f"{candidate}@cpu", 8, outs, passed, check_stat="elementwise",
                        problems=("output 'extra' missing from the candidate",), notes=("outputs paired by position",))


def graph(nodes: int, size: int) -> GraphSummary:
    return GraphSummary(nodes, {"Conv": 3, "Relu": 3, "Gemm": 2, "com.microsoft.QLinearConv": nodes - 8},
                        size // 2, size)


def step() -> StepResult:
    return StepResult(
        step="quantize:static", output=f"/very/long/path/to/the/release/out/steps/02-quantize-static/{LONG}",
        written=True, passed=True, artifact=None, checks=(parity(passed=True),), notes=("a note " * 20,),
        before=graph(18, 123_456_789), after=graph(24, 31_234_567),
        engines=(EngineRun("onnxsim", "ok", 1.234, after=graph(17, 1000)),
                 EngineRun("transformer:bert", "reverted", 0.5, reason="more nodes than its input (103 -> 115)")),
        fusions={"Attention": (0, 12), "SkipLayerNormalization": (0, 24)},
        speed=SpeedCheck(12.3456, 5.4321, 2.2727, (2.1234, 2.4321), 987),
        trials=(QuantTrial(0, (), (), False, 0.91, 2.5, (2.3, 2.7), 3.2),
                QuantTrial(1, tuple(f"/encoder/layer.{i}/attention/self/MatMul" for i in range(9)), (), True,
                           0.9991, 2.1, (1.9, 2.3), 3.1)),
        details={"cpu_family": "x86 with AVX-512 VNNI", "activation_type": "uint8", "weight_type": "int8"})


def bench_result(model: str, p50: float, cv: float = 0.05) -> BenchmarkResult:
    return BenchmarkResult(model=model, requested_provider="cpu", active_providers=("CPUExecutionProvider",),
                           threads=2, batch=64, latency=latency(p50), throughput=64_000 / p50, environment={}, cv=cv,
                           histogram=(1, 5, 30, 120, 300, 200, 90, 40, 20, 10, 5, 3, 2, 1, 1, 1),
                           histogram_edges=tuple(p50 * (0.8 + 0.07 * i) for i in range(17)))


def benchmark() -> BenchmarkReport:
    rows = (bench_result("/tmp/release/steps/00-convert.onnx", 0.07512345),
            bench_result(f"/tmp/release/steps/{LONG}", 0.0456789, cv=0.23),
            bench_result("/tmp/x/huge-model.onnx", 12345.678))
    comps = (Comparison(rows[1].model, rows[0].model, 1.6445, (1.5512, 1.7234)),
             Comparison(rows[2].model, rows[0].model, 6.1e-6, (5.9e-6, 6.3e-6)))
    gates = (GateResult("max_p50_ms", True, 0.0457, 5.0, "p50 0.0457 ms <= 5 ms", kind="latency", model=rows[1].model),
             GateResult("min_speedup", False, 1.64, 1.7, "speed-up 1.64x [1.55-1.72] below 1.7x", kind="speedup"))
    return BenchmarkReport(rows, comps, gates, False, ENV, notes=("intra-op spinning off: several sessions share "
                                                                  "this process",))


def model_info() -> ModelInfo:
    return ModelInfo(
        path=f"/some/deep/folder/structure/{LONG}", file_bytes=98_765_432, ir_version=10,
        opsets={"": 18, "ai.onnx.ml": 3, "com.microsoft": 1}, producer="pytorch", producer_version="2.13.0",
        graph_name="main_graph", inputs=(TensorSpec("input_ids", "int64", ("batch", "sequence")),
                                         TensorSpec("pixel_values_with_a_long_name", "float32", (None, 3, 224, 224))),
        outputs=(TensorSpec("logits", "float32", ("batch", 1000)),), node_count=415,
        op_histogram={f"Op{i}{'X' * (i % 7)}": i * 13 for i in range(1, 30)}, initializer_count=161,
        parameter_count=25_557_032, parameter_bytes=102_228_128, external_data={"model.onnx.data": 102_228_128},
        metadata={"onnxforge.lineage": "convert:torch,simplify:onnxsim,quantize:static", "k" * 40: "v" * 120},
        runtime={"version": "1.32.0", "max_ir_version": 11, "max_opset": 23, "supported": True})


def release() -> ReleaseReport:
    par = parity(passed=True)
    steps = (step(), StepResult("convert:torch", "/r/steps/00-convert.onnx", True, True, None),
             StepResult("simplify", "/r/steps/01-simplify.onnx", True, True, None, before=graph(30, 5000),
                        after=graph(20, 4000)))
    ledger = tuple(LedgerRow(s.step, s.output, "source", par, 0.9876, True) for s in steps)
    gates = (GateResult("parity:quantize.static", True, 0.9993, 0.99, "quantize.static vs source: cosine 0.999300 "
                        "(the long explanation of what decided this gate goes on and on)", kind="parity"),
             GateResult("accuracy", False, 0.0123, 0.01, "accuracy 0.9753 vs source 0.9876: drop +0.0123, limit 0.01",
                        kind="accuracy"))
    return ReleaseReport(
        config={}, steps=steps, ledger=ledger, benchmark=benchmark(), gates=gates, passed=False,
        failure="gate(s) failed: accuracy", exit_code=1,
        outputs={"model.onnx": "f7df59406c411cd29b2f1baeffe473a5c3fc5ea9dc150b299a1991b4a25169ef"}, inputs={},
        environment=ENV, versions={}, seconds=21.18, status="failed", step_seconds=(6.61, 1.02, 3.31),
        packages=(package(),))


def package() -> PackageResult:
    return PackageResult(target="mlflow", source="/tmp/release", out_dir="/tmp/release/mlflow", model_name="digits",
                         model_dir="/tmp/release/mlflow", passed=True, written=True, proof=parity(passed=True),
                         checks=("mlflow.pyfunc.load_model answers like the golden outputs",),
                         files={"MLmodel": "0" * 64}, inputs_from="data.validation", samples=5,
                         tracking={"run_id": "0123456789abcdef0123456789abcdef"})


def serve_check() -> ServeCheckReport:
    load = LoadStats("rest", 16, 5.0, 123_456, 0, 24_691.2, 24_691.2, latency(0.6543), "")
    bad = (RequestCheck("rest", "wrong name", "4xx", "400", "no input named 'y'", True, True),
           RequestCheck("grpc", "empty body", "INVALID_ARGUMENT", "OK", "", True, False))
    return ServeCheckReport(folder="/tmp/release/mlserver", model_name="digits", server="mlserver 1.7.1",
                            startup_s=4.32, parity={"rest": parity(passed=True), "grpc": parity(passed=True)},
                            malformed=bad, load=load, in_process=latency(0.05432), overhead_ms=0.59998, batch=1,
                            passed=False, failures=("grpc empty body: expected INVALID_ARGUMENT, got OK",),
                            stopped=True, notes=("overhead at concurrency 16 includes queueing",))


def doctor() -> DoctorReport:
    provs = (ProviderCheck("cpu", "CPUExecutionProvider", True, True, 0.004),
             ProviderCheck("cuda", "CUDAExecutionProvider", True, False, 1.234,
                           error="[ONNXRuntimeError] : 1 : FAIL : Failed to load library libonnxruntime_providers_cuda"
                                 ".so with error: libcublasLt.so.12: cannot open shared object file"),
             ProviderCheck("tensorrt", "TensorrtExecutionProvider", False, False, error="not in this build"))
    return DoctorReport(
        onnxforge="0.1.0", python="3.11.7", platform="Linux-6.1.0-x86_64-with-glibc2.36-and-more-text",
        packages={"onnx": "1.23.2", "onnxruntime-gpu": "1.32.0", "torch": None, "transformers": "5.24.0"},
        onnxruntime_build="GPU (CUDA, TensorRT) + CPU", onnxruntime_packages=("onnxruntime", "onnxruntime-gpu"),
        providers=provs, cpu=ENV["cpu"], cpus={"affinity": 8, "cgroup_quota": 2.5, "threads": 2},
        memory={"cgroup_limit": 4 * 2**30, "available": 3 * 2**30, "host_available": 60 * 2**30},
        gpus=({"name": "NVIDIA H100 80GB HBM3", "driver": "550.54.15", "memory": "81559 MiB"},),
        extras=(ExtraStatus("torch", False, ("torch", "onnxscript"), "convert torch; torch, .pt2 and Hugging Face "
                            "sources in validate and release"),
                ExtraStatus("serve", True, (), "package --target mlflow, serve-check")),
        passed=False, required=("cuda",), problems=("cuda is required but does not initialise: [ONNXRuntimeError]",
                                                    "several onnxruntime packages are installed"))


def all_results() -> dict:
    return {"inspect": model_info(), "parity": parity(), "step": step(), "benchmark": benchmark(),
            "release": release(), "package": package(), "serve-check": serve_check(), "doctor": doctor()}
