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
    edge_index, shifts = _full_pairs(positions, cell, pbc, cutoff)
    return edge_index[0].numpy(), edge_index[1].numpy(), shifts.numpy()


def _full_pairs(positions: np.ndarray, cell: np.ndarray, pbc: np.ndarray,
                cutoff: float) -> tuple[torch.Tensor, torch.Tensor]:
    """:func:`structure_pairs` as torch tensors: edge_index (2, P), shifts (P, 3) int64."""
    cutoff = check_cutoff(cutoff)
    pbc = np.asarray(pbc, dtype=bool)
    positions = np.ascontiguousarray(positions, dtype=np.float64)
    box = np.ascontiguousarray(cell, dtype=np.float64)
    if not pbc.any():
        box = np.zeros((3, 3))
    # A half list mirrored and grouped by centre is ~3x faster than vesin's own fully
    # sorted full list (measured on 5184-atom water, r_c 5.2 Å).
    nl = vesin.NeighborList(cutoff=cutoff, full_list=False, sorted=False)
    i, j, shifts = (torch.from_numpy(a.astype(np.int64))
                    for a in nl.compute(positions, box, pbc.tolist(), quantities="ijS"))
    centre = torch.cat([i, j])
    order = torch.from_numpy(_centre_order(centre.numpy(), len(positions)))
    # torch's index_select: numpy's fancy indexing of (P, 3) rows is ~15x slower.
    edge_index = torch.stack([centre, torch.cat([j, i])]).index_select(1, order)
    return edge_index, torch.cat([shifts, -shifts]).index_select(0, order)


def _centre_order(centre: np.ndarray, n_atoms: int) -> np.ndarray:
    """Stable permutation (P,) that sorts pairs by centre index.

    numpy's stable sort of 16-bit keys is a radix sort, linear in P: one pass for fewer than
    2^16 atoms, else a least-significant-digit pass per 16 bits. On water with r_c 5.2 Å
    this takes 0.8 ms for 1536 atoms where a comparison sort of int64 keys takes 4.5 ms.
    """
    if n_atoms <= 1 << 16:
        return np.argsort(centre.astype(np.uint16), kind="stable")
    order = np.arange(len(centre))
    for shift in range(0, max(int(n_atoms - 1).bit_length(), 1), 16):
        digit = ((centre[order] >> shift) & 0xFFFF).astype(np.uint16)
        order = order[np.argsort(digit, kind="stable")]
    return order


def neighbour_pairs(batch, cutoff: float) -> tuple[torch.Tensor, torch.Tensor]:
    """Neighbour pairs of every structure of a batch, in flat (batch-wide) atom indices.

    On a GPU, built by vesin's torch interface on the batch's own device (its CUDA kernels),
    so MD on a GPU never copies positions to the host to rebuild a list; on the CPU, by
    :func:`structure_pairs` per structure.

    Args:
        batch: an :class:`~mlpot.data.AtomsBatch`.
        cutoff: Å.

    Returns:
        edge_index (2, P) long, sorted by centre; edge_shift (P, 3) in the batch dtype.
    """
    cutoff = check_cutoff(cutoff)
    device = batch.device
    counts = batch.n_atoms.tolist()
    offsets = np.concatenate([[0], np.cumsum(counts)]).astype(np.int64)
    if device.type == "cpu":
        # vesin's numpy interface and a radix grouping by centre: half the time of the
        # torch interface and a torch sort (1536-atom water: 11 vs 22 ms).
        positions = batch.positions.detach().to(torch.float64).numpy()
        cells = batch.cell.detach().to(torch.float64).numpy()
        pbcs = batch.pbc.numpy()
        parts = [_full_pairs(positions[lo:hi], cells[b], pbcs[b], cutoff)
                 for b, (lo, hi) in enumerate(zip(offsets[:-1], offsets[1:]))]
        if len(parts) == 1:
            edge_index, shifts = parts[0]
        else:
            edge_index = torch.cat([e + int(lo) for (e, _), lo in zip(parts, offsets)], dim=1)
            shifts = torch.cat([s for _, s in parts])
        return edge_index, shifts.to(batch.dtype)
    # vesin computes in float64 (float32 positions would shift pairs at the cutoff).
    positions = batch.positions.detach().to(torch.float64)
    cells = batch.cell.detach().to(torch.float64)
    nl = vesin_torch.NeighborList(cutoff=cutoff, full_list=False)
    all_i, all_j, all_s = [], [], []
    for b, (lo, hi) in enumerate(zip(offsets[:-1].tolist(), offsets[1:].tolist())):
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
