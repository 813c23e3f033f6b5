"""Neighbour pairs from vesin, for open, periodic and partly periodic structures.

The list stores only indices and integer image shifts. Distance vectors are recomputed in
torch (:func:`mlpot.neighbours.edge_vectors`) so that autograd yields forces and, through the
cell, the strain derivative.
"""

from __future__ import annotations

import warnings

import numpy as np
import torch
import vesin

from .guard import check_for_vesin, open_half_pairs

__all__ = ["neighbour_pairs", "structure_pairs", "check_cutoff", "device_pairs"]


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

    Raises:
        ValueError: NaN/inf positions or cell, a degenerate periodic cell, or a periodic
            structure too large for vesin's cell list (see :mod:`mlpot.neighbours.guard`; an
            open structure of any extent is handled, by a sparse cell list where vesin would
            crash).
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
    if check_for_vesin(positions, box, pbc, cutoff):  # else an open structure vesin would crash on
        # A half list mirrored and grouped by centre is ~3x faster than vesin's own fully
        # sorted full list (measured on 5184-atom water, r_c 5.2 Å).
        nl = vesin.NeighborList(cutoff=cutoff, full_list=False, sorted=False)
        half = nl.compute(positions, box, pbc.tolist(), quantities="ijS")
    else:
        half = open_half_pairs(positions, cutoff)
    i, j, shifts = (torch.from_numpy(a.astype(np.int64)) for a in half)
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
    :func:`structure_pairs` per structure. Should vesin's device kernels fail (a vesin-torch
    build without CUDA support, say), the pairs are built on the host and copied over, with
    one :class:`UserWarning` per process.

    Args:
        batch: an :class:`~mlpot.data.AtomsBatch`.
        cutoff: Å.

    Returns:
        edge_index (2, P) long, sorted by centre; edge_shift (P, 3) in the batch dtype.
    """
    cutoff = check_cutoff(cutoff)
    device = batch.device
    counts = batch.n_atoms.tolist()  # the one host synchronisation of the GPU path
    offsets = np.concatenate([[0], np.cumsum(counts)]).astype(np.int64)
    if device.type == "cpu":
        # vesin's numpy interface and a radix grouping by centre: half the time of the
        # torch interface and a torch sort (1536-atom water: 11 vs 22 ms).
        edge_index, shifts = _host_pairs(batch.positions, batch.cell, batch.pbc, offsets, cutoff)
        return edge_index, shifts.to(batch.dtype)
    edge_index, shifts = _device_or_host_pairs(batch.positions, batch.cell, batch.pbc, offsets, cutoff)
    return edge_index, shifts.to(batch.dtype)


def _device_or_host_pairs(positions: torch.Tensor, cells: torch.Tensor, pbc: torch.Tensor, offsets: np.ndarray,
                          cutoff: float) -> tuple[torch.Tensor, torch.Tensor]:
    """:func:`device_pairs`, or, where vesin's device kernels raise, :func:`_host_pairs` copied
    to the tensors' device (with one warning per process). Arguments as for :func:`device_pairs`."""
    try:
        return device_pairs(positions, cells, pbc, offsets, cutoff)
    except RuntimeError as exc:
        _warn_host_fallback(exc)
    edge_index, shifts = _host_pairs(positions.cpu(), cells.cpu(), pbc.cpu(), offsets, cutoff)
    return edge_index.to(positions.device), shifts.to(positions.device)


