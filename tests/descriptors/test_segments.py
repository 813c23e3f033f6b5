"""The padded-bmm segment sum of outer products against the explicit loop it replaces."""

import pytest
import torch

from mlpot.descriptors.segments import segment_outer_sum


def _reference(left, right, major, minor, n_major, n_minor):
    out = torch.zeros(n_major * n_minor, left.shape[1], right.shape[1], dtype=left.dtype)
    for t in range(left.shape[0]):
        out[major[t] * n_minor + minor[t]] += torch.outer(left[t], right[t])
    return out


def _items(seed, n_major=7, n_minor=3, crowded=False):
    g = torch.Generator().manual_seed(seed)
    counts = torch.randint(0, 9, (n_major,), generator=g)
    if crowded:  # one long row among short ones: the padded pieces pay (bmm path); without
        counts[3] = 200  # it every row is shorter than a piece and the scatter form is used
    major = torch.repeat_interleave(torch.arange(n_major), counts)
    minor = torch.randint(0, n_minor, major.shape, generator=g)
    left = torch.rand(major.shape[0], 4, generator=g, dtype=torch.float64)
    right = torch.rand(major.shape[0], 5, generator=g, dtype=torch.float64)
    return left, right, major, minor, n_major, n_minor


@pytest.mark.parametrize("crowded", [False, True], ids=["scatter-path", "bmm-path"])
def test_equals_explicit_loop(crowded):
    args = _items(0, crowded=crowded)
    torch.testing.assert_close(segment_outer_sum(*args), _reference(*args), rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("crowded", [False, True], ids=["scatter-path", "bmm-path"])
def test_gradients(crowded):
    left, right, major, minor, n_major, n_minor = _items(1, n_major=4, crowded=crowded)
    left.requires_grad_(True)
    right.requires_grad_(True)
    assert torch.autograd.gradcheck(
        lambda a, b: segment_outer_sum(a, b, major, minor, n_major, n_minor), (left, right))


def test_no_items_gives_zeros():
    empty = torch.zeros(0, dtype=torch.long)
    out = segment_outer_sum(torch.zeros(0, 2), torch.zeros(0, 3), empty, empty, 4, 2)
    assert out.shape == (8, 2, 3) and not out.any()


def test_long_rows_use_larger_pieces_and_equal_the_loop():
    """Rows of ~330 items (long angular cutoffs) take 64-slot pieces: same sums."""
    g = torch.Generator().manual_seed(2)
    major = torch.repeat_interleave(torch.arange(2), torch.tensor([1000, 990]))
    minor = torch.randint(0, 3, major.shape, generator=g)
    left = torch.rand(major.shape[0], 4, generator=g, dtype=torch.float64)
    right = torch.rand(major.shape[0], 5, generator=g, dtype=torch.float64)
    args = (left, right, major, minor, 2, 3)
    expected = _reference(*args)
    torch.testing.assert_close(segment_outer_sum(*args), expected, rtol=1e-12, atol=1e-10)
    torch.testing.assert_close(segment_outer_sum(*args, piece=16), expected, rtol=1e-12, atol=1e-10)


def test_gathering_through_spread_indices_equals_the_loop():
    """Per-pair values gathered with spread indices (a zero dummy row in the padding), as
    the angular symmetry functions do, give the same sums as the explicit loop."""
    from mlpot.descriptors.segments import piece_layout

    left, right, major, minor, n_major, n_minor = _items(3, crowded=True)
    # Each item reads row `item` of per-"pair" tables that end with one zero dummy row.
    items = torch.arange(major.shape[0])
    left_table = torch.cat([left, torch.zeros(1, left.shape[1], dtype=left.dtype)])
    right_table = torch.cat([right, torch.full((1, right.shape[1]), 7.0, dtype=right.dtype)])
    layout = piece_layout(major, minor, n_major, n_minor)
    assert layout is not None and layout.n_slots > major.shape[0]  # padded
    spread = layout.spread(items, fill=major.shape[0])
    assert torch.equal(spread[layout.slot], items)
    got = layout.outer_sum(left_table.index_select(0, spread), right_table.index_select(0, spread))
    torch.testing.assert_close(got, _reference(left, right, major, minor, n_major, n_minor),
                               rtol=1e-12, atol=1e-12)
