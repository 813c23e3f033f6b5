"""Differentiable pair vectors."""

from __future__ import annotations

import torch

__all__ = ["edge_vectors"]


def edge_vectors(
    positions: torch.Tensor,
    cell: torch.Tensor,
    system_idx: torch.Tensor,
    edge_index: torch.Tensor,
    edge_shift: torch.Tensor,
) -> torch.Tensor:
    """r_ij = R_j − R_i + S_ij · cell, differentiable in positions and cell.

    Args:
        positions: (N, 3) Å.
        cell: (B, 3, 3) rows are lattice vectors, Å.
        system_idx: (N,) structure of each atom.
        edge_index: (2, P) centre i, neighbour j.
        edge_shift: (P, 3) integer image shifts (floating dtype).

    Returns:
        (P, 3) vectors from atom i to the image of atom j, Å.
    """
    i, j = edge_index[0], edge_index[1]
    # Per-pair cell: one bmm-free einsum; for open systems the shift is zero anyway.
    offset = torch.einsum("pk,pkl->pl", edge_shift, cell[system_idx[i]])
    return positions[j] - positions[i] + offset
