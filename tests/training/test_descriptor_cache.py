"""Cached descriptors: the pair Jacobian and the forces, stress and losses computed from it."""

from __future__ import annotations

import numpy as np
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
    # One kernel for both paths: the crystal's near-constant features make the scaler
    # amplify rounding differences between the kernels (their Jacobians agree to 1e-10 in
    # test_angular_kernel.py) beyond this test's 1e-9.
    model.descriptor.kernel = "torch"
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


def test_cache_size_counts_angular_pairs_in_chunks_of_structures(monkeypatch):
    """The estimate does not depend on the chunk, and no pass holds more pair vectors than
    its chunk of structures owns."""
    import mlpot.training.data as data

    short_angular = [{"kind": "G4", "eta": 0.1, "zetas": [1], "lambdas": [-1, 1], "cutoff": 3.0}]
    sf = SymmetryFunctions(SymmetryFunctionSpec.from_dict({**FULL, "angular": short_angular})).double()
    structures = [water_box(k) for k in range(4)] + [water_box(4)[:9], water_box(5)[:3]]
    store = BatchStore(structures, cutoff=sf.cutoff)
    d = store.data
    dist = torch.linalg.vector_norm(edge_vectors(d.positions, d.cell, d.system_idx, d.edge_index, d.edge_shift), dim=1)
    n_angular = int((dist < sf.angular_cutoff).sum())
    assert 0 < n_angular < d.edge_index.shape[1]  # the count matters
    n_pairs, n_atoms = d.edge_index.shape[1], d.positions.shape[0]
    want = ((n_atoms * sf.max_features + n_pairs * (sf.n_radial + 3) + 3 * n_angular * sf.n_elements * sf.n_angular)
            * 4 + 8 * n_pairs) / 2**30
    # The estimate is what the cache really holds.
    assert store.cache_descriptors(sf, dtype=torch.float32) == round(want * 2**30)
    store.clear_descriptor_cache()
    sizes = []

    def spy(positions, cell, system_idx, edge_index, edge_shift):
        sizes.append(edge_index.shape[1])
        return edge_vectors(positions, cell, system_idx, edge_index, edge_shift)

    monkeypatch.setattr(data, "edge_vectors", spy)
    pairs = torch.bincount(d.system_idx[d.edge_index[0]], minlength=len(structures)).tolist()
    for chunk in (1, 3, 1024):
        sizes.clear()
        assert store.descriptor_cache_gib(sf, torch.float32, chunk=chunk) == want
        assert sizes == [sum(pairs[lo:lo + chunk]) for lo in range(0, len(structures), chunk)]


def test_training_computes_the_cache_size_only_when_needed(tmp_path, monkeypatch):
    """hdf5 mode with an existing file and mode none never estimate the cache's size;
    memory mode and a new hdf5 file do (limit and free-disk checks)."""
    import ase.io

    from mlpot.training import TrainConfig, train
    from test_training_run import config, emt_structures

    ase.io.write(tmp_path / "train.extxyz", emt_structures(10, seed=0))
    calls = []
    estimate = BatchStore.descriptor_cache_gib

    def spy(self, *args, **kwargs):
        calls.append(1)
        return estimate(self, *args, **kwargs)

    monkeypatch.setattr(BatchStore, "descriptor_cache_gib", spy)
    shared = str(tmp_path / "cache")
    for run, mode, want in (("new", "hdf5", 1), ("reuse", "hdf5", 0), ("none", "none", 0), ("memory", "memory", 1)):
        calls.clear()
        cfg = config(tmp_path, epochs=1, descriptor_cache=mode, descriptor_cache_dir=shared)
        train(TrainConfig.from_dict(cfg.to_dict()), tmp_path / run, progress=False, log=lambda _: None)
        assert len(calls) == want, run


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


# --------------------------------------------------------------------------- HDF5 file backend

def _assert_same_cache(got, want) -> None:
    """Two ``cached_batch`` results hold bit-identical descriptors and Jacobian blocks."""
    (b1, raw1, jac1), (b2, raw2, jac2) = got, want
    for x, y in ((b1.positions, b2.positions), (b1.edge_index, b2.edge_index), (raw1, raw2),
                 (jac1.radial, jac2.radial), (jac1.angular, jac2.angular), (jac1.angular_row, jac2.angular_row),
                 (jac1.direction, jac2.direction)):
        assert x.dtype == y.dtype and torch.equal(x, y)


