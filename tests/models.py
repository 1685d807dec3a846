"""Factories for converter tests: tiny real models, seeded, built in a second."""

from __future__ import annotations

import numpy as np


# ----------------------------------------------------------------------------- torch

def mlp():
    import torch

    torch.manual_seed(0)
    return torch.nn.Sequential(torch.nn.Linear(8, 16), torch.nn.ReLU(), torch.nn.Linear(16, 4))


def wide_mlp():
    """Linears of K 64 and 256 (int4's blocks of 32 along K fit)."""
    import torch

    torch.manual_seed(0)
    return torch.nn.Sequential(torch.nn.Linear(64, 256), torch.nn.ReLU(), torch.nn.Linear(256, 256), torch.nn.ReLU(),
                               torch.nn.Linear(256, 10))


def cnn():
    from fixtures.make_fixtures import torch_cnn

    m = torch_cnn()
    return m.train()  # left in training mode on purpose: convert must switch to eval


def resnet_like():
    """A ResNet-18-shaped CNN in miniature: a stem, four stages of two residual basic
    blocks (8-16-32-64 channels, stride 2 with a 1x1 shortcut between stages), global
    average pooling and a linear head; for 3x32x32 images. Seeded, untrained."""
    import torch
    from torch import nn

    class Basic(nn.Module):
        def __init__(self, cin, cout, stride):
            super().__init__()
            self.c1, self.b1 = nn.Conv2d(cin, cout, 3, stride, 1, bias=False), nn.BatchNorm2d(cout)
            self.c2, self.b2 = nn.Conv2d(cout, cout, 3, 1, 1, bias=False), nn.BatchNorm2d(cout)
            self.down = nn.Sequential(nn.Conv2d(cin, cout, 1, stride, bias=False), nn.BatchNorm2d(cout)) \
                if stride != 1 or cin != cout else nn.Identity()

        def forward(self, x):
            return torch.relu(self.b2(self.c2(torch.relu(self.b1(self.c1(x))))) + self.down(x))

    torch.manual_seed(0)
    layers, cin = [nn.Conv2d(3, 8, 3, 1, 1, bias=False), nn.BatchNorm2d(8), nn.ReLU()], 8
    for i, c in enumerate((8, 16, 32, 64)):
        layers += [Basic(cin, c, 1 if i == 0 else 2), Basic(c, c, 1)]
        cin = c
    net = nn.Sequential(*layers, nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(64, 10))
    with torch.no_grad():  # batch-norm statistics as a trained net has them, not the identity
        for m in net.modules():
            if isinstance(m, nn.BatchNorm2d):
                m.running_mean.uniform_(-0.1, 0.1)
                m.running_var.uniform_(0.5, 1.5)
    return net.eval()


def _torch_classes():
    from torch import nn

    class TwoIn(nn.Module):
        def __init__(self):
            super().__init__()
            self.a = nn.Linear(4, 3)
            self.b = nn.Linear(5, 3)

        def forward(self, x, y):
            return {"sum": self.a(x) + self.b(y), "diff": self.a(x) - self.b(y)}

    class Recurrent(nn.Module):
        def __init__(self, cell):
            super().__init__()
            self.rnn = cell(6, 8, batch_first=True)
            self.head = nn.Linear(8, 2)

        def forward(self, x):
            out, _ = self.rnn(x)
            return self.head(out[:, -1])

    class Encoder(nn.Module):
        def __init__(self):
            super().__init__()
            layer = nn.TransformerEncoderLayer(16, 2, dim_feedforward=32, dropout=0.0, batch_first=True)
            self.enc = nn.TransformerEncoder(layer, 2, enable_nested_tensor=False)

        def forward(self, x):
            return self.enc(x)

    class Baked(nn.Module):
        """Reads the batch size as a Python int: tracing bakes it into the graph."""

        def __init__(self):
            super().__init__()
            self.lin = nn.Linear(4, 4)

        def forward(self, x):
            n = int(x.shape[0])
            return self.lin(x).reshape(n, -1)[: max(n - 1, 1)] * 1.0

    class BatchOfOne(nn.Module):
        """Works at batch 1 only (view(1, ...)): a dynamic batch cannot be exported."""

        def __init__(self):
            super().__init__()
            self.lin = nn.Linear(8, 4)

        def forward(self, x):
            return self.lin(x.view(1, 8))

    return TwoIn, Recurrent, Encoder, Baked, BatchOfOne


def two_inputs():
    import torch

    torch.manual_seed(0)
    return _torch_classes()[0]()


def difference():
    """forward(a, b) = a - 2b: inputs of one shape, so a swap changes numbers, not shapes."""
    from torch import nn

    class Difference(nn.Module):
        def forward(self, a, b):
            return a - 2 * b

    return Difference()


