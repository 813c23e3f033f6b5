"""The flat batch: many structures concatenated along the atom axis, no padding.

Shapes use N = atoms in the batch, B = structures, P = neighbour pairs. Labels that a
structure lacks are NaN in the value tensor and ``False`` in the matching ``has_*`` mask, so a
loss can never silently train on a made-up zero.
"""

from __future__ import annotations

from dataclasses import dataclass, fields, replace
from typing import Sequence

import numpy as np
import torch
from ase import Atoms

from .structures import DataError, get_labels, validate_structure

__all__ = ["Targets", "AtomsBatch", "collate"]


@dataclass(frozen=True)
class Targets:
    """Reference labels of a batch (eV, eV/Å, eV/Å³).

    Attributes:
        energy: (B,) total energies; NaN where missing.
        forces: (N, 3); NaN rows for structures without forces.
        stress: (B, 3, 3), ASE sign convention; NaN where missing.
        has_energy, has_forces, has_stress: (B,) bool masks of present labels.
        weight: (B,) per-structure weight in the training loss (dimensionless, >= 0), or
            ``None`` for equal weights (see :mod:`mlpot.training.loss`); floating, so it
            moves to the batch's dtype with the labels.
    """

    energy: torch.Tensor
    forces: torch.Tensor
    stress: torch.Tensor
    has_energy: torch.Tensor
    has_forces: torch.Tensor
    has_stress: torch.Tensor
    weight: torch.Tensor | None = None

    def to(self, device=None, dtype: torch.dtype | None = None) -> "Targets":
        return _move(self, device, dtype)


@dataclass(frozen=True)
class AtomsBatch:
    """Structures in one flat batch.

    Attributes:
        positions: (N, 3) Cartesian positions, Å.
        numbers: (N,) long atomic numbers.
        system_idx: (N,) long index of each atom's structure, non-decreasing.
        cell: (B, 3, 3) lattice vectors as rows, Å (zeros for open systems).
        pbc: (B, 3) bool periodicity.
        n_atoms: (B,) long atoms per structure.
        edge_index: (2, P) long (centre i, neighbour j), sorted by centre; ``None`` until
            :meth:`with_neighbours` is called.
        edge_shift: (P, 3) integer image shifts stored in the positions' dtype, so that
            r_ij = positions[j] - positions[i] + edge_shift @ cell[system_idx[i]].
        cutoff: the cutoff the pairs were built with, Å (``None`` without pairs).
        targets: reference labels, or ``None`` for unlabelled structures.
    """

    positions: torch.Tensor
    numbers: torch.Tensor
    system_idx: torch.Tensor
    cell: torch.Tensor
    pbc: torch.Tensor
    n_atoms: torch.Tensor
    edge_index: torch.Tensor | None = None
    edge_shift: torch.Tensor | None = None
    cutoff: float | None = None
    targets: Targets | None = None

    @property
    def n_systems(self) -> int:
        """Number of structures B (a Python int: no device sync)."""
        return self.cell.shape[0]

    @property
    def device(self) -> torch.device:
        return self.positions.device

    @property
    def dtype(self) -> torch.dtype:
        return self.positions.dtype

    def to(self, device=None, dtype: torch.dtype | None = None) -> "AtomsBatch":
        """Move to ``device`` and cast floating tensors to ``dtype`` (labels included)."""
        return _move(self, device, dtype)

    def with_neighbours(self, cutoff: float) -> "AtomsBatch":
        """Return a copy with the neighbour pairs within ``cutoff`` (Å) attached."""
        from ..neighbours import neighbour_pairs

        edge_index, edge_shift = neighbour_pairs(self, cutoff)
        return replace(self, edge_index=edge_index, edge_shift=edge_shift, cutoff=cutoff)


def _move(obj, device, dtype):
    changes = {}
    for f in fields(obj):
        value = getattr(obj, f.name)
        if isinstance(value, torch.Tensor):
            if dtype is not None and value.is_floating_point():
                value = value.to(device=device, dtype=dtype)
            else:
                value = value.to(device=device)
            changes[f.name] = value
        elif isinstance(value, Targets):
            changes[f.name] = value.to(device, dtype)
    return replace(obj, **changes)


def collate(
    structures: Sequence[Atoms],
    cutoff: float | None = None,
    dtype: torch.dtype = torch.float64,
    device: torch.device | str | None = None,
    labels: bool = True,
) -> AtomsBatch:
    """Concatenate structures into one :class:`AtomsBatch`.

    Args:
        structures: ASE ``Atoms``; labels are read from their attached calculator results.
        cutoff: if given, neighbour pairs within this radius (Å) are attached.
        dtype: floating dtype of positions, cell and labels.
        device: where the tensors live.
        labels: collect reference labels into ``batch.targets``.

    Raises:
        DataError: for an empty list or an invalid structure (named by its index).
    """
    if len(structures) == 0:
        raise DataError("cannot collate an empty list of structures")
    n_atoms = np.array([len(a) for a in structures], dtype=np.int64)
    positions, numbers, cells, pbcs = [], [], [], []
    energy, forces, stress = [], [], []
    has_e, has_f, has_s = [], [], []
    for k, atoms in enumerate(structures):
        validate_structure(atoms, where=f"structure {k}")
        positions.append(atoms.positions)
        numbers.append(atoms.numbers)
        cells.append(atoms.cell.array)
        pbcs.append(atoms.pbc)
        if labels:
            lab = get_labels(atoms)
            has_e.append(lab.energy is not None)
            energy.append(np.nan if lab.energy is None else lab.energy)
            has_f.append(lab.forces is not None)
            forces.append(np.full((len(atoms), 3), np.nan) if lab.forces is None else lab.forces)
            has_s.append(lab.stress is not None)
            stress.append(np.full((3, 3), np.nan) if lab.stress is None else lab.stress)

    def t(x, dt=dtype):
        return torch.as_tensor(np.asarray(x), dtype=dt, device=device)

    targets = None
    if labels:
        targets = Targets(
            energy=t(energy),
            forces=t(np.concatenate(forces)),
            stress=t(np.stack(stress)),
            has_energy=t(has_e, torch.bool),
            has_forces=t(has_f, torch.bool),
            has_stress=t(has_s, torch.bool),
        )
    batch = AtomsBatch(
        positions=t(np.concatenate(positions)),
        numbers=t(np.concatenate(numbers), torch.long),
        system_idx=t(np.repeat(np.arange(len(structures)), n_atoms), torch.long),
        cell=t(np.stack(cells)),
        pbc=t(np.stack(pbcs), torch.bool),
        n_atoms=t(n_atoms, torch.long),
        targets=targets,
    )
    return batch.with_neighbours(cutoff) if cutoff is not None else batch
