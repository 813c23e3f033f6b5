"""H5Dataset: bit-exact round trips, streaming, indexing, process safety, bad files."""

from __future__ import annotations

import multiprocessing
import pickle

import ase.io
import h5py
import numpy as np
import pytest
from ase import Atoms

from mlpot.data import DataError, H5Dataset, get_labels, labelled_atoms, read


def make_structures(n: int = 7, seed: int = 0) -> list[Atoms]:
    """Mixed periodic / slab / open structures; some lack energy, forces or stress."""
    rng = np.random.default_rng(seed)
    out = []
    for k in range(n):
        n_atoms = int(rng.integers(1, 6))
        pbc = [(True, True, True), (True, True, False), (False, False, False)][k % 3]
        cell = None if not any(pbc) else np.diag(rng.uniform(4, 8, 3)) + rng.normal(0, 0.3,
                                                                                      (3, 3))
        stress = rng.normal(size=(3, 3))
        out.append(labelled_atoms(
            rng.integers(1, 95, n_atoms), rng.uniform(0, 4, (n_atoms, 3)), cell=cell, pbc=pbc,
            energy=None if k % 4 == 1 else float(rng.normal() * 100),
            forces=None if k % 4 == 2 else rng.normal(size=(n_atoms, 3)),
            stress=None if (k % 2 or not all(pbc)) else stress + stress.T,
            info={"group": f"g{k % 2}", "index": k}))
    return out


def assert_same(a: Atoms, b: Atoms) -> None:
    assert np.array_equal(a.numbers, b.numbers)
    assert np.array_equal(a.positions, b.positions)
    assert np.array_equal(a.cell.array, b.cell.array)
    assert np.array_equal(a.pbc, b.pbc)
    la, lb = get_labels(a), get_labels(b)
    assert la.energy == lb.energy  # both None or bit-identical floats
    for x, y in ((la.forces, lb.forces), (la.stress, lb.stress)):
        assert (x is None) == (y is None)
        if x is not None:
            assert np.array_equal(x, y)


def test_extxyz_to_h5_round_trip_is_exact(tmp_path):
    ase.io.write(tmp_path / "mixed.xyz", make_structures(9), format="extxyz")
    original = read(tmp_path / "mixed.xyz")
    assert {tuple(a.pbc) for a in original} == {(True,) * 3, (True, True, False), (False,) * 3}
    assert any(get_labels(a).forces is None for a in original)
    assert any(get_labels(a).stress is None for a in original)
    H5Dataset.write(tmp_path / "mixed.h5", original)
    with read(tmp_path / "mixed.h5") as dataset:
        assert len(dataset) == len(original)
        for a, b in zip(original, dataset):
            assert_same(a, b)


def test_streamed_write_in_small_chunks(tmp_path):
    structures = make_structures(11)
    # A generator: the writer must not need len() or a second pass.
    dataset = H5Dataset.write(tmp_path / "s.h5", (a for a in structures), chunk_size=3)
    assert len(dataset) == 11
    for a, b in zip(structures, dataset):
        assert_same(a, b)
    assert dataset[4].info == {"group": "g0", "index": 4}
    with h5py.File(tmp_path / "s.h5") as f:
        assert f.attrs["mlpot_format"] == "mlpot-h5" and f.attrs["version"] == 1
        assert f["positions"].compression == "gzip" and f["cell"].chunks == (3, 3, 3)
        offsets = f["atom_offsets"][()]
        assert offsets.dtype == np.int64 and offsets[-1] == sum(len(a) for a in structures)
        np.testing.assert_array_equal(f["has_stress"][()],
                                      [get_labels(a).stress is not None for a in structures])
        assert np.isnan(f["energy"][1]) and not f["has_energy"][1]
    assert not (tmp_path / "s.h5.tmp").exists()


