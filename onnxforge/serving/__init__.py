"""Package a model for serving and prove the served model answers like the file.

- ``package(source, target, out_dir, ...)``: an MLflow model, an MLServer model folder or
  a Triton model repository, from an ONNX file or an ``onnxforge release`` folder.
- ``serve_check(folder, ...)``: start the packaged model in a real MLServer, compare its
  REST and gRPC answers with the golden outputs, send malformed requests, run a bounded
  loopback load, and stop the server.

Nothing heavy is imported here: mlflow, mlserver and tritonclient load inside the
functions that need them (and mlserver only in the server's own process).
"""

from __future__ import annotations

# Imported eagerly (both modules import only light things at top level): the function
# `package` has the name of its module, and a lazy __getattr__ would hand out the module
# once the import system has bound the submodule on this package.
from onnxforge.serving.package import TARGETS, PackageResult, package  # noqa: E402
from onnxforge.serving.check import LoadStats, RequestCheck, ServeCheckReport, serve_check  # noqa: E402
from onnxforge.serving.triton import check_triton_config  # noqa: E402

__all__ = ["TARGETS", "LoadStats", "PackageResult", "RequestCheck", "ServeCheckReport", "check_triton_config",
           "package", "serve_check"]
