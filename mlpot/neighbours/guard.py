"""What vesin's CPU cell list cannot take, checked before it is called, and a sparse cell
list for the open structures it cannot take.

vesin (0.6) sizes its CPU cell list by the structure: trunc(d_k / r_c) cells along axis k,
d_k the spacing of the lattice planes along a periodic axis, the atoms' extent (+1 %) along an
open one. Above 1e5 cells in all it scales the three counts down, keeping their ratios, and
where one of them then truncates to 0 it divides by zero: SIGFPE, and the whole process dies
with no exception. With r_c = 5 Å that is two atoms 4.95e5 Å apart on a line, a flat open
structure 1570 Å wide, a periodic cell vector of 1e6 Å, or a NaN/inf cell.

:func:`check_for_vesin` raises a :class:`ValueError` for non-finite input and for periodic
structures vesin would crash on, and sends open ones to :func:`open_half_pairs`, which bins
only the occupied cells (memory and time O(N) whatever the extent).
"""

from __future__ import annotations

import itertools
import math

import numpy as np

__all__ = ["check_for_vesin", "open_half_pairs"]

#: vesin's ``MAX_NUMBER_OF_CELLS`` (cpu_cell_list.cpp).
VESIN_MAX_CELLS = 1e5


def check_for_vesin(positions: np.ndarray, box: np.ndarray, pbc: np.ndarray, cutoff: float) -> bool:
    """Whether vesin's CPU cell list can take this structure.

    Args:
        positions: (n, 3) Å, float64.
        box: (3, 3) Å, rows the lattice vectors (zeros for an open structure).
        pbc: (3,) bool.
        cutoff: Å, positive and finite.

    Returns:
        True where vesin is safe; False for an open structure it would crash on (build its
        pairs with :func:`open_half_pairs` instead).

    Raises:
        ValueError: non-finite positions or cell, a degenerate periodic cell, or a periodic
            structure whose cell list vesin would crash on (naming its extent and the cutoff).
    """
    if not np.isfinite(positions).all():
        atom = int(np.flatnonzero(~np.isfinite(positions).all(axis=1))[0])
        raise ValueError(f"non-finite (NaN/inf) position at atom {atom}: {positions[atom].tolist()}; "
                         "no neighbour list can be built")
    if pbc.any() and not np.isfinite(box).all():
        raise ValueError(f"non-finite (NaN/inf) cell {box.tolist()}; no neighbour list can be built")
    extent = _cell_list_extent(positions, box, pbc)
    if not np.isfinite(extent).all() or not _cell_counts_safe(extent / cutoff):
        if not pbc.any():
            return False
        raise ValueError(
            f"structure too large for the neighbour list: extent {_format(extent)} Å (periodic axes "
            f"{pbc.tolist()}) is more than ~{VESIN_MAX_CELLS:g} cut-offs of {cutoff:g} Å in all "
            "(vesin's cell list would divide by zero); check the cell and the units of the positions")
    return True


def _format(extent: np.ndarray) -> str:
    return " x ".join(f"{d:.4g}" for d in extent)


def _cell_list_extent(positions: np.ndarray, box: np.ndarray, pbc: np.ndarray) -> np.ndarray:
    """(3,) the lengths, Å, vesin divides into cells: lattice-plane spacings along periodic
    axes, the atoms' extent + 1 % along open ones (1 Å where all atoms share a coordinate)."""
    with np.errstate(over="ignore", invalid="ignore"):
        span = positions.max(axis=0) - positions.min(axis=0) if len(positions) else np.zeros(3)
        extent = np.where(span < 1e-6, 1.0, span) * 1.01
        if pbc.any():
            u, sigma, vt = np.linalg.svd(box[pbc], full_matrices=False)
            if not sigma.min() > 1e-12 * sigma.max():
                raise ValueError(f"the periodic lattice vectors of the cell {box.tolist()} are zero or "
                                 "linearly dependent; no neighbour list can be built")
            # |column k of the pseudo-inverse| = 1 / spacing of the lattice planes along axis k.
            extent[pbc] = 1.0 / np.linalg.norm((vt.T / sigma) @ u.T, axis=0)
    return extent


