"""The simplify step: simplify.py (onnxsim, ORT offline optimization, transformer
fusions, each checked), cleanup.py, options.py, step.py."""
