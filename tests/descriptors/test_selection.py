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
