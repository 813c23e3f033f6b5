"""Depth techniques: stochastic depth (DropPath) and its survival schedule."""

from __future__ import annotations

import torch
from torch import nn

__all__ = ["DropPath", "survival_probabilities"]


def survival_probabilities(n_blocks: int, final_survival: float) -> list[float]:
    """Linear decay (Huang et al. 2016): p_l = 1 − (l / L)(1 − p_L) for blocks l = 1..L."""
    if not 0.0 < final_survival <= 1.0:
        raise ValueError(f"survival probability must be in (0, 1], got {final_survival}")
    return [1.0 - (l / n_blocks) * (1.0 - final_survival) for l in range(1, n_blocks + 1)]


class DropPath(nn.Module):
    """Drop a residual branch per atom with probability 1 − p during training.

    Kept branches are divided by p so the expectation equals the evaluation-mode output;
    in ``eval()`` (and when p = 1) this is exactly the identity. The mask does not depend
    on positions, so forces stay the exact gradient of the (stochastic) training energy.
    """

    def __init__(self, survival: float = 1.0):
        super().__init__()
        self.survival = float(survival)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.training or self.survival >= 1.0:
            return x
        keep = torch.empty(x.shape[0], 1, dtype=x.dtype, device=x.device).bernoulli_(self.survival)
        return x * keep / self.survival

    def extra_repr(self) -> str:
        return f"survival={self.survival:.3f}"
