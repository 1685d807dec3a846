"""Code execution and resources through a .pt2's JSON and zip structure: symbolic sizes
torch parses with sympy (eval), guards it exec's, node targets it resolves by attribute
path, and a zip bomb. Each hostile archive is a real dynamic-shape export, edited.
Then hostile Hugging Face configs: sizes below 1, label counts and weights that do not fit.
Then serve-check folders that name code (an implementation, a module beside the model,
server settings, a .env, a conda tarball) or settings that are not JSON or have wrong
types: all refused before any server starts."""

from __future__ import annotations

import json
import zipfile
from pathlib import Path

from cases import MARKER, A, Case, _i, _o

TOUCH = "__import__('os').system('touch {marker}')"


def dynamic_pt2(path: Path) -> None:
    """A real export whose sizes are symbolic: a floor division and a min of two dims."""
    import torch

    class M(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.lin = torch.nn.Linear(4, 3)

        def forward(self, x, y):
            n = min(x.shape[0], y.shape[0])
            return self.lin(x[: x.shape[0] // 2]), x[:n] + y[:n]

    torch.manual_seed(0)
    auto = torch.export.Dim.AUTO
    ep = torch.export.export(M(), (torch.randn(8, 4), torch.randn(6, 4)),
                             dynamic_shapes={"x": {0: auto}, "y": {0: auto}})
    torch.export.save(ep, str(path))


def edit_program(src: Path, dst: Path, edit) -> None:
    """``src`` with its models/model.json changed by ``edit(program_dict)``."""
    with zipfile.ZipFile(src) as z, zipfile.ZipFile(dst, "w") as out:
        for n in z.namelist():
            data = z.read(n)
            if n.endswith("models/model.json"):
                program = json.loads(data)
                edit(program)
                data = json.dumps(program).encode()
            out.writestr(n, data)


def _payload_in_expr(ws):
    def edit(p):
        text = json.dumps(p)
        sym = text[text.index('"expr_str": "') + 13:].split('"', 1)[0]  # the first symbolic size
        p.clear()
        p.update(json.loads(text.replace(f'"{sym}"', json.dumps(f"{sym} + {TOUCH.format(marker=ws / MARKER)}"), 1)))
    return edit


def _payload_in_guard(ws):
    return lambda p: p["guards_code"].append(f"{TOUCH.format(marker=ws / MARKER)} == 0")


def _os_target(p):
    nodes = p["graph_module"]["graph"]["nodes"]
    nodes[-1]["target"] = "torch.os.system"


def _name_evil(ws, src: Path, dst: Path) -> None:
    """A parameter name FX pastes between double quotes in the code it generates, renamed in
    the program and the weights' config alike (no dots: FX splits names on them, so the
    marker's path is spelled as bytes)."""
    path = list(str(ws / MARKER).encode())
    bad = json.dumps("lin.weight" + f'"+str(open(bytes({path}),"w"))+"')
    with zipfile.ZipFile(src) as z, zipfile.ZipFile(dst, "w") as out:
        for n in z.namelist():
            data = z.read(n)
            out.writestr(n, data.replace(b'"lin.weight"', bad.encode()) if n.endswith(".json") else data)


def _quoted_spec(p):
    sig = p["graph_module"]["module_call_graph"][0]["signature"]
    spec = json.loads(sig["in_spec"])
    spec[1]["children_spec"][1] = {"type": "builtins.dict", "context": json.dumps(['x"),exec("1']),
                                   "children_spec": [{"type": None, "context": None, "children_spec": []}]}
    sig["in_spec"] = json.dumps(spec)


def _setup(ws: Path) -> None:
    d = ws / "in"
    dyn = d / "dyn.pt2"
    if not dyn.exists():
        dynamic_pt2(dyn)
    for name, edit in (("sym_evil.pt2", _payload_in_expr(ws)), ("guard_evil.pt2", _payload_in_guard(ws)),
                       ("target_evil.pt2", _os_target), ("spec_evil.pt2", _quoted_spec)):
        if not (d / name).exists():
            edit_program(dyn, d / name, edit)
    if not (d / "name_evil.pt2").exists():
        _name_evil(ws, dyn, d / "name_evil.pt2")
    bomb = d / "bomb.pt2"
    if not bomb.exists():
        with zipfile.ZipFile(dyn) as z, zipfile.ZipFile(bomb, "w", zipfile.ZIP_DEFLATED) as out:
            for n in z.namelist():
                if n.endswith("data/weights/weight_0"):  # 512 MiB of zeros: half a megabyte deflated
                    with out.open(n, "w", force_zip64=True) as f:
                        chunk = bytes(2**24)
                        for _ in range(32):
                            f.write(chunk)
                else:
                    out.writestr(n, z.read(n))


def _hf_setup(ws: Path) -> None:
    """A tiny BERT classifier saved with save_pretrained, and copies with one config key changed."""
    import shutil

    d = ws / "in" / "hf"
    if (d / "bert").exists():
        return
    import torch
    from transformers import BertConfig, BertForSequenceClassification

    torch.manual_seed(0)
    BertForSequenceClassification(BertConfig(vocab_size=100, hidden_size=16, num_hidden_layers=2, num_attention_heads=2,
                                             intermediate_size=32, max_position_embeddings=64, num_labels=3)
                                  ).eval().save_pretrained(d / "bert")
    for name, change in HF_EDITS.items():
        shutil.copytree(d / "bert", d / name)
        cfg = json.loads((d / name / "config.json").read_text())
        for k, v in change.items():
            cfg.pop(k, None) if v is None else cfg.__setitem__(k, v)
        (d / name / "config.json").write_text(json.dumps(cfg))


HF_EDITS = {
    "layerless": {"num_hidden_layers": -1},
    "no_heads": {"num_attention_heads": 0},
    "many_labels": {"num_labels": 10**7, "id2label": None, "label2id": None},
    "huge_id2label": {"id2label": {str(i): f"L{i}" for i in range(200_000)}, "label2id": None},
    "huge_vocab": {"vocab_size": 10**10},
}


def _hf(name):
    return lambda ws: str(ws / "in" / "hf" / name)


CASES = [
    Case("pt2 with symbolic sizes still converts", A("convert", "torch", _i("dyn.pt2"), "-o", _o("dyn.onnx")),
         0, outputs=("out/dyn.onnx",), setup=_setup, one_line=False, slow=True),
    Case("pt2 symbolic size runs no code (convert)", A("convert", "torch", _i("sym_evil.pt2"), "-o", _o("m.onnx")),
         3, "symbolic size", outputs=("out",), setup=_setup, slow=True),
    Case("pt2 symbolic size runs no code (validate)", A("validate", _i("sym_evil.pt2"), _i("tiny.onnx")),
         3, "symbolic size", setup=_setup, slow=True),
    Case("pt2 guard runs no code (convert)", A("convert", "torch", _i("guard_evil.pt2"), "-o", _o("m.onnx")),
         3, "guard", outputs=("out",), setup=_setup, slow=True),
    Case("pt2 node target outside torch.ops", A("convert", "torch", _i("target_evil.pt2"), "-o", _o("m.onnx")),
         3, "torch.os.system", outputs=("out",), setup=_setup, slow=True),
    Case("pt2 parameter name runs no code (convert)", A("convert", "torch", _i("name_evil.pt2"), "-o", _o("m.onnx")),
         3, "not letters, digits", outputs=("out",), setup=_setup, slow=True),
    Case("pt2 input name with quotes in the pytree spec", A("convert", "torch", _i("spec_evil.pt2"), "-o",
                                                          _o("m.onnx")),
         3, "not letters, digits", outputs=("out",), setup=_setup, slow=True),
    Case("pt2 zip bomb refused before reading", A("convert", "torch", _i("bomb.pt2"), "-o", _o("m.onnx")),
         3, "zip bomb", outputs=("out",), setup=_setup, slow=True),
    Case("HF tiny BERT still converts", A("convert", "torch", _hf("bert"), "-o", _o("bert.onnx")), 0,
         outputs=("out/bert.onnx",), setup=_hf_setup, one_line=False, slow=True),
    Case("HF num_hidden_layers -1", A("convert", "torch", _hf("layerless"), "-o", _o("m.onnx")), 3,
         "num_hidden_layers", outputs=("out",), setup=_hf_setup, slow=True),
    Case("HF num_attention_heads 0", A("convert", "torch", _hf("no_heads"), "-o", _o("m.onnx")), 3,
         "num_attention_heads", outputs=("out",), setup=_hf_setup, slow=True),
    Case("HF num_labels 10**7", A("convert", "torch", _hf("many_labels"), "-o", _o("m.onnx")), 3,
         "10000000 labels", outputs=("out",), setup=_hf_setup, slow=True),
    Case("HF id2label of 200,000 labels", A("convert", "torch", _hf("huge_id2label"), "-o", _o("m.onnx")), 3,
         "200000 labels", outputs=("out",), setup=_hf_setup, slow=True),
    Case("HF weights over the memory", A("convert", "torch", _hf("huge_vocab"), "-o", _o("m.onnx")), 3,
         "GiB", outputs=("out",), setup=_hf_setup, slow=True),
]


def _payload_module(ws) -> str:
    return f"open({str(ws / MARKER)!r}, 'w').close()\n"


def _serve_setup(ws: Path) -> None:
    """The tiny model packaged for MLServer, and copies that each name code or hold bad settings."""
    import shutil

    from onnxforge.steps.package.package import package

    d = ws / "in" / "serve"
    if (d / "ok").exists():
        return
    package(str(ws / "in" / "tiny.onnx"), d / "ok", target="mlserver")
    for name, edit in SERVE_EDITS.items():
        shutil.copytree(d / "ok", d / name)
        edit(ws, d / name)


def _model_settings(change):
    def edit(ws, folder):
        path = folder / "model-settings.json"
        cfg = json.loads(path.read_text())
        change(cfg)
        path.write_text(json.dumps(cfg))
    return edit


def _evil_impl(ws, folder):
    _model_settings(lambda c: c.__setitem__("implementation", "evil.Runtime"))(ws, folder)
    (folder / "evil.py").write_text(_payload_module(ws))


def _shadowing_module(ws, folder):
    (folder / "onnxruntime.py").write_text(_payload_module(ws))


def _evil_repository(ws, folder):
    (folder / "settings.json").write_text(json.dumps({"model_repository_implementation": "evil.Repo"}))
    (folder / "evil.py").write_text(_payload_module(ws))


def _namespace_impl(ws, folder):
    """An implementation that passes the name check (``mlserver_*``) from a sub-folder
    without __init__.py: Python imports it as a namespace package."""
    _model_settings(lambda c: c.__setitem__("implementation", "mlserver_zzz.rt.Runtime"))(ws, folder)
    (folder / "mlserver_zzz").mkdir()
    (folder / "mlserver_zzz" / "rt.py").write_text(_payload_module(ws))


def _linked_namespace(ws, folder):
    """The same module one link away: mlserver_zzz/sub points at a folder outside."""
    _model_settings(lambda c: c.__setitem__("implementation", "mlserver_zzz.sub.rt.Runtime"))(ws, folder)
    outside = ws / "in" / "outside_code"
    outside.mkdir(exist_ok=True)
    (outside / "rt.py").write_text(_payload_module(ws))
    (folder / "mlserver_zzz").mkdir()
    (folder / "mlserver_zzz" / "sub").symlink_to(outside, target_is_directory=True)


def _pycache_module(ws, folder):
    """A .py inside a __pycache__ folder: importable all the same (mlserver_x.__pycache__
    is a namespace package), named by a second model's settings."""
    (folder / "mlserver_x" / "__pycache__").mkdir(parents=True)
    (folder / "mlserver_x" / "__pycache__" / "evil.py").write_text(_payload_module(ws))
    (folder / "side").mkdir()
    (folder / "side" / "model-settings.json").write_text(json.dumps({"name": "side",
                                                                     "implementation": "mlserver_x.__pycache__.evil.M"}))


def _many_models(ws, folder):
    """More model-settings.json files than serve-check reads: the last would go unchecked
    (MLServer loads them all), here one whose environment runs the folder's own Python."""
    for i in range(1000):
        (folder / f"a{i:04d}").mkdir()
        (folder / f"a{i:04d}" / "model-settings.json").write_text('{"implementation": "mlserver.MLModel"}')
    (folder / "zzz").mkdir()
    (folder / "zzz" / "model-settings.json").write_text(json.dumps({
        "name": "zzz", "implementation": "mlserver.MLModel", "parameters": {"environment_path": "./env"}}))


def _nested_model(ws, folder):
    (folder / "more").mkdir()
    (folder / "more" / "model-settings.json").write_text(json.dumps({"name": "more", "implementation": "os.system"}))


def _edited_runtime(ws, folder):
    """The shipped runtime with a line added: no longer onnxforge's, whatever its name."""
    with open(folder / "onnxforge_runtime.py", "a") as f:
        f.write(_payload_module(ws))


def forged_bytecode(ws, folder):
    """A .pyc that claims the shipped runtime's mtime and size: Python would run it
    instead of the checked source (tests/adversarial/test_code.py serves such a folder)."""
    import importlib._bootstrap_external as bx
    import sys

    src = folder / "onnxforge_runtime.py"
    st = src.stat()
    code = compile(_payload_module(ws), str(src), "exec")
    (folder / "__pycache__").mkdir()
    pyc = folder / "__pycache__" / f"onnxforge_runtime.{sys.implementation.cache_tag}.pyc"
    pyc.write_bytes(bx._code_to_timestamp_pyc(code, int(st.st_mtime), st.st_size))


SERVE_EDITS = {
    "edited_runtime": _edited_runtime,
    "no_runtime": lambda ws, f: (f / "onnxforge_runtime.py").unlink(),
    "impl": _evil_impl,
    "shadow": _shadowing_module,
    "repository": _evil_repository,
    "namespace": _namespace_impl,
    "linked_namespace": _linked_namespace,
    "pycache_module": _pycache_module,
    "many_models": _many_models,
    "nested": _nested_model,
    "tarball": _model_settings(lambda c: c["parameters"].__setitem__("environment_tarball", "./env.tar.gz")),
    "dotenv": lambda ws, f: (f / ".env").write_text("MLSERVER_EXTENSIONS='[\"evil\"]'\n"),
    "not_json": lambda ws, f: (f / "model-settings.json").write_text("{not json"),
    "list": lambda ws, f: (f / "model-settings.json").write_text("[1, 2]"),
    "name_number": _model_settings(lambda c: c.__setitem__("name", 5)),
    "params_string": _model_settings(lambda c: c.__setitem__("parameters", "x")),
    "threads_words": _model_settings(lambda c: c["parameters"]["extra"].__setitem__("threads", "four")),
    "settings_not_json": lambda ws, f: (f / "settings.json").write_text("nope"),
}


def _srv(name):
    return lambda ws: str(ws / "in" / "serve" / name)


def _serve_case(title, name, clue):
    return Case(f"serve-check {title}", A("serve-check", _srv(name), "--duration", "0"), 3, clue, setup=_serve_setup)


CASES += [
    _serve_case("shipped runtime edited", "edited_runtime", "onnxforge_runtime.py is missing or not"),
    _serve_case("shipped runtime removed", "no_runtime", "onnxforge_runtime.py is missing or not"),
    _serve_case("implementation from the folder", "impl", "evil.Runtime"),
    _serve_case("module shadowing onnxruntime", "shadow", "onnxruntime.py"),
    _serve_case("settings.json repository class", "repository", "model_repository_implementation"),
    _serve_case("implementation from a namespace package", "namespace", "module mlserver_zzz"),
    _serve_case("namespace package behind a link", "linked_namespace", "module mlserver_zzz"),
    _serve_case("module inside a __pycache__ sub-folder", "pycache_module", "module mlserver_x"),
    _serve_case("over 1000 model-settings.json", "many_models", "over 1000 model-settings.json"),
    _serve_case("second model-settings.json in a subfolder", "nested", "os.system"),
    _serve_case("conda environment tarball", "tarball", "environment_tarball"),
    _serve_case(".env settings", "dotenv", ".env"),
    _serve_case("model-settings.json not JSON", "not_json", "not valid JSON"),
    _serve_case("model-settings.json a list", "list", "not an object"),
    _serve_case("model name a number", "name_number", "name"),
    _serve_case("parameters a string", "params_string", "parameters must be an object"),
    _serve_case("threads as words", "threads_words", "threads must be an integer"),
    _serve_case("settings.json not JSON", "settings_not_json", "settings.json is not valid JSON"),
]
