"""Fresh virtual environments for the tests that install what a user installs (a packaged
folder's requirements.txt, onnxforge's wheel), with no system site-packages and no
checkout on sys.path. uv (in the dev extra) makes and fills them: 2 s against 44 s for
MLServer's pinned requirements with ``python -m venv`` and pip (34 s of that pip's CPU).
Both read the same requirements and constraints files; without uv, venv and pip."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

_OFFLINE = ("NewConnectionError", "Temporary failure in name resolution", "Network is unreachable",
            "ConnectTimeoutError", "ProxyError", "No route to host", "dns error", "error sending request")


def clean_env(**extra) -> dict:
    """This environment minus whatever would let the venv see onnxforge or this Python's packages."""
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "PYTHONHOME", "VIRTUAL_ENV")}
    return {**env, **extra}


def _uv() -> str | None:
    try:
        from uv import find_uv_bin

        return find_uv_bin()
    except (ImportError, FileNotFoundError):
        return None


def make_venv(root: Path) -> Path:
    """An empty venv at ``root``; its python."""
    uv = _uv()
    cmd = [uv, "venv", "-q", "--python", sys.executable, str(root)] if uv else [sys.executable, "-m", "venv", str(root)]
    subprocess.run(cmd, check=True, env=clean_env(), timeout=300)
    return root / "bin" / "python"


def install(py: Path, args: list[str]) -> float:
    """``pip install args`` into the venv of ``py``; the seconds it took. Skips, saying
    so, where the package index cannot be reached."""
    uv = _uv()
    cmd = [uv, "pip", "install", "-q", "--python", str(py)] if uv else [str(py), "-m", "pip", "install", "-q"]
    t0 = time.monotonic()
    r = subprocess.run([*cmd, *args], capture_output=True, text=True, cwd=py.parent, env=clean_env(), timeout=1800)
    if r.returncode != 0:
        if any(s in r.stdout + r.stderr for s in _OFFLINE):
            pytest.skip(f"the package index cannot be reached: {r.stderr.strip().splitlines()[-1:]}")
        pytest.fail(f"install {' '.join(args)} failed:\n{r.stderr[-3000:]}")
    return time.monotonic() - t0
