"""Factories for the benchmark scripts."""

import os


def mlp():
    from fixtures.make_fixtures import torch_mlp

    return torch_mlp()


def cnn():
    from fixtures.make_fixtures import torch_cnn

    return torch_cnn()


def iris_pipeline():
    from fixtures.make_fixtures import sklearn_pipeline

    return sklearn_pipeline()[0]


def big_mlp():
    """Linear layers of 4096x4096 (64 MiB each) until about BIG_MB MiB of weights."""
    import torch

    mb = int(os.environ.get("BIG_MB", "512"))
    layers = max(1, round(mb / 64))
    torch.manual_seed(0)
    mods = []
    for _ in range(layers):
        mods += [torch.nn.Linear(4096, 4096, bias=False), torch.nn.ReLU()]
    return torch.nn.Sequential(*mods).eval()
