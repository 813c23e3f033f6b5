"""The training loss: weighted mean squared errors of energy, forces and stress.

L = w_E·⟨(ΔE_b / n_b)²⟩_b + w_F·⟨ΔF_iα²⟩_iα + w_σ·⟨Δσ_bαβ²⟩_bαβ

with energies per atom (eV), force components (eV/Å) and stress components (eV/Å³). Each
mean runs over the items that carry that label (``batch.targets.has_*``): a structure
without forces adds nothing to the force term and does not dilute it. Masking uses
``torch.where`` and clamped counts, so there is no host sync and a batch without a label
gives a zero term (not NaN).
"""

from __future__ import annotations

import torch

from ..units import GPA
from .config import LossConfig

__all__ = ["loss_terms", "loss_from_metrics"]


def loss_terms(predictions: dict[str, torch.Tensor], batch, weights: LossConfig) -> dict[str, torch.Tensor]:
    """Weighted loss of one batch and its unweighted terms.

    Args:
        predictions: output of :class:`~mlpot.models.Potential`: ``energy`` (B,) eV,
            ``forces`` (N, 3) eV/Å if forces are weighted, ``stress`` (B, 3, 3) eV/Å³ if
            stress is weighted.
        batch: the :class:`~mlpot.data.AtomsBatch` with ``targets``.
        weights: the loss weights.

    A weighted term whose prediction is absent (e.g. stress not computed for a batch with
    non-periodic structures) is zero.

    Returns:
        ``total`` (scalar, differentiable), and the mean squared errors ``energy``
        (eV²/atom²), ``forces`` ((eV/Å)²), ``stress`` ((eV/Å³)²) as scalar tensors; a term
        whose weight is zero is left out.
    """
    t = batch.targets
    masks = label_masks(batch)
    terms: dict[str, torch.Tensor] = {}
    if weights.energy_weight > 0:
        per_atom = (predictions["energy"] - torch.nan_to_num(t.energy)) / batch.n_atoms.to(t.energy.dtype)
        terms["energy"] = _masked_mse(per_atom, masks["energy"])
    if weights.forces_weight > 0 and "forces" in predictions:
        diff = predictions["forces"] - torch.nan_to_num(t.forces)
        terms["forces"] = _masked_mse(diff, masks["forces"])
    if weights.stress_weight > 0 and "stress" in predictions:
        diff = predictions["stress"] - torch.nan_to_num(t.stress)
        terms["stress"] = _masked_mse(diff, masks["stress"])
    w = {"energy": weights.energy_weight, "forces": weights.forces_weight, "stress": weights.stress_weight}
    terms["total"] = sum((w[k] * v for k, v in terms.items()),
                         start=predictions["energy"].new_zeros(()))
    return terms


def label_masks(batch) -> dict[str, torch.Tensor]:
    """The labelled rows each loss term averages over: ``energy`` (B,), ``forces`` (N,) and
    ``stress`` (B,) (stress only of structures periodic in 3D)."""
    t = batch.targets
    return {"energy": t.has_energy, "forces": t.has_forces[batch.system_idx],
            "stress": t.has_stress & batch.pbc.all(dim=1)}


def _masked_mse(diff: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Mean of ``diff**2`` over the rows where ``mask`` (leading dim) is True; 0 if none.

    ``torch.where`` (not multiplication by the mask) so that NaN in unlabelled rows, e.g.
    the model's NaN stress of a non-periodic structure, cannot leak into the value.
    """
    m = mask.reshape(mask.shape + (1,) * (diff.dim() - 1)).expand_as(diff)
    sq = torch.where(m, diff, torch.zeros_like(diff)).pow(2).sum()
    return sq / m.sum().clamp(min=1).to(diff.dtype)


def loss_from_metrics(metrics: dict, weights: LossConfig) -> float:
    """The loss of a whole dataset from :class:`~mlpot.training.ErrorAccumulator` metrics.

    Combines the dataset-wide mean squared errors with the training weights, so model
    selection uses the same trade-off as training. Terms without labels count zero.
    """
    def mse(key: str, to_si: float) -> float:
        rmse = metrics.get(key)
        return 0.0 if rmse is None else (rmse * to_si) ** 2

    return (weights.energy_weight * mse("energy_rmse_mev_per_atom", 1e-3)
            + weights.forces_weight * mse("force_rmse_mev_per_a", 1e-3)
            + weights.stress_weight * mse("stress_rmse_gpa", GPA))
