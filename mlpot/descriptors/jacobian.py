"""The sparse derivative of the symmetry functions with respect to the pair vectors.

G_i depends on the positions only through the vectors r_p of i's own pairs, and each pair
touches few of i's columns: a radial term of pair p = (i, j) sits in the block of j's
element, and an angular term only in the pair types that contain j's element, and only if
r_p lies inside the angular cutoff. :class:`PairJacobian` keeps exactly those blocks, a
fraction of the dense (P, F, 3) array (a quarter for water with ANI-like parameters), which
is what training with cached descriptors reads every step.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Sequence

import torch

__all__ = ["PairJacobian"]


@dataclass
class PairJacobian:
    """∂G_{i(p)}/∂r_p in the blocks that can be non-zero.

    Attributes:
        radial: (P, K_r) dφ_k/dr_p of the K_r radial shapes at the pair's length; a radial
            term of pair p = (i, j) sits in the block of e(j), the element of the neighbour,
            and its derivative with respect to r_p is dφ_k/dr · r̂_p: the (P, 3, K_r) block
            is this rank-one product, stored as its factors (a third of the numbers, and a
            third of the work of contracting it with ∂E/∂G every training step). Å⁻¹ times
            the descriptor's unit.
        angular: (Q, 3, E, A) for the Q pairs inside the angular cutoff: ∂G/∂r_p of the A
            angular columns of pair type (e(j), e) for each of the E elements e; Å⁻¹ times
            the descriptor's unit.
        angular_row: (P,) long, the row of ``angular`` that belongs to each pair, −1 for a
            pair outside the angular cutoff; rows are in pair order.
        direction: (P, 3) unit vectors r̂_p of the pairs.
    """

    radial: torch.Tensor
    angular: torch.Tensor
    angular_row: torch.Tensor
    direction: torch.Tensor
    # angular_pairs(), kept once known: select() gets it for free, and to() carries it, so a
    # batch selected on the host and moved to a GPU never needs a nonzero() (a device sync)
    # there.
    _angular_pairs: torch.Tensor | None = field(default=None, repr=False, compare=False)

    @property
    def n_pairs(self) -> int:
        return self.radial.shape[0]

    @property
    def nbytes(self) -> int:
        return self.radial.nbytes + self.angular.nbytes + self.angular_row.nbytes + self.direction.nbytes

    def angular_pairs(self) -> torch.Tensor:
        """(Q,) long index of the pair of each angular row."""
        if self._angular_pairs is None:
            self._angular_pairs = torch.nonzero(self.angular_row >= 0).squeeze(1)
        return self._angular_pairs

    def to(self, device=None, dtype: torch.dtype | None = None) -> "PairJacobian":
        pairs = None if self._angular_pairs is None else self._angular_pairs.to(device)
        return PairJacobian(self.radial.to(device, dtype), self.angular.to(device, dtype),
                            self.angular_row.to(device), self.direction.to(device, dtype), pairs)

    def select(self, pairs: torch.Tensor) -> "PairJacobian":
        """The rows of the pairs ``pairs`` (P',) long, in that order. Cost O(P')."""
        rows = self.angular_row.index_select(0, pairs)
        inside = rows >= 0
        new_row = torch.where(inside, torch.cumsum(inside, 0) - 1, torch.full_like(rows, -1))
        kept = torch.nonzero(inside).squeeze(1)
        return PairJacobian(self.radial.index_select(0, pairs),
                            self.angular.index_select(0, rows.index_select(0, kept)), new_row,
                            self.direction.index_select(0, pairs), kept)

    @staticmethod
    def cat(parts: Sequence["PairJacobian"]) -> "PairJacobian":
        """Concatenate along the pairs (consecutive pair ranges, e.g. chunks of structures)."""
        rows, offset = [], 0
        for part in parts:
            rows.append(torch.where(part.angular_row >= 0, part.angular_row + offset, part.angular_row))
            offset += part.angular.shape[0]
        return PairJacobian(torch.cat([p.radial for p in parts]), torch.cat([p.angular for p in parts]),
                            torch.cat(rows), torch.cat([p.direction for p in parts]))

    def state(self) -> dict[str, torch.Tensor]:
        """Plain tensors, for ``torch.save``."""
        return {"radial": self.radial, "angular": self.angular, "angular_row": self.angular_row,
                "direction": self.direction}

    @classmethod
    def from_state(cls, state: dict[str, torch.Tensor]) -> "PairJacobian":
        """Inverse of :meth:`state`; raises ``ValueError`` when the shapes disagree."""
        jac = cls(state["radial"], state["angular"], state["angular_row"], state["direction"])
        n_rows = int((jac.angular_row >= 0).sum())
        if (jac.radial.dim() != 2 or jac.angular.dim() != 4 or jac.angular_row.shape != (jac.n_pairs,)
                or jac.direction.shape != (jac.n_pairs, 3) or n_rows != jac.angular.shape[0]):
            raise ValueError("inconsistent pair Jacobian blocks")
        return jac
