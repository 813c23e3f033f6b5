"""Splits: reproducible random and k-fold splits, saving, loading and validation."""

from __future__ import annotations

import json

import numpy as np
import pytest

from mlpot.data import DataError, Split, kfold_splits, load_split, random_split


def assert_partition(split: Split, n: int) -> None:
    parts = [set(split.train), set(split.val), set(split.test)]
    assert set.union(*parts) == set(range(n))
    assert sum(map(len, parts)) == n


def test_random_split_sizes_and_determinism():
    split = random_split(100, val_fraction=0.1, test_fraction=0.2, seed=3)
    assert (len(split.train), len(split.val), len(split.test)) == (70, 10, 20)
    assert_partition(split, 100)
    assert split == random_split(100, val_fraction=0.1, test_fraction=0.2, seed=3)
    assert split != random_split(100, val_fraction=0.1, test_fraction=0.2, seed=4)
    assert (split.method, split.seed, split.n_total) == ("random", 3, 100)
    assert list(split.train) == sorted(split.train)


def test_random_split_small_fraction_keeps_one_structure():
    split = random_split(5, val_fraction=0.01)
    assert len(split.val) == 1 and len(split.train) == 4 and split.test == ()


@pytest.mark.parametrize("kwargs, match", [
    ({"n": 0}, "n must be >= 1"),
    ({"n": 10, "val_fraction": 1.0}, "val_fraction must be in"),
    ({"n": 10, "test_fraction": -0.1}, "test_fraction must be in"),
    ({"n": 10, "val_fraction": 0.5, "test_fraction": 0.5}, "n=10 is too small"),
    ({"n": 2, "val_fraction": 0.1, "test_fraction": 0.1}, "training set would be empty"),
    ({"n": 2.5}, "n must be an integer"),
])
def test_random_split_errors(kwargs, match):
    with pytest.raises(ValueError, match=match):
        random_split(**kwargs)


def test_kfold_each_index_tested_once():
    folds = kfold_splits(23, 5, seed=1, val_fraction=0.1)
    assert len(folds) == 5
    tested = np.concatenate([f.test for f in folds])
    assert sorted(tested) == list(range(23))
    for f, split in enumerate(folds):
        assert_partition(split, 23)
        assert len(split.val) == 2 and len(split.test) in (4, 5)
        assert split.method == f"kfold(k=5, fold={f})"
    assert folds == kfold_splits(23, 5, seed=1, val_fraction=0.1)
    assert folds != kfold_splits(23, 5, seed=2, val_fraction=0.1)


def test_kfold_without_validation():
    folds = kfold_splits(4, 4, val_fraction=0.0)
    assert all(len(f.val) == 0 and len(f.train) == 3 for f in folds)


@pytest.mark.parametrize("args, kwargs, match", [
    ((10, 1), {}, "k must be >= 2"),
    ((3, 4), {}, "k=4 folds need at least k structures"),
    ((10, 2), {"val_fraction": 1.5}, "val_fraction must be in"),
    ((4, 4), {"val_fraction": 0.75}, "training set of fold 0 would be empty"),
])
def test_kfold_errors(args, kwargs, match):
    with pytest.raises(ValueError, match=match):
        kfold_splits(*args, **kwargs)


def test_save_and_load_round_trip(tmp_path):
    split = random_split(50, 0.2, 0.1, seed=7)
    split.save(tmp_path / "split.json")
    assert load_split(tmp_path / "split.json") == split
    assert not (tmp_path / "split.json.tmp").exists()


@pytest.mark.parametrize("edit, match", [
    (lambda d: d.update(val=[0, 1]), r"index 0 is in both train and val"),
    (lambda d: d.update(test=[99]), r"test index 99 out of range for n_total=10"),
    (lambda d: d.update(train=[1, 1, 2]), r"train contains index 1 more than once"),
    (lambda d: d.pop("train"), r"missing key 'train'"),
    (lambda d: d.update(format="other"), r"not an mlpot split file"),
    (lambda d: d.update(val=[0.5]), r"val must hold integer indices"),
])
def test_load_split_rejects_bad_files(tmp_path, edit, match):
    data = {"format": "mlpot-split", "version": 1, "train": [0, 2, 3], "val": [4],
            "test": [5], "method": "random", "seed": 0, "n_total": 10}
    edit(data)
    path = tmp_path / "bad.json"
    path.write_text(json.dumps(data))
    with pytest.raises(DataError, match=rf"bad\.json.*{match}"):
        load_split(path)


