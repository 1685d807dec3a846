"""`onnxforge schema`: a name it does not publish is a usage error listing the names."""

from __future__ import annotations

from cases import A, Case

CASES = [
    Case("schema of an unknown name", A("schema", "release.toml"), 2, "schemas: release, zoo, report, zoo-report"),
    Case("schema with a path-like name", A("schema", "../../etc/passwd"), 2, "no schema named"),
]
