"""Shared by the release tests: the bundled examples, and a copy of the digits
example's config changed by a function."""

import shutil
import tomllib

from conftest import ROOT

EXAMPLE = ROOT / "fixtures" / "example"
SK_EXAMPLE = ROOT / "fixtures" / "example-sklearn"


def _config(tmp_path, mutate) -> str:
    cfg = tomllib.loads((EXAMPLE / "release.toml").read_text())
    for name in ("model.py", "weights.pt", "calib.npz", "val.npz"):
        shutil.copy(EXAMPLE / name, tmp_path / name)
    cfg.pop("package", None)  # packaging has tests of its own (tests/steps/package)
    mutate(cfg)
    from onnxforge.core.options import toml_value

    lines = []
    for sec in ("model", "data"):
        if sec in cfg:
            lines.append(f"[{sec}]")
            lines += [f"{k} = {toml_value(v)}" for k, v in cfg[sec].items()]
    for st in cfg.get("steps", []):
        lines.append("[[steps]]")
        lines += [f"{k} = {toml_value(v)}" for k, v in st.items()]
    for sec in [k for k in cfg if k not in ("model", "data", "steps")]:
        lines.append(f"[{sec}]")
        lines += [f"{k} = {toml_value(v)}" for k, v in cfg[sec].items()]
    path = tmp_path / "release.toml"
    path.write_text("\n".join(lines) + "\n")
    return path


