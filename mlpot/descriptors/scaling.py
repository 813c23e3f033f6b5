"""Per-element feature statistics and scaling of symmetry functions (n2p2's schemes).

Statistics (count, min, max, mean, standard deviation per element and feature) are
accumulated in float64 over any number of batches with Chan's parallel update, so a dataset
never has to fit in memory. The scaler is an affine map per element and feature,
G' = a·G + b, with (a, b) from one of n2p2's schemes (S_min, S_max default 0, 1):

=================  =====================================================
``none``           G' = G
``scale``          G' = S_min + (S_max − S_min)(G − G_min)/(G_max − G_min)
``center``         G' = G − ⟨G⟩
``scale_center``   G' = S_min + (S_max − S_min)(G − ⟨G⟩)/(G_max − G_min)
``scale_sigma``    G' = S_min + (S_max − S_min)(G − ⟨G⟩)/σ_G
``standard``       G' = (G − ⟨G⟩)/σ_G  (``scale_sigma`` with S = [0, 1])
=================  =====================================================

A feature that is constant in the training data (zero range or σ) is only shifted, never
divided by ~0; such features are listed in :attr:`FeatureScaler.constant_features`.
"""

from __future__ import annotations

from typing import Iterable

import torch
from torch import nn

__all__ = ["FeatureStatistics", "FeatureScaler", "SCALING_MODES"]

SCALING_MODES = ("none", "scale", "center", "scale_center", "scale_sigma", "standard")


class FeatureStatistics:
    """Running per-element statistics of descriptor values.

    Args:
        n_elements: number of elements E.
        n_features: feature count per element (length E); padded columns are ignored.
    """

    def __init__(self, n_elements: int, n_features: list[int]):
        self.n_features = list(n_features)
        width = max(n_features)
        f64 = dict(dtype=torch.float64)
        self.count = torch.zeros(n_elements, **f64)
        self.mean = torch.zeros(n_elements, width, **f64)
        self.m2 = torch.zeros(n_elements, width, **f64)
        self.min = torch.full((n_elements, width), float("inf"), **f64)
        self.max = torch.full((n_elements, width), float("-inf"), **f64)

    def update(self, features: torch.Tensor, species: torch.Tensor) -> None:
        """Add a batch. features (N, F), species (N,) long element indices."""
        x = features.detach().to("cpu", torch.float64)
        s = species.detach().cpu()
        n_el, width = self.mean.shape
        if x.shape[1] != width:
            raise ValueError(f"features have {x.shape[1]} columns, statistics expect {width}")
        n_b = torch.bincount(s, minlength=n_el).double()
        sum_b = torch.zeros(n_el, width, dtype=torch.float64).index_add_(0, s, x)
        mean_b = sum_b / n_b.clamp(min=1).unsqueeze(1)
        m2_b = torch.zeros_like(sum_b).index_add_(0, s, (x - mean_b[s]) ** 2)
        # Chan et al. merge of (count, mean, M2) for two partitions.
        n_a = self.count
        n = n_a + n_b
        delta = mean_b - self.mean
        weight = (n_b / n.clamp(min=1)).unsqueeze(1)
        self.mean = self.mean + delta * weight
        self.m2 = self.m2 + m2_b + delta**2 * (n_a * weight.squeeze(1)).unsqueeze(1)
        self.count = n
        idx = s.unsqueeze(1).expand_as(x)
        self.min = self.min.scatter_reduce(0, idx, x, reduce="amin")
        self.max = self.max.scatter_reduce(0, idx, x, reduce="amax")

    @property
    def std(self) -> torch.Tensor:
        """Population standard deviation, (E, F)."""
        return (self.m2 / self.count.clamp(min=1).unsqueeze(1)).sqrt()


