"""A periodic structure as LAMMPS sees it on one rank: local atoms plus explicit ghost atoms.

LAMMPS never hands a pair style image shifts: every periodic image that lies within the
neighbour cutoff of a local atom is a ghost atom of its own, with its own coordinates, and
the full neighbour list of a local atom names those ghosts. :func:`with_ghosts` builds the
same picture from an ``ase``-style structure (positions, cell, pbc), so that the LAMMPS entry
point of the TorchScript export (:meth:`mlpot.io.export.ExportedPotential.forward_lammps`) can
be checked against the Python model without LAMMPS: forces on ghosts folded back onto their
owners (what LAMMPS's reverse communication does) must give the model's forces.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ..neighbours import structure_pairs

__all__ = ["GhostedStructure", "with_ghosts"]


@dataclass(frozen=True)
class GhostedStructure:
    """Local atoms then ghost atoms, and a full neighbour list over the local centres.

    Attributes:
        positions: (N_all, 3) Å; rows ``:n_local`` are the structure's atoms, the rest are
            images R_j + S·h of them.
        owner: (N_all,) int64, the local atom each row is (an image of); ``owner[:n_local]``
            is ``arange(n_local)``.
        edge_index: (2, P) int64, centre i < n_local and neighbour j < N_all (a ghost when j
            ≥ n_local), both directions of every local–local pair, sorted by centre, every
            pair with |R_j − R_i| < cutoff.
        n_local: number of local atoms.
    """

    positions: np.ndarray
    owner: np.ndarray
    edge_index: np.ndarray
    n_local: int

    def fold(self, values: np.ndarray) -> np.ndarray:
        """Sum per-atom rows (N_all, ...) onto their owners → (n_local, ...): LAMMPS's reverse
        communication of ghost forces (``newton on``)."""
        values = np.asarray(values)
        out = np.zeros((self.n_local,) + values.shape[1:], dtype=values.dtype)
        np.add.at(out, self.owner, values)
        return out


def with_ghosts(positions: np.ndarray, cell: np.ndarray, pbc: np.ndarray, cutoff: float) -> GhostedStructure:
    """Replace the lattice images of a structure by explicit ghost atoms.

    Args:
        positions: (n, 3) Å.
        cell: (3, 3) lattice vectors as rows, Å (ignored along non-periodic axes).
        pbc: (3,) bool.
        cutoff: Å; every image within it of some atom becomes one ghost.

    Returns:
        the :class:`GhostedStructure`; an open structure has no ghosts.
    """
    positions = np.asarray(positions, dtype=np.float64)
    cell = np.asarray(cell, dtype=np.float64)
    n_local = len(positions)
    i, j, shifts = structure_pairs(positions, cell, np.asarray(pbc, dtype=bool), cutoff)
    imaged = np.any(shifts != 0, axis=1)
    # One ghost per distinct (atom, image): several centres may see the same image.
    keys = np.concatenate([j[imaged, None], shifts[imaged]], axis=1)
    distinct, ghost_of_pair = np.unique(keys, axis=0, return_inverse=True)
    neighbour = j.copy()
    neighbour[imaged] = n_local + ghost_of_pair.reshape(-1)
    ghost_positions = positions[distinct[:, 0]] + distinct[:, 1:].astype(np.float64) @ cell
    return GhostedStructure(
        positions=np.concatenate([positions, ghost_positions.reshape(-1, 3)]),
        owner=np.concatenate([np.arange(n_local), distinct[:, 0]]).astype(np.int64),
        edge_index=np.stack([i, neighbour]).astype(np.int64),
        n_local=n_local,
    )
