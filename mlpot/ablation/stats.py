"""Statistics of an ablation: paired differences between configurations, outlier structures,
the Pareto front of cost and error.

Paired differences: two configurations trained on the same folds with the same seeds meet
the same data, so the run-to-run noise they share cancels in the difference of their test
errors on each (fold, seed). The mean of those n differences, its standard error
s/√n and a 95 % Student-t interval say whether the data separate the two; an interval that
contains 0 is reported as "not resolved". With n = 1 there is no spread to estimate: not
resolved either.

Outliers: per-structure errors of a test set (force RMSE per structure, |energy error| per
atom) far above the rest: above ``OUTLIER_FACTOR`` × the median structure's error and more
than ``OUTLIER_Z`` robust standard deviations (1.4826 × the median absolute deviation) above
the median.

Extrapolation: a test structure with an atom whose descriptors lie beyond the model's
training range by more than ``BEYOND_RANGE_EXCESS`` of a feature's range is an extrapolation;
:func:`range_split` gives a run's force error over those structures and over the rest, so
that a network that extrapolates badly is told from one that fits badly.
"""

from __future__ import annotations

import math
from collections import defaultdict
from typing import Mapping, Sequence

import numpy as np

from ..training.gradients import layer_of

__all__ = ["is_finite_number", "ranking_metric", "paired_difference", "pareto_front", "costed",
           "structure_errors", "outlier_structures", "recurring_outliers", "range_split", "layer_sizes",
           "rms_per_weight", "OUTLIER_FACTOR", "OUTLIER_Z", "BEYOND_RANGE_EXCESS", "METRIC_WORDS"]

#: A structure's error must exceed this multiple of the median structure's error ...
OUTLIER_FACTOR = 5.0
#: ... and lie this many robust standard deviations above the median to count as an outlier.
OUTLIER_Z = 6.0
#: Most outliers kept per run and test set (the largest errors).
MAX_OUTLIERS = 10

#: A structure lies beyond the training range when one of its atoms does by more than this
#: fraction of a feature's range (:attr:`mlpot.evaluation.StructureErrors.max_excess`). Any
#: excess at all is n2p2's warning; hot frames graze the range edge by a few per cent, and
#: this counts only a clear departure (mlearn Mo, fold 0: 6 of 65 test frames, the largest
#: 1.26, a pair 0.1 Å closer than any in training).
BEYOND_RANGE_EXCESS = 0.2

#: Test-metric key → how the report names it.
METRIC_WORDS = {"force_rmse_mev_per_a": "test force RMSE (meV/Å)",
                "energy_rmse_mev_per_atom": "test energy RMSE (meV/atom)"}


def is_finite_number(x: object) -> bool:
    """Whether ``x`` is a finite real number: results.json fields hold ``None``, NaN or a bool
    where a run has no value, and those are left out of means and plots."""
    return isinstance(x, (int, float)) and not isinstance(x, bool) and math.isfinite(x)


def ranking_metric(runs: Sequence[dict]) -> str | None:
    """The test metric configurations are ranked by: the force RMSE where runs have it, else
    the energy RMSE (``None`` when no run has either)."""
    for key in ("force_rmse_mev_per_a", "energy_rmse_mev_per_atom"):
        if any((r.get("test") or {}).get(key) is not None for r in runs):
            return key
    return None


def t_quantile(p: float, dof: int) -> float:
    """The ``p`` quantile of Student's t with ``dof`` degrees of freedom (0.975: the half-width
    factor of a two-sided 95 % interval); a table when SciPy is missing."""
    try:
        from scipy.stats import t

        return float(t.ppf(p, dof))
    except ImportError:  # pragma: no cover - scipy comes with ASE
        table = {1: 12.706, 2: 4.303, 3: 3.182, 4: 2.776, 5: 2.571, 6: 2.447, 7: 2.365, 8: 2.306, 9: 2.262}
        return table.get(dof, 2.228 if dof < 20 else 1.96)