def test_load_split_truncated_and_missing(tmp_path):
    path = tmp_path / "cut.json"
    random_split(10).save(path)
    path.write_text(path.read_text()[:30])
    with pytest.raises(DataError, match=r"cut\.json: invalid split file"):
        load_split(path)
    with pytest.raises(FileNotFoundError, match="nope.json"):
        load_split(tmp_path / "nope.json")


def test_from_index_files(tmp_path):
    (tmp_path / "train.txt").write_text("# training indices\n0 1\n2\n5\n")
    np.save(tmp_path / "val.npy", np.array([3, 4]))
    split = Split.from_index_files(train=tmp_path / "train.txt", val=tmp_path / "val.npy",
                                   n_total=8)
    assert split == Split(train=(0, 1, 2, 5), val=(3, 4), test=(), method="index_files",
                          n_total=8)
    (tmp_path / "frac.txt").write_text("1.5\n")
    with pytest.raises(DataError, match=r"frac\.txt: indices must be integers"):
        Split.from_index_files(train=tmp_path / "frac.txt")
    (tmp_path / "text.txt").write_text("one\n")
    with pytest.raises(DataError, match=r"text\.txt: cannot read indices"):
        Split.from_index_files(train=tmp_path / "text.txt")
    with pytest.raises(ValueError, match="index 3 is in both val and test"):
        Split.from_index_files(train=tmp_path / "train.txt", test=tmp_path / "val.npy",
                               val=tmp_path / "val.npy")


def test_split_validation_and_default_n_total():
    assert Split(train=[3, 1], val=np.array([0])).n_total == 4
    with pytest.raises(ValueError, match="train index -1 out of range"):
        Split(train=[-1, 2])


def trajectories(sizes=(7, 5, 9, 4, 6, 8, 3, 5), seed=0):
    """Group labels of frames from trajectories of these lengths, interleaved."""
    labels = [f"traj{t}" for t, size in enumerate(sizes) for _ in range(size)]
    return [labels[i] for i in np.random.default_rng(seed).permutation(len(labels))]


def group_sets(split, labels):
    return [{labels[i] for i in getattr(split, part)} for part in ("train", "val", "test")]


def test_random_split_by_group_keeps_every_group_whole():
    labels = trajectories()
    split = random_split(len(labels), val_fraction=0.15, test_fraction=0.2, seed=3, groups=labels)
    train, val, test = group_sets(split, labels)
    assert not (train & val) and not (train & test) and not (val & test)
    assert train | val | test == set(labels)
    assert len(split.val) >= round(0.15 * len(labels)) and len(split.test) >= round(0.2 * len(labels))
    assert split == random_split(len(labels), 0.15, 0.2, seed=3, groups=labels)  # deterministic
    # Group labels of any type; the same partition whatever the labels are called.
    renamed = [int(g.removeprefix("traj")) * 11 for g in labels]
    assert random_split(len(labels), 0.15, 0.2, seed=3, groups=renamed).train == split.train


def test_kfold_by_group_tests_every_structure_once_and_splits_no_group():
    labels = trajectories()
    folds = kfold_splits(len(labels), 3, seed=1, val_fraction=0.1, groups=labels)
    tested = sorted(i for f in folds for i in f.test)
    assert tested == list(range(len(labels)))
    for f in folds:
        train, val, test = group_sets(f, labels)
        assert not (train & val) and not (train & test) and not (val & test), f.method
        assert train and val
    # A frame-by-frame split of the same data does put one trajectory on both sides.
    plain = kfold_splits(len(labels), 3, seed=1, val_fraction=0.1)
    assert any(group_sets(f, labels)[0] & group_sets(f, labels)[2] for f in plain)


def test_too_few_groups_are_named():
    with pytest.raises(ValueError, match="at least k groups"):
        kfold_splits(6, 3, groups=["a", "a", "a", "b", "b", "b"])
    with pytest.raises(ValueError, match="training set would be empty"):
        random_split(4, val_fraction=0.7, groups=["a", "a", "b", "b"])
    with pytest.raises(ValueError, match="3 labels for n=4"):
        random_split(4, groups=["a", "b", "c"])
