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
    if cell.shape[0] == 1:  # one structure: a single (P,3)x(3,3) product
        offset = edge_shift @ cell[0]
    else:
        offset = torch.einsum("pk,pkl->pl", edge_shift, cell.index_select(0, system_idx[i]))
    # index_select rather than fancy indexing: its backward is a fast index_add.
    return positions.index_select(0, j) - positions.index_select(0, i) + offset