def paired_difference(runs_a: Sequence[dict], runs_b: Sequence[dict], metric: str) -> dict:
    """Test ``metric`` of configuration A minus B, paired by (fold, seed).

    Returns:
        ``n`` (pairs), ``mean``, ``se`` (standard error of the mean, ``None`` for n < 2),
        ``low``/``high`` (95 % t interval, ``None`` for n < 2) and ``resolved`` (the interval
        excludes 0).
    """
    def by_pair(runs):
        return {(r.get("fold"), r.get("seed")): (r.get("test") or {}).get(metric) for r in runs}

    a, b = by_pair(runs_a), by_pair(runs_b)
    d = np.array([a[k] - b[k] for k in sorted(set(a) & set(b), key=str)
                  if a[k] is not None and b[k] is not None and math.isfinite(a[k] - b[k])], dtype=float)
    out = {"n": int(len(d)), "mean": float(d.mean()) if len(d) else None, "se": None, "low": None,
           "high": None, "resolved": False}
    if len(d) >= 2:
        se = float(d.std(ddof=1) / math.sqrt(len(d)))
        half = t_quantile(0.975, len(d) - 1) * se
        out.update(se=se, low=out["mean"] - half, high=out["mean"] + half,
                   resolved=bool(out["mean"] - half > 0 or out["mean"] + half < 0))
    return out


def pareto_front(points: list[tuple[float, float]]) -> list[int]:
    """Indices of the points no other point beats in both cost (x) and error (y), by cost."""
    order = sorted(range(len(points)), key=lambda k: (points[k][0], points[k][1]))
    front, best = [], math.inf
    for k in order:
        if points[k][1] < best:
            front.append(k)
            best = points[k][1]
    return front


def costed(groups: list[dict]) -> list[dict]:
    """The configurations with both an inference time and a test force error (Pareto candidates)."""
    return [g for g in groups if g.get("inference_us_per_atom") is not None
            and g.get("test_force_rmse_mev_per_a") is not None]


def structure_errors(predictions) -> dict[str, np.ndarray]:
    """Per-structure errors of :class:`~mlpot.evaluation.Predictions` (B structures), the
    two that outliers are judged by: ``force_rmse_mev_per_a`` (B,) RMSE over the structure's
    force components, meV/Å, and ``energy_error_mev_per_atom`` (B,) |predicted − reference|
    / atoms, meV/atom (NaN where a label is missing). A view of
    :func:`~mlpot.evaluation.per_structure_errors`, which ``mlpot evaluate --by`` reports."""
    from ..evaluation import per_structure_errors

    errors = per_structure_errors(predictions)
    return {"force_rmse_mev_per_a": errors.force_rmse, "energy_error_mev_per_atom": np.abs(errors.energy_error)}


def _outlying(values: np.ndarray) -> tuple[np.ndarray, float | None]:
    """Mask of the outliers among ``values`` (NaN never) and the median."""
    finite = np.isfinite(values)
    if finite.sum() < 3:
        return np.zeros_like(finite), None
    median = float(np.median(values[finite]))
    spread = 1.4826 * float(np.median(np.abs(values[finite] - median)))
    with np.errstate(invalid="ignore"):
        mask = finite & (values > OUTLIER_FACTOR * median) & (values > median + OUTLIER_Z * spread)
    return mask, median


def outlier_structures(errors: dict[str, np.ndarray], indices: Sequence[int]) -> dict:
    """The outliers of one test set by force or energy error (:func:`structure_errors`).

    Args:
        errors: per-structure errors, in the order of ``indices``.
        indices: each structure's index in its data file.

    Returns:
        ``structures`` (up to ``MAX_OUTLIERS``, largest force error first: ``index`` and both
        errors), ``median_force_rmse_mev_per_a`` and ``median_energy_error_mev_per_atom``.
    """
    force, energy = errors["force_rmse_mev_per_a"], errors["energy_error_mev_per_atom"]
    f_mask, f_median = _outlying(force)
    e_mask, e_median = _outlying(energy)
    picked = np.flatnonzero(f_mask | e_mask)
    picked = picked[np.argsort(-np.nan_to_num(force[picked], nan=0.0), kind="stable")][:MAX_OUTLIERS]

    def value(x: float) -> float | None:
        return float(x) if math.isfinite(x) else None

    return {"structures": [{"index": int(indices[k]), "force_rmse_mev_per_a": value(force[k]),
                            "energy_error_mev_per_atom": value(energy[k])} for k in picked],
            "median_force_rmse_mev_per_a": f_median, "median_energy_error_mev_per_atom": e_median}


