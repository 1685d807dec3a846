"""The simplify step: simplify.py (onnxsim, ORT offline optimization, transformer
fusions, each checked), cleanup.py, unfuse.py (fused ops ORT runs slower, written
back), options.py, step.py."""
