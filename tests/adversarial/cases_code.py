"""Code execution and resources through a .pt2's JSON and zip structure: symbolic sizes
torch parses with sympy (eval), guards it exec's, node targets it resolves by attribute
path, and a zip bomb. Each hostile archive is a real dynamic-shape export, edited."""

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
]
