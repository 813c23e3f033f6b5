"""Train/validation/test splits as plain index sets, reproducible and saved beside a run.

A :class:`Split` holds sorted structure indices into one dataset. Random splits use a
``numpy.random.Generator`` seeded by ``seed``, so the same ``(n, fractions, seed)`` gives the
same split on every machine and numpy version that keeps the PCG64 stream.
"""

from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Sequence

import numpy as np

from ..io.files import atomic_write_text

from .structures import DataError

__all__ = ["Split", "random_split", "kfold_splits", "load_split"]

_FORMAT = "mlpot-split"


@dataclass(frozen=True)
class Split:
    """Indices of the train, validation and test structures of one dataset.

    Attributes:
        train, val, test: sorted tuples of distinct structure indices, pairwise disjoint.
        method: how the split was made, e.g. ``"random"``, ``"kfold(k=5, fold=2)"``.
        seed: the random seed, ``None`` for a split that was given rather than drawn.
        n_total: number of structures in the dataset; every index is below it. Defaults
            to the largest index + 1.

    Raises:
        ValueError: if an index is negative, not below ``n_total``, repeated, or in two sets.
    """

    train: tuple[int, ...]
    val: tuple[int, ...] = ()
    test: tuple[int, ...] = ()
    method: str = "manual"
    seed: int | None = None
    n_total: int | None = None

    def __post_init__(self) -> None:
        sets = {name: _as_indices(getattr(self, name), name)
                for name in ("train", "val", "test")}
        largest = max((max(s) for s in sets.values() if s), default=-1)
        n_total = largest + 1 if self.n_total is None else int(self.n_total)
        if n_total < 0:
            raise ValueError(f"n_total must be >= 0, got {n_total}")
        seen: dict[int, str] = {}
        for name, indices in sets.items():
            if indices and (indices[0] < 0 or indices[-1] >= n_total):
                bad = indices[0] if indices[0] < 0 else indices[-1]
                raise ValueError(f"{name} index {bad} out of range for n_total={n_total}")
            if len(set(indices)) != len(indices):
                dup = next(i for i, j in zip(indices, indices[1:]) if i == j)
                raise ValueError(f"{name} contains index {dup} more than once")
            for i in indices:
                if i in seen:
                    raise ValueError(f"index {i} is in both {seen[i]} and {name}; "
                                     "the sets must be disjoint")
                seen[i] = name
            object.__setattr__(self, name, indices)
        object.__setattr__(self, "n_total", n_total)

    def save(self, path: str | os.PathLike) -> None:
        """Write the split as JSON (atomically: a temporary file, then rename)."""
        path = Path(path)
        data = {"format": _FORMAT, "version": 1, **asdict(self)}
        data.update({k: list(data[k]) for k in ("train", "val", "test")})
        atomic_write_text(path, json.dumps(data, indent=1) + "\n")

    @classmethod
    def from_index_files(cls, train: str | os.PathLike, val: str | os.PathLike | None = None,
                         test: str | os.PathLike | None = None,
                         n_total: int | None = None) -> "Split":
        """Build a split from index files: ``.npy`` arrays or text (whitespace separated,
        ``#`` comments).

        Raises:
            DataError: if a file cannot be read or holds non-integer values.
            ValueError: if the indices are out of range or overlap.
        """
        sets = {name: () if file is None else _read_index_file(Path(file))
                for name, file in (("train", train), ("val", val), ("test", test))}
        return cls(**sets, method="index_files", seed=None, n_total=n_total)