@pytest.mark.parametrize("config", [FULL, RESTRICTED], ids=["full-layout", "per-element-columns"])
def test_hdf5_cache_batches_equal_memory_cache(config, tmp_path):
    """The file backend returns what the in-memory cache does, reading only the batch's rows."""
    from mlpot.training.descriptor_file import DescriptorFile

    sf = SymmetryFunctions(SymmetryFunctionSpec.from_dict(config)).double()
    structures = [water_box(k) for k in range(4)] + [water_box(4)[:9], water_box(5)[:3]]
    memory = BatchStore(structures, cutoff=sf.cutoff)
    memory.cache_descriptors(sf, dtype=torch.float64, chunk=4)
    disk = BatchStore(structures, cutoff=sf.cutoff)
    nbytes, loaded = disk.open_or_build_descriptor_file(sf, tmp_path, dtype=torch.float64, chunk=4, log=None)
    assert not loaded and nbytes == (tmp_path / disk.descriptor_file.path.name).stat().st_size
    assert disk.has_descriptor_cache and disk.descriptors is None and disk.jacobian is None
    assert int((memory.jacobian.angular_row >= 0).sum()) > 0
    f = disk.descriptor_file
    for indices in ([3, 0, 3], [5, 1, 2], list(range(6)), [4], [2, 3], []):
        f.rows_read.clear()
        _assert_same_cache(disk.cached_batch(indices), memory.cached_batch(indices))
        # Each distinct structure's rows are read once, and nothing else.
        unique = sorted(set(indices))
        for name, offsets in (("descriptors", f.atom_offsets), ("radial", f.pair_offsets),
                              ("direction", f.pair_offsets), ("angular", f.angular_offsets)):
            assert f.rows_read.get(name, 0) == sum(int(offsets[k + 1] - offsets[k]) for k in unique), name
    # The backend holds the offsets and the file handle, no array of the cache's size.
    held = [v for v in vars(f).values() if isinstance(v, (torch.Tensor, np.ndarray))]
    assert held and all(v.size == len(structures) + 1 for v in held)
    assert isinstance(f, DescriptorFile) and f.dtype == torch.float64


def test_hdf5_cache_is_written_chunk_by_chunk(tmp_path, monkeypatch):
    """Building appends one chunk of structures at a time: the cache is never whole in memory."""
    import mlpot.training.descriptor_file as descriptor_file

    appended = []
    original = descriptor_file._append

    def spy(f, name, values, *args):
        appended.append((name, len(values)))
        original(f, name, values, *args)

    monkeypatch.setattr(descriptor_file, "_append", spy)
    sf = SymmetryFunctions(SymmetryFunctionSpec.from_dict(RESTRICTED)).double()
    store = BatchStore([water_box(k) for k in range(5)], cutoff=sf.cutoff)
    store.open_or_build_descriptor_file(sf, tmp_path, dtype=torch.float32, chunk=2, log=None)
    rows = [n for name, n in appended if name == "descriptors"]
    assert rows == [int(store.n_atoms[k:k + 2].sum()) for k in range(0, 5, 2)]
    assert store.descriptor_file.dtype == torch.float32
    raw = store.cached_batch([1])[1]
    assert raw.dtype == torch.float32 and raw.shape[0] == int(store.n_atoms[1])


