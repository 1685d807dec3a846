"""Code execution and resources through a .pt2's JSON and zip structure: symbolic sizes
torch parses with sympy (eval), guards it exec's, node targets it resolves by attribute
path, and a zip bomb. Each hostile archive is a real dynamic-shape export, edited.
Then hostile Hugging Face configs: sizes below 1, label counts and weights that do not fit."""

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


def _setup(ws: Path) -> None:
    d = ws / "in"
    dyn = d / "dyn.pt2"
    if not dyn.exists():
        dynamic_pt2(dyn)
    for name, edit in (("sym_evil.pt2", _payload_in_expr(ws)), ("guard_evil.pt2", _payload_in_guard(ws)),
                       ("target_evil.pt2", _os_target)):
        if not (d / name).exists():
            edit_program(dyn, d / name, edit)
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
