"""Triplets (i, j, k) for angular terms, built from a pair list without Python loops."""

from __future__ import annotations

import torch

__all__ = ["triplets_from_pairs"]


def triplets_from_pairs(centre: torch.Tensor, n_atoms: int) -> tuple[torch.Tensor, torch.Tensor]:
    """All unordered pairs of neighbours (j, k) of each centre i.

    For a centre with c neighbours this yields c(c−1)/2 triplets. The pair list must be
    sorted by centre (as :func:`mlpot.neighbours.neighbour_pairs` returns it).

    Args:
        centre: (P,) long centre index of each pair, non-decreasing.
        n_atoms: number of atoms N (centres range over 0..N−1).

    Returns:
        first, second: (T,) long indices into the pair list; pair ``first[t]`` = (i, j) and
        pair ``second[t]`` = (i, k) share the centre i, and first < second.
    """
    counts = torch.bincount(centre, minlength=n_atoms)
    pair_start = torch.cumsum(counts, 0) - counts
    per_centre = counts * (counts - 1) // 2
    # No Python int of a tensor (no int(per_centre.sum())): sizes come from tensors only, so
    # torch.jit.trace records this function correctly for any structure (mlpot.io.export),
    # and no triplet at all needs no special case.
    owner = torch.repeat_interleave(per_centre)  # (T,) centre of each triplet
    first_of_owner = torch.cumsum(per_centre, 0) - per_centre
    local = torch.ones_like(owner).cumsum(0) - 1 - first_of_owner[owner]
    # Enumerate pairs (a, b), a < b, ordered by b: local = b(b-1)/2 + a. Invert with a
    # float64 square root, then correct the at most one-off rounding error exactly.
    b = ((1.0 + torch.sqrt(1.0 + 8.0 * local.double())) / 2.0).floor().long()
    b = b - (b * (b - 1) // 2 > local).long()
    b = b + ((b + 1) * b // 2 <= local).long()
    a = local - b * (b - 1) // 2
    base = pair_start[owner]
    return base + a, base + b
