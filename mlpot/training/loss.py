"""The training loss: weighted mean squared (or Huber) errors of energy, forces and stress.

L = w_E·⟨(ΔE_b / n_b)²⟩_b + w_F·⟨ΔF_iα²⟩_iα + w_σ·⟨Δσ_bαβ²⟩_bαβ

with energies per atom (eV), force components (eV/Å) and stress components (eV/Å³). Each
mean runs over the items that carry that label (``batch.targets.has_*``): a structure
without forces adds nothing to the force term and does not dilute it. Masking uses
``torch.where`` and clamped counts, so there is no host sync and a batch without a label
gives a zero term (not NaN).

Structure weights (``loss.weight_by`` / ``loss.group_weights``, carried as
``batch.targets.weight`` (B,)) turn each mean into a weighted one, Σ_rows w·err² / Σ_rows w
over the labelled rows: energy per structure, all three components of an atom's force with
its structure's weight, all nine stress components of a structure with its weight. A
structure of weight 0 then counts as unlabelled (no value, no gradient); with every weight
1 the loss is the unweighted one. Without weights (``None``) the unweighted code runs.

The weights act on the training loss only. The reported metrics (RMSE, MAE) and the
validation loss that selects the best epoch and drives early stopping and the plateau
schedule (:func:`loss_from_metrics`) stay unweighted: runs with different group weights
are then compared on the same measure of the same structures, and the weights say what to
fit harder, not what counts as a better model.

A structure's size can weigh its energy error (``loss.energy_size_exponent`` q): each
energy row then weighs n^q times its structure weight, through the same weighted means (with
q = 0, the default, the size plays no part and the code above runs unchanged).

A Huber loss (``loss.huber``: {term: δ}) replaces d² by :func:`penalty`, d² for |d| ≤ δ
and 2δ|d| − δ² beyond, for each error d of the terms it names: the means, masks and weights
stay as above.

Annealed term weights (``loss.*_weight_start``, :meth:`LossConfig.weights_at`) likewise act
on the training loss only: each epoch trains with its own weights, and the validation loss
uses the final ones throughout.
"""

from __future__ import annotations

import torch

from ..units import GPA
from .config import LossConfig

__all__ = ["loss_terms", "loss_from_metrics", "label_masks", "label_weights", "weighted_row_sums",
           "safe_ratio", "require_constant_weights", "penalty"]


def loss_terms(predictions: dict[str, torch.Tensor], batch, weights: LossConfig) -> dict[str, torch.Tensor]:
    """Weighted loss of one batch and its unweighted terms.

    Args:
        predictions: output of :class:`~mlpot.models.Potential`: ``energy`` (B,) eV,
            ``forces`` (N, 3) eV/Å if forces are weighted, ``stress`` (B, 3, 3) eV/Å³ if
            stress is weighted.
        batch: the :class:`~mlpot.data.AtomsBatch` with ``targets`` (and, for weighted
            structures, ``targets.weight`` (B,)).
        weights: the loss weights of this step: constant ones (an annealed loss config
            gives them for an epoch by :meth:`~mlpot.training.config.LossConfig.weights_at`).

    A weighted term whose prediction is absent (e.g. stress not computed for a batch with
    non-periodic structures) is zero.

    Returns:
        ``total`` (scalar, differentiable), and the mean squared errors ``energy``
        (eV²/atom²), ``forces`` ((eV/Å)²), ``stress`` ((eV/Å³)²) as scalar tensors (means
        weighted by the structure weights when the batch has them; the mean :func:`penalty`
        for a term of ``weights.huber``); a term whose weight is zero is left out.

    Raises:
        ValueError: ``weights`` anneals (its weights of an epoch are needed).
    """
    require_constant_weights(weights)
    t = batch.targets
    masks, rows = label_masks(batch), label_weights(batch, weights.energy_size_exponent)
    terms: dict[str, torch.Tensor] = {}
    if weights.energy_weight > 0:
        per_atom = (predictions["energy"] - torch.nan_to_num(t.energy)) / batch.n_atoms.to(t.energy.dtype)
        terms["energy"] = _term(per_atom, masks, rows, "energy", weights.huber)
    if weights.forces_weight > 0 and "forces" in predictions:
        diff = predictions["forces"] - torch.nan_to_num(t.forces)
        terms["forces"] = _term(diff, masks, rows, "forces", weights.huber)
    if weights.stress_weight > 0 and "stress" in predictions:
        diff = predictions["stress"] - torch.nan_to_num(t.stress)
        terms["stress"] = _term(diff, masks, rows, "stress", weights.huber)
    w = {"energy": weights.energy_weight, "forces": weights.forces_weight, "stress": weights.stress_weight}
    terms["total"] = sum((w[k] * v for k, v in terms.items()),
                         start=predictions["energy"].new_zeros(()))
    return terms


