"""A factory (``path/model.py:build`` or ``module:build``) is the user's input: calling it
leaves nothing in the user's folders, whatever the interpreter's bytecode setting."""

import sys

import pytest

from onnxforge.backends.base import call_factory
from onnxforge.core.errors import BadInputError


def _write(d):
    d.mkdir()
    (d / "helper.py").write_text("SIZE = 3\n")
    (d / "model.py").write_text("import helper\n\ndef build():\n    import layers\n    return [helper.SIZE, layers.N]\n")
    (d / "layers.py").write_text("N = 4\n")


@pytest.mark.parametrize("how", ["file", "module"])
def test_a_factory_writes_no_bytecode_beside_the_users_files(tmp_path, monkeypatch, how):
    d = tmp_path / "in"
    _write(d)
    monkeypatch.setattr(sys, "dont_write_bytecode", False)  # Python's default, where no PYTHONDONTWRITEBYTECODE is set
    monkeypatch.setattr(sys, "path", list(sys.path))
    for name in ("helper", "layers", "model"):
        monkeypatch.delitem(sys.modules, name, raising=False)
    if how == "module":
        monkeypatch.chdir(d)
    spec = f"{d / 'model.py'}:build" if how == "file" else "model:build"
    assert call_factory(spec, "a model") == [3, 4]
    assert sorted(p.name for p in d.iterdir()) == ["helper.py", "layers.py", "model.py"]
    assert sys.dont_write_bytecode is False  # the setting is the caller's again


def test_a_failing_factory_restores_the_bytecode_setting(tmp_path, monkeypatch):
    (tmp_path / "bad.py").write_text("def build():\n    raise ValueError('no')\n")
    monkeypatch.setattr(sys, "dont_write_bytecode", False)
    with pytest.raises(BadInputError, match="raised ValueError: no"):
        call_factory(f"{tmp_path / 'bad.py'}:build", "a model")
    assert sys.dont_write_bytecode is False and not (tmp_path / "__pycache__").exists()
