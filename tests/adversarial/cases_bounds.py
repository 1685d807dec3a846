"""Bounded counts and honest messages: every count, duration and size has a maximum
(options.LIMITS; exit 2 naming the flag or TOML key and the maximum), a name must be
usable as a folder, a tolerance or --map naming nothing is a usage error, and every
bad-input error says what to do next (a `hint:` line)."""

from __future__ import annotations

from pathlib import Path

from cases import A, Case, T, _i, _o, release_config

HUGE = str(10**20)


def _bad_inputs(ws: Path) -> None:
    """Files that are not what they claim (under ws/in; idempotent)."""
    import numpy as np

    d = ws / "in"
    (d / "not_a_zip.skops").write_text("not a zip\n")
    (d / "header_only.csv").write_text("a,b,c,d\n")
    np.save(d / "x3d.npy", np.zeros((2, 3, 4), np.float32))
    np.save(d / "rows.npy", np.zeros((3, 4), np.float32))
    (d / "est.py").write_text("import numpy as np\n\ndef build():\n    from sklearn.linear_model import LogisticRegression\n"
                              "    X = np.random.default_rng(0).random((40, 3))\n"
                              "    return LogisticRegression().fit(X, (X[:, 0] > 0.5).astype(int))\n\n"
                              "def number():\n    return 5\n")
    (d / "nan.csv").write_text("a,b,c\n1,2,3\n4,,6\n")
    (d / "words.csv").write_text("a,b,c\n1,x,3\n4,y,6\n")


def _evil_torchscript(ws: Path) -> None:
    """A TorchScript file whose code calls os.system (posix::system) instead of relu."""
    import sys
    import zipfile

    import torch

    d = ws / "in"
    if (d / "evil.ts").exists():
        return
    (d / "tsm.py").write_text("import torch\n\nclass M(torch.nn.Module):\n    def forward(self, x):\n"
                              "        return torch.relu(x)\n")
    sys.path.insert(0, str(d))
    try:
        import tsm

        torch.jit.save(torch.jit.script(tsm.M()), str(d / "ok.ts"))
    finally:
        sys.path.remove(str(d))
    with zipfile.ZipFile(d / "ok.ts") as src, zipfile.ZipFile(d / "evil.ts", "w") as out:
        for n in src.namelist():
            data = src.read(n)
            if n.endswith("code/__torch__/tsm.py"):
                data = data.replace(b"torch.relu(x)", f'ops.posix.system("touch {ws / "PWNED"}")'.encode())
            out.writestr(n, data)


def _est(ws: Path) -> str:
    return str(ws / "in" / "est.py") + ":build"


def _serve_check_toml(ws: Path) -> str:
    p = ws / "in" / "sc_huge.toml"
    p.write_text(Path(release_config(ws, "sc_base")).read_text()
                 + '[package]\ntargets = ["mlserver"]\n[serve_check]\nconcurrency = 100000000\n')
    return str(p)


def _zoo_retries(ws: Path) -> str:
    p = ws / "in" / "zoo_retries.toml"
    p.write_text('[zoo]\nreleases = ["zoo_rel.toml"]\nmax_retries = 1000000000\n')
    (ws / "in" / "zoo_rel.toml").write_text(Path(release_config(ws, "zoo_rel")).read_text())
    return str(p)


