"""Cached descriptors: the pair Jacobian and the forces, stress and losses computed from it."""

from __future__ import annotations

import pytest
import torch

from mlpot.data import collate
from mlpot.descriptors import SymmetryFunctions, SymmetryFunctionSpec
from mlpot.models import NetworkConfig, Potential
from mlpot.neighbours import edge_vectors
from mlpot.training.data import BatchStore
from structures_for_tests import ethanol, nacl_crystal, slab, water_box
from test_descriptors import FULL, RESTRICTED


def autograd_jacobian(sf: SymmetryFunctions, batch) -> torch.Tensor:
    """Reference: one reverse-mode pass per feature column, (P, F, 3)."""
    vec = edge_vectors(batch.positions, batch.cell, batch.system_idx, batch.edge_index,
                       batch.edge_shift).requires_grad_(True)
    raw = sf.compute_from_vectors(vec, sf.species(batch.numbers), batch.edge_index, batch.positions.shape[0])
    cols = [torch.autograd.grad(raw[:, f].sum(), vec, retain_graph=True)[0] for f in range(raw.shape[1])]
    return torch.stack(cols, dim=1)


@pytest.mark.parametrize("config", [FULL, RESTRICTED], ids=["full-layout", "per-element-columns"])
def test_pair_jacobian_matches_reverse_mode(config):
    sf = SymmetryFunctions(SymmetryFunctionSpec.from_dict(config)).double()
    batch = collate([water_box(0), water_box(1)], cutoff=sf.cutoff, dtype=torch.float64)
    species = sf.species(batch.numbers)
    raw, jac = sf.jacobian(batch.positions, species, batch.cell, batch.system_idx,
                           batch.edge_index, batch.edge_shift)
    expected = autograd_jacobian(sf, batch)
    dense = sf.dense_jacobian(jac, species, batch.edge_index)
    assert dense.shape == (batch.edge_index.shape[1], raw.shape[1], 3)
    assert float(expected.abs().max()) > 1e-2  # the comparison is not between zeros
    torch.testing.assert_close(dense, expected, rtol=1e-10, atol=1e-12)
    torch.testing.assert_close(raw, sf(batch, scaled=False), rtol=0, atol=0)


