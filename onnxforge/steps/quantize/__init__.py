"""The quantize steps, every mode in this folder: quantize.py (dynamic and static int8),
fp16.py, calibration.py, recipes.py (dynamic-int8 candidates for transformers),
attention.py, lean_quant.py and lean_static.py (large models); options.py holds every mode's options, step.py their StepDefs."""
