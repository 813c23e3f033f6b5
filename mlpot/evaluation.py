"""Evaluate a trained potential on labelled structures: error metrics and parity plots.

:func:`evaluate` runs the model batch by batch in its own precision and on its own device,
accumulates the errors with :class:`~mlpot.training.metrics.ErrorAccumulator` (the one
metric implementation of mlpot, so the numbers here match the trainer's), and keeps the
predictions beside the reference labels as numpy arrays for plots and further analysis.
:func:`parity_plot` draws predicted against reference energies per atom and force
components.

Units: eV, Å, eV/Å, eV/Å³ in :class:`Predictions`; metrics in meV/atom, meV/Å and GPa
(see :data:`~mlpot.training.metrics.METRIC_KEYS`).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import numpy as np
import torch
from ase import Atoms
from ase.data import atomic_numbers, chemical_symbols

from .data import collate
from .device import resolve_device
from .progress import progress as report
from .training.config import info_labels
from .training.metrics import ErrorAccumulator

__all__ = ["Predictions", "StructureErrors", "evaluate", "parity_plot", "per_structure_errors", "require_matplotlib"]


@dataclass(frozen=True)
class Predictions:
    """Model predictions beside the reference labels (NaN where a label is missing).

    Shapes use B = structures and N = atoms over all structures, in input order.

    Attributes:
        energy: (B,) predicted total energies, eV.
        energy_ref: (B,) reference total energies, eV.
        n_atoms: (B,) atoms per structure.
        forces: (N, 3) predicted forces, eV/Å.
        forces_ref: (N, 3) reference forces, eV/Å.
        numbers: (N,) atomic numbers.
        system_idx: (N,) index of each atom's structure.
        stress: (B, 3, 3) predicted stress, eV/Å³ (ASE sign); NaN for structures that are
            not periodic in 3D.
        stress_ref: (B, 3, 3) reference stress, eV/Å³.
        range_excess: (N,) how far each atom's descriptors lie beyond the training range,
            in units of each feature's range (0 inside; :meth:`Potential.range_excess
            <mlpot.models.Potential.range_excess>`; a committee: the largest over its
            members); ``None`` when the model cannot say.
    """

    energy: np.ndarray
    energy_ref: np.ndarray
    n_atoms: np.ndarray
    forces: np.ndarray
    forces_ref: np.ndarray
    numbers: np.ndarray
    system_idx: np.ndarray
    stress: np.ndarray
    stress_ref: np.ndarray
    range_excess: np.ndarray | None = None

    @property
    def energy_per_atom(self) -> np.ndarray:
        """(B,) predicted energy per atom, eV/atom."""
        return self.energy / self.n_atoms

    @property
    def energy_ref_per_atom(self) -> np.ndarray:
        """(B,) reference energy per atom, eV/atom."""
        return self.energy_ref / self.n_atoms

    def save(self, path: str | Path) -> None:
        """Write every array to one ``.npz`` file."""
        np.savez_compressed(path, **{k: getattr(self, k) for k in self.__dataclass_fields__
                                     if getattr(self, k) is not None})


@dataclass(frozen=True)
class StructureErrors:
    """The errors of each structure (B = structures, in input order); NaN where a label is
    missing.

    Attributes:
        energy_error: (B,) predicted minus reference energy per atom, meV/atom.
        force_mae: (B,) mean absolute error of the force components, meV/Å.
        force_rmse: (B,) root-mean-square error of the force components, meV/Å.
        force_scale: (B,) mean absolute reference force component, meV/Å: what a force
            error is relative to (a hot frame's forces are tens of times a relaxed cell's).
        n_atoms: (B,) atoms per structure.
        atoms_beyond: (B,) atoms whose descriptors lie beyond the training range (n2p2's
            extrapolation check, no margin); NaN when the predictions do not say.
        max_excess: (B,) the structure's largest excess beyond the training range, in units
            of the feature's range (0: every atom inside); NaN when the predictions do not say.
            A large error on a structure with atoms far outside is an extrapolation; one
            inside the range is not.
    """

    energy_error: np.ndarray
    force_mae: np.ndarray
    force_rmse: np.ndarray
    force_scale: np.ndarray
    n_atoms: np.ndarray
    atoms_beyond: np.ndarray
    max_excess: np.ndarray

    def worst(self, count: int, by: str = "force_mae") -> np.ndarray:
        """Indices of the ``count`` structures with the largest ``by`` (``force_mae``,
        ``force_rmse`` or ``energy_error``, the last by magnitude), largest first; NaN last."""
        if by not in ("force_mae", "force_rmse", "energy_error"):
            raise ValueError(f"worst: by must be force_mae, force_rmse or energy_error, got {by!r}")
        values = np.abs(getattr(self, by))
        order = np.argsort(np.where(np.isnan(values), np.inf, -values), kind="stable")
        return order[:max(count, 0)]


def per_structure_errors(predictions: Predictions) -> StructureErrors:
    """Each structure's own errors from :func:`evaluate`'s predictions (a structure's force
    errors average over its 3 × n_atoms components)."""
    n = len(predictions.energy)
    diff = predictions.forces - predictions.forces_ref
    components = 3.0 * np.bincount(predictions.system_idx, minlength=n)

    def mean_per_structure(values: np.ndarray) -> np.ndarray:
        with np.errstate(invalid="ignore", divide="ignore"):  # NaN labels stay NaN; 0 atoms give NaN
            return np.bincount(predictions.system_idx, weights=values.sum(axis=1), minlength=n) / components

    excess = predictions.range_excess
    if excess is None:
        atoms_beyond = max_excess = np.full(n, np.nan)
    else:
        atoms_beyond = np.bincount(predictions.system_idx, weights=(excess > 0).astype(float), minlength=n)
        max_excess = np.zeros(n)
        np.maximum.at(max_excess, predictions.system_idx, excess)
    return StructureErrors(
        energy_error=(predictions.energy_per_atom - predictions.energy_ref_per_atom) * 1000.0,
        force_mae=mean_per_structure(np.abs(diff)) * 1000.0,
        force_rmse=np.sqrt(mean_per_structure(diff**2)) * 1000.0,
        force_scale=mean_per_structure(np.abs(predictions.forces_ref)) * 1000.0,
        n_atoms=np.asarray(predictions.n_atoms),
        atoms_beyond=atoms_beyond,
        max_excess=max_excess,
    )


def _model_device(model: torch.nn.Module) -> torch.device:
    return next(model.parameters()).device


def evaluate(
    model,
    structures: Sequence[Atoms],
    batch_size: int = 16,
    device: str | torch.device | None = None,
    progress: bool = False,
    group_by: str | None = None,
) -> tuple[dict, Predictions]:
    """Errors of ``model`` on labelled ``structures``, over all and optionally per group.

    Stress is predicted only for batches that hold a structure periodic in all three
    directions (the strain derivative costs a second gradient input; for molecules it is
    meaningless), and enters the metrics only where a reference stress exists.

    Args:
        model: a :class:`~mlpot.models.Potential`; it is run in eval mode (stochastic depth
            off) and put back into its previous mode afterwards.
        structures: labelled ``ase.Atoms`` (a list or a lazy :class:`~mlpot.data.H5Dataset`).
        batch_size: structures per batch.
        device: where to compute (``"auto"``: CUDA when available); ``None`` keeps the
            model where it is. The model is moved there.
        progress: report progress on stderr (a bar on a terminal, else a line every 30 s;
            see :mod:`mlpot.progress`).
        group_by: an ``info`` key that labels each structure (mlearn's ``"group"``: AIMD,
            Elastic, Surface, Vacancy…); the errors are then also reported per label. Where a
            test error comes from is what decides the next lever: a few surfaces, or all.

    Returns:
        ``(metrics, predictions)``: the dict of :data:`~mlpot.training.metrics.METRIC_KEYS`
        (``None`` for a label no structure has) and the :class:`Predictions`. With
        ``group_by``, ``metrics["groups"]`` maps each label (as a string, in order of first
        appearance) to its own dict of the same keys.

    Raises:
        ValueError: for ``batch_size`` < 1, no structures, an element the model does not
            know (the message names the element and the first structure holding it), or, before
            any evaluation, a structure without ``info[group_by]`` (named with its index and
            the keys it has).
    """
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    n = len(structures)
    if n == 0:
        raise ValueError("no structures to evaluate")
    if device is not None:
        model = model.to(resolve_device(device))
    device = _model_device(model)
    known = {atomic_numbers[el] for el in model.elements}
    accumulator = ErrorAccumulator()
    groups: dict[str, ErrorAccumulator] = {}
    # Every label up front: a structure without one fails before the evaluation, not after it.
    labels = (None if group_by is None
              else [str(label) for label in info_labels(structures, group_by, "group_by", "the structures")])
    parts: dict[str, list[np.ndarray]] = {k: [] for k in Predictions.__dataclass_fields__}
    offset = 0
    was_training = model.training
    model.eval()
    try:
        for lo in report(range(0, n, batch_size), desc="evaluate", unit="batch", enabled=progress,
                         leave=True):
            block = structures[lo:lo + batch_size]
            _check_elements(block, known, model.elements, lo)
            # Labels stay float64 (a float32 total energy of a few hundred eV carries
            # ~1e-5 eV of rounding); the model casts its own copy to its dtype.
            batch = collate(block, cutoff=model.cutoff, dtype=torch.float64, device=device)
            periodic = bool(batch.pbc.all(dim=1).any())
            out = _predict(model, batch, stress=periodic)
            accumulator.update(out, batch)
            if labels is not None:
                _update_groups(groups, labels[lo:lo + batch_size], out, batch)
            _append_predictions(parts, out, batch, offset)
            offset += batch.n_systems
    finally:
        model.train(was_training)
    predictions = Predictions(**{k: np.concatenate(v) if v else None for k, v in parts.items()})
    metrics = accumulator.result()
    if group_by is not None:
        metrics["groups"] = {label: acc.result() for label, acc in groups.items()}
    return metrics, predictions


def _predict(model, batch, stress: bool) -> dict[str, torch.Tensor]:
    """The model's outputs on ``batch`` (detached), with ``range_excess`` (N,) when it can
    say: a :class:`~mlpot.models.Potential`, or the members of a committee
    (:class:`~mlpot.models.Ensemble`), each checking its own descriptors
    (:func:`~mlpot.models.ensemble.range_checked_committee`, as the calculator does)."""
    from .models.ensemble import range_checked_committee

    members = list(getattr(model, "members", [model]))
    if not all(hasattr(m, "range_excess") for m in members):
        out = model(batch, forces=True, stress=stress, create_graph=False)
        return {k: v.detach() for k, v in out.items()}
    out, excess = range_checked_committee(members, batch, stress=stress)
    out["range_excess"] = excess
    return out


def _append_predictions(parts: dict[str, list[np.ndarray]], out: dict, batch, offset: int) -> None:
    """Add one batch's predictions and labels to the :class:`Predictions` fields, on the CPU
    in float64; ``offset`` is the index of the batch's first structure."""
    t = batch.targets
    nan_stress = torch.full_like(t.stress, float("nan"))
    for key, value in (
        ("energy", out["energy"]), ("energy_ref", t.energy), ("n_atoms", batch.n_atoms),
        ("forces", out["forces"]), ("forces_ref", t.forces), ("numbers", batch.numbers),
        ("system_idx", batch.system_idx + offset),
        ("stress", out.get("stress", nan_stress)), ("stress_ref", t.stress),
        *((("range_excess", out["range_excess"]),) if "range_excess" in out else ()),
    ):
        value = value.cpu()
        parts[key].append((value.double() if value.is_floating_point() else value).numpy())


def _update_groups(groups: dict[str, ErrorAccumulator], labels: list[str], out: dict, batch) -> None:
    """Add each group's structures of one batch to that group's accumulator."""
    for label in dict.fromkeys(labels):
        mask = torch.tensor([lab == label for lab in labels], device=batch.n_atoms.device)
        groups.setdefault(label, ErrorAccumulator()).update(out, batch, systems=mask)


def _check_elements(block: Sequence[Atoms], known: set[int], elements, first: int) -> None:
    """Name the element and structure up front, before any tensor work fails on it."""
    for k, atoms in enumerate(block):
        unknown = set(int(z) for z in np.unique(atoms.numbers)) - known
        if unknown:
            names = sorted(chemical_symbols[z] for z in unknown)
            raise ValueError(f"structure {first + k} contains element(s) {names} that the model "
                             f"does not know (model elements: {list(elements)})")


def require_matplotlib():
    """Import matplotlib with the non-interactive Agg backend, or explain how to get it.

    Raises:
        ImportError: naming the ``plot`` extra when matplotlib is not installed.
    """
    try:
        import matplotlib
    except ImportError:
        raise ImportError("parity plots need matplotlib; install it with "
                          "pip install 'mlpot[plot]' (or pip install matplotlib)") from None
    # Agg: plots are written to files, never shown, and must work without a display.
    matplotlib.use("Agg", force=True)
    import matplotlib.pyplot as plt

    return plt


def _rmse(a: np.ndarray, b: np.ndarray) -> float:
    keep = np.isfinite(b)
    return float(np.sqrt(np.mean((a[keep] - b[keep]) ** 2))) if keep.any() else float("nan")


def parity_plot(predictions: Predictions, path: str | Path, title: str | None = None) -> None:
    """Predicted against reference energy per atom and force components, one panel each.

    The RMSE (meV/atom, meV/Å) of each panel is in its title; structures without a label
    are left out of that panel (and the panel is dropped when no structure has the label).

    Args:
        predictions: from :func:`evaluate`.
        path: image file; the format follows the suffix (``.png``, ``.pdf``, ``.svg``…).
        title: optional figure title.

    Raises:
        ImportError: when matplotlib (the ``plot`` extra) is not installed.
        ValueError: when there is neither an energy nor a force label to plot.
    """
    plt = require_matplotlib()
    panels = []
    e_ref, e_pred = predictions.energy_ref_per_atom, predictions.energy_per_atom
    keep = np.isfinite(e_ref)
    if keep.any():
        panels.append((e_ref[keep], e_pred[keep], "energy per atom", "eV/atom", "meV/atom"))
    f_ref, f_pred = predictions.forces_ref.ravel(), predictions.forces.ravel()
    keep = np.isfinite(f_ref)
    if keep.any():
        panels.append((f_ref[keep], f_pred[keep], "force components", "eV/Å", "meV/Å"))
    if not panels:
        raise ValueError("nothing to plot: the structures have no energy or force labels")
    fig, axes = plt.subplots(1, len(panels), figsize=(4.8 * len(panels), 4.8), squeeze=False)
    for ax, (ref, pred, name, unit, err_unit) in zip(axes[0], panels):
        lo, hi = float(min(ref.min(), pred.min())), float(max(ref.max(), pred.max()))
        pad = 0.03 * (hi - lo or 1.0)
        ax.plot([lo - pad, hi + pad], [lo - pad, hi + pad], color="0.6", lw=1, zorder=0)
        ax.scatter(ref, pred, s=6, alpha=0.5, edgecolors="none")
        ax.set_xlim(lo - pad, hi + pad)
        ax.set_ylim(lo - pad, hi + pad)
        ax.set_aspect("equal")
        ax.set_xlabel(f"reference {name} ({unit})")
        ax.set_ylabel(f"predicted {name} ({unit})")
        ax.set_title(f"{name} (n = {len(ref)})\nRMSE {1000.0 * _rmse(pred, ref):.4g} {err_unit}")
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    fig.savefig(path, dpi=150)
    plt.close(fig)
