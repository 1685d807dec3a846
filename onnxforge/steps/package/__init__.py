"""`onnxforge package`: an MLflow model, an MLServer model folder or a Triton model
repository, from an ONNX file or an ``onnxforge release`` folder, with golden inputs and
outputs, proved to load and answer (package.py; Triton's config in triton.py).

mlserver_runtime.py is the MLServer runtime the folders ship byte for byte
(serve-check trusts a copy only when its sha256 equals that file's: never edit it in
passing). Nothing heavy is imported here: mlflow, mlserver and tritonclient load inside
the functions that need them (and mlserver only in the server's own process).
"""
