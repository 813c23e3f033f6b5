"""Neighbour pairs from vesin, for open, periodic and partly periodic structures.

The list stores only indices and integer image shifts. Distance vectors are recomputed in
torch (:func:`mlpot.neighbours.edge_vectors`) so that autograd yields forces and, through the
cell, the strain derivative.
"""

from __future__ import annotations

import numpy as np
import torch
import vesin
import vesin.torch as vesin_torch

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

    Built by vesin's torch interface on the batch's own device (its CUDA kernels on a GPU),
    so MD on a GPU never copies positions to the host to rebuild a list.

    Args:
        batch: an :class:`~mlpot.data.AtomsBatch`.
        cutoff: Å.

    Returns:
        edge_index (2, P) long, sorted by centre; edge_shift (P, 3) in the batch dtype.
    """
    cutoff = check_cutoff(cutoff)
    device = batch.device
    # vesin computes in float64 (float32 positions would shift pairs at the cutoff).
    positions = batch.positions.detach().to(torch.float64)
    cells = batch.cell.detach().to(torch.float64)
    counts = batch.n_atoms.tolist()
    offsets = [0]
    for c in counts:
        offsets.append(offsets[-1] + c)
    nl = vesin_torch.NeighborList(cutoff=cutoff, full_list=False)
    all_i, all_j, all_s = [], [], []
    for b, (lo, hi) in enumerate(zip(offsets[:-1], offsets[1:])):
        pbc = batch.pbc[b]
        box = cells[b] if bool(pbc.any()) else torch.zeros_like(cells[b])
        i, j, s = nl.compute(positions[lo:hi], box, pbc.to(device), quantities="ijS")
        # Mirror the half list: both (i, j, S) and (j, i, −S) are needed as centres.
        all_i += [i + lo, j + lo]
        all_j += [j + lo, i + lo]
        all_s += [s, -s]
    centre, neighbour, shift = torch.cat(all_i), torch.cat(all_j), torch.cat(all_s)
    order = torch.argsort(centre, stable=True)
    edge_index = torch.stack([centre[order], neighbour[order]]).long()
    return edge_index, shift[order].to(batch.dtype)