def float64_offset():
    """forward(x, t): float32 weights, and t really float64 (epoch seconds lose their
    fraction in float32): the export keeps t double, and so must every check."""
    import torch
    from torch import nn

    class Offset(nn.Module):
        def __init__(self):
            super().__init__()
            self.lin = nn.Linear(4, 4)

        def forward(self, x, t):
            return self.lin(x).double() + (t - 1.7e9)

    torch.manual_seed(0)
    return Offset()


def positional_only():
    from torch import nn

    class PositionalOnly(nn.Module):
        def forward(self, a, b=None, c=None, /):
            out = a if b is None else a - 2 * b
            return out if c is None else out * c

    return PositionalOnly()


def keyword_mask():
    """forward(x, *, mask=None): a keyword-only input, as many models take a mask."""
    import torch
    from torch import nn

    class KeywordMask(nn.Module):
        def __init__(self):
            super().__init__()
            self.lin = nn.Linear(8, 4)

        def forward(self, x, *, mask=None):
            y = self.lin(x)
            return y if mask is None else y * mask

    torch.manual_seed(0)
    return KeywordMask()


def lstm():
    import torch

    torch.manual_seed(0)
    return _torch_classes()[1](torch.nn.LSTM)


def gru():
    import torch

    torch.manual_seed(0)
    return _torch_classes()[1](torch.nn.GRU)


def encoder():
    import torch

    torch.manual_seed(0)
    return _torch_classes()[2]().eval()


def baked():
    import torch

    torch.manual_seed(0)
    return _torch_classes()[3]()


def batch_of_one():
    import torch

    torch.manual_seed(0)
    return _torch_classes()[4]().eval()


def tiny_bert():
    import torch
    from transformers import BertConfig, BertModel

    torch.manual_seed(0)
    cfg = BertConfig(vocab_size=100, hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                     intermediate_size=64, max_position_embeddings=64)
    return BertModel(cfg).eval()


def tiny_bert_peaked():
    """tiny_bert with larger weights (initializer_range 0.2): its attention is peaked, as a
    trained model's is, so int8 that flattens attention shows in the outputs (with
    the default 0.02 every row attends almost uniformly anyway)."""
    import torch
    from transformers import BertConfig, BertModel

    torch.manual_seed(0)
    cfg = BertConfig(vocab_size=100, hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                     intermediate_size=64, max_position_embeddings=64, initializer_range=0.2)
    return BertModel(cfg).eval()


def tiny_gpt2():
    import torch
    from transformers import GPT2Config, GPT2Model

    torch.manual_seed(0)
    cfg = GPT2Config(vocab_size=100, n_positions=64, n_embd=32, n_layer=2, n_head=2, use_cache=False,
                     bos_token_id=0, eos_token_id=0)
    return GPT2Model(cfg).eval()


def raises():
    raise RuntimeError("no such checkpoint")


def not_a_module():
    return {"weights": 1}


# ----------------------------------------------------------------------------- sklearn

def logreg():
    from sklearn.datasets import load_iris
    from sklearn.linear_model import LogisticRegression

    X, y = load_iris(return_X_y=True)
    return LogisticRegression(max_iter=500).fit(X.astype(np.float32), y)


def random_forest():
    from sklearn.datasets import load_breast_cancer
    from sklearn.ensemble import RandomForestClassifier

    X, y = load_breast_cancer(return_X_y=True)
    return RandomForestClassifier(20, max_depth=6, random_state=0).fit(X.astype(np.float32), y)


def hist_gb(dtype=np.float32):
    from sklearn.datasets import load_breast_cancer
    from sklearn.ensemble import HistGradientBoostingClassifier

    X, y = load_breast_cancer(return_X_y=True)
    return HistGradientBoostingClassifier(max_iter=20, random_state=0).fit(X.astype(dtype), y)


def hist_gb_float64():
    return hist_gb(np.float64)


def regressor():
    from sklearn.datasets import load_diabetes
    from sklearn.ensemble import RandomForestRegressor

    X, y = load_diabetes(return_X_y=True)
    return RandomForestRegressor(10, max_depth=5, random_state=0).fit(X.astype(np.float32), y)


def svc_pipeline():
    from sklearn.datasets import load_iris
    from sklearn.decomposition import PCA
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler
    from sklearn.svm import SVC

    X, y = load_iris(return_X_y=True)
    return make_pipeline(StandardScaler(), PCA(3), SVC(probability=True, random_state=0)).fit(X, y)


def kmeans():
    from sklearn.cluster import KMeans
    from sklearn.datasets import load_iris

    X, _ = load_iris(return_X_y=True)
    return KMeans(3, n_init=3, random_state=0).fit(X)


def tabular_frame():
    """A small mixed-type table (numeric + string columns) and its labels."""
    import pandas as pd

    rng = np.random.default_rng(0)
    n = 120
    df = pd.DataFrame({
        "age": rng.integers(18, 80, n).astype(float),
        "income": rng.normal(50, 15, n).round(2),
        "city": rng.choice(["paris", "tokyo", "lima"], n),
        "plan": rng.choice(["free", "pro"], n),
    })
    y = ((df["income"] > 50) ^ (df["city"] == "lima")).astype(int).to_numpy()
    return df, y


