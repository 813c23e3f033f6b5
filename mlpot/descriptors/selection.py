"""Automatic selection of symmetry functions from a larger candidate pool.

Imbalzano et al., JCP 148, 241730 (2018): compute a generous pool of candidate functions on
the training structures, then keep the few that carry the most independent information.
Two deterministic, scale-invariant rules are offered, both on the columns of the (atoms ×
features) matrix of one element after centring and scaling each column to unit variance
(so neither a feature's units nor its magnitude matter):

* ``cur``: greedy CUR — repeatedly take the column with the largest leverage on the leading
  right singular vectors of the remaining matrix, then project it out of every column;
* ``fps``: farthest-point sampling of the columns — start from the column of largest norm
  and repeatedly take the one farthest (in the space orthogonal to those taken) from the
  ones already taken.

Ties go to the lower column index. Constant columns (no variance in the data) carry no
information and are taken last.

Each atom counts once by default, so a kind of environment that few training atoms have
(the surface atoms of a handful of slabs among hundreds of bulk cells) has little leverage,
and the terms that describe it are dropped first. ``row_weights`` (and ``balance_by`` of
:func:`select_on_structures`, which gives every group of structures the same total weight)
let such atoms count as much as the many: the weighted matrix is centred and scaled with the
weighted mean and variance and each row is multiplied by the square root of its weight.

:func:`select_symmetry_functions` applies a rule per element and returns a new
:class:`~mlpot.descriptors.SymmetryFunctionSpec` whose terms are the selected features, each
restricted to its centre element (and its neighbour elements), ready to train.
"""

from __future__ import annotations

from dataclasses import replace
from typing import Iterable, Literal, Sequence

import numpy as np
import torch

from .parameters import RadialTerm, SymmetryFunctionSpec

__all__ = ["select_columns", "select_on_structures", "select_symmetry_functions"]

Method = Literal["cur", "fps"]