CASES = [
    # counts that hang or balloon without a maximum
    Case("benchmark --iterations 1e20", A("benchmark", T, "--iterations", HUGE), 2, "1000000"),
    Case("benchmark --warmup 1e20", A("benchmark", T, "--warmup", HUGE), 2, "--warmup"),
    Case("benchmark --duration 1e9", A("benchmark", T, "--duration", "1e9"), 2, "3600"),
    Case("benchmark --batch past the maximum", A("benchmark", T, "--batch", "1,100000000"), 2, "65536"),
    Case("benchmark --threads 1e20", A("benchmark", T, "--threads", HUGE), 2, "--threads"),
    Case("validate --samples 1e9", A("validate", T, T, "--samples", "1000000000"), 2, "--samples"),
    Case("validate --top-k 1e20", A("validate", T, T, "--top-k", HUGE), 2, "--top-k"),
    Case("validate --seed 1e20", A("validate", T, T, "--seed", HUGE), 2, "--seed"),
    Case("serve-check --concurrency 1e8", A("serve-check", _i("sub"), "--concurrency", "100000000"), 2,
         "--concurrency"),
    Case("serve-check --duration 1e9", A("serve-check", _i("sub"), "--duration", "1e9"), 2, "3600"),
    Case("quantize --check-samples 1e9", A("quantize", "dynamic", "--allow-generated-data", T, "-o", _o("q.onnx"), "--check-samples",
                                           "1000000000"), 2, "--check-samples"),
    Case("quantize static --samples 1e20", A("quantize", "static", "--allow-generated-data", T, "-o", _o("q.onnx"), "--calibration", "random",
                                             "--samples", HUGE), 2, "--samples"),
    Case("simplify --samples 1e9", A("simplify", T, "-o", _o("s.onnx"), "--samples", "1000000000"), 2, "1000"),
    Case("zoo run --jobs 1e6", A("zoo", "run", _i("nope.toml"), "--jobs", "1000000"), 2, "--jobs"),
    Case("TOML serve_check.concurrency 1e8", lambda ws: ["release", _serve_check_toml(ws), "-o", str(ws / "out" / "sc")],
         2, "serve_check.concurrency", outputs=("out",)),
    Case("TOML gates.latency.seconds 1e9",
         lambda ws: ["release", release_config(ws, "ls", **{"gates.latency.seconds": 1e9}), "-o", str(ws / "out" / "ls")],
         2, "gates.latency.seconds", outputs=("out",)),
    Case("TOML bench_seconds 1e9",
         lambda ws: ["release", release_config(ws, "bs", **{"steps.1.bench_seconds": 1e9}), "-o", str(ws / "out" / "bs")],
         2, "steps[1].bench_seconds", outputs=("out",)),
    Case("TOML latency threads 1e20",
         lambda ws: ["release", release_config(ws, "lt", **{"gates.latency.threads": 10**18}),
                     "-o", str(ws / "out" / "lt")], 2, "gates.latency.threads", outputs=("out",)),
    # names that cannot be a folder or a model name
    Case("package --name ''", A("package", T, "-o", _o("pkg"), "--name", ""), 2, "--name"),
    Case("package --name of spaces", A("package", T, "-o", _o("pkg"), "--name", "   "), 2, "--name"),
    Case("package --name ..", A("package", T, "-o", _o("pkg"), "--name", ".."), 2, "--name"),
    # names that match nothing: the user believes they were applied
    Case("validate --atol naming no output", A("validate", T, T, "--atol", "nope:1e-3"), 2, "nope"),
    Case("validate --map naming nothing", A("validate", T, T, "--map", "zz=yy"), 2, "logits, probs"),
    # every bad-input error says what to do next
    Case(".skops that is not a zip", A("convert", "sklearn", _i("not_a_zip.skops"), "-o", _o("m.onnx")), 3, "skops",
         setup=_bad_inputs),
    Case("3-D --sample", lambda ws: ["convert", "sklearn", _est(ws), "--sample", str(ws / "in" / "x3d.npy"), "-o",
                                     str(ws / "out" / "m.onnx")], 3, "2-D", setup=_bad_inputs),
    Case("header-only CSV sample", lambda ws: ["convert", "sklearn", _est(ws), "--sample",
                                               str(ws / "in" / "header_only.csv"), "-o", str(ws / "out" / "m.onnx")],
         3, "data row", setup=_bad_inputs),
    Case("header-only CSV inputs", A("validate", T, T, "--inputs", _i("header_only.csv")), 3, "data row",
         setup=_bad_inputs),
    Case(".npy as data.validation",
         lambda ws: ["release", release_config(ws, "npyval", **{"data.validation": "rows.npy"}),
                     "-o", str(ws / "out" / "npyval")], 3, "one array", outputs=("out",), setup=_bad_inputs),
    Case("CSV with an empty cell for an estimator without NaN",
         lambda ws: ["convert", "sklearn", _est(ws), "--sample", str(ws / "in" / "nan.csv"), "-o",
                     str(ws / "out" / "m.onnx")], 3, "column 'b' line 3", setup=_bad_inputs),
    Case("CSV of text for an estimator of numbers",
         lambda ws: ["convert", "sklearn", _est(ws), "--sample", str(ws / "in" / "words.csv"), "-o",
                     str(ws / "out" / "m.onnx")], 3, "column 'b' is text", setup=_bad_inputs),
    Case("factory returning an int", lambda ws: ["convert", "torch", str(ws / "in" / "est.py") + ":number", "--input",
                                                 "x:float32:2x4", "-o", str(ws / "out" / "m.onnx")], 3, "int",
         setup=_bad_inputs, slow=True),
    Case("TorchScript naming posix.system", A("convert", "torch", _i("evil.ts"), "--input", "x:float32:2x4", "-o",
                                              _o("m.onnx")), 3, "posix", setup=_evil_torchscript, slow=True),
    Case("convert sklearn --opset 1e20", lambda ws: ["convert", "sklearn", _est(ws), "--opset", HUGE, "-o",
                                                     str(ws / "out" / "m.onnx")], 2, "does not exist",
         setup=_bad_inputs),
    Case("benchmark --max-regression nan%", A("benchmark", T, "--max-regression", "nan%"), 2, "finite"),
    Case("benchmark --max-regression 1e400", A("benchmark", T, "--max-regression", "1e400"), 2, "finite"),
    Case("TOML zoo.max_retries 1e9", lambda ws: ["zoo", "run", _zoo_retries(ws), "-o", str(ws / "out" / "zoo")], 2,
         "zoo.max_retries", outputs=("out",)),
]
