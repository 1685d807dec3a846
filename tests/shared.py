"""What several test modules build and only read, built once per run (conftest.py's
session fixtures call these through shared_build): the README's digits release, the
sklearn example's release, the tiny BERT's ONNX export. Each builder writes into the
empty ``folder`` it is given."""

from __future__ import annotations

import importlib.util
import os
import shutil
import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
EXAMPLE = ROOT / "fixtures" / "example"
SK_EXAMPLE = ROOT / "fixtures" / "example-sklearn"
M = f"{ROOT / 'tests' / 'models.py'}"

# The README's example with its latency thresholds out of reach of a loaded machine: tests
# never assert timings (benchmarks/ measure them); the gates are still evaluated and reported.
UNTIMED = {"provider": "cpu", "dims": {"batch": 64}, "max_p50_ms": 1000.0, "min_speedup": 0.01, "seconds": 0.5}


def serve_installed() -> bool:
    # find_spec does not import: the test process must never import mlserver (serving/check.py)
    return all(importlib.util.find_spec(m) for m in ("mlserver", "mlflow", "tritonclient"))


def example_config(folder: Path, mutate, example: Path = EXAMPLE) -> Path:
    """An example's release.toml (the digits one by default) and its files copied into
    ``folder``, the config changed by ``mutate(dict)`` ([package] dropped first:
    packaging has tests of its own)."""
    from onnxforge.core.options import toml_value

    cfg = tomllib.loads((example / "release.toml").read_text())
    for p in example.iterdir():
        if p.is_file() and p.name != "release.toml":
            shutil.copy(p, folder / p.name)
    cfg.pop("package", None)
    mutate(cfg)
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
    path = folder / "release.toml"
    path.write_text("\n".join(lines) + "\n")
    return path


def untimed_example(folder: Path, package: bool = False, example: Path = EXAMPLE) -> Path:
    """An example's release with its latency gate out of reach of a loaded machine:
    UNTIMED's limits over the example's own (the sklearn one has no speed-up or dims)."""
    def change(c):
        own = c["gates"]["latency"]
        c["gates"]["latency"] = {**own, **{k: v for k, v in UNTIMED.items() if k in own or k == "seconds"}}
        if package:
            c["package"] = {"targets": ["mlflow", "mlserver", "triton"]}

    return example_config(folder, change, example)


def digits_release(folder: Path) -> None:
    """The README's main job: cfg/release.toml (untimed, with the deployable folders when
    the serve extra is installed) released into a/ through the CLI under GitHub Actions'
    step summary (summary.md); its exit code in exit_code."""
    from onnxforge.cli.app import main

    (folder / "cfg").mkdir()
    cfg = untimed_example(folder / "cfg", package=serve_installed())
    os.environ["GITHUB_STEP_SUMMARY"] = str(folder / "summary.md")
    try:
        code = main(["release", str(cfg), "-o", str(folder / "a"), "--json"])
    finally:
        del os.environ["GITHUB_STEP_SUMMARY"]
    (folder / "exit_code").write_text(f"{code}\n")


def sklearn_release(folder: Path) -> None:
    """The README's sklearn example released into release/, untimed (its gates are far
    from their limits; the timing is not what the tests check)."""
    from onnxforge.pipeline.run import release

    out = folder / "release"
    out.mkdir()
    rep = release(untimed_example(folder, example=SK_EXAMPLE), out)
    assert rep.passed, rep.failure


def bert_onnx(folder: Path) -> None:
    """models.py's tiny BERT exported to bert.onnx (inputs input_ids, attention_mask)."""
    import onnxforge

    res = onnxforge.convert_torch(f"{M}:tiny_bert", folder / "bert.onnx",
                                  inputs=["input_ids:int64:batchxseq", "attention_mask:int64:batchxseq"],
                                  val_ranges={"input_ids": (0, 99), "attention_mask": (1, 1)})
    assert res.passed


def gpt2_onnx(folder: Path) -> None:
    """models.py's tiny GPT-2 exported to gpt2.onnx (input_ids, batch x seq, tokens 0..99)."""
    import onnxforge

    assert onnxforge.convert_torch(f"{M}:tiny_gpt2", folder / "gpt2.onnx", inputs=["input_ids:int64:batchxseq"],
                                   val_ranges={"input_ids": (0, 99)}).passed


def torch_exports(folder: Path) -> None:
    """Small torch models exported once, each the input of tests about other steps:
    digits.onnx (the example's trained CNN), encoder.onnx (models.encoder: a 2-layer
    transformer encoder), mlp.onnx (models.mlp)."""
    import onnxforge

    for path, source, inputs, weights in [
            ("digits.onnx", f"{EXAMPLE / 'model.py'}:build", "x:float32:batchx1x8x8", str(EXAMPLE / "weights.pt")),
            ("encoder.onnx", f"{M}:encoder", "x:float32:batchxseqx16", None),
            ("mlp.onnx", f"{M}:mlp", "x:float32:batchx8", None)]:
        assert onnxforge.convert_torch(source, folder / path, inputs=[inputs], weights=weights).passed, path