def column_pipeline():
    from sklearn.compose import ColumnTransformer
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import Pipeline
    from sklearn.preprocessing import OneHotEncoder, StandardScaler

    df, y = tabular_frame()
    pre = ColumnTransformer([
        ("num", StandardScaler(), ["age", "income"]),
        ("cat", OneHotEncoder(handle_unknown="ignore"), ["city", "plan"]),
    ])
    return Pipeline([("pre", pre), ("clf", LogisticRegression(max_iter=500))]).fit(df, y)


def isotonic():
    from sklearn.datasets import load_diabetes
    from sklearn.isotonic import IsotonicRegression

    X, y = load_diabetes(return_X_y=True)
    return IsotonicRegression().fit(X[:, 2], y)


def unfitted():
    from sklearn.linear_model import LogisticRegression

    return LogisticRegression()


def lgbm_pipeline():
    import lightgbm as lgb
    from sklearn.datasets import load_breast_cancer
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    X, y = load_breast_cancer(return_X_y=True)
    return make_pipeline(StandardScaler(), lgb.LGBMClassifier(n_estimators=20, verbose=-1)).fit(X.astype(np.float32), y)


def lgbm_classifier():
    import lightgbm as lgb
    from sklearn.datasets import load_breast_cancer

    X, y = load_breast_cancer(return_X_y=True)
    return lgb.LGBMClassifier(n_estimators=20, verbose=-1).fit(X.astype(np.float32), y)


def xgb_classifier():
    from sklearn.datasets import load_breast_cancer
    from xgboost import XGBClassifier

    X, y = load_breast_cancer(return_X_y=True)
    return XGBClassifier(n_estimators=20, max_depth=3).fit(X.astype(np.float32), y)


def isolation_forest():
    from sklearn.datasets import load_breast_cancer
    from sklearn.ensemble import IsolationForest

    X, _ = load_breast_cancer(return_X_y=True)
    return IsolationForest(n_estimators=20, random_state=0).fit(X.astype(np.float32))


def lgbm_regressor():
    import lightgbm as lgb
    from sklearn.datasets import load_diabetes

    X, y = load_diabetes(return_X_y=True)
    return lgb.LGBMRegressor(n_estimators=20, verbose=-1).fit(X.astype(np.float32), y)


# ----------------------------------------------------------------------------- digits (trained)

def digits_split():
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    X, y = load_digits(return_X_y=True)
    X = (X / 16.0).astype(np.float32)
    return train_test_split(X, y, test_size=0.3, random_state=0, stratify=y)


def train_digits(kind: str, epochs: int = 40):
    """A digits classifier trained in a few seconds: 'mlp' on the 64 pixels, 'cnn' on 1x8x8."""
    import torch
    from torch import nn

    Xtr, Xte, ytr, yte = digits_split()
    torch.manual_seed(0)
    if kind == "mlp":
        model = nn.Sequential(nn.Linear(64, 128), nn.ReLU(), nn.Linear(128, 64), nn.ReLU(), nn.Linear(64, 10))
        shape = (-1, 64)
    else:
        model = nn.Sequential(nn.Conv2d(1, 16, 3, padding=1), nn.ReLU(), nn.Conv2d(16, 32, 3, padding=1), nn.ReLU(),
                              nn.MaxPool2d(2), nn.Flatten(), nn.Linear(32 * 16, 10))
        shape = (-1, 1, 8, 8)
    x = torch.from_numpy(Xtr.reshape(shape))
    y = torch.from_numpy(ytr).long()
    opt = torch.optim.Adam(model.parameters(), lr=3e-3)
    for _ in range(epochs):
        for i in range(0, len(x), 64):
            opt.zero_grad()
            nn.functional.cross_entropy(model(x[i:i + 64]), y[i:i + 64]).backward()
            opt.step()
    return model.eval(), Xtr.reshape(shape), Xte.reshape(shape), ytr, yte


def data_dependent():
    """Python control flow on tensor values: torch.export refuses it, tracing takes one branch."""
    import torch

    class Branchy(torch.nn.Module):
        def forward(self, x):
            if float(x.sum()) > -1e9:
                return x * 2.0
            return x * 3.0

    return Branchy()


def knn_integer():
    """k-NN on integer features: many rows have their 5th and 6th neighbours equidistant."""
    from sklearn.neighbors import KNeighborsClassifier

    rng = np.random.default_rng(0)
    X = rng.integers(0, 8, size=(540, 4)).astype(np.float64)
    y = (X.sum(1) + rng.integers(0, 3, 540) > 15).astype(int)
    return KNeighborsClassifier(5).fit(X, y)


def boundary_logreg():
    from sklearn.linear_model import LogisticRegression

    rng = np.random.default_rng(0)
    X = rng.normal(size=(200, 2))
    return LogisticRegression().fit(X, (X[:, 0] + 0.3 * X[:, 1] > 0.1).astype(int))
