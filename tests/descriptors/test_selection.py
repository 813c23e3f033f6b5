"""Symmetry-function selection (CUR / farthest point): deterministic, scale- and
shift-invariant, non-redundant; the selected spec computes exactly the selected columns."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from mlpot.data import collate
from mlpot.descriptors import SymmetryFunctions, SymmetryFunctionSpec
from mlpot.descriptors.selection import select_columns, select_symmetry_functions
from structures_for_tests import water_box


def redundant_matrix(seed=0):
    """Columns: a, 3a + 1 (redundant with a), b, a + b (redundant with a and b), c, constant."""
    rng = np.random.default_rng(seed)
    a, b, c = rng.normal(size=(3, 200))
    return np.stack([a, 3 * a + 1, b, a + b, c, np.full(200, 2.0)], axis=1)


@pytest.mark.parametrize("method", ["cur", "fps"])
def test_selection_is_deterministic_scale_invariant_and_skips_redundant_columns(method):
    x = redundant_matrix()
    first = select_columns(x, 3, method)
    assert first == select_columns(x.copy(), 3, method)
    scaled = x * np.array([1e-3, 7.0, 1e4, 0.2, 50.0, 3.0]) + np.array([5, -2, 1e3, 0, 7, 1])
    assert select_columns(scaled, 3, method) == first
    # Three independent directions: never both of a and 3a + 1, never a + b with a and b.
    picked = set(first)
    assert not {0, 1} <= picked and not {0, 2, 3} <= picked and 5 not in picked
    assert len(picked) == 3
    assert select_columns(x, 6, method)[-1] == 5  # the constant column comes last


def test_bad_counts_and_methods_are_named():
    with pytest.raises(ValueError, match="cannot select 7 of 6"):
        select_columns(redundant_matrix(), 7)
    with pytest.raises(ValueError, match="'cur' or 'fps'"):
        select_columns(redundant_matrix(), 2, "random")


def test_selected_spec_computes_the_selected_columns():
    spec = SymmetryFunctionSpec.default(["H", "O"], cutoff=4.0, radial_count=6, angular_count=2)
    structures = [water_box(seed=s) for s in range(3)]
    batch = collate(structures, cutoff=spec.max_cutoff, dtype=torch.float64, labels=False)
    selected = select_symmetry_functions(spec, [batch], {"H": 5, "O": 7}, method="cur")
    full, small = SymmetryFunctions(spec), SymmetryFunctions(selected)
    assert small.n_features == {"H": 5, "O": 7}
    g_full, g_small = full(batch, scaled=False), small(batch, scaled=False)
    species = full.species(batch.numbers)
    for e, el in enumerate(full.elements):
        names_full = full.feature_names(el)
        for j, name in enumerate(small.feature_names(el)):
            generic = name.replace(f"[{el}|", "[")  # the same term, restricted to its centre
            match = [k for k, n in enumerate(names_full) if n.replace(f"[{el}|", "[") == generic]
            assert len(match) == 1, name
            rows = species == e
            torch.testing.assert_close(g_small[rows, j], g_full[rows, match[0]], rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("method", ["cur", "fps"])
def test_a_row_weight_is_that_many_copies_of_the_row(method):
    x = redundant_matrix(seed=3)[:, :5]
    weights = np.ones(len(x))
    weights[:20] = 3.0
    copies = np.concatenate([x, x[:20], x[:20]])
    assert select_columns(x, 4, method, row_weights=weights) == select_columns(copies, 4, method)
    # Only the ratios matter, and equal weights are no weights.
    assert select_columns(x, 4, method, row_weights=weights * 0.01) == select_columns(x, 4, method, row_weights=weights)
    assert select_columns(x, 4, method, row_weights=np.full(len(x), 2.5)) == select_columns(x, 4, method)


def rare_group_matrix(seed=0, n_bulk=990, n_rare=10):
    """Column 0: a; column 1: a on the bulk rows, an independent c on the rare rows (the only
    column that tells the rare rows apart); column 2: 0.95 a + 0.31 b on the bulk rows, 0 on the
    rare ones. And the rows' group labels."""
    rng = np.random.default_rng(seed)
    a, b, c = rng.normal(size=(3, n_bulk + n_rare))
    bulk = np.arange(n_bulk + n_rare) < n_bulk
    x = np.stack([a, np.where(bulk, a, c), np.where(bulk, 0.95 * a + 0.31 * b, 0.0)], axis=1)
    return x, np.where(bulk, "bulk", "rare")


@pytest.mark.parametrize("method", ["cur", "fps"])
def test_balanced_weights_keep_the_column_a_rare_group_needs(method):
    from mlpot.descriptors.selection import _balanced_weights

    x, groups = rare_group_matrix()
    # Each atom alike: column 1 looks like column 0 (990 of its 1000 rows are a) and is dropped.
    assert 1 not in select_columns(x, 2, method)
    # Each group alike: half of column 1's weight is the rare rows' own variation, and it is kept.
    weights = _balanced_weights(groups)
    np.testing.assert_allclose([weights[groups == g].sum() for g in ("bulk", "rare")], [1.0, 1.0])
    assert 1 in select_columns(x, 2, method, row_weights=weights)


def test_bad_row_weights_are_named():
    x = redundant_matrix()
    with pytest.raises(ValueError, match=r"one weight per row, shape \(200,\)"):
        select_columns(x, 2, row_weights=np.ones(199))
    with pytest.raises(ValueError, match="non-negative"):
        select_columns(x, 2, row_weights=np.r_[-1.0, np.ones(199)])


def test_balance_by_needs_the_key_and_with_one_group_changes_nothing():
    from mlpot.descriptors.selection import select_on_structures

    spec = SymmetryFunctionSpec.default(["H", "O"], cutoff=4.0, radial_count=6, angular_count=2)
    structures = [water_box(seed=s) for s in range(3)]
    with pytest.raises(ValueError, match=r"3 training structure\(s\) have no info\['group'\]"):
        select_on_structures(spec, structures, 5, balance_by="group")
    for atoms in structures:
        atoms.info["group"] = "liquid"
    balanced = select_on_structures(spec, structures, 5, balance_by="group", batch_size=2)
    assert balanced == select_on_structures(spec, structures, 5)
    # Two groups of different sizes: a valid selection of the same count.
    structures[0].info["group"] = "other"
    two = SymmetryFunctions(select_on_structures(spec, structures, 5, balance_by="group", batch_size=2))
    assert two.n_features == {"H": 5, "O": 5}
