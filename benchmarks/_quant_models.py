"""Models for benchmarks/quantize.py: BERT-base and BERT-small from their configs (random
weights) and a ResNet-18-like CNN."""

import torch
from torch import nn


def _like_trained(model):
    """Hugging Face initializes biases to 0 and LayerNorm to (1, 0); trained checkpoints
    have neither. Left as is, the exporter shares the identical tensors and zero-bias
    Adds can be folded away, which flatters some recipes. Seeded noise, so every run
    builds the same model."""
    g = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if name.endswith("bias"):
                p.add_(torch.randn(p.shape, generator=g) * 0.02)
            elif "LayerNorm.weight" in name:
                p.add_(torch.randn(p.shape, generator=g) * 0.05)
    return model.eval()


def bert_base():
    from transformers import BertConfig, BertModel

    torch.manual_seed(0)
    return _like_trained(BertModel(BertConfig()))  # 12 layers, hidden 768, 12 heads: bert-base


def bert_small():
    """4 layers, hidden 512, 8 heads (BERT-small in Turc et al.'s table)."""
    from transformers import BertConfig, BertModel

    torch.manual_seed(0)
    return _like_trained(BertModel(BertConfig(num_hidden_layers=4, hidden_size=512, num_attention_heads=8,
                                              intermediate_size=2048)))


class _Keywords(nn.Module):
    """forward(input_ids, attention_mask) by keyword: the TorchScript exporter passes
    positional arguments, which current transformers models take differently."""

    def __init__(self, model):
        super().__init__()
        self.model = model

    def forward(self, input_ids, attention_mask):
        out = self.model(input_ids=input_ids, attention_mask=attention_mask)
        return out.last_hidden_state, out.pooler_output


def _eager(model):
    """The attention ORT's transformer optimizer was written for (its patterns do not
    match the SDPA form current transformers export by default)."""
    model.set_attn_implementation("eager")
    return _Keywords(model).eval()


def bert_base_eager():
    return _eager(bert_base())


def bert_small_eager():
    return _eager(bert_small())


class _Block(nn.Module):
    def __init__(self, cin, cout, stride):
        super().__init__()
        self.c1 = nn.Conv2d(cin, cout, 3, stride, 1, bias=False)
        self.b1 = nn.BatchNorm2d(cout)
        self.c2 = nn.Conv2d(cout, cout, 3, 1, 1, bias=False)
        self.b2 = nn.BatchNorm2d(cout)
        self.skip = (nn.Sequential(nn.Conv2d(cin, cout, 1, stride, bias=False), nn.BatchNorm2d(cout))
                     if stride != 1 or cin != cout else nn.Identity())

    def forward(self, x):
        y = torch.relu(self.b1(self.c1(x)))
        return torch.relu(self.b2(self.c2(y)) + self.skip(x))


def resnet18_like():
    torch.manual_seed(0)
    layers = [nn.Conv2d(3, 64, 7, 2, 3, bias=False), nn.BatchNorm2d(64), nn.ReLU(), nn.MaxPool2d(3, 2, 1)]
    cin = 64
    for cout, stride in ((64, 1), (64, 1), (128, 2), (128, 1), (256, 2), (256, 1), (512, 2), (512, 1)):
        layers.append(_Block(cin, cout, stride))
        cin = cout
    layers += [nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(512, 1000)]
    return nn.Sequential(*layers).eval()