def load_split(path: str | os.PathLike) -> Split:
    """Read a split written by :meth:`Split.save`, checking range and disjointness.

    Raises:
        FileNotFoundError: if ``path`` does not exist.
        DataError: if the file is not a valid split (the message names the path and why).
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"no such split file: {path}")
    try:
        data = json.loads(path.read_text())
        if not isinstance(data, dict) or data.get("format") != _FORMAT:
            raise ValueError(f"not an mlpot split file (expected format {_FORMAT!r})")
        if int(data.get("version", 0)) > 1:
            raise ValueError(f"split file version {data['version']} is newer than this mlpot")
        return Split(train=data["train"], val=data["val"], test=data["test"],
                     method=data["method"], seed=data["seed"], n_total=data["n_total"])
    except KeyError as exc:
        raise DataError(f"{path}: invalid split file, missing key {exc.args[0]!r}") from exc
    except (ValueError, TypeError) as exc:
        raise DataError(f"{path}: invalid split file: {exc}") from exc


def random_split(n: int, val_fraction: float = 0.1, test_fraction: float = 0.0,
                 seed: int = 0, groups: Sequence | None = None) -> Split:
    """Shuffle ``range(n)`` and cut it into train, val and test.

    Set sizes are ``round(fraction * n)``, at least 1 for a non-zero fraction.

    Args:
        n: number of structures.
        val_fraction, test_fraction: fractions of ``n`` in [0, 1), summing to below 1.
        seed: seed of the ``numpy.random.Generator``.
        groups: (n,) a label per structure (e.g. its MD trajectory): whole groups, shuffled,
            go to test, then val, until each holds at least its share of structures, so no
            group is split between the sets (neighbouring frames of a trajectory are
            near-copies: split frame by frame, the validation and test errors would be
            those of the training frames).

    Raises:
        ValueError: naming the parameter, for bad fractions or an ``n`` too small to leave
            any training structure (with ``groups``: too few groups).
    """
    n = _check_count(n, "n", 1)
    _check_fraction(val_fraction, "val_fraction")
    _check_fraction(test_fraction, "test_fraction")
    n_val, n_test = _size(val_fraction, n), _size(test_fraction, n)
    if groups is not None:
        order = _grouped_order(groups, n, np.random.default_rng(seed))
        test, rest = _take_groups(order, n_test)
        val, train = _take_groups(rest, n_val)
        if not train:
            raise ValueError(f"{len(order)} group(s) are too few for val_fraction={val_fraction} and "
                             f"test_fraction={test_fraction} with whole groups: the training set would be empty")
        return Split(train=np.concatenate(train), val=_joined(val), test=_joined(test), method="random by group",
                     seed=seed, n_total=n)
    if n - n_val - n_test < 1:
        raise ValueError(f"n={n} is too small for val_fraction={val_fraction} and "
                         f"test_fraction={test_fraction}: the training set would be empty")
    perm = np.random.default_rng(seed).permutation(n)
    return Split(train=perm[n_test + n_val:], val=perm[n_test:n_test + n_val],
                 test=perm[:n_test], method="random", seed=seed, n_total=n)


def kfold_splits(n: int, k: int, seed: int = 0, val_fraction: float = 0.1,
                 groups: Sequence | None = None) -> list[Split]:
    """K-fold cross-validation: fold ``f`` tests on part ``f`` of a shuffled ``range(n)``.

    Each index is in exactly one test set. The remaining structures of a fold are shuffled
    (per-fold generator seeded by ``(seed, f)``) into val (``round(val_fraction * n)``, at
    least 1 for a non-zero fraction) and train.

    Args:
        n: number of structures.
        k: number of folds, 2 <= k <= n.
        seed: random seed.
        val_fraction: validation fraction of ``n`` in [0, 1).
        groups: (n,) a label per structure (e.g. its MD trajectory): the shuffled groups
            are dealt into the k parts whole, and each fold's val set is whole groups too
            (see :func:`random_split`).

    Raises:
        ValueError: naming ``k``, ``n`` or ``val_fraction`` when they do not fit.
    """
    n = _check_count(n, "n", 1)
    k = _check_count(k, "k", 2)
    if k > n:
        raise ValueError(f"k={k} folds need at least k structures, but n={n}")
    _check_fraction(val_fraction, "val_fraction")
    n_val = _size(val_fraction, n)
    if groups is not None:
        return _grouped_kfold(groups, n, k, seed, n_val)
    parts = np.array_split(np.random.default_rng(seed).permutation(n), k)
    splits = []
    for f in range(k):
        rest = np.concatenate([p for g, p in enumerate(parts) if g != f])
        if len(rest) - n_val < 1:
            raise ValueError(f"n={n} is too small for k={k} and val_fraction={val_fraction}: "
                             f"the training set of fold {f} would be empty")
        rest = np.random.default_rng([seed, f]).permutation(rest)
        splits.append(Split(train=rest[n_val:], val=rest[:n_val], test=parts[f],
                            method=f"kfold(k={k}, fold={f})", seed=seed, n_total=n))
    return splits


def _grouped_order(groups: Sequence, n: int, rng: np.random.Generator) -> list[np.ndarray]:
    """The structure indices of each group, groups in shuffled order."""
    labels = np.asarray(list(groups), dtype=object)
    if len(labels) != n:
        raise ValueError(f"groups has {len(labels)} labels for n={n} structures")
    names = list(dict.fromkeys(labels.tolist()))  # first-seen order: independent of label types
    members = [np.flatnonzero(labels == g) for g in names]
    return [members[i] for i in rng.permutation(len(members))]


def _take_groups(order: list[np.ndarray], count: int) -> tuple[list[np.ndarray], list[np.ndarray]]:
    """Whole groups from the front of ``order`` until they hold at least ``count`` structures."""
    taken, total = 0, 0
    while total < count and taken < len(order):
        total += len(order[taken])
        taken += 1
    return order[:taken], order[taken:]


def _joined(parts: list[np.ndarray]) -> np.ndarray:
    return np.concatenate(parts) if parts else np.zeros(0, dtype=int)


def _grouped_kfold(groups: Sequence, n: int, k: int, seed: int, n_val: int) -> list[Split]:
    order = _grouped_order(groups, n, np.random.default_rng(seed))
    if len(order) < k:
        raise ValueError(f"k={k} folds of whole groups need at least k groups, but there are {len(order)}")
    parts = [order[f::k] for f in range(k)]  # groups dealt round-robin into the k parts
    splits = []
    for f in range(k):
        rest = [g for h, part in enumerate(parts) if h != f for g in part]
        rest = [rest[i] for i in np.random.default_rng([seed, f]).permutation(len(rest))]
        val, train = _take_groups(rest, n_val)
        if not train:
            raise ValueError(f"too few groups for k={k} and a validation share of {n_val} structures: "
                             f"the training set of fold {f} would be empty")
        splits.append(Split(train=np.concatenate(train), val=_joined(val), test=_joined(parts[f]),
                            method=f"kfold by group(k={k}, fold={f})", seed=seed, n_total=n))
    return splits


def _as_indices(values, name: str) -> tuple[int, ...]:
    array = np.asarray(values)
    if array.size == 0:
        return ()
    if array.ndim != 1:
        raise ValueError(f"{name} must be a 1-d sequence of indices, got shape {array.shape}")
    if not np.issubdtype(array.dtype, np.integer):
        if not (np.issubdtype(array.dtype, np.floating) and np.all(array == np.round(array))):
            raise ValueError(f"{name} must hold integer indices, got dtype {array.dtype}")
    return tuple(sorted(int(i) for i in array))


def _read_index_file(path: Path) -> np.ndarray:
    if not path.is_file():
        raise FileNotFoundError(f"no such index file: {path}")
    try:
        if path.suffix == ".npy":
            array = np.load(path, allow_pickle=False)
        else:
            # Any whitespace layout (one a line, several a line), '#' comments.
            tokens = [tok for line in path.read_text().splitlines()
                      for tok in line.split("#", 1)[0].split()]
            array = np.array([float(tok) for tok in tokens], dtype=np.float64)
    except (ValueError, OSError) as exc:
        raise DataError(f"{path}: cannot read indices ({exc})") from exc
    array = np.ravel(array)
    if array.size and not np.issubdtype(array.dtype, np.integer):
        if not np.all(np.isfinite(array)) or np.any(array != np.round(array)):
            raise DataError(f"{path}: indices must be integers")
        array = array.astype(np.int64)
    return array


def _check_count(value, name: str, minimum: int) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
        raise ValueError(f"{name} must be an integer, got {value!r}")
    if value < minimum:
        raise ValueError(f"{name} must be >= {minimum}, got {value}")
    return int(value)


def _check_fraction(value: float, name: str) -> None:
    if not 0.0 <= float(value) < 1.0:
        raise ValueError(f"{name} must be in [0, 1), got {value}")


def _size(fraction: float, n: int) -> int:
    return 0 if fraction == 0 else max(1, int(round(fraction * n)))
