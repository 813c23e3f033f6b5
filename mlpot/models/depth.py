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
    """Drop a residual branch with probability 1 − p during training, per structure.

    Stochastic depth drops a block per *sample* (Huang et al. 2016); a sample here is a
    structure, so every atom of one structure must share the draw of each block (else the
    training energy would be a sum over atoms of differently truncated networks). The
    potential, which knows which structure each atom belongs to, draws one keep value per
    (structure, block) and passes each atom's row down as ``keep``
    (:meth:`~mlpot.models.Potential.draw_depth_mask`). Without ``keep`` the rows of one call
    are taken as one sample (one draw for all of them).

    Kept branches are divided by p so the expectation equals the evaluation-mode output;
    in ``eval()`` (and when p = 1) this is exactly the identity and draws nothing. The mask
    does not depend on positions, so forces stay the exact gradient of the (stochastic)
    training energy.
    """

    def __init__(self, survival: float = 1.0):
        super().__init__()
        self.survival = float(survival)

    def forward(self, x: torch.Tensor, keep: torch.Tensor | None = None) -> torch.Tensor:
        """x (n, d) → (n, d); ``keep`` (n, 1) of 0/1, each row its atom's structure's draw
        for this block (``None``: one draw for all rows)."""
        if not self.training or self.survival >= 1.0:
            return x
        if keep is None:
            keep = torch.empty(1, 1, dtype=x.dtype, device=x.device).bernoulli_(self.survival)
        return x * keep.to(x.dtype) / self.survival

    def extra_repr(self) -> str:
        return f"survival={self.survival:.3f}"
