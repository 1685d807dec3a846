"""`onnxforge serve-check`'s options (and the release's [serve_check] gate)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal, Optional

from onnxforge.core.options import Batch, Concurrency, LoadSeconds, PosFloat, Seconds, Tolerance, option
from onnxforge.steps.base import tol_option


@dataclass(frozen=True)
class ServeCheckOptions:
    """`onnxforge serve-check` and the release's [serve_check] gate."""

    concurrency: Concurrency = option(4, "Concurrent clients of the bounded load.", example=("--concurrency", "2"))
    duration: LoadSeconds = option(5.0, "Seconds of load (0: no load).", example=("--duration", "1"))
    protocols: tuple[Literal["rest", "grpc"], ...] = option(("rest", "grpc"), "Protocols to check parity and "
                                                                              "malformed requests on (repeatable).",
                                                            flag="--protocol", metavar="rest|grpc",
                                                            example=("--protocol", "rest"))
    load_protocol: Literal["rest", "grpc"] = option("rest", "Protocol of the load.", example=("--load-protocol", "grpc"))
    batch: Optional[Batch] = option(1, "Rows per load request.", example=("--batch", "2"))
    timeout: Seconds = option(60.0, "Seconds to wait for the server to be ready.", example=("--timeout", "30"))
    max_p99_ms: Optional[PosFloat] = option(None, "Gate: the served p99 under load.", example=("--max-p99-ms", "50"))
    atol: Optional[Tolerance] = tol_option("atol", "the package's")
    rtol: Optional[Tolerance] = tol_option("rtol", "the package's")
    log_dir: Optional[str] = option(None, "Keep the server's log in this folder.", metavar="DIR", toml=None)
    trust_code: bool = option(False, "Serve a folder whose settings name code other than onnxforge's and MLServer's "
                                     "runtimes, or that holds Python modules (runs that code).", toml=None,
                              example=("--trust-code",))
