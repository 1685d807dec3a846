"""onnxsim's simplifier without the rest of onnxsim. ``import onnxsim`` (0.8) runs an
``__init__`` that imports some 300 modules, torch among them: 3.8 s of start-up for a
command that needs the C++ simplifier only (0.7 s). The package is registered with its
``__init__`` deferred: the first attribute anything else asks of it (``onnxsim.simplify``
in a user's code, say) runs the ``__init__`` then, so the package stays whole."""

from __future__ import annotations

import importlib
import importlib.util
import sys
from importlib.machinery import PathFinder

from onnxforge.core.errors import require


def onnxsim_module(name: str):
    """``onnxsim.<name>``, imported without running onnxsim's ``__init__`` first when
    onnxsim is not imported yet; a normal import where anything looks unusual."""
    if "onnxsim" not in sys.modules:
        spec = importlib.util.find_spec("onnxsim")
        if spec is None or spec.loader is None or not spec.submodule_search_locations:
            require("onnxsim", "all")  # not installed: the usual error and hint
        pkg = importlib.util.module_from_spec(spec)
        places = list(spec.submodule_search_locations)
        state = {"ran": False}

        def _complete(attr: str):
            # a submodule (``from . import backend`` asks first) or a probe is no reason to run it
            if state["ran"] or attr.startswith("__") or PathFinder.find_spec(attr, places) is not None:
                raise AttributeError(f"module 'onnxsim' has no attribute {attr!r}")
            state["ran"] = True
            spec.loader.exec_module(pkg)
            return getattr(pkg, attr)

        pkg.__getattr__ = _complete
        sys.modules["onnxsim"] = pkg
    try:
        return importlib.import_module(f"onnxsim.{name}")
    except ImportError as exc:
        require("onnxsim", "all")  # onnxsim missing or broken: the usual error
        raise exc