def test_hdf5_cache_reuses_complete_files_and_rebuilds_broken_ones(tmp_path):
    import h5py

    sf = SymmetryFunctions(SymmetryFunctionSpec.from_dict(FULL)).double()
    structures = [water_box(k) for k in range(3)]
    first = BatchStore(structures, cutoff=sf.cutoff)
    assert not first.open_or_build_descriptor_file(sf, tmp_path, dtype=torch.float64, log=None)[1]
    (path,) = tmp_path.glob("descriptors-*.h5")
    assert path.stem == "descriptors-" + first.descriptor_cache_key(sf, torch.float64)[:20]
    assert not list(tmp_path.glob(".*tmp*"))  # the temporary file was renamed into place
    reference = first.cached_batch([2, 0])
    first.clear_descriptor_cache()
    stamp = path.stat().st_mtime_ns
    second = BatchStore(structures, cutoff=sf.cutoff)
    assert second.open_or_build_descriptor_file(sf, tmp_path, dtype=torch.float64, log=None)[1]
    assert path.stat().st_mtime_ns == stamp
    _assert_same_cache(second.cached_batch([2, 0]), reference)
    second.clear_descriptor_cache()
    # Other data or another dtype: another file.
    moved = BatchStore([water_box(k + 1) for k in range(3)], cutoff=sf.cutoff)
    assert not moved.open_or_build_descriptor_file(sf, tmp_path, dtype=torch.float64, log=None)[1]
    assert not moved.open_or_build_descriptor_file(sf, tmp_path, dtype=torch.float32, log=None)[1]
    moved.clear_descriptor_cache()
    assert len(list(tmp_path.glob("descriptors-*.h5"))) == 3
    # A truncated file, and one whose writing never set "complete", are rebuilt with a message.
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    for breakage in ("truncated", "incomplete"):
        messages = []
        store = BatchStore(structures, cutoff=sf.cutoff)
        assert not store.open_or_build_descriptor_file(sf, tmp_path, dtype=torch.float64, log=messages.append)[1]
        assert len(messages) == 1 and "rebuilding" in messages[0], (breakage, messages)
        assert ("incomplete" in messages[0]) == (breakage == "incomplete")
        _assert_same_cache(store.cached_batch([2, 0]), reference)
        store.clear_descriptor_cache()
        with h5py.File(path, "r+") as f:
            del f.attrs["complete"]


def test_hdf5_cache_trains_like_memory_and_none(tmp_path):
    """Two epochs of force + stress training: the same metrics with every cache mode."""
    import ase.io

    from mlpot.training import TrainConfig, train
    from test_training_run import config, emt_structures, rows

    ase.io.write(tmp_path / "train.extxyz", emt_structures(20, seed=0))
    histories, lines = {}, []
    for mode in ("memory", "hdf5", "none"):
        cfg = config(tmp_path, epochs=2, descriptor_cache=mode).to_dict()
        cfg["loss"] = {"energy_weight": 1.0, "forces_weight": 10.0, "stress_weight": 1.0}
        train(TrainConfig.from_dict(cfg), tmp_path / mode, progress=False, log=lines.append)
        histories[mode] = rows(tmp_path / mode / "metrics.csv")
    assert len(list((tmp_path / "hdf5" / "descriptor_cache").glob("descriptors-*.h5"))) == 1
    assert any("descriptor_cache" in line and "computed" in line for line in lines)
    keys = ["train_loss", "val_loss", "val_energy_rmse_mev_per_atom", "val_force_rmse_mev_per_a",
            "val_stress_rmse_gpa", "grad_norm/total"]
    assert len(histories["hdf5"]) == 2
    for memory, disk, none in zip(histories["memory"], histories["hdf5"], histories["none"]):
        for key in keys:
            assert disk[key] == memory[key], key  # same numbers in the same order: bit-identical
            assert float(disk[key]) == pytest.approx(float(none[key]), rel=1e-9), key


def test_descriptor_file_closes_as_context_manager_and_reopens_in_copies(tmp_path):
    import pickle

    from mlpot.training.descriptor_file import DescriptorFile

    sf = SymmetryFunctions(SymmetryFunctionSpec.from_dict(RESTRICTED)).double()
    store = BatchStore([water_box(k) for k in range(3)], cutoff=sf.cutoff)
    store.open_or_build_descriptor_file(sf, tmp_path, dtype=torch.float64, log=None)
    path, key = store.descriptor_file.path, store.descriptor_file.key
    store.clear_descriptor_cache()
    with DescriptorFile(path, key) as f:
        handle = f._handle()
        reference = f.read([2, 0])
    assert not handle and f._file is None  # h5py.File is falsy once closed
    # A pickled copy (a spawned worker) holds no handle and opens its own on first read.
    clone = pickle.loads(pickle.dumps(f))
    assert clone._file is None and clone.key == key and clone.rows_read == f.rows_read
    (raw, jac), (raw_ref, jac_ref) = clone.read([2, 0]), reference
    assert torch.equal(raw, raw_ref)
    assert all(torch.equal(getattr(jac, n), getattr(jac_ref, n)) for n in ("radial", "angular", "angular_row", "direction"))
    # As seen from a forked child: the parent's handle is left open, a new one is used.
    inherited = clone._handle()
    clone._pid = -1
    assert clone._handle() is not inherited and inherited
    inherited.close()
    clone.close()