def _standardised(x: np.ndarray, row_weights: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Columns centred and scaled to unit variance (n, F), each row multiplied by the square
    root of its weight when ``row_weights`` (n,) are given (weighted mean and variance, the
    weights normalised to mean 1); and which columns vary (F,)."""
    x = np.asarray(x, dtype=np.float64)
    if row_weights is None:
        centred = x - x.mean(axis=0)
        std = centred.std(axis=0)
    else:
        w = row_weights / row_weights.mean()
        centred = x - (w @ x) / w.sum()
        std = np.sqrt((w @ centred**2) / w.sum())
    varies = std > 1e-12 * np.maximum(np.abs(x).max(axis=0), 1.0)
    z = np.where(varies, centred / np.where(varies, std, 1.0), 0.0)
    return (z if row_weights is None else z * np.sqrt(w)[:, None]), varies


def _row_weights(weights: np.ndarray | Sequence[float] | None, n: int) -> np.ndarray | None:
    """``weights`` as a checked (n,) float64 array (``None`` stays ``None``)."""
    if weights is None:
        return None
    w = np.asarray(weights, dtype=np.float64)
    if w.shape != (n,):
        raise ValueError(f"row_weights must have one weight per row, shape ({n},), got {w.shape}")
    if not np.all(np.isfinite(w)) or np.any(w < 0) or not np.any(w > 0):
        raise ValueError("row_weights must be finite, non-negative and not all zero")
    return w


def select_columns(x: np.ndarray, count: int, method: Method = "cur", rank: int = 1,
                   row_weights: np.ndarray | Sequence[float] | None = None) -> list[int]:
    """Indices of ``count`` informative columns of ``x`` (n samples × F features), in the
    order they were chosen.

    Args:
        x: (n, F) feature values (e.g. one element's descriptors over the training atoms).
        count: how many to keep (at most F).
        method: ``"cur"`` or ``"fps"`` (see the module docstring).
        rank: singular vectors of the leverage score (``cur``).
        row_weights: (n,) non-negative weight of each sample (``None``: all alike); only
            their ratios matter.
    """
    n_features = x.shape[1]
    if not 1 <= count <= n_features:
        raise ValueError(f"cannot select {count} of {n_features} features")
    if method not in ("cur", "fps"):
        raise ValueError(f"selection method must be 'cur' or 'fps', got {method!r}")
    z, varies = _standardised(x, _row_weights(row_weights, x.shape[0]))
    chosen: list[int] = []
    candidates = [j for j in range(n_features) if varies[j]]
    while len(chosen) < count and candidates:
        if method == "cur":
            _, _, vt = np.linalg.svd(z[:, candidates], full_matrices=False)
            score = (vt[:rank] ** 2).sum(axis=0)
        else:
            score = np.linalg.norm(z[:, candidates], axis=0)
        best = candidates[int(np.argmax(np.round(score, 12)))]  # rounding: ties to the lower index
        chosen.append(best)
        column = z[:, best] / max(np.linalg.norm(z[:, best]), 1e-300)
        z = z - np.outer(column, column @ z)  # project the chosen direction out of every column
        candidates = [j for j in candidates if j != best and np.linalg.norm(z[:, j]) > 1e-9 * np.sqrt(len(z))]
    rest = [j for j in range(n_features) if j not in chosen]
    return chosen + rest[: count - len(chosen)]


@torch.no_grad()
def select_on_structures(spec: SymmetryFunctionSpec, structures: Sequence, count: int | dict[str, int],
                         method: Method = "cur", max_atoms: int | None = None,
                         batch_size: int = 16, balance_by: str | None = None) -> SymmetryFunctionSpec:
    """:func:`select_symmetry_functions` on ``structures`` (``ase.Atoms``), computed in float64
    on the CPU, ``batch_size`` structures at a time. ``balance_by``: an ``atoms.info`` key
    (e.g. mlearn's ``"group"``); each of its values then weighs the same in the selection,
    however many atoms it has (``None``: every atom alike)."""
    from ..data import collate

    groups = None
    if balance_by is not None:
        missing = [i for i, atoms in enumerate(structures) if balance_by not in atoms.info]
        if missing:
            raise ValueError(f"select.balance_by: {len(missing)} training structure(s) have no info[{balance_by!r}] "
                             f"(the first: structure {missing[0]}); label them or leave balance_by unset")
        groups = [atoms.info[balance_by] for atoms in structures]
    batches = (collate(structures[lo:lo + batch_size], cutoff=spec.max_cutoff, dtype=torch.float64,
                       labels=False) for lo in range(0, len(structures), batch_size))
    return select_symmetry_functions(spec, batches, count, method, max_atoms=max_atoms, structure_groups=groups)


def _balanced_weights(groups: np.ndarray) -> np.ndarray:
    """(n,) weight of each atom: 1 / (atoms of its group), so that every group sums to 1."""
    _, inverse, counts = np.unique(groups, return_inverse=True, return_counts=True)
    return 1.0 / counts[inverse]


def select_symmetry_functions(spec: SymmetryFunctionSpec, batches: Iterable, count: int | dict[str, int],
                              method: Method = "cur", max_atoms: int | None = None,
                              structure_groups: Sequence | None = None) -> SymmetryFunctionSpec:
    """The spec of ``count`` selected features per element (a number, or one per element)
    out of ``spec``'s candidates, computed on ``batches`` (training structures with pairs).
    ``max_atoms``: use at most this many atoms per element, evenly strided over the data.
    ``structure_groups``: one label per structure of ``batches`` (in order); each label's
    atoms of an element then weigh as much in total as any other label's (see the module
    docstring)."""
    from .symmetry_functions import SymmetryFunctions

    descriptor = SymmetryFunctions(spec)
    per_element: dict[int, list[np.ndarray]] = {e: [] for e in range(descriptor.n_elements)}
    structure_of: dict[int, list[np.ndarray]] = {e: [] for e in range(descriptor.n_elements)}
    seen = 0
    for batch in batches:
        raw = descriptor(batch, scaled=False).double().cpu().numpy()
        species = descriptor.species(batch.numbers).cpu().numpy()
        system = batch.system_idx.cpu().numpy() + seen
        seen += len(batch.n_atoms)
        for e in per_element:
            per_element[e].append(raw[species == e])
            structure_of[e].append(system[species == e])
    if structure_groups is not None and len(structure_groups) != seen:
        raise ValueError(f"structure_groups has {len(structure_groups)} labels for {seen} structures")
    # Labels compared as strings, one per structure (an atom takes its structure's).
    group_labels = None if structure_groups is None else np.asarray([str(g) for g in structure_groups])
    radial, angular = [], []
    for e, el in enumerate(descriptor.elements):
        values = np.concatenate(per_element[e])[:, : descriptor.n_features[el]]
        if len(values) == 0:
            raise ValueError(f"no atoms of {el} in the data used to select symmetry functions")
        weights = None
        if group_labels is not None:
            weights = _balanced_weights(group_labels[np.concatenate(structure_of[e])])
        if max_atoms is not None and len(values) > max_atoms:
            rows = np.linspace(0, len(values) - 1, max_atoms).round().astype(int)
            values, weights = values[rows], (None if weights is None else weights[rows])
        k = count[el] if isinstance(count, dict) else count
        for j in sorted(select_columns(values, min(k, values.shape[1]), method, row_weights=weights)):
            feature = descriptor.features[el][j]
            if isinstance(feature.term, RadialTerm):
                radial.append(replace(feature.term, centre=el, neighbour=feature.neighbours[0]))
            else:
                angular.append(replace(feature.term, centre=el, neighbours=tuple(feature.neighbours)))
    return replace(spec, radial=tuple(radial), angular=tuple(angular))
