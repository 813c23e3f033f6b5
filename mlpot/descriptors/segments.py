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

import torch

__all__ = ["segment_outer_sum"]


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

    Rows are (major, minor) pairs, numbered ``major · n_minor + minor`` (e.g. centre atom
    and neighbour-element pair). Each row's items are laid out in pieces of ``piece`` slots
    (the last one zero-padded), one ``bmm`` sums every piece, and the pieces of a row are
    added up. When the padding would hold more than ``max_padding`` times the items (mostly
    rows of one or two items), the sum falls back to a scatter of explicit products, which
    gives the same values.

    Args:
        left: (T, S) per-item factors.
        right: (T, A) per-item factors.
        major: (T,) long, non-decreasing, in [0, n_major).
        minor: (T,) long in [0, n_minor).
        n_major, n_minor: the number of major and minor values.
        piece: slots per piece; by default 16 when the rows that have items hold fewer
            than 256 on average (liquid water with ANI's 3.5 Å angular cutoff: 16 was
            fastest, against 32, 64 and padding to the longest row), else 64 (n2p2's water
            potential, 6.35 Å: ~1800 per row, where larger matrices halve the bmm time).
        max_padding: largest slots / items ratio for the padded layout.

    Returns:
        (n_major · n_minor, S, A), differentiable in ``left`` and ``right``.
    """
    n_items, n_left, n_right = left.shape[0], left.shape[1], right.shape[1]
    n_rows = n_major * n_minor
    rows = major * n_minor + minor
    # Under torch.jit.trace the number of pieces would be frozen at the example's value, so
    # a trace always records the scatter form (valid for any structure).
    tracing = torch.jit.is_tracing()
    if n_items == 0 and not tracing:
        return left.new_zeros(n_rows, n_left, n_right)
    if not tracing:
        counts = torch.bincount(rows, minlength=n_rows)
        if piece is None:
            piece = 16 if n_items < 256 * int(torch.count_nonzero(counts)) else 64
        pieces = (counts + piece - 1) // piece  # per row
        n_pieces = int(pieces.sum())
    if tracing or n_pieces * piece > max_padding * n_items:
        products = (left.unsqueeze(2) * right.unsqueeze(1)).reshape(n_items, n_left * n_right)
        out = left.new_zeros(n_rows, n_left * n_right).index_add_(0, rows, products)
        return out.view(n_rows, n_left, n_right)
    first_piece = torch.cumsum(pieces, 0) - pieces
    rank = _rank_within_rows(major, minor, n_major, n_minor)
    slot = (first_piece.index_select(0, rows) + rank // piece) * piece + rank % piece
    # In-place index_copy_ into fresh zeros (no copy of the padding); its backward is a
    # plain gather of the gradient.
    left_pieces = left.new_zeros(n_pieces * piece, n_left).index_copy_(0, slot, left)
    right_pieces = right.new_zeros(n_pieces * piece, n_right).index_copy_(0, slot, right)
    partial = torch.bmm(left_pieces.view(n_pieces, piece, n_left).transpose(1, 2),
                        right_pieces.view(n_pieces, piece, n_right))  # (pieces, S, A)
    owner = torch.repeat_interleave(torch.arange(n_rows, device=rows.device), pieces, output_size=n_pieces)
    return partial.new_zeros(n_rows, n_left, n_right).index_add_(0, owner, partial)
