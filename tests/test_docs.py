"""The README's and docs' examples work where a user puts them: CI workflows in the
user's own repository on a default (read-only) token. actionlint is not installable
here (its wheel downloads the binary from GitHub), so the workflows are parsed with
yaml and checked for what it would not catch anyway: an install that assumes the
checkout is onnxforge, and a junit publisher without the permission it needs."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
DOCS = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
FENCE = re.compile(r"^```(\w+)[^\n]*\n(.*?)^```", re.S | re.M)


def blocks(lang: str) -> list[tuple[str, str]]:
    """(where, text) of every fenced block in README.md and docs/ tagged ``lang``."""
    out = []
    for doc in DOCS:
        text = doc.read_text()
        for m in FENCE.finditer(text):
            if m.group(1) == lang:
                out.append((f"{doc.relative_to(ROOT)}:{text[:m.start()].count(chr(10)) + 1}", m.group(2)))
    return out


YAML = blocks("yaml")


def test_docs_have_ci_examples():
    assert len(YAML) >= 3, YAML


def _installs_from_checkout(line: str) -> bool:
    """`pip install -e .` or `-c constraints.txt`: only onnxforge's own checkout has them."""
    return "pip install" in line and bool(re.search(r"(-e\s+\S*\.|constraints\.txt)", line))


@pytest.mark.parametrize("where,text", YAML, ids=[w for w, _ in YAML])
def test_ci_yaml_works_in_a_users_repository(where, text):
    import yaml

    doc = yaml.safe_load(text)
    assert isinstance(doc, dict), where
    assert not [line for line in text.splitlines() if _installs_from_checkout(line)], \
        f"{where}: installs onnxforge from its own checkout; a user's repository has neither"
    if "jobs" not in doc:  # GitLab CI: jobs at the top level
        for name, job in doc.items():
            assert isinstance(job.get("script"), list), f"{where}: job {name} has no script"
        return
    top = doc.get("permissions", {})
    for name, job in doc["jobs"].items():
        assert "runs-on" in job and isinstance(job.get("steps"), list), f"{where}: job {name}"
        perms = job.get("permissions", top)
        for step in job["steps"]:
            assert ("uses" in step) != ("run" in step), f"{where}: job {name}: a step needs uses or run: {step}"
            if str(step.get("uses", "")).startswith("mikepenz/action-junit-report"):
                assert perms.get("checks") == "write", \
                    f"{where}: job {name}: action-junit-report needs permissions: checks: write"
                assert "annotate_only" in step.get("with", {}), \
                    f"{where}: job {name}: a fork's read-only token needs annotate_only"
        for expr in re.findall(r"\$\{\{(.*?)\}\}", yaml.safe_dump(job)):
            assert expr.count("(") == expr.count(")"), f"{where}: {expr}"
