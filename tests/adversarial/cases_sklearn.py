"""scikit-learn models: --dim keys for unnamed dynamic dims (skl2onnx writes none), and an
ai.onnx.ml opset the user gave that skl2onnx cannot write for the estimator."""

from __future__ import annotations

from pathlib import Path

from cases import A, Case, _i, _o

FACTORY = """import numpy as np
from sklearn.ensemble import IsolationForest


def iforest():
    X = np.random.default_rng(0).normal(size=(50, 4)).astype(np.float32)
    return IsolationForest(n_estimators=3, random_state=0).fit(X)
"""


def _sklearn_onnx(ws: Path) -> None:
    import numpy as np
    import onnx
    from skl2onnx import convert_sklearn
    from skl2onnx.common.data_types import FloatTensorType
    from sklearn.linear_model import LinearRegression

    X = np.random.default_rng(0).normal(size=(20, 4))
    onx = convert_sklearn(LinearRegression().fit(X, X[:, 0]), initial_types=[("X", FloatTensorType([None, 4]))])
    onnx.save(onx, str(ws / "in" / "lin.onnx"))


def _factory(ws: Path) -> None:
    (ws / "in" / "iforest.py").write_text(FACTORY)


L = _i("lin.onnx")

CASES = [
    Case("--dim on a fixed axis by position", A("validate", L, L, "--dim", "1=7"), 2, "0=N", setup=_sklearn_onnx),
    Case("--dim naming an input the model lacks", A("benchmark", L, "--dim", "Y:0=7"), 2, "X:0=N",
         setup=_sklearn_onnx),
    Case("--dim by name on unnamed dims", A("validate", L, L, "--dim", "N=7"), 2, "by position", setup=_sklearn_onnx),
    Case("ai.onnx.ml opset skl2onnx cannot write", A("convert", "sklearn", lambda ws: f"{ws / 'in' / 'iforest.py'}:iforest",
                                                   "-o", _o("if.onnx"), "--opset", "17", "--opset", "ai.onnx.ml=4"),
         4, "--opset ai.onnx.ml=3", setup=_factory),
]
