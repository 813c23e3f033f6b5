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
    # Pair p at position k_p in its centre's list is the second leg of k_p triplets, whose
    # first legs are the pairs before it: second = p repeated k_p times, and first counts up
    # from the centre's first pair. Sizes come from tensors only (no Python int of a tensor),
    # so torch.jit.trace records this for any structure (mlpot.io.export), and no triplet
    # at all needs no special case.
    local = torch.ones_like(centre).cumsum(0) - 1 - pair_start.index_select(0, centre)  # k_p
    second = torch.repeat_interleave(local)
    triplet_start = torch.cumsum(local, 0) - local  # first triplet of each pair as second leg
    first = torch.ones_like(second).cumsum(0) - 1 - (triplet_start - pair_start.index_select(0, centre)).index_select(0, second)
    return first, second
