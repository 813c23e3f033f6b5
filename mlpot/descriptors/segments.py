"""Sums of per-item outer products over groups, as batched matrix products.

The angular symmetry functions of a centre are sums over its triplets of a radial factor
times an angle factor, for every (radial shape, angle term) combination:

    out[r, s, a] = Σ_{t in row r} left[t, s] · right[t, a]

Materialising the (T, S, A) product and scattering it (``index_add_``) moves T·S·A numbers
through memory four times (product, scatter, and two reductions in the backward pass), with
broadcasting strides that are slow on CPU. Laid out as zero-padded (L, S) and (L, A)
matrices, the same sum is a single ``bmm`` (and two in the backward pass) whose inputs hold
only about T·(S + A) numbers. Rows are cut into pieces of at most L items rather than padded
to the longest row: row lengths vary several-fold (crowded and sparse neighbour-element
pairs), and padding every row to the longest one held 2.7× the items for liquid water,
which at 12288 atoms made the padded buffers the largest cost of the step.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

__all__ = ["PieceLayout", "piece_layout", "scatter_outer_sum", "segment_outer_sum"]


def _rank_within_rows(major: torch.Tensor, minor: torch.Tensor, n_major: int, n_minor: int) -> torch.Tensor:
    """Position of each item among the items of its row (major, minor), in input order.

    ``major`` must be non-decreasing; ``minor`` may be in any order within a major block.
    Cost O(T · n_minor) without a sort: a running count per minor value, less the count
    reached before the item's major block.
    """
    # (K, T) rather than (T, K): each running count is a contiguous scan. int32 counts halve
    # the memory traffic (T < 2³¹ always here).
    one_hot = torch.arange(n_minor, device=minor.device).unsqueeze(1) == minor.unsqueeze(0)  # (K, T)
    running = one_hot.cumsum(1, dtype=torch.int32)  # items of each minor value up to and including t
    rank_global = running.gather(0, minor.unsqueeze(0)).squeeze(0) - 1
    block_size = torch.bincount(major, minlength=n_major)
    block_start = block_size.cumsum(0) - block_size
    before = torch.zeros(n_minor, n_major, dtype=running.dtype, device=running.device)
    has_previous = block_start > 0
    before[:, has_previous] = running[:, block_start[has_previous] - 1]
    return rank_global - before.view(-1).index_select(0, minor * n_major + major)


@dataclass(frozen=True)
class PieceLayout:
    """Where each item of a row sits in the zero-padded pieces of :func:`piece_layout`.

    Attributes:
        slot: (T,) long, the slot of each item in the (n_pieces · piece) padded order.
        owner: (n_pieces,) long, the row of each piece.
        piece: slots per piece.
        n_rows: the number of rows.
    """

    slot: torch.Tensor
    owner: torch.Tensor
    piece: int
    n_rows: int

    @property
    def n_slots(self) -> int:
        return self.owner.shape[0] * self.piece

    def spread(self, index: torch.Tensor, fill: int) -> torch.Tensor:
        """(T,) per-item integers → (n_slots,) in slot order, ``fill`` in the padding.

        Gathering per-pair quantities with the spread indices builds the padded operands
        directly: one scatter of T integers instead of one copy of every (T, ·) operand
        into zeros (and a gather of each gradient back)."""
        return torch.full((self.n_slots,), fill, dtype=index.dtype, device=index.device).scatter_(0, self.slot, index)

    def outer_sum(self, left: torch.Tensor, right: torch.Tensor) -> torch.Tensor:
        """Σ over each row's slots of left ⊗ right, as one ``bmm``: (n_slots, S), (n_slots, A)
        in slot order, zero (at least one side) in the padding → (n_rows, S, A)."""
        n_pieces, n_left, n_right = self.owner.shape[0], left.shape[1], right.shape[1]
        partial = torch.bmm(left.view(n_pieces, self.piece, n_left).transpose(1, 2),
                            right.view(n_pieces, self.piece, n_right))  # (pieces, S, A)
        return partial.new_zeros(self.n_rows, n_left, n_right).index_add_(0, self.owner, partial)


def piece_layout(major: torch.Tensor, minor: torch.Tensor, n_major: int, n_minor: int,
                 piece: int | None = None, max_padding: float = 4.0) -> PieceLayout | None:
    """Lay the items of each row (major, minor) out in pieces of ``piece`` slots.

    Rows are numbered ``major · n_minor + minor`` (e.g. centre atom and neighbour-element
    pair). Each row's items fill whole pieces, the last one zero-padded. Returns ``None``
    where the padded form does not pay or cannot be used: when the padding would hold more
    than ``max_padding`` times the items (mostly rows of one or two items), and under
    ``torch.jit.trace`` (the number of pieces would be frozen at the example's value); sum
    with :func:`scatter_outer_sum` then, which gives the same values.

    Args:
        major: (T,) long, non-decreasing, in [0, n_major).
        minor: (T,) long in [0, n_minor).
        n_major, n_minor: the number of major and minor values.
        piece: slots per piece; by default 16 when the rows that have items hold fewer
            than 256 on average (liquid water with ANI's 3.5 Å angular cutoff: 16 was
            fastest, against 32, 64 and padding to the longest row), else 64 (n2p2's water
            potential, 6.35 Å: ~1800 per row, where larger matrices halve the bmm time).
        max_padding: largest slots / items ratio for the padded layout.
    """
    n_items, n_rows = major.shape[0], n_major * n_minor
    if n_items == 0 or torch.jit.is_tracing():
        return None
    rows = major * n_minor + minor
    counts = torch.bincount(rows, minlength=n_rows)
    if piece is None:
        piece = 16 if n_items < 256 * int(torch.count_nonzero(counts)) else 64
    pieces = (counts + piece - 1) // piece  # per row
    n_pieces = int(pieces.sum())
    if n_pieces * piece > max_padding * n_items:
        return None
    first_piece = torch.cumsum(pieces, 0) - pieces
    rank = _rank_within_rows(major, minor, n_major, n_minor)
    slot = (first_piece.index_select(0, rows) + rank // piece) * piece + rank % piece
    owner = torch.repeat_interleave(torch.arange(n_rows, device=rows.device), pieces, output_size=n_pieces)
    return PieceLayout(slot, owner, piece, n_rows)


def scatter_outer_sum(left: torch.Tensor, right: torch.Tensor, rows: torch.Tensor, n_rows: int) -> torch.Tensor:
    """Σ over the items of each row of left ⊗ right by scattering the explicit (T, S·A)
    products: (T, S), (T, A), rows (T,) → (n_rows, S, A). The form for any layout."""
    n_items, n_left, n_right = left.shape[0], left.shape[1], right.shape[1]
    products = (left.unsqueeze(2) * right.unsqueeze(1)).reshape(n_items, n_left * n_right)
    out = left.new_zeros(n_rows, n_left * n_right).index_add_(0, rows, products)
    return out.view(n_rows, n_left, n_right)


def segment_outer_sum(
    left: torch.Tensor,
    right: torch.Tensor,
    major: torch.Tensor,
    minor: torch.Tensor,
    n_major: int,
    n_minor: int,
    piece: int | None = None,
    max_padding: float = 4.0,
) -> torch.Tensor:
    """Σ over the items of each row of the outer product of ``left`` and ``right``.

    The items are copied into the padded pieces of :func:`piece_layout` (or, where that
    returns ``None``, summed by :func:`scatter_outer_sum`).

    Args:
        left: (T, S) per-item factors.
        right: (T, A) per-item factors.
        major, minor, n_major, n_minor, piece, max_padding: as for :func:`piece_layout`.

    Returns:
        (n_major · n_minor, S, A), differentiable in ``left`` and ``right``.
    """
    layout = piece_layout(major, minor, n_major, n_minor, piece, max_padding)
    if layout is None:
        return scatter_outer_sum(left, right, major * n_minor + minor, n_major * n_minor)
    # In-place index_copy_ into fresh zeros (no copy of the padding); its backward is a
    # plain gather of the gradient.
    left_slots = left.new_zeros(layout.n_slots, left.shape[1]).index_copy_(0, layout.slot, left)
    right_slots = right.new_zeros(layout.n_slots, right.shape[1]).index_copy_(0, layout.slot, right)
    return layout.outer_sum(left_slots, right_slots)
