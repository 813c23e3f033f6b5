"""Neighbour pairs from vesin, for open, periodic and partly periodic structures.

The list stores only indices and integer image shifts. Distance vectors are recomputed in
torch (:func:`mlpot.neighbours.edge_vectors`) so that autograd yields forces and, through the
cell, the strain derivative.
"""

from __future__ import annotations

import numpy as np
import torch
import vesin

__all__ = ["neighbour_pairs", "structure_pairs", "check_cutoff"]


def check_cutoff(cutoff: float) -> float:
    """Return ``cutoff`` as a float, raising ``ValueError`` unless it is finite and > 0."""
    cutoff = float(cutoff)
    if not (np.isfinite(cutoff) and cutoff > 0):
        raise ValueError(f"cutoff must be a positive finite distance in Å, got {cutoff}")
    return cutoff


def structure_pairs(
    positions: np.ndarray, cell: np.ndarray, pbc: np.ndarray, cutoff: float
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Full neighbour list of one structure (both i→j and j→i), sorted by centre.

    Args:
        positions: (n, 3) Å.
        cell: (3, 3) rows are lattice vectors, Å; ignored along non-periodic axes.
        pbc: (3,) bool.
        cutoff: Å. Cells smaller than the cutoff are handled (several images per pair).

    Returns:
        i (P,), j (P,) int64 and shifts (P, 3) int64 with
        r_ij = positions[j] - positions[i] + shifts @ cell; sorted by centre i (the order
        of neighbours of one centre is deterministic but unspecified).
    """
    cutoff = check_cutoff(cutoff)
    pbc = np.asarray(pbc, dtype=bool)
    positions = np.ascontiguousarray(positions, dtype=np.float64)
    box = np.ascontiguousarray(cell, dtype=np.float64)
    if not pbc.any():
        box = np.zeros((3, 3))
    # A half list mirrored and stably sorted by centre is ~3x faster than vesin's own
    # fully sorted full list (measured on 5184-atom water, r_c 5.2 Å).
    nl = vesin.NeighborList(cutoff=cutoff, full_list=False, sorted=False)
    i, j, shifts = nl.compute(positions, box, pbc.tolist(), quantities="ijS")
    i, j, shifts = i.astype(np.int64), j.astype(np.int64), shifts.astype(np.int64)
    centre = np.concatenate([i, j])
    order = np.argsort(centre, kind="stable")
    return centre[order], np.concatenate([j, i])[order], np.concatenate([shifts, -shifts])[order]


def neighbour_pairs(batch, cutoff: float) -> tuple[torch.Tensor, torch.Tensor]:
    """Neighbour pairs of every structure of a batch, in flat (batch-wide) atom indices.

    The list is built on the CPU by vesin (float64) and moved to the batch's device.

    Args:
        batch: an :class:`~mlpot.data.AtomsBatch`.
        cutoff: Å.

    Returns:
        edge_index (2, P) long, sorted by centre; edge_shift (P, 3) in the batch dtype.
    """
    cutoff = check_cutoff(cutoff)
    positions = batch.positions.detach().cpu().double().numpy()
    cells = batch.cell.detach().cpu().double().numpy()
    pbcs = batch.pbc.cpu().numpy()
    counts = batch.n_atoms.cpu().numpy()
    offsets = np.concatenate([[0], np.cumsum(counts)])
    all_i, all_j, all_s = [], [], []
    for b in range(len(counts)):
        lo, hi = offsets[b], offsets[b + 1]
        i, j, s = structure_pairs(positions[lo:hi], cells[b], pbcs[b], cutoff)
        all_i.append(i + lo)
        all_j.append(j + lo)
        all_s.append(s)
    edge_index = torch.from_numpy(np.stack([np.concatenate(all_i), np.concatenate(all_j)]))
    edge_shift = torch.from_numpy(np.concatenate(all_s))
    return (
        edge_index.to(batch.device),
        edge_shift.to(device=batch.device, dtype=batch.dtype),
    )