def _host_pairs(positions: torch.Tensor, cells: torch.Tensor, pbc: torch.Tensor, offsets: np.ndarray,
                cutoff: float) -> tuple[torch.Tensor, torch.Tensor]:
    """Pairs of CPU tensors (N, 3) Å, (B, 3, 3) Å, (B, 3) bool, structure ``b`` the atoms
    ``offsets[b]:offsets[b + 1]``: edge_index (2, P) and int64 shifts (P, 3), by
    :func:`_full_pairs` per structure."""
    positions = positions.detach().to(torch.float64).numpy()
    cells = cells.detach().to(torch.float64).numpy()
    pbcs = pbc.numpy()
    parts = [_full_pairs(positions[lo:hi], cells[b], pbcs[b], cutoff)
             for b, (lo, hi) in enumerate(zip(offsets[:-1], offsets[1:]))]
    if len(parts) == 1:
        return parts[0]
    edge_index = torch.cat([e + int(lo) for (e, _), lo in zip(parts, offsets)], dim=1)
    return edge_index, torch.cat([s for _, s in parts])


def device_pairs(positions: torch.Tensor, cells: torch.Tensor, pbc: torch.Tensor, offsets: np.ndarray,
                 cutoff: float) -> tuple[torch.Tensor, torch.Tensor]:
    """Pairs by vesin's torch interface, on the tensors' own device (the GPU path of
    :func:`neighbour_pairs`; on CPU tensors it gives the same pairs as the host path).

    Args:
        positions: (N, 3) Å.
        cells: (B, 3, 3) rows are lattice vectors, Å.
        pbc: (B, 3) bool.
        offsets: (B + 1,) first atom of each structure, then N (host integers).
        cutoff: Å.

    Returns:
        edge_index (2, P) long sorted by centre (stable), shifts (P, 3) as vesin gives them.

    Raises:
        RuntimeError: vesin-torch cannot be imported (e.g. built for another torch), or its
            kernels fail on this device.
        ValueError: on CPU tensors, as for :func:`structure_pairs`.
    """
    try:  # imported here: a vesin-torch built for another torch costs the device path only
        import vesin.torch as vesin_torch
    except ImportError as exc:
        raise RuntimeError(f"vesin-torch cannot be imported: {exc}") from exc
    # vesin computes in float64 (float32 positions would shift pairs at the cutoff).
    positions = positions.detach().to(torch.float64)
    cells = cells.detach().to(torch.float64)
    # Which structures are periodic at all, read once for the batch: a bool() of a device
    # tensor per structure would be one host synchronisation each.
    periodic = pbc.any(dim=1).tolist()
    # On the CPU vesin-torch runs the same cell list as the host path: guarded as there.
    on_cpu = positions.device.type == "cpu"
    nl = vesin_torch.NeighborList(cutoff=cutoff, full_list=False)
    all_i, all_j, all_s = [], [], []
    for b, (lo, hi) in enumerate(zip(offsets[:-1].tolist(), offsets[1:].tolist())):
        box = cells[b] if periodic[b] else torch.zeros_like(cells[b])
        if on_cpu and not check_for_vesin(positions[lo:hi].numpy(), box.numpy(), pbc[b].numpy(), cutoff):
            i, j, s = (torch.from_numpy(a) for a in open_half_pairs(positions[lo:hi].numpy(), cutoff))
        else:  # (vesin's CPU cell list would crash on that open structure)
            i, j, s = nl.compute(positions[lo:hi], box, pbc[b], quantities="ijS")
        # Mirror the half list: both (i, j, S) and (j, i, −S) are needed as centres.
        all_i += [i + lo, j + lo]
        all_j += [j + lo, i + lo]
        all_s += [s, -s]
    centre, neighbour, shift = torch.cat(all_i), torch.cat(all_j), torch.cat(all_s)
    order = torch.argsort(centre, stable=True)
    return torch.stack([centre[order], neighbour[order]]).long(), shift[order]


_FALLBACK_WARNED = False


def _warn_host_fallback(exc: Exception) -> None:
    """Warn once per process that pairs are built on the host instead of the device."""
    global _FALLBACK_WARNED
    if not _FALLBACK_WARNED:
        warnings.warn(f"vesin could not build neighbour pairs on the device ({exc}); building them on the "
                      "host and copying them over (slower, same pairs)", UserWarning, stacklevel=3)
        _FALLBACK_WARNED = True
