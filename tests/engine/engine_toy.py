"""Tiny model and synthetic data for the trainer tests (importable by config files)."""

from __future__ import annotations

import torch
from torch import nn
from torch.utils.data import Dataset


class SyntheticRegression(Dataset):
    """``y = x @ w + noise`` with fixed random ``x``/``w`` (seeded)."""

    def __init__(self, n: int = 64, dim: int = 4, seed: int = 0) -> None:
        g = torch.Generator().manual_seed(seed)
        self.x = torch.randn(n, dim, generator=g)
        w = torch.randn(dim, 1, generator=g)
        self.y = self.x @ w + 0.01 * torch.randn(n, 1, generator=g)

    def __len__(self) -> int:
        return len(self.x)

    def __getitem__(self, i: int) -> dict[str, torch.Tensor]:
        return {"x": self.x[i], "y": self.y[i]}


class TinyRegressor(nn.Module):
    """A linear layer + dropout (so the global RNG matters for resume); MSE loss dict."""

    def __init__(self, dim: int = 4, dropout: float = 0.0) -> None:
        super().__init__()
        self.fc = nn.Linear(dim, 1)
        self.drop = nn.Dropout(dropout)

    def forward(self, batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        pred = self.fc(self.drop(batch["x"]))
        return {"loss_mse": nn.functional.mse_loss(pred, batch["y"])}


class GroupedRegressor(TinyRegressor):
    """TinyRegressor whose ``param_groups()`` gives the bias its own learning rate (or, with
    ``forget_bias``, leaves it out)."""

    def __init__(self, dim: int = 4, bias_lr: float = 0.5, forget_bias: bool = False) -> None:
        super().__init__(dim)
        self.bias_lr = bias_lr
        self.forget_bias = forget_bias

    def param_groups(self) -> list[dict]:
        groups: list[dict] = [{"params": [self.fc.weight]}]
        if not self.forget_bias:
            groups.append({"params": [self.fc.bias], "lr": self.bias_lr})
        return groups