def require_constant_weights(weights: LossConfig) -> None:
    """Raise ``ValueError`` for an annealed loss config (start weights set): the loss of a
    step needs the weights of its epoch, ``weights.weights_at(r)``, not the schedule."""
    if weights.anneals:
        raise ValueError("the loss of a step needs constant weights: pass the epoch's, "
                         "LossConfig.weights_at(lr_ratio), not the annealed loss config")


def label_masks(batch) -> dict[str, torch.Tensor]:
    """The labelled rows each loss term averages over: ``energy`` (B,), ``forces`` (N,) and
    ``stress`` (B,) (stress only of structures periodic in 3D)."""
    t = batch.targets
    return {"energy": t.has_energy, "forces": t.has_forces[batch.system_idx],
            "stress": t.has_stress & batch.pbc.all(dim=1)}


def label_weights(batch, energy_size_exponent: float = 0.0) -> dict[str, torch.Tensor] | None:
    """The weight of each row of each loss term, as :func:`label_masks`: ``energy`` (B,),
    ``forces`` (N,) (each atom its structure's) and ``stress`` (B,); ``None`` when the batch
    has no structure weights and ``energy_size_exponent`` is 0.

    With ``energy_size_exponent`` q > 0 (``loss.energy_size_exponent``) each energy row
    weighs n_atoms^q times its structure's weight (1 without structure weights)."""
    w = batch.targets.weight
    if w is None and not energy_size_exponent:
        return None
    if w is None:
        w = torch.ones(batch.n_atoms.shape, dtype=batch.targets.energy.dtype, device=batch.n_atoms.device)
    energy = w
    if energy_size_exponent:
        energy = w * batch.n_atoms.to(w.dtype).pow(energy_size_exponent)
    return {"energy": energy, "forces": w[batch.system_idx], "stress": w}


def penalty(diff: torch.Tensor, delta: float | None = None) -> torch.Tensor:
    """The cost of each error, elementwise: ``diff²``, or with a Huber threshold ``delta``
    (same units as ``diff``) ``diff²`` for |diff| ≤ δ and ``2δ|diff| − δ²`` beyond.

    Twice the textbook Huber function, so that below δ it is the squared error itself (the
    loss weights keep their meaning), with value and slope continuous at |diff| = δ. An
    error of 0 (a masked row) costs 0 either way.
    """
    if delta is None:
        return diff.pow(2)
    size = diff.abs()
    return torch.where(size <= delta, diff.pow(2), 2.0 * delta * size - delta * delta)


