"""Frozen dataclasses that flow between steps. Plain data: no behaviour beyond
small derived properties, so every result serializes the same way (report.py)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Mapping, Union

Dim = Union[int, str, None]  # int: fixed; str: symbolic name; None: unknown


@dataclass(frozen=True)
class TensorSpec:
    name: str
    dtype: str  # numpy-style name: float32, int64, bool, str ...
    shape: tuple[Dim, ...]

    def __str__(self) -> str:
        dims = "x".join("?" if d is None else str(d) for d in self.shape)
        return f"{self.name}:{self.dtype}:{dims or 'scalar'}"


@dataclass(frozen=True)
class ModelArtifact:
    path: str
    inputs: tuple[TensorSpec, ...]
    outputs: tuple[TensorSpec, ...]
    opset: int
    producer: str
    lineage: tuple[str, ...]
    sha256: str


@dataclass(frozen=True)
class Tolerance:
    atol: float = 1e-4
    rtol: float = 1e-3
    per_output: Mapping[str, tuple[float, float]] = field(default_factory=dict)

    def for_output(self, name: str) -> tuple[float, float]:
        return self.per_output.get(name, (self.atol, self.rtol))


@dataclass(frozen=True)
class OutputDiff:
    name: str
    max_abs: float
    max_rel: float
    mean_abs: float
    p99_abs: float
    mismatch_fraction: float
    cosine: float
    passed: bool
    shape: tuple[int, ...] = ()
    atol: float = 0.0
    rtol: float = 0.0
    label_agreement: float | None = None
    topk_agreement: float | None = None
    nonfinite: str = ""  # "" or a note such as "candidate has 3 NaN"
    message: str = ""  # why it failed, in words
    # |ref - cand| of the finite elements: counts between log-spaced edges (len(counts) + 1
    # of them); the first bin [0, smallest nonzero error) holds the exact matches
    error_histogram: tuple[int, ...] = ()
    error_edges: tuple[float, ...] = ()
    mismatches: int | None = None  # labels: how many differ (ties included)
    ties: int = 0  # labels that differ where the reference's top-2 scores tie (not failures)


@dataclass(frozen=True)
class ParityReport:
    reference: str
    candidate: str
    samples: int
    outputs: tuple[OutputDiff, ...]
    passed: bool
    check_stat: str = "elementwise"
    problems: tuple[str, ...] = ()  # structural failures: missing outputs, shape mismatches
    localized: Localization | None = None  # first diverging node (--localize)
    layerwise: Layerwise | None = None  # every shared intermediate tensor compared (--layerwise)
    notes: tuple[str, ...] = ()  # e.g. outputs paired by position
    # where the inputs came from: {"source": "given" | "saved" | "generated", "how": "..."}
    data: Mapping[str, str] = field(default_factory=dict)
    generation: GenerationCheck | None = None  # greedy decoding compared (models exported with past key/values)


@dataclass(frozen=True)
class GenerationCheck:
    """Greedy decoding of ``tokens`` new tokens from the same prompt ids by both sides
    (the candidate feeding its ``present.*`` outputs back as ``past_key_values.*``).
    ``step_errors``: the max abs logit error of each step while every token before it
    agreed (after a divergence the two sides decode different texts: not compared)."""

    tokens: int  # N, new tokens decoded per prompt
    batch: int
    prompt_length: int
    tokens_equal: int  # steps (of N) at which every prompt's token agreed, up to the first divergence
    max_logit_error: float  # the largest of step_errors
    step_errors: tuple[float, ...]
    atol: float
    passed: bool
    reference_tokens: tuple[tuple[int, ...], ...] = ()
    candidate_tokens: tuple[tuple[int, ...], ...] = ()


@dataclass(frozen=True)
class Localization:
    """The first node (in the reference's order) whose output differs past tolerance."""

    node: str | None
    message: str
    op_type: str = ""
    output: str = ""
    index: int = -1
    max_abs: float = 0.0
    max_rel: float = 0.0
    compared: int = 0


@dataclass(frozen=True)
class LayerRow:
    """One intermediate tensor both models compute, compared on the first sample."""

    tensor: str  # the reference's name
    node: str  # the reference node that produces it
    op_type: str
    index: int  # that node's position in the reference's (topological) node order
    shape: tuple[int, ...]
    max_abs: float
    mean_abs: float
    cosine: float
    rel_err: float  # ||ref - cand|| / ||ref||
    # rel_err minus the largest rel_err among the node's inputs (nearest compared
    # ancestors; graph inputs and weights count as exact): the error this node added
    growth: float
    candidate_tensor: str = ""  # the candidate's name, when the quantizer renamed it


@dataclass(frozen=True)
class Layerwise:
    """Every intermediate tensor two ONNX models share, in the reference's order."""

    rows: tuple[LayerRow, ...]
    top: tuple[str, ...] = ()  # the tensors whose nodes add the most error (largest growth first)
    message: str = ""  # what was not compared, and why
    saved: str = ""  # the .npz --save-intermediates-to wrote


@dataclass(frozen=True)
class LatencyStats:
    n: int
    mean: float
    std: float
    min: float
    p50: float
    p90: float
    p95: float
    p99: float
    max: float
    ci95: tuple[float, float]  # 95% bootstrap interval of the median, ms


@dataclass(frozen=True)
class BenchmarkResult:
    model: str
    requested_provider: str
    active_providers: tuple[str, ...]
    threads: int
    batch: int
    latency: LatencyStats
    throughput: float  # items per second
    environment: Mapping[str, object]
    cv: float = 0.0  # coefficient of variation of the latencies
    shapes: Mapping[str, tuple[int, ...]] = field(default_factory=dict)
    io_binding: bool = False
    copies_included: bool = False  # host<->device copies inside the timed call
    placement: Mapping[str, int] | None = None  # provider -> node count (--placement)
    memory: Mapping[str, int] = field(default_factory=dict)  # bytes
    histogram: tuple[int, ...] = ()  # latency counts in equal-width bins from min to p99 (the last holds the rest)
    histogram_edges: tuple[float, ...] = ()  # ms, len(histogram) + 1 bin edges
    latencies_ms: tuple[float, ...] = ()  # raw, only with --save-latencies
    sha256: str = ""
    cpu_ms: tuple[float, float] = (0.0, 0.0)  # p50, p99 of the process's CPU time per call (every thread's)
    runtime: str = "ort"  # ort | openvino (requested_provider is then OpenVINO's device, CPU)
    inference_precision: str = ""  # OpenVINO's (f32, bf16, f16); empty on ORT

    @property
    def target(self) -> str:
        """Where the row ran, as tables and gates name it: ORT's provider, or openvino:CPU."""
        return self.requested_provider if self.runtime == "ort" else f"{self.runtime}:{self.requested_provider}"


@dataclass(frozen=True)
class Fastest:
    """The fastest model (lowest median) among a benchmark's rows on one target and batch."""

    runtime: str
    provider: str
    batch: int
    model: str
    p50_ms: float


@dataclass(frozen=True)
class Comparison:
    """Speed-up of one row against the first (ratio of medians, >1 = faster)."""

    model: str
    against: str
    speedup: float
    ci95: tuple[float, float]
    bounds: tuple[float, float] | None = None  # on loaded rounds: what they prove of the quiet speed-up (gates.settle)


@dataclass(frozen=True)
class GateResult:
    """One gate's verdict. ``value`` and ``limit`` are those of the criterion that
    decided (the failing one, or the binding one when all passed). ``status`` is
    passed, failed or inconclusive (a timing gate the machine's load left undecided:
    ``passed`` is False then, so no reader takes it for a pass)."""

    name: str  # "max_p50_ms", "min_speedup", "baseline", "parity:convert", "accuracy" ...
    passed: bool
    value: float
    limit: float
    message: str
    kind: str = ""  # latency | speedup | baseline | parity | accuracy
    model: str = ""  # the model the gate judged
    status: str = ""  # passed | failed | inconclusive; empty: from ``passed``

    def __post_init__(self) -> None:
        if not self.status:
            object.__setattr__(self, "status", "passed" if self.passed else "failed")

@dataclass(frozen=True)
class Contention:
    """The CPU a timing loop got, measured per window of rounds (benchmark.py): this
    process's CPU time against wall x threads, and the other load on its CPUs
    (/proc/stat, steal included). Rounds of a contaminated window are discarded and
    more are taken; ``clean`` says whether enough clean rounds were had in the budget."""

    cpus: int  # CPUs in the affinity mask
    threads: int  # intra-op threads the rows use (at most ``cpus``)
    rounds: int  # timed rounds in all
    discarded: int  # rounds of contaminated windows
    cpu_share: float  # this process's CPU time / (wall x threads), over all rounds
    other_load: float  # CPUs busy with other work (and steal) on ours, mean over all rounds
    seconds: float  # wall time of the timed rounds
    clean: bool  # enough clean rounds: the figures are those of the clean rounds
    judged: str = "proc"  # proc (/proc/stat and process CPU), process (CPU time only), none (not a CPU provider)


@dataclass(frozen=True)
class BenchmarkReport:
    results: tuple[BenchmarkResult, ...]
    comparisons: tuple[Comparison, ...]
    gates: tuple[GateResult, ...]
    passed: bool
    environment: Mapping[str, object]
    notes: tuple[str, ...] = ()
    contention: Contention | None = None
    status: str = ""  # passed | failed | inconclusive; empty: from ``passed``
    fastest: tuple[Fastest, ...] = ()  # per runtime, provider and batch

    def __post_init__(self) -> None:
        if not self.status:
            object.__setattr__(self, "status", "passed" if self.passed else "failed")


@dataclass(frozen=True)
class ModelInfo:
    """What `onnxforge inspect` reports about one ONNX file."""

    path: str
    file_bytes: int
    ir_version: int
    opsets: Mapping[str, int]
    producer: str
    producer_version: str
    graph_name: str
    inputs: tuple[TensorSpec, ...]
    outputs: tuple[TensorSpec, ...]
    node_count: int
    op_histogram: Mapping[str, int]
    initializer_count: int
    parameter_count: int
    parameter_bytes: int
    external_data: Mapping[str, int]  # file -> bytes
    metadata: Mapping[str, str]
    runtime: Mapping[str, object]  # onnxruntime version, supported IR/opset, verdict


@dataclass(frozen=True)
class GraphSummary:
    nodes: int
    ops: Mapping[str, int]  # op type (domain-qualified outside ai.onnx) -> count
    initializer_bytes: int
    file_bytes: int  # the model file and its external data


@dataclass(frozen=True)
class EngineRun:
    """One engine of `simplify` (onnxsim, cleanup, ort:LEVEL, transformer:TYPE)."""

    step: str
    status: str  # ok | failed | skipped | reverted | not applicable
    seconds: float = 0.0
    reason: str = ""
    engine: str = ""  # which implementation ran (onnxruntime.transformers, onnxscript.ort_fusions)
    after: GraphSummary | None = None
    info: Mapping[str, Any] = field(default_factory=dict)  # fusion counts, nodes removed ...


@dataclass(frozen=True)
class SpeedCheck:
    """fp32 against the new model, timed interleaved (quantize)."""

    reference_p50_ms: float
    p50_ms: float
    speedup: float
    ci95: tuple[float, float]
    iterations: int
    contention: Contention | None = None
    bounds: tuple[float, float] | None = None  # on loaded rounds: what they prove of the quiet speed-up
    runtime: str = "ort"  # what timed both: ort or openvino (quantize static --speed-runtime)


@dataclass(frozen=True)
class QuantTrial:
    trial: int
    excluded_nodes: tuple[str, ...]
    excluded_ops: tuple[str, ...]
    parity_passed: bool
    min_cosine: float | None
    speedup: float | None  # None: not timed (no speed budget)
    speedup_ci95: tuple[float, float] | None
    seconds: float


@dataclass(frozen=True)
class Timings:
    """Where a quantize step's time went: ``work_s`` ran the quantizer (pre-processing,
    calibration, each trial's quantization), ``checks_s`` proved the result (parity,
    timing against fp32, the sensitivity ranking, and the dynamic recipe search but
    for its quantizer runs). The rest of ``total_s`` read, wrote and summarised models."""

    work_s: float
    checks_s: float
    total_s: float


@dataclass(frozen=True)
class StepResult:
    """What a model-producing step (convert, simplify, quantize) reports.

    ``passed`` is False when any check failed; the model is then written only with
    ``--keep-failed`` (``written`` says whether, ``output`` where). ``details`` holds
    step-specific facts shown as ``key: value`` (exporter, CPU family ...)."""

    step: str  # "convert:torch", "simplify", "quantize:dynamic" ...
    output: str
    written: bool
    passed: bool
    artifact: ModelArtifact | None
    checks: tuple[ParityReport, ...] = ()
    notes: tuple[str, ...] = ()
    before: GraphSummary | None = None
    after: GraphSummary | None = None
    engines: tuple[EngineRun, ...] = ()
    fusions: Mapping[str, tuple[int, int]] = field(default_factory=dict)  # op -> (before, after)
    speed: SpeedCheck | None = None
    trials: tuple[QuantTrial, ...] = ()
    details: Mapping[str, Any] = field(default_factory=dict)
    seconds: float = 0.0
    status: str = ""  # passed | failed | inconclusive (quantize's speed budget on a loaded machine)
    timings: Timings | None = None  # quantize: the work apart from the checks

    def __post_init__(self) -> None:
        if not self.status:
            object.__setattr__(self, "status", "passed" if self.passed else "failed")


@dataclass(frozen=True)
class LedgerRow:
    """A release step's output checked against the source (or the step before)."""

    step: str
    model: str
    against: str
    parity: ParityReport | None
    accuracy: float | None
    passed: bool


@dataclass(frozen=True)
class ReleaseReport:
    """A release's verdict, written on every exit. ``status``: passed, failed (a check
    or gate), error (the work could not be done: ``error``/``hint`` say why) or
    interrupted. ``planned_*`` list what the config asked for, so a step or gate that
    never ran is reported as skipped."""

    config: Mapping[str, Any]
    steps: tuple[StepResult, ...]
    ledger: tuple[LedgerRow, ...]
    benchmark: BenchmarkReport | None
    gates: tuple[GateResult, ...]
    passed: bool
    failure: str | None
    exit_code: int
    outputs: Mapping[str, str]  # file -> sha256
    inputs: Mapping[str, str]  # file -> sha256
    environment: Mapping[str, Any]
    versions: Mapping[str, str]
    seconds: float = 0.0
    status: str = "passed"
    error: str | None = None
    hint: str | None = None
    planned_steps: tuple[str, ...] = ()
    planned_gates: tuple[str, ...] = ()
    step_seconds: tuple[float, ...] = ()
    raised_at: int | None = None  # the index of the step that raised, if one did
    packages: tuple = ()  # serving.PackageResult per [package] target
    serve_check: Any = None  # serving.ServeCheckReport, with [serve_check]
    name: str = ""  # the release's name (its config folder's): packages and report titles carry it
