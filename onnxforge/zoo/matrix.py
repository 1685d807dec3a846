"""The matrix executor: the zoo as a GitHub Actions ``strategy.matrix``.

`onnxforge zoo ZOO.toml --executor matrix` prints ``{"include": [...]}``, one entry
per (config, target): the folder name (``release``), the release's name, target,
config (relative to the zoo file), provider and ``runs-on`` (the target's runner
labels). Each job runs `onnxforge zoo ZOO.toml --only RELEASE -o out` and uploads
``out/RELEASE``; a last job downloads them all into one folder and runs
`onnxforge zoo merge out/*/report.json -o out` (docs/zoo.md).
"""

from __future__ import annotations

import os
from pathlib import Path

from onnxforge.core.errors import UsageError
from onnxforge.zoo.config import ZooConfig, select

GITHUB_MATRIX_LIMIT = 256  # jobs one matrix may generate (GitHub Actions' limit)


def matrix(cfg: ZooConfig, only=()) -> dict:
    entries = select(cfg, only)
    if len(entries) > GITHUB_MATRIX_LIMIT:
        raise UsageError(f"the zoo has {len(entries)} releases; a GitHub Actions matrix holds at most "
                         f"{GITHUB_MATRIX_LIMIT} jobs",
                         hint="split it (several zoo files, or --only lists per workflow), or use --executor ray")
    base = Path(cfg.path).parent
    include = []
    for e in entries:
        t = e.target
        include.append({
            "release": e.folder, "name": e.name, "target": t.name if t else None,
            "config": Path(os.path.relpath(e.config, base)).as_posix(),
            "provider": t.provider if t else None,
            "runs-on": list(t.runs_on) if t else ["ubuntu-latest"],
        })
    return {"include": include}