def _cell_counts_safe(ratios: np.ndarray, fuzz: float = 1e-6) -> bool:
    """Whether vesin's cell counts for extents of ``ratios`` cut-offs all stay >= 1.

    Replays vesin's scaling for each rounding of the ratios by a relative ``fuzz`` either way
    (its extents may differ from these in the last digits): the structure is safe only if no
    replay reaches a count of 0."""
    if math.prod(r * (1 + fuzz) + 1 for r in ratios.tolist()) <= VESIN_MAX_CELLS:
        return True  # the common case: no scaling
    roundings = itertools.product(*[(r * (1 - fuzz), r * (1 + fuzz)) for r in ratios.tolist()])
    for rounded in roundings:
        counts = [max(math.trunc(r), 1) for r in rounded]
        total = math.prod(float(c) for c in counts)
        if total <= VESIN_MAX_CELLS:
            continue  # vesin keeps these counts
        if not math.isfinite(total):
            return False
        # vesin's own arithmetic (IEEE doubles, as in C++); only its cube root may round
        # differently, hence shrunk by ``fuzz``: the counts after it only get smaller.
        x_y, y_z = counts[0] / counts[1], counts[1] / counts[2]
        n_z = math.trunc(float(np.cbrt(VESIN_MAX_CELLS / (x_y * y_z * y_z))) * (1 - fuzz))
        n_y = math.trunc(y_z * n_z)
        n_x = math.trunc(x_y * n_y)
        if min(n_x, n_y, n_z) < 1:
            return False
    return True


def open_half_pairs(positions: np.ndarray, cutoff: float) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Half neighbour list (i < j) of an open structure of any extent, as vesin gives it.

    Atoms are binned into cubes of side ``cutoff``; along each axis the occupied bins are
    renumbered 0, 1, ... keeping adjacent bins adjacent and separating the others by a gap, so
    the bin keys stay below ~(2N)^3 however far apart the atoms are.

    Returns:
        i (P,), j (P,) int64 and shifts (P, 3) int64 (zeros).
    """
    n_atoms = len(positions)
    with np.errstate(over="ignore", invalid="ignore"):
        bins = np.floor((positions - positions.min(axis=0)) / cutoff) if n_atoms else np.zeros((0, 3))
    if not np.isfinite(bins).all():
        raise ValueError(f"the atoms span more than a float can hold ({positions.min(axis=0).tolist()} to "
                         f"{positions.max(axis=0).tolist()} Å); no neighbour list can be built")
    ranks = np.stack([_adjacent_ranks(bins[:, k]) for k in range(3)], axis=1) + 1  # >= 1: room for -1
    size = int(ranks.max(initial=0)) + 2
    if float(size) ** 3 >= 2.0**62:
        raise ValueError(f"too many atoms ({n_atoms}) spread too far for the sparse neighbour list")
    keys = (ranks[:, 0] * size + ranks[:, 1]) * size + ranks[:, 2]
    order = np.argsort(keys, kind="stable")
    sorted_keys = keys[order]
    parts_i, parts_j = [], []
    for offset in _forward_offsets():
        target = keys + (offset[0] * size + offset[1]) * size + offset[2]
        lo = np.searchsorted(sorted_keys, target, side="left")
        counts = np.searchsorted(sorted_keys, target, side="right") - lo
        i = np.repeat(np.arange(n_atoms, dtype=np.int64), counts)
        start = np.repeat(lo - np.cumsum(counts) + counts, counts)
        j = order[start + np.arange(len(i))]
        keep = i < j if offset == (0, 0, 0) else i != j
        parts_i.append(i[keep])
        parts_j.append(j[keep])
    i, j = np.concatenate(parts_i), np.concatenate(parts_j)
    vector = positions[j] - positions[i]
    close = np.einsum("pk,pk->p", vector, vector) < cutoff * cutoff
    i, j = np.minimum(i, j)[close], np.maximum(i, j)[close]
    return i, j, np.zeros((len(i), 3), dtype=np.int64)


def _adjacent_ranks(bins: np.ndarray) -> np.ndarray:
    """Integer ranks of bin coordinates: ranks of adjacent bins differ by 1, of others by 2."""
    unique, inverse = np.unique(bins, return_inverse=True)
    steps = np.where(np.diff(unique) == 1.0, 1, 2)
    return np.concatenate([[0], np.cumsum(steps)]).astype(np.int64)[inverse.reshape(-1)]


def _forward_offsets() -> list[tuple[int, int, int]]:
    """The bin itself and the 13 neighbouring bins lexicographically after it: each pair of
    neighbouring bins once."""
    return [(a, b, c) for a in (-1, 0, 1) for b in (-1, 0, 1) for c in (-1, 0, 1) if (a, b, c) >= (0, 0, 0)]
