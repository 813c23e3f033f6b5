"""Error metrics of predictions against reference labels, accumulated over batches.

Reported in the units users quote: energy per atom in meV/atom, force components in meV/Å,
stress components in GPa. Structures missing a label are left out of that label's metric
(never compared against a made-up value). Force errors are over Cartesian components.
"""

from __future__ import annotations

import torch

from ..units import GPA

__all__ = ["ErrorAccumulator", "METRIC_KEYS"]

METRIC_KEYS = ("energy_rmse_mev_per_atom", "energy_mae_mev_per_atom", "force_rmse_mev_per_a",
               "force_mae_mev_per_a", "stress_rmse_gpa", "n_structures", "n_atoms")


class ErrorAccumulator:
    """Sums of squared and absolute errors; :meth:`result` gives RMSE/MAE."""

    def __init__(self) -> None:
        self.sums = {k: 0.0 for k in ("e2", "e1", "f2", "f1", "s2")}
        self.counts = {k: 0 for k in ("e", "f", "s")}
        self.n_structures = 0
        self.n_atoms = 0

    @torch.no_grad()
    def update(self, predictions: dict[str, torch.Tensor], batch,
               systems: torch.Tensor | None = None) -> None:
        """Add one batch: ``predictions`` from :class:`~mlpot.models.Potential`, labels
        from ``batch.targets``.

        Args:
            systems: optional (B,) bool mask; only the structures it selects (and their
                atoms) are counted. Per-group errors use it, so that they come from this one
                implementation and add up to the whole.
        """
        t = batch.targets
        if systems is None:
            systems = torch.ones(batch.n_systems, dtype=torch.bool, device=t.has_energy.device)
        self.n_structures += int(systems.sum())
        self.n_atoms += int(batch.n_atoms[systems].sum())
        has_e = t.has_energy & systems
        if bool(has_e.any()):
            err = ((predictions["energy"].double() - t.energy.double()) / batch.n_atoms.double())[has_e]
            self.sums["e2"] += float((err**2).sum())
            self.sums["e1"] += float(err.abs().sum())
            self.counts["e"] += int(has_e.sum())
        if "forces" in predictions:
            atom_has_f = (t.has_forces & systems)[batch.system_idx]
            if bool(atom_has_f.any()):
                err = (predictions["forces"].double() - t.forces.double())[atom_has_f]
                self.sums["f2"] += float((err**2).sum())
                self.sums["f1"] += float(err.abs().sum())
                self.counts["f"] += err.numel()
        if "stress" in predictions:
            has_s = t.has_stress & batch.pbc.all(dim=1) & systems
            if bool(has_s.any()):
                err = (predictions["stress"].double() - t.stress.double())[has_s]
                self.sums["s2"] += float((err**2).sum())
                self.counts["s"] += err.numel()

    def result(self) -> dict:
        """The metrics dict (keys :data:`METRIC_KEYS`; ``None`` where no label existed)."""
        def rms(key, count, factor):
            return None if self.counts[count] == 0 else factor * (self.sums[key] / self.counts[count]) ** 0.5

        def mean(key, count, factor):
            return None if self.counts[count] == 0 else factor * self.sums[key] / self.counts[count]

        return {
            "energy_rmse_mev_per_atom": rms("e2", "e", 1000.0),
            "energy_mae_mev_per_atom": mean("e1", "e", 1000.0),
            "force_rmse_mev_per_a": rms("f2", "f", 1000.0),
            "force_mae_mev_per_a": mean("f1", "f", 1000.0),
            "stress_rmse_gpa": rms("s2", "s", 1.0 / GPA),
            "n_structures": self.n_structures,
            "n_atoms": self.n_atoms,
        }