def range_split(predictions, indices: Sequence[int], excess: float = BEYOND_RANGE_EXCESS) -> dict | None:
    """A test set's force error over its structures beyond the training range and over the rest.

    Args:
        predictions: :class:`~mlpot.evaluation.Predictions` of one model on the test set, with
            ``range_excess`` (``None`` for a model without a training range: no split).
        indices: each structure's index in its data file.
        excess: the threshold of :data:`BEYOND_RANGE_EXCESS`.

    Returns:
        ``excess``, ``beyond`` (the indices of the structures beyond), and
        ``force_rmse_beyond_mev_per_a`` / ``force_rmse_inside_mev_per_a``: the force RMSE over
        all components of those structures / of the rest, meV/Å (``None`` for an empty part).
    """
    from ..evaluation import per_structure_errors

    if predictions.range_excess is None:
        return None
    errors = per_structure_errors(predictions)
    beyond = errors.max_excess > excess
    components = 3.0 * errors.n_atoms
    squares = errors.force_rmse ** 2 * components  # each structure's sum of squared errors

    def rmse(mask: np.ndarray) -> float | None:
        keep = mask & np.isfinite(squares)
        return float(np.sqrt(squares[keep].sum() / components[keep].sum())) if keep.any() else None

    return {"excess": excess, "beyond": [int(indices[k]) for k in np.flatnonzero(beyond)],
            "force_rmse_beyond_mev_per_a": rmse(beyond), "force_rmse_inside_mev_per_a": rmse(~beyond)}


def recurring_outliers(runs: Sequence[dict], split: str) -> list[dict]:
    """Outliers of ``split`` (``"test"`` or ``"external_test"``) over all runs, one entry per
    structure: how many of the runs that evaluated it flag it, and its force error (median over
    those runs, and the largest), most often flagged first.

    The fold test sets differ between folds, so ``runs`` counts the runs whose test set held the
    structure only where that is known (the external test set: every run)."""
    flagged: dict[int, list[dict]] = defaultdict(list)
    medians, evaluated = [], 0
    for r in runs:
        found = ((r.get("outliers") or {}).get(split)) or None
        if found is None:
            continue
        evaluated += 1
        medians.append(found.get("median_force_rmse_mev_per_a"))
        for s in found["structures"]:
            flagged[s["index"]].append(s)
    out = []
    for index, hits in flagged.items():
        forces = [h["force_rmse_mev_per_a"] for h in hits if h["force_rmse_mev_per_a"] is not None]
        energies = [h["energy_error_mev_per_atom"] for h in hits if h["energy_error_mev_per_atom"] is not None]
        out.append({"index": index, "runs": len(hits), "of_runs": evaluated,
                    "force_rmse_mev_per_a": float(np.median(forces)) if forces else None,
                    "max_force_rmse_mev_per_a": max(forces) if forces else None,
                    "energy_error_mev_per_atom": float(np.median(energies)) if energies else None})
    typical = [m for m in medians if m is not None]
    for o in out:
        o["median_structure_force_rmse_mev_per_a"] = float(np.median(typical)) if typical else None
    out.sort(key=lambda o: (-o["runs"], -(o["force_rmse_mev_per_a"] or 0.0)))
    return out


def layer_sizes(parameter_numels: Mapping[str, int]) -> dict[str, int]:
    """Weights per layer, pooled over the element networks as the gradient norms are
    (:func:`~mlpot.training.gradients.layer_norms`): parameter name (``named_parameters``,
    state-dict or ``metrics.csv`` column spelling) → element count, to layer → count."""
    sizes: dict[str, int] = {}
    for name, numel in parameter_numels.items():
        layer = layer_of(name)
        if layer is not None:
            sizes[layer] = sizes.get(layer, 0) + int(numel)
    return sizes


def rms_per_weight(layer_norms: Mapping[str, float] | None, sizes: Mapping[str, int] | None) -> dict[str, float] | None:
    """RMS gradient per weight of each layer, ‖∂L/∂θ‖ / √(number of weights), from the
    pooled layer norms and :func:`layer_sizes`.

    A layer's gradient norm grows with its size (a 38 → 64 first layer has ~2,500 weights,
    a readout 65): norms of layers of different sizes are not comparable, the RMS per weight
    is. ``None`` when either input is missing (results measured before sizes were kept);
    layers without a size are left out.
    """
    if not layer_norms or not sizes:
        return None
    return {k: float(v) / math.sqrt(sizes[k]) for k, v in layer_norms.items()
            if v is not None and sizes.get(k)}