@pytest.mark.parametrize("config", [FULL, RESTRICTED], ids=["full-layout", "per-element-columns"])
def test_pair_gradients_equal_reverse_mode(config):
    """Σ_f w_{i,f} ∂G_{i,f}/∂r_p for random weights w, against autograd of Σ w·G."""
    sf = SymmetryFunctions(SymmetryFunctionSpec.from_dict(config)).double()
    batch = collate([water_box(0), water_box(3)[:9]], cutoff=sf.cutoff, dtype=torch.float64)
    species = sf.species(batch.numbers)
    _, jac = sf.jacobian(batch.positions, species, batch.cell, batch.system_idx, batch.edge_index,
                         batch.edge_shift)
    vec = edge_vectors(batch.positions, batch.cell, batch.system_idx, batch.edge_index,
                       batch.edge_shift).requires_grad_(True)
    raw = sf.compute_from_vectors(vec, species, batch.edge_index, batch.positions.shape[0])
    weights = torch.randn(raw.shape, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    (expected,) = torch.autograd.grad((weights * raw).sum(), vec)
    got = sf.pair_gradients(weights, species, batch.edge_index, jac)
    torch.testing.assert_close(got, expected, rtol=1e-10, atol=1e-12)
    # Selecting pairs (as a training batch does) keeps each pair's blocks.
    pairs = torch.randperm(batch.edge_index.shape[1], generator=torch.Generator().manual_seed(1))[:50]
    picked = jac.select(pairs)
    torch.testing.assert_close(sf.dense_jacobian(picked, species, batch.edge_index[:, pairs]),
                               sf.dense_jacobian(jac, species, batch.edge_index)[pairs], rtol=0, atol=0)


def test_forward_from_descriptors_equals_forward():
    """Energy, forces and stress from (G, J) equal the direct path (periodic, slab, molecule)."""
    torch.manual_seed(0)
    spec = SymmetryFunctionSpec.default(["H", "C", "O", "Na", "Cl"], cutoff=4.5)
    model = Potential(spec, NetworkConfig(depth=3, width=16, activation="silu")).double()
    structures = [nacl_crystal(), ethanol(), water_box(2)]
    batch = collate(structures, cutoff=model.cutoff, dtype=torch.float64)
    model.fit_to_data([batch])
    raw, jac = model.descriptor.jacobian(batch.positions, model.descriptor.species(batch.numbers),
                                         batch.cell, batch.system_idx, batch.edge_index, batch.edge_shift)
    direct = model(batch, forces=True, stress=True, create_graph=False)
    cached = model.forward_from_descriptors(batch, raw, jac, forces=True, stress=True, create_graph=False)
    for key in ("energy", "atomic_energies", "forces"):
        torch.testing.assert_close(cached[key], direct[key], rtol=1e-10, atol=1e-10)
    periodic = batch.pbc.all(dim=1)
    torch.testing.assert_close(cached["stress"][periodic], direct["stress"][periodic], rtol=1e-9, atol=1e-12)
    assert torch.isnan(cached["stress"][~periodic]).all()
    with pytest.raises(ValueError, match="one row per pair"):
        model.forward_from_descriptors(batch, raw, jac.select(torch.arange(jac.n_pairs - 1)))


def test_force_training_gradients_equal_direct_path():
    """The weight gradient of a force loss (double backward) agrees between the two paths."""
    torch.manual_seed(1)
    spec = SymmetryFunctionSpec.default(["Na", "Cl"], cutoff=4.0)
    model = Potential(spec, NetworkConfig(depth=2, width=8, block="residual")).double()
    batch = collate([nacl_crystal(), slab()], cutoff=model.cutoff, dtype=torch.float64)
    model.fit_to_data([batch])
    raw, jac = model.descriptor.jacobian(batch.positions, model.descriptor.species(batch.numbers),
                                         batch.cell, batch.system_idx, batch.edge_index, batch.edge_shift)
    grads = []
    for cached in (False, True):
        model.zero_grad()
        out = (model.forward_from_descriptors(batch, raw, jac, stress=True, create_graph=True) if cached
               else model(batch, stress=True, create_graph=True))
        stress = out["stress"][batch.pbc.all(dim=1)]  # the slab has none
        loss = out["forces"].pow(2).sum() + out["energy"].pow(2).sum() + 1e3 * stress.pow(2).sum()
        loss.backward()
        grads.append(torch.cat([p.grad.flatten() for p in model.parameters()]))
    assert float(grads[0].abs().max()) > 0
    torch.testing.assert_close(grads[1], grads[0], rtol=1e-9, atol=1e-12)


def test_store_cache_selects_matching_rows():
    sf = SymmetryFunctions(SymmetryFunctionSpec.from_dict(RESTRICTED)).double()
    structures = [water_box(k) for k in range(5)]
    store = BatchStore(structures, cutoff=sf.cutoff)
    assert store.cached_batch([0, 1])[1] is None
    nbytes = store.cache_descriptors(sf, dtype=torch.float64, chunk=2)
    assert nbytes == store.descriptors.nbytes + store.jacobian.nbytes
    batch, raw, jac = store.cached_batch([3, 0, 3])
    torch.testing.assert_close(raw, sf(batch, scaled=False))
    dense = sf.dense_jacobian(jac, sf.species(batch.numbers), batch.edge_index)
    torch.testing.assert_close(dense, autograd_jacobian(sf, batch), rtol=1e-10, atol=1e-12)
    assert abs(store.descriptor_cache_gib(sf, torch.float64) * 2**30 - nbytes) < 1e-6 * nbytes


def test_cache_folder_reuses_matching_and_rejects_stale_files(tmp_path):
    sf = SymmetryFunctions(SymmetryFunctionSpec.from_dict(FULL)).double()
    structures = [water_box(k) for k in range(3)]
    first = BatchStore(structures, cutoff=sf.cutoff)
    _, loaded = first.load_or_cache_descriptors(sf, tmp_path, dtype=torch.float64)
    assert not loaded and len(list(tmp_path.glob("descriptors-*.pt"))) == 1
    second = BatchStore(structures, cutoff=sf.cutoff)
    _, loaded = second.load_or_cache_descriptors(sf, tmp_path, dtype=torch.float64)
    assert loaded
    torch.testing.assert_close(second.jacobian.state(), first.jacobian.state(), rtol=0, atol=0)
    # Other positions or other symmetry functions: a different file, computed afresh.
    moved = BatchStore([water_box(k + 1) for k in range(3)], cutoff=sf.cutoff)
    assert not moved.load_or_cache_descriptors(sf, tmp_path, dtype=torch.float64)[1]
    other = SymmetryFunctions(SymmetryFunctionSpec.from_dict({**FULL, "cutoff_function": "cos"})).double()
    third = BatchStore(structures, cutoff=other.cutoff)
    assert not third.load_or_cache_descriptors(other, tmp_path, dtype=torch.float64)[1]
    assert len(list(tmp_path.glob("descriptors-*.pt"))) == 3
    # A truncated file is recomputed, not trusted.
    for path in tmp_path.glob("descriptors-*.pt"):
        path.write_bytes(b"truncated")
    again = BatchStore(structures, cutoff=sf.cutoff)
    assert not again.load_or_cache_descriptors(sf, tmp_path, dtype=torch.float64)[1]
    torch.testing.assert_close(again.jacobian.state(), first.jacobian.state(), rtol=0, atol=0)
