"""The zoo file (zoo.toml): which release configs to run, on which targets.

```toml
[zoo]
releases = ["models/*/release.toml", "extra/mlp.toml"]   # paths or globs, relative to this file
max_retries = 2          # a release whose worker process died is run again (not one that failed a gate)
cpus_per_release = 1     # Ray: the CPUs each release task reserves on its node
keep_steps = true        # false: only model.onnx and the reports per release (less to write to a shared disk)

[[targets]]              # optional; none: each release once, into OUT/NAME/
name = "vnni"            # OUT/NAME-vnni/
provider = "cpu"         # replaces gates.latency.provider
resources = { avx512_vnni = 1 }    # Ray: resources the task requests (CPU, GPU as num_cpus, num_gpus)
labels = { "cpu-family" = "sapphire-rapids" }   # Ray: node labels the task needs
runs_on = ["self-hosted", "avx512"]             # GitHub Actions: the matrix entry's runs-on
```

A release's NAME is its config file's folder name when the file is called
release.toml (models/resnet/release.toml -> resnet), else the file's stem. Checked
completely before any work, like the release config: unknown keys and wrong types
are usage errors (exit 2) naming the key; a path or glob that finds no file is bad
input (exit 3).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

from onnxforge.pipeline.config import release_name, SECTIONS as RELEASE_SECTIONS

from onnxforge.core.errors import BadInputError, UsageError
from onnxforge.core.options import PosFloat, Retries, option, suggest, validate_options
import tomllib
from onnxforge.backends.onnx.runtime import resolve_provider
from onnxforge.core.fileio import load_toml

SECTIONS = ("zoo", "targets")
REPORT_FILES = ("zoo-report.json", "zoo-report.md", "junit.xml", "report.html")  # the verdict's files in OUT
NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]*")


def _check_name(value: str) -> None:
    if not NAME.fullmatch(value):
        raise UsageError(f"{value!r} is not a usable name",
                         hint="letters, digits, '.', '_' and '-', starting with a letter or digit (it names a folder)")


def _check_provider(value: str) -> None:
    resolve_provider(value)  # a typo fails here, before any release runs


def _check_resources(value) -> None:
    if "CPU" in value and value["CPU"] < 0.01:
        raise UsageError("CPU must be at least 0.01")


@dataclass(frozen=True)
class ZooSection:
    releases: tuple[str, ...] = option((), "Release configs: paths or globs, relative to the zoo file.")
    max_retries: Retries = option(2, "Times a release whose worker process died is run again.")
    cpus_per_release: PosFloat = option(1.0, "CPUs a release reserves on a Ray node (num_cpus of its task).")
    keep_steps: bool = option(True, "Keep each release's intermediate models under OUT/FOLDER/steps/.")


@dataclass(frozen=True)
class Target:
    name: str = option("", "The target's name: releases land in OUT/NAME-TARGET/.", check=_check_name)
    provider: Optional[str] = option(None, "Execution provider of the latency gate (replaces the release's).",
                                     check=_check_provider)
    resources: dict[str, PosFloat] = option({}, "Ray resources a release on this target requests.",
                                            check=_check_resources)
    labels: dict[str, str] = option({}, "Ray node labels a release on this target needs.")
    runs_on: tuple[str, ...] = option(("ubuntu-latest",), "GitHub Actions runner labels (the matrix's runs-on).")


@dataclass(frozen=True)
class Entry:
    """One (config, target) pair: one release, into OUT/FOLDER/."""

    name: str
    config: str  # absolute path
    target: Target | None = None

    @property
    def folder(self) -> str:
        return self.name if self.target is None else f"{self.name}-{self.target.name}"


@dataclass(frozen=True)
class ZooConfig:
    path: str
    zoo: ZooSection
    targets: tuple[Target, ...]
    entries: tuple[Entry, ...]


def _table(where: str, value) -> dict:
    if not isinstance(value, dict):
        raise UsageError(f"{where} must be a table, got {value!r}", hint=f"write [{where}] with key = value lines")
    return value


def _configs(zoo: ZooSection, base: Path, zoo_file: Path) -> list[Path]:
    """Each path or glob's files, in the order given (a glob's matches sorted), once each."""
    if not zoo.releases:
        raise UsageError("zoo.releases is empty", hint='list release configs: releases = ["models/*/release.toml"]')
    found: dict[Path, None] = {}
    for i, pattern in enumerate(zoo.releases):
        p = Path(pattern)
        if any(c in pattern for c in "*?["):
            anchor, rel = (Path(p.anchor), str(p.relative_to(p.anchor))) if p.is_absolute() else (base, pattern)
            matches = sorted(m.resolve() for m in anchor.glob(rel) if m.is_file())
            if not matches:
                raise BadInputError(f"zoo.releases[{i}]: no file matches {pattern!r}",
                                    hint=f"globs are relative to the zoo file's folder ({base})")
        else:
            full = p if p.is_absolute() else base / p
            if full.is_dir():
                raise BadInputError(f"zoo.releases[{i}]: {full} is a folder, not a release config",
                                    hint=f"name its file ({pattern}/release.toml), or a glob ({pattern}/*.toml)")
            if not full.is_file():
                raise BadInputError(f"zoo.releases[{i}]: not found: {full}",
                                    hint="paths are relative to the zoo file's folder")
            matches = [full.resolve()]
        for m in matches:
            _check_release_file(f"zoo.releases[{i}]", pattern, m, base, zoo_file)
        found.update(dict.fromkeys(matches))
    return list(found)


MAX_CONFIG_BYTES = 1 << 20  # a release config is a few lines of TOML


def _check_release_file(where: str, pattern: str, path: Path, base: Path, zoo_file: Path) -> None:
    """A release is a release config inside the zoo's folder: `../../etc/passwd`, a link
    out of the folder, the zoo file itself or any other file a glob catches is refused
    (exit 3) before anything is planned or run. ``path`` is resolved."""

    what = f"{where}: {pattern!r} finds {path}"
    hint = "list release configs (release.toml files) inside the zoo file's folder; narrow the glob if it caught this"
    if not path.is_relative_to(base):
        raise BadInputError(f"{what}, outside the zoo file's folder {base}", hint=hint)
    if path == zoo_file:
        raise BadInputError(f"{what}: the zoo file itself, not a release config", hint=hint)
    try:
        raw = tomllib.loads(path.read_text()) if path.stat().st_size <= MAX_CONFIG_BYTES else None
    except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError):
        raw = None
    if not isinstance(raw, dict) or not isinstance(raw.get("model"), dict) or not set(raw) <= set(RELEASE_SECTIONS):
        raise BadInputError(f"{what}, which is not a release config (TOML with a [model] table and only the "
                            f"sections {', '.join(RELEASE_SECTIONS)})", hint=hint)


def _entries(configs: list[Path], targets: tuple[Target, ...]) -> tuple[Entry, ...]:
    names: dict[str, Path] = {}
    for c in configs:
        name = release_name(c)
        if not NAME.fullmatch(name):
            raise UsageError(f"release {c} would be named {name!r}, which is not a usable folder name",
                             hint="rename its folder or file: letters, digits, '.', '_' and '-'")
        if name in names:
            raise UsageError(f"two releases are named {name!r}: {names[name]} and {c}",
                             hint="a release is named after its folder (release.toml) or its file: rename one")
        names[name] = c
    entries = tuple(Entry(n, str(c), t) for n, c in names.items() for t in (targets or (None,)))
    for e in entries:
        if e.folder in REPORT_FILES:
            raise UsageError(f"release {e.config} would be written to OUT/{e.folder}, where the zoo's verdict goes",
                             hint="rename its folder or file")
    return entries


def _targets(raw) -> tuple[Target, ...]:
    if not isinstance(raw, list):
        raise UsageError(f"targets must be an array of tables ([[targets]]), got {raw!r}")
    out = []
    for i, t in enumerate(raw):
        where = f"targets[{i}]"
        t = _table(where, t)
        if "name" not in t:
            raise UsageError(f"{where} has no name", hint='name = "cpu" (releases land in OUT/NAME-cpu/)')
        target = validate_options(Target, t, where)
        if target.name in {x.name for x in out}:
            raise UsageError(f"{where}.name: {target.name!r} is used twice", hint="give each target its own name")
        out.append(target)
    return tuple(out)


def load_zoo(path) -> ZooConfig:
    """Parse and validate a zoo.toml (see the module docstring)."""
    p, raw = load_toml(path, "zoo file")
    for k in raw:
        if k not in SECTIONS:
            raise UsageError(f"unknown section [{k}] in {p.name}", hint=suggest(k, SECTIONS))
    if "zoo" not in raw:
        raise UsageError(f"{p}: missing [zoo]", hint='[zoo] releases = ["models/*/release.toml"]')
    zoo = validate_options(ZooSection, _table("zoo", raw["zoo"]), "zoo")
    targets = _targets(raw.get("targets", []))
    entries = _entries(_configs(zoo, p.parent.resolve(), p.resolve()), targets)
    return ZooConfig(path=str(p.resolve()), zoo=zoo, targets=targets, entries=entries)


def select(cfg: ZooConfig, only) -> tuple[Entry, ...]:
    """The entries named in ``only`` (folder names, NAME or NAME-TARGET), all when empty."""
    if not only:
        return cfg.entries
    picked: dict[str, Entry] = {}
    for name in only:  # NAME-TARGET is one release; NAME is that release on every target
        hits = [e for e in cfg.entries if name in (e.folder, e.name)]
        if not hits:
            known = sorted({e.folder for e in cfg.entries} | {e.name for e in cfg.entries})
            raise UsageError(f"--only {name}: the zoo has no such release",
                             hint=f"releases: {', '.join(known)}" if len(known) <= 12 else suggest(name, known))
        picked.update((e.folder, e) for e in hits)
    return tuple(picked.values())