class FeatureScaler(nn.Module):
    """Affine per-element scaling G' = a[e]·G + b[e], with the training range kept for
    extrapolation checks.

    Build one with :meth:`from_statistics` (or :meth:`fit`); the plain constructor makes an
    empty scaler of the right shape, ready for ``load_state_dict``.

    Args:
        n_elements: E.
        width: F, the descriptor width.
        mode: one of :data:`SCALING_MODES`.
        s_min, s_max: target interval of the ``scale*`` modes.
    """

    def __init__(self, n_elements: int, width: int, mode: str = "scale_center",
                 s_min: float = 0.0, s_max: float = 1.0):
        super().__init__()
        if mode not in SCALING_MODES:
            raise ValueError(f"unknown scaling mode {mode!r}; choose one of {SCALING_MODES}")
        if mode == "standard":
            s_min, s_max = 0.0, 1.0
        if not s_max > s_min:
            raise ValueError(f"scaling needs s_max > s_min, got [{s_min}, {s_max}]")
        self.mode = mode
        self.s_min, self.s_max = float(s_min), float(s_max)
        for name in ("weight", "bias", "train_min", "train_max", "train_mean", "train_std"):
            self.register_buffer(name, torch.zeros(n_elements, width, dtype=torch.float64))
        self.register_buffer("constant_mask", torch.zeros(n_elements, width, dtype=torch.bool))

    @classmethod
    def from_statistics(cls, stats: FeatureStatistics, mode: str = "scale_center",
                        s_min: float = 0.0, s_max: float = 1.0, constant_floor: float = 1.0) -> "FeatureScaler":
        """Scaler of the given mode from accumulated training statistics.

        A feature whose range is at most 1e-12·max(|max|, ``constant_floor``) is constant: it
        is left unscaled (its range is rounding, not information). The floor of 1 also counts
        features whose values all lie below ~1e-12 (a Gaussian's far tail) as constant; the
        n2p2 importer passes 0, since n2p2 scales such a feature by its range however small
        its values (the published mlearn Ge and Li potentials have terms of at most 8.6e-15 and
        2.6e-13)."""
        scaler = cls(*stats.mean.shape, mode=mode, s_min=s_min, s_max=s_max)
        if (stats.count == 0).any():
            missing = torch.nonzero(stats.count == 0).squeeze(1).tolist()
            raise ValueError(f"no atoms of element index(es) {missing} in the data used for scaling")
        valid = torch.zeros_like(stats.mean, dtype=torch.bool)
        for e, n in enumerate(stats.n_features):
            valid[e, :n] = True
        spread = {"scale": stats.max - stats.min, "scale_center": stats.max - stats.min,
                  "scale_sigma": stats.std, "standard": stats.std}.get(mode)
        constant = valid & ((stats.max - stats.min) <= 1e-12 * stats.max.abs().clamp(min=constant_floor))
        centre = {"scale": stats.min, "center": stats.mean, "scale_center": stats.mean,
                  "scale_sigma": stats.mean, "standard": stats.mean}.get(mode)
        if spread is None:  # none / center: no division
            a = torch.ones_like(stats.mean)
            b = torch.zeros_like(stats.mean) if centre is None else -centre
        else:
            safe = torch.where(constant, torch.ones_like(spread), spread)
            a = torch.where(constant, torch.ones_like(spread), (scaler.s_max - scaler.s_min) / safe)
            b = scaler.s_min - a * centre
        zero = torch.zeros_like(stats.mean)
        scaler.weight.copy_(torch.where(valid, a, zero))
        scaler.bias.copy_(torch.where(valid, b, zero))
        scaler.train_min.copy_(torch.where(valid, stats.min, zero))
        scaler.train_max.copy_(torch.where(valid, stats.max, zero))
        scaler.train_mean.copy_(torch.where(valid, stats.mean, zero))
        scaler.train_std.copy_(torch.where(valid, stats.std, zero))
        scaler.constant_mask.copy_(constant)
        return scaler

    @property
    def constant_features(self) -> list[tuple[int, int]]:
        """(element index, feature index) of features constant in the training data."""
        return [tuple(x) for x in torch.nonzero(self.constant_mask).tolist()]

    @classmethod
    def fit(cls, batches: Iterable[tuple[torch.Tensor, torch.Tensor]], n_features: list[int],
            mode: str = "scale_center", s_min: float = 0.0, s_max: float = 1.0) -> "FeatureScaler":
        """Accumulate statistics over (features (N, F), species (N,)) pairs and build a scaler."""
        stats = FeatureStatistics(len(n_features), n_features)
        for features, species in batches:
            stats.update(features, species)
        return cls.from_statistics(stats, mode, s_min, s_max)

    def forward(self, features: torch.Tensor, species: torch.Tensor) -> torch.Tensor:
        """Scale (N, F) features of atoms with element indices species (N,)."""
        weight = self.weight.to(features.dtype)[species]
        bias = self.bias.to(features.dtype)[species]
        return torch.addcmul(bias, features, weight)

    def extrapolating(self, features: torch.Tensor, species: torch.Tensor,
                      tolerance: float = 1e-8) -> torch.Tensor:
        """(N,) bool: atoms with any feature outside its training [min, max] (n2p2's
        extrapolation warning)."""
        lo = self.train_min.to(features.dtype)[species] - tolerance
        hi = self.train_max.to(features.dtype)[species] + tolerance
        return ((features < lo) | (features > hi)).any(dim=1)

    def extra_repr(self) -> str:
        return f"mode={self.mode!r}, range=[{self.s_min}, {self.s_max}]"
