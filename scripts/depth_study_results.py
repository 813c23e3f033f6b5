"""The depth study's results.json as studies and cells, and what its figures
(``scripts/depth_study_report.py``) and tables (``scripts/depth_study_tables.py``) both
compute from them: paired differences, t intervals, MD survival, relative errors."""

from __future__ import annotations

import math
import re
import statistics

from mlpot.ablation.stats import (  # one t quantile for every interval
    is_finite_number,
    paired_difference,
    t_quantile,
)

#: Variant → what a legend says.
VARIANT_WORDS = {"plain": "plain MLP", "residual_stem": "residual (stem + identity blocks)",
                 "residual_sd_stem": "residual + stochastic depth"}
FORCE, ENERGY = "test_force_rmse_mev_per_a", "test_energy_rmse_mev_per_atom"
#: The reference cell of the paired differences: the plain network of 2 hidden layers.
REFERENCE = ("plain", 2)
#: Elastic observables: label → (model path, DFT path) in an observables row.
ELASTIC = {"bulk modulus (EOS)": (("eos", "bulk_modulus_gpa"), ("eos_reference", "bulk_modulus_gpa")),
           "C11": (("elastic_model", "C11"), ("elastic_reference", "C11")),
           "C12": (("elastic_model", "C12"), ("elastic_reference", "C12")),
           "C44": (("elastic_model", "C44"), ("elastic_reference", "C44"))}


def by_cell(rows: list[dict]) -> dict[tuple[str, int], list[dict]]:
    """(variant, depth) → its rows."""
    out: dict[tuple[str, int], list[dict]] = {}
    for r in rows:
        out.setdefault((r["variant"], r["depth"]), []).append(r)
    return out


class Study:
    """One data set × budget: its runs, MD rows and observables (possibly none of each)."""

    def __init__(self, dataset: str, budget: str):
        self.dataset, self.budget, self.name = dataset, budget, f"{dataset}-{budget}"
        self.runs, self.md, self.observables = [], [], []  # type: list[dict], list[dict], list[dict]
        self.cost: dict | None = None  # its cost pass (results.json "cost"), if it has one

    def cells(self) -> dict[tuple[str, int], list[dict]]:
        """(variant, depth) → its runs."""
        return by_cell(self.runs)


def mean_ci(values) -> tuple[float | None, float | None, int]:
    """Mean, half-width of its 95 % t interval (``None`` below 2 values) and count of the finite values."""
    v = [float(x) for x in values if is_finite_number(x)]
    if not v:
        return None, None, 0
    if len(v) < 2:
        return v[0], None, 1
    return statistics.fmean(v), t_quantile(0.975, len(v) - 1) * statistics.stdev(v) / math.sqrt(len(v)), len(v)


def median(values) -> float | None:
    v = [x for x in values if is_finite_number(x)]
    return statistics.median(v) if v else None


def _rank(study: Study) -> tuple:
    """Study order: Si, Mo, water by training-set size; budgets by size ("2.5k" → 2500), not spelling."""
    water = re.fullmatch(r"water-(\d+)traj", study.dataset)
    budget = re.fullmatch(r"(\d+(?:\.\d+)?)(k?)", study.budget)
    return ((2, int(water[1])) if water else ({"si": 0, "mo": 1}.get(study.dataset, 3), 0), study.dataset,
            float(budget[1]) * (1000 if budget[2] else 1) if budget else math.inf, study.budget)


def load_studies(document: dict, expected: list[str] | None = None) -> list[Study]:
    """The studies of results.json (those with any row, and every ``expected`` one), in :func:`_rank` order."""
    found: dict[tuple[str, str], Study] = {}
    for name in expected or []:
        dataset, budget = name.rsplit("-", 1)
        found[dataset, budget] = Study(dataset, budget)
    for key, attr in (("runs", "runs"), ("md_stability", "md"), ("observables", "observables")):
        for row in document.get(key) or []:
            study = found.setdefault((row["dataset"], row["budget"]), Study(row["dataset"], row["budget"]))
            getattr(study, attr).append(row)
    for entry in document.get("cost") or []:
        found.setdefault((entry["dataset"], entry["budget"]), Study(entry["dataset"], entry["budget"])).cost = entry
    return sorted(found.values(), key=_rank)


def cell_order(variants: list[str]):
    """Sort key of (variant, depth): the variants in ``variants`` order, then by depth."""
    return lambda c: (variants.index(c[0]) if c[0] in variants else len(variants), c[1])


def as_run(row: dict, key: str = FORCE) -> dict:
    """A results.json row as :func:`~mlpot.ablation.stats.paired_difference` reads it."""
    return {"fold": row["fold"], "seed": row["seed"], "test": {"value": row.get(key)}}


def paired_vs_reference(study: Study, key: str = FORCE) -> dict[tuple[str, int], dict]:
    """Each cell's test ``key`` minus the plain depth-2 cell's, paired by (fold, seed); empty
    without a reference cell."""
    cells = study.cells()
    if REFERENCE not in cells:
        return {}
    reference = [as_run(r, key) for r in cells[REFERENCE]]
    return {c: paired_difference([as_run(r, key) for r in runs], reference, "value")
            for c, runs in cells.items() if c != REFERENCE}


def dataset_words(dataset: str) -> str:
    water = re.fullmatch(r"water-(\d+)traj", dataset)
    return f"water, {water.group(1)} trajectories" if water else {"si": "Si", "mo": "Mo"}.get(dataset, dataset)


def study_words(study: Study) -> str:
    return f"{dataset_words(study.dataset)}, budget ≈{study.budget} weights"


def md_summary(row: dict) -> dict:
    """Survived fraction with its 95 % Wilson score interval (sound for 10 replicas, where the
    normal approximation is not) and the mean time to failure of an MD row, survivors counted
    at the run length (a restricted mean: a lower bound when some survive)."""
    ttf, n, ps = row.get("time_to_failure_ps") or [], row.get("replicas") or 0, row.get("ps_per_replica")
    n = n or len(ttf)
    failed = sum(t is not None for t in ttf) if ttf else (row.get("n_failed") or 0)
    times = [t if t is not None else ps for t in ttf]
    z, k = 1.959964, n - failed
    centre, half = ((k + z * z / 2) / (n + z * z), z * math.sqrt(k * failed / n + z * z / 4) / (n + z * z)) if n else (0, 0)
    return {"survived": k / n if n else None, "interval": (centre - half, centre + half) if n else (None, None),
            "failed": failed, "replicas": n,
            "mean_ttf_ps": statistics.fmean(times) if times and all(is_finite_number(t) for t in times) else None}


def relative_errors(rows: list[dict]) -> dict[str, list[float]]:
    """Per quantity of :data:`ELASTIC`, the relative errors (%) of the model against DFT over ``rows``."""
    out: dict[str, list[float]] = {}
    for label, paths in ELASTIC.items():
        pairs = [[(r.get(a) or {}).get(b) for a, b in paths] for r in rows]
        out[label] = [100.0 * (m - d) / d for m, d in pairs if is_finite_number(m) and is_finite_number(d) and d != 0]
    return out
