"""Neighbour pairs, pair vectors and triplets against ASE's neighbour list."""

import itertools

import numpy as np
import pytest
import torch
from ase.neighborlist import primitive_neighbor_list

from mlpot.data import collate
from mlpot.neighbours import (
    edge_vectors,
    structure_pairs,
    triplets_from_pairs,
)
from structures_for_tests import ethanol, nacl_crystal, sic_tiny_cell, slab, water_box

STRUCTURES = {
    "molecule": ethanol,
    "water_triclinic": water_box,
    "crystal": nacl_crystal,
    "tiny_cell_many_images": sic_tiny_cell,
    "slab_mixed_pbc": slab,
}


def _as_set(i, j, shifts):
    return sorted(zip(i.tolist(), j.tolist(), map(tuple, np.asarray(shifts).tolist())))


@pytest.mark.parametrize("name", sorted(STRUCTURES))
@pytest.mark.parametrize("cutoff", [3.0, 6.5])
def test_pairs_match_ase(name, cutoff):
    atoms = STRUCTURES[name]()
    i, j, s = structure_pairs(atoms.positions, atoms.cell.array, atoms.pbc, cutoff)
    ia, ja, sa = primitive_neighbor_list("ijS", atoms.pbc, atoms.cell.array, atoms.positions, cutoff)
    assert _as_set(i, j, s) == _as_set(ia, ja, sa)
    assert np.all(np.diff(i) >= 0), "pairs must be sorted by centre"


def test_batched_pairs_and_vectors_match_ase_distances():
    structures = [STRUCTURES[n]() for n in sorted(STRUCTURES)]
    cutoff = 5.0
    batch = collate(structures, cutoff=cutoff, labels=False)
    vec = edge_vectors(batch.positions, batch.cell, batch.system_idx, batch.edge_index, batch.edge_shift)
    got = torch.linalg.vector_norm(vec, dim=1).numpy()
    expected = []
    for atoms in structures:
        d = primitive_neighbor_list("ijd", atoms.pbc, atoms.cell.array, atoms.positions, cutoff)
        expected.append(np.sort(d[2]))
    offsets = np.concatenate([[0], np.cumsum([len(a) for a in structures])])
    centre = batch.edge_index[0].numpy()
    for b, atoms in enumerate(structures):
        sel = (centre >= offsets[b]) & (centre < offsets[b + 1])
        np.testing.assert_allclose(np.sort(got[sel]), expected[b], rtol=1e-12)
    # Pairs never cross structures.
    sys_i = batch.system_idx[batch.edge_index[0]]
    sys_j = batch.system_idx[batch.edge_index[1]]
    assert torch.equal(sys_i, sys_j)
    assert bool((batch.edge_index[0].diff() >= 0).all()), "pairs must be sorted by centre"


@pytest.mark.parametrize("n_atoms", [1, 300, 2**16, 2**16 + 1, 5 * 2**16 + 7])
def test_centre_order_is_a_stable_sort(n_atoms):
    """The radix grouping by centre (one 16-bit pass, or several above 2^16 atoms) equals a
    stable comparison sort."""
    from mlpot.neighbours.pairs import _centre_order

    centre = np.random.default_rng(n_atoms).integers(0, n_atoms, 20000)
    np.testing.assert_array_equal(_centre_order(centre, n_atoms), np.argsort(centre, kind="stable"))


@pytest.mark.parametrize("cutoff", [0.0, -1.0, float("nan"), float("inf")])
def test_bad_cutoff_is_rejected(cutoff):
    atoms = ethanol()
    with pytest.raises(ValueError, match="cutoff"):
        structure_pairs(atoms.positions, atoms.cell.array, atoms.pbc, cutoff)


def test_isolated_atom_has_no_pairs():
    atoms = ethanol()
    atoms.positions[0] += [50.0, 0.0, 0.0]
    batch = collate([atoms], cutoff=3.0, labels=False)
    assert not (batch.edge_index == 0).any()


def test_triplets_enumerate_every_unordered_neighbour_pair():
    rng = np.random.default_rng(0)
    counts = [0, 1, 2, 5, 0, 7, 3]
    centre = torch.tensor(np.repeat(np.arange(len(counts)), counts))
    first, second = triplets_from_pairs(centre, len(counts))
    expected = []
    start = 0
    for c in counts:
        expected += list(itertools.combinations(range(start, start + c), 2))
        start += c
    assert sorted(zip(first.tolist(), second.tolist())) == sorted(expected)
    assert len(first) == len(expected)
    # Large counts: the float square-root inversion must stay exact.
    big = torch.zeros(3000, dtype=torch.long)
    f, s = triplets_from_pairs(big, 1)
    assert len(f) == 3000 * 2999 // 2
    assert bool((f < s).all()) and int(s.max()) == 2999
    pairs = f * 3000 + s
    assert len(torch.unique(pairs)) == len(pairs)
    del rng


def test_edge_vectors_differentiable_in_cell():
    atoms = nacl_crystal()
    batch = collate([atoms], cutoff=4.0, labels=False)
    cell = batch.cell.clone().requires_grad_(True)
    vec = edge_vectors(batch.positions, cell, batch.system_idx, batch.edge_index, batch.edge_shift)
    (g,) = torch.autograd.grad(vec.sum(), cell)
    # d(sum r_ij)/d cell = sum of shifts (per lattice row, broadcast over xyz).
    expected = batch.edge_shift.sum(0).unsqueeze(1).expand(3, 3)
    torch.testing.assert_close(g[0], expected)