def weighted_row_sums(diff: torch.Tensor, mask: torch.Tensor, weight: torch.Tensor,
                      delta: float | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Per row: w·Σ diff² (:func:`penalty` with ``delta``) over the row's components and
    w·(number of components), each (R,).

    Rows where ``mask`` is False or ``weight`` is 0 give exactly 0 in both, through
    ``torch.where``, so NaN or inf in such a row (an unlabelled structure, a model's NaN
    stress of an open one) reaches neither the value nor the gradient.

    Args:
        diff: (R, ...) prediction − label.
        mask: (R,) bool, labelled rows.
        weight: (R,) weight of each row, >= 0.
    """
    keep = mask & (weight > 0)
    rows = diff.reshape(diff.shape[0], -1)
    sq = penalty(torch.where(keep.unsqueeze(1), rows, torch.zeros_like(rows)), delta).sum(1)
    w = torch.where(keep, weight.to(diff.dtype), torch.zeros_like(sq))
    return w * sq, w * rows.shape[1]


def safe_ratio(num: torch.Tensor, den: torch.Tensor) -> torch.Tensor:
    """``num / den``, 0 where ``den`` is 0 (there ``num`` is 0 too: no weighted labelled
    row). The denominator is replaced before dividing, so no NaN appears, even in the
    gradient; weights may be fractional, so clamping ``den`` to 1 would be wrong."""
    return num / torch.where(den > 0, den, torch.ones_like(den))


def _term(diff: torch.Tensor, masks: dict[str, torch.Tensor], rows: dict[str, torch.Tensor] | None,
          key: str, huber: dict[str, float]) -> torch.Tensor:
    """The (weighted, when ``rows`` holds weights) mean squared error of term ``key``, or
    its mean Huber :func:`penalty` when ``huber`` names the term."""
    delta = huber.get(key)
    if rows is None:
        return _masked_mse(diff, masks[key], delta)
    return _weighted_mse(diff, masks[key], rows[key], delta)


def _masked_mse(diff: torch.Tensor, mask: torch.Tensor, delta: float | None = None) -> torch.Tensor:
    """Mean of ``diff**2`` (:func:`penalty`) over the rows where ``mask`` (leading dim) is
    True; 0 if none.

    ``torch.where`` (not multiplication by the mask) so that NaN in unlabelled rows, e.g.
    the model's NaN stress of a non-periodic structure, cannot leak into the value.
    """
    m = mask.reshape(mask.shape + (1,) * (diff.dim() - 1)).expand_as(diff)
    sq = penalty(torch.where(m, diff, torch.zeros_like(diff)), delta).sum()
    return sq / m.sum().clamp(min=1).to(diff.dtype)


def _weighted_mse(diff: torch.Tensor, mask: torch.Tensor, weight: torch.Tensor,
                  delta: float | None = None) -> torch.Tensor:
    """Σ w·diff² / Σ w over the components of the rows where ``mask`` is True and the
    weight ``weight`` (R,) is positive; 0 if none.

    The same elements in the same order as :func:`_masked_mse`, each times its weight, so
    with every weight 1 both give the same number, bit for bit.
    """
    keep = mask & (weight > 0)
    m = keep.reshape(keep.shape + (1,) * (diff.dim() - 1)).expand_as(diff)
    w = torch.where(m, weight.to(diff.dtype).reshape(m.shape[:1] + (1,) * (diff.dim() - 1)).expand_as(diff),
                    torch.zeros_like(diff))
    sq = penalty(torch.where(m, diff, torch.zeros_like(diff)), delta)
    return safe_ratio((sq * w).sum(), w.sum())


def loss_from_metrics(metrics: dict, weights: LossConfig) -> float:
    """The loss of a whole dataset from :class:`~mlpot.training.ErrorAccumulator` metrics.

    Combines the dataset-wide mean squared errors with the training weights, so model
    selection uses the same trade-off between the terms as training. Structure weights
    (``weights.group_weights``) do not enter: the metrics are unweighted, and so is this
    loss (see the module docstring). With annealed weights (``*_weight_start``) this loss
    uses the final weights in every epoch, so the epochs that select the model and drive
    early stopping compare on one measure.
    """
    def mse(key: str, to_si: float) -> float:
        rmse = metrics.get(key)
        return 0.0 if rmse is None else (rmse * to_si) ** 2

    return (weights.energy_weight * mse("energy_rmse_mev_per_atom", 1e-3)
            + weights.forces_weight * mse("force_rmse_mev_per_a", 1e-3)
            + weights.stress_weight * mse("stress_rmse_gpa", GPA))