def test_training_closes_the_cache_file_also_on_errors(tmp_path, monkeypatch):
    import ase.io

    import mlpot.training.trainer as trainer
    from mlpot.training import TrainConfig, train
    from test_training_run import config, emt_structures

    ase.io.write(tmp_path / "train.extxyz", emt_structures(10, seed=0))
    handles = []
    open_or_build = BatchStore.open_or_build_descriptor_file

    def spy(self, *args, **kwargs):  # keeps the store and its file alive: no GC can close them
        out = open_or_build(self, *args, **kwargs)
        handles.append((self, self.descriptor_file._handle()))
        return out

    monkeypatch.setattr(BatchStore, "open_or_build_descriptor_file", spy)
    cfg = TrainConfig.from_dict(config(tmp_path, epochs=1, descriptor_cache="hdf5").to_dict())
    train(cfg, tmp_path / "ok", progress=False, log=lambda _: None)

    def fail(*args, **kwargs):
        raise RuntimeError("failed after the cache was opened")

    monkeypatch.setattr(trainer, "_initial_gradients", fail)
    with pytest.raises(RuntimeError, match="failed after"):
        train(cfg, tmp_path / "failed", progress=False, log=lambda _: None)
    assert len(handles) == 2
    for store, handle in handles:
        assert store.descriptor_file is None and not handle  # closed explicitly


def test_prefetched_batches_equal_direct_reads(tmp_path):
    """iter_cached_batches (the next batch read in a thread) yields what cached_batch gives,
    and stopping early leaves no thread behind."""
    import threading

    sf = SymmetryFunctions(SymmetryFunctionSpec.from_dict(RESTRICTED)).double()
    store = BatchStore([water_box(k) for k in range(5)], cutoff=sf.cutoff)
    store.open_or_build_descriptor_file(sf, tmp_path, dtype=torch.float64, chunk=2, log=None)
    lists = [torch.tensor([4, 1]), torch.tensor([], dtype=torch.long), torch.tensor([0, 2, 3])]
    got = list(store.iter_cached_batches(lists))
    assert got[1] is None
    for indices, cached in zip(lists[::2], got[::2]):
        _assert_same_cache(cached, store.cached_batch(indices))
    batches = store.iter_cached_batches(lists * 3)
    next(batches)
    batches.close()
    assert not any(t.name.startswith("mlpot-prefetch") for t in threading.enumerate())


RADIAL_ONLY = {"elements": ["H", "O"], "cutoff": 4.0,
               "radial": [{"grid": {"count": 3, "mode": "shift", "r_lower": 0.8}}]}
ANGULAR_ONLY = {"elements": ["H", "O"], "cutoff": 4.0,
                "angular": [{"kind": "G4", "eta": 0.1, "zetas": [1, 4], "lambdas": [-1, 1]}]}


@pytest.mark.parametrize("config", [RADIAL_ONLY, ANGULAR_ONLY], ids=["radial-only", "angular-only"])
@pytest.mark.parametrize("backend", ["memory", "hdf5"])
def test_cache_of_a_descriptor_with_one_kind_of_term(config, backend, tmp_path):
    """Zero-width Jacobian blocks (no radial or no angular terms) in both cache backends."""
    sf = SymmetryFunctions(SymmetryFunctionSpec.from_dict(config)).double()
    store = BatchStore([water_box(k) for k in range(3)], cutoff=sf.cutoff)
    if backend == "memory":
        store.cache_descriptors(sf, dtype=torch.float64, chunk=2)
    else:
        store.open_or_build_descriptor_file(sf, tmp_path, dtype=torch.float64, chunk=2, log=None)
    batch, raw, jac = store.cached_batch([2, 0])
    torch.testing.assert_close(raw, sf(batch, scaled=False))
    dense = sf.dense_jacobian(jac, sf.species(batch.numbers), batch.edge_index)
    torch.testing.assert_close(dense, autograd_jacobian(sf, batch), rtol=1e-10, atol=1e-12)
