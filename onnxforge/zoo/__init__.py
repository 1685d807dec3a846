"""Many releases, one verdict: `onnxforge zoo`.

A zoo file (config.py) lists release configs and the targets to release them on;
each (config, target) pair runs `onnxforge.pipeline.run.release` (worker.py) in a
local worker process (local.py), as a Ray task (ray_exec.py), or as a CI matrix job
(matrix.py); the release folders are read back into one verdict (merge.py) and
written as zoo-report.json, zoo-report.md, junit.xml and report.html (report.py).
run.py ties it together. See docs/scale.md for the design and its limits.
"""