def test_indexing(tmp_path):
    structures = make_structures(6)
    dataset = H5Dataset.write(tmp_path / "i.h5", structures)
    assert_same(dataset[-1], structures[-1])
    assert_same(dataset[np.int64(2)], structures[2])
    for got, want in zip(dataset[1:5:2], structures[1:5:2]):
        assert_same(got, want)
    for got, want in zip(dataset[[5, 0, 3]], [structures[i] for i in (5, 0, 3)]):
        assert_same(got, want)
    assert dataset[4:2] == []
    with pytest.raises(IndexError, match="out of range"):
        dataset[6]


def _count_atoms(dataset: H5Dataset) -> int:
    return sum(len(a) for a in dataset)


def test_pickle_and_forked_workers(tmp_path):
    structures = make_structures(5)
    dataset = H5Dataset.write(tmp_path / "p.h5", structures)
    len(dataset)  # open in the parent before forking, as a DataLoader would
    clone = pickle.loads(pickle.dumps(dataset))
    assert_same(clone[3], structures[3])
    expected = sum(len(a) for a in structures)
    with multiprocessing.get_context("fork").Pool(2) as pool:
        assert pool.map(_count_atoms, [dataset, dataset]) == [expected, expected]
    dataset._pid = -1  # as seen from a child process: must re-open, not reuse the handle
    assert_same(dataset[0], structures[0])


def test_failed_write_leaves_no_file(tmp_path):
    target = tmp_path / "out.h5"
    H5Dataset.write(target, make_structures(2))
    before = target.read_bytes()

    def broken():
        yield from make_structures(3)
        raise RuntimeError("source failed")

    with pytest.raises(RuntimeError, match="source failed"):
        H5Dataset.write(target, broken())
    bad = make_structures(2)
    bad[1].positions[0, 0] = np.nan
    with pytest.raises(DataError, match="structure 1.*non-finite"):
        H5Dataset.write(target, bad)
    with pytest.raises(ValueError, match="no structures"):
        H5Dataset.write(target, [])
    assert target.read_bytes() == before  # the old file is untouched
    assert not (tmp_path / "out.h5.tmp").exists()


def test_random_bytes_are_not_hdf5(tmp_path):
    path = tmp_path / "noise.h5"
    path.write_bytes(np.random.default_rng(0).bytes(4096))
    with pytest.raises(DataError, match=r"noise\.h5.*not a readable HDF5 file"):
        read(path)


def test_truncated_file(tmp_path):
    path = tmp_path / "cut.h5"
    H5Dataset.write(path, make_structures(50))
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(DataError, match=r"cut\.h5"):
        list(read(path))


def test_wrong_format_and_newer_version(tmp_path):
    path = tmp_path / "other.h5"
    with h5py.File(path, "w") as f:
        f.attrs["mlpot_format"] = "something-else"
    with pytest.raises(DataError, match=r"other\.h5.*not an mlpot HDF5 file"):
        read(path)
    H5Dataset.write(tmp_path / "new.h5", make_structures(2))
    with h5py.File(tmp_path / "new.h5", "r+") as f:
        f.attrs["version"] = 2
    with pytest.raises(DataError, match=r"new\.h5.*version 2 is not supported"):
        len(H5Dataset(tmp_path / "new.h5"))


def test_missing_dataset_is_reported(tmp_path):
    path = tmp_path / "partial.h5"
    H5Dataset.write(path, make_structures(2))
    with h5py.File(path, "r+") as f:
        del f["forces"]
    with pytest.raises(DataError, match=r"partial\.h5.*missing datasets \['forces'\]"):
        read(path)


def test_missing_file():
    with pytest.raises(FileNotFoundError, match="absent.h5"):
        H5Dataset("absent.h5")


def test_close_and_reopen(tmp_path):
    dataset = H5Dataset.write(tmp_path / "c.h5", make_structures(3))
    with dataset:
        assert len(dataset) == 3
    assert dataset._file is None
    assert len(dataset[0:3]) == 3  # re-opens on demand
    dataset.close()
