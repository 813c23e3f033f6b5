"""``tables.md`` of the depth study v2 (``python scripts/depth_study.py report``): what is
missing, the recommendation per budget, one table per study, MD stability and observables."""

from __future__ import annotations

import math
import statistics
from pathlib import Path

from depth_study_results import (ELASTIC, ENERGY, FORCE, REFERENCE, VARIANT_WORDS, Study, by_cell, cell_order,
                                 md_summary, median, paired_vs_reference, relative_errors, study_words)

from mlpot.ablation.stats import is_finite_number

#: results.json key of a run's test force RMSE over the structures beyond its training range.
BEYOND = "test_force_rmse_beyond_range_mev_per_a"


def decimals(centre, spread=None) -> int:
    """Decimals to print ``centre`` with: two significant digits of its ``spread`` (a standard
    deviation or an interval's half-width), else three of ``centre``; never fewer than two nor
    more than five significant digits of ``centre``."""
    if not is_finite_number(centre) or centre == 0:
        return max(0, 1 - math.floor(math.log10(spread))) if is_finite_number(spread) and spread > 0 else 0
    order = math.floor(math.log10(float(f"{abs(centre):.9g}")))  # 0.9999999999 counts as 1
    d = 1 - math.floor(math.log10(spread)) if is_finite_number(spread) and spread > 0 else 2 - order
    return max(0, min(max(d, 1 - order), 4 - order))


def num(x, places: int | None = None, sign: bool = False) -> str:
    """``x`` with ``places`` decimals (default: three significant digits); "—" when missing."""
    if not is_finite_number(x):
        return "—"
    places = decimals(x) if places is None else places
    return f"{x:{'+' if sign else ''}.{places}f}".replace("-", "−")


def mean_std(values) -> str:
    """Mean ± sample standard deviation, the mean to the digits the spread allows."""
    v = [x for x in values if is_finite_number(x)]
    if not v:
        return "—"
    if len(v) == 1:
        return num(v[0])
    m, s = statistics.fmean(v), statistics.stdev(v)
    places = decimals(m, s)
    return f"{num(m, places)} ± {num(s, places)}"


def interval(p: dict | None) -> str:
    """A paired difference: mean [95 % low, high], a star where the interval excludes 0."""
    if not p or p.get("mean") is None:
        return "—"
    if p.get("low") is None:
        return f"{num(p['mean'], sign=True)} (n = {p['n']})"
    places = decimals(p["mean"], p["high"] - p["mean"])
    body = ", ".join(num(p[k], places, sign=True) for k in ("low", "high"))
    return f"{num(p['mean'], places, sign=True)} [{body}]{' *' if p.get('resolved') else ''}"


def _table(header: list[str], rows: list[list[str]]) -> list[str]:
    return ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)] + ["| " + " | ".join(r) + " |" for r in rows]


def _spread(values) -> str:
    v = sorted({x for x in values if x is not None})
    return "—" if not v else str(v[0]) if len(v) == 1 else f"{v[0]}–{v[-1]}"


def screened_rates(document: dict, study: str) -> dict[tuple[str, int], list[float]]:
    """The rates each cell of ``study`` was screened at (results.json ``"learning_rates"``;
    empty for a study screened before that record existed)."""
    cells = (document.get("learning_rates") or {}).get(study, [])
    return {(c["variant"], c["depth"]): sorted(float(lr) for lr in c["val_loss"]) for c in cells}


def study_table(study: Study, variants: list[str], rates: list[float],
                screened: dict[tuple[str, int], list[float]] | None = None) -> list[str]:
    """One row per cell of ``study``: its network, learning rate († when it is the smallest
    or largest rate the cell was screened at, ``screened``; for a cell without that record,
    the ends of the grid ``rates``), runs, errors (mean ± std over runs), the paired ΔF
    against plain depth 2 and the costs: ratios to plain depth 2 from the study's cost pass
    when it has one, else the median per-run costs."""
    paired = paired_vs_reference(study)
    timed = {(c["variant"], c["depth"]): c for c in (study.cost or {}).get("cells", [])}
    keys = ("infer_ratio", "train_ratio") if study.cost else ("infer_us_per_atom", "train_us_per_atom")
    split = any(is_finite_number(r.get(BEYOND)) for r in study.runs)  # runs measured since 2026-12-07
    paired_beyond = paired_vs_reference(study, BEYOND) if split else {}
    rows = []
    for (v, d), runs in sorted(study.cells().items(), key=lambda kv: cell_order(variants)(kv[0])):
        lr = _spread(r.get("lr") for r in runs)
        ends = (screened or {}).get((v, d)) or rates
        edge = bool(ends) and any(r.get("lr") in (min(ends), max(ends)) for r in runs)
        rows.append([VARIANT_WORDS.get(v, v), str(d), _spread(r.get("width") for r in runs),
                     _spread(r.get("n_params") for r in runs), lr + (" †" if edge else ""), str(len(runs)),
                     str(sum(bool(r.get("converged")) for r in runs)), mean_std(r.get(ENERGY) for r in runs),
                     mean_std(r.get(FORCE) for r in runs),
                     "reference" if (v, d) == REFERENCE else interval(paired.get((v, d)))]
                    + ([beyond_range_cell(runs, paired_beyond.get((v, d)), (v, d) == REFERENCE)] if split else [])
                    + [num((timed.get((v, d)) or {}).get(k), 2) if study.cost else num(median(r.get(k) for r in runs))
                       for k in keys])
    costs = (["inference × plain-2 (cost pass)", "training step × plain-2 (cost pass)"] if study.cost
             else ["inference (µs/atom)", "training (µs/atom)"])
    header = ["variant", "depth", "width", "parameters", "lr", "runs", "converged", "test E RMSE (meV/atom)",
              "test F RMSE (meV/Å)", "ΔF vs plain-2 (meV/Å), 95 % CI"]
    header += ["ΔF beyond the training range vs plain-2 (meV/Å), 95 % CI"] if split else []
    header += costs
    return _table(header, rows)


def beyond_range_cell(runs: list[dict], paired: dict | None, reference: bool) -> str:
    """The test force RMSE over the structures beyond the training range: for the reference
    cell its mean over the runs that record it, for the others the paired difference to it
    (the folds hold different structures beyond the range, so only pairs compare)."""
    if reference:
        values = [r[BEYOND] for r in runs if is_finite_number(r.get(BEYOND))]
        return f"reference: {num(statistics.fmean(values), 0)} (n = {len(values)})" if values else "—"
    if not paired or not paired.get("n"):
        return "—"
    return interval(paired) + ("" if paired.get("low") is None else f" (n = {paired['n']})")


def recommendation_table(recommendation: dict) -> list[str]:
    rows = []
    for key, e in recommendation.items():
        up = e.get("runner_up") or {}
        rows.append([key, f"{VARIANT_WORDS.get(e['variant'], e['variant'])}, depth {e['depth']}", str(e.get("width")),
                     str(e.get("activation")), str(e.get("runs")), str(e.get("cells_compared", "—")),
                     f"{VARIANT_WORDS.get(up.get('variant'), up.get('variant'))}, depth {up['depth']}" if up else "—",
                     interval(e.get("paired_difference_vs_runner_up"))])
    return _table(["data set / budget", "best cell", "width", "activation", "converged runs", "cells compared", "runner-up",
                   "ΔF best − runner-up (meV/Å), 95 % CI"], rows)


def md_table(studies: list[Study], variants: list[str]) -> list[str]:
    rows = []
    for s in studies:
        for r in sorted(s.md, key=lambda r: cell_order(variants)((r["variant"], r["depth"]))):
            m = md_summary(r)
            low, high = m["interval"]
            rows.append([s.name, VARIANT_WORDS.get(r["variant"], r["variant"]), str(r["depth"]), str(r.get("width")),
                         num(r.get("temperature_k")), f"{m['replicas']} × {num(r.get('ps_per_replica'))}",
                         str(m["failed"]), f"{m['survived']:.2f} [{low:.2f}, {high:.2f}]"
                         if m["survived"] is not None else "—", num(m["mean_ttf_ps"])])
    return _table(["study", "variant", "depth", "width", "T (K)", "replicas × ps", "failed",
                   "survived, 95 % Wilson", "mean time to failure (ps)¹"], rows)


def observables_table(studies: list[Study], variants: list[str]) -> list[str]:
    """Si/Mo: relative errors (%) against DFT per cell (mean ± std over runs); water: the RMS
    g(r) difference from the teacher per pair (the cell's median run)."""
    lines = []
    for s in studies:
        cells = by_cell(s.observables)
        order = sorted(cells, key=cell_order(variants))
        if any("elastic_model" in r for r in s.observables):
            rows = [[VARIANT_WORDS.get(v, v), str(d), str(len(cells[v, d]))]
                    + [mean_std(e) for e in relative_errors(cells[v, d]).values()] for v, d in order]
            lines += [f"#### {s.name}: relative error against DFT (%)", ""] + _table(
                ["variant", "depth", "models"] + list(ELASTIC), rows) + [""]
        pairs = sorted({p for r in s.observables for p in (r.get("rdf_difference_vs_teacher") or {})})
        if pairs:
            rows = [[VARIANT_WORDS.get(v, v), str(d)] + [mean_std((r.get("rdf_difference_vs_teacher") or {}).get(p)
                                                                  for r in cells[v, d]) for p in pairs] for v, d in order]
            lines += [f"#### {s.name}: RMS g(r) difference from the teacher", ""] + _table(
                ["variant", "depth"] + [f"g {p}" for p in pairs], rows) + [""]
    return lines


def missing(studies: list[Study], design: dict) -> list[str]:
    """What the results lack: studies without runs, cells without runs (the design's depths of
    every variant and its residual-only depths of the others) or with fewer than the
    design's (fold, seed) pairs (seeds × folds when it lists none), cells without an MD row,
    Si/Mo runs and water cells without observables."""
    per_cell = len(design.get("pairs") or ()) or len(design.get("seeds") or ()) * (design.get("folds") or 0)
    out = []
    for s in studies:
        if not s.runs:
            out.append(f"{s.name}: no runs")
            continue
        cells = s.cells()
        variants = list(design.get("variants") or sorted({v for v, _ in cells}))
        depths = list(design.get("depths") or sorted({d for _, d in cells}))
        # The residual-only depths (design "residual_depths", e.g. 24 and 32) have no plain cells;
        # the data-size axis (water) trains the design's subset "water_cells".
        expected = [(v, d) for v in variants for d in depths] + [
            (v, d) for v in variants if v != "plain" for d in design.get("residual_depths") or ()]
        if s.dataset.startswith("water") and design.get("water_cells"):
            expected = [tuple(c) for c in design["water_cells"]]
        absent = [c for c in expected if c not in cells]
        short = [c for c in expected if c in cells and per_cell and len(cells[c]) < per_cell]
        no_md = [c for c in expected if c in cells and not any((r["variant"], r["depth"]) == c for r in s.md)]
        words = (lambda cs: ", ".join(f"{v} d{d}" for v, d in cs))
        if absent:
            out.append(f"{s.name}: no runs for {len(absent)} of {len(expected)} cells: {words(absent)}")
        if short:
            out.append(f"{s.name}: fewer than {per_cell} runs: "
                       + ", ".join(f"{v} d{d} ({len(cells[v, d])})" for v, d in short))
        if no_md:
            out.append(f"{s.name}: no MD stability for {len(no_md)} cells with runs: {words(no_md)}")
        if not s.cost:
            out.append(f"{s.name}: no cost pass (python scripts/depth_study.py cost)")
        if s.dataset in ("si", "mo"):
            observed = {(r["variant"], r["depth"], r["fold"], r["seed"]) for r in s.observables}
            lacking = sum((r["variant"], r["depth"], r["fold"], r["seed"]) not in observed for r in s.runs)
            if lacking:
                out.append(f"{s.name}: no observables for {lacking} of {len(s.runs)} runs")
        else:
            lacking = [c for c in cells if not any((r["variant"], r["depth"]) == c for r in s.observables)]
            if lacking:
                out.append(f"{s.name}: no g(r) for {len(lacking)} cells: {words(sorted(lacking))}")
    return out


def write_tables(path: Path, studies: list[Study], document: dict, variants: list[str]) -> None:
    """``tables.md``: what is missing, the recommendation per budget, one table per study, MD
    stability and observables."""
    design = document.get("design") or {}
    gone = missing(studies, design)
    lines = ["# Depth study v2: tables", "",
             "From results.json (`python scripts/depth_study.py collect`) by `python scripts/depth_study.py report`. "
             "Errors: mean ± standard deviation over a cell's (fold, seed) runs, converged or not. ΔF: test force "
             "RMSE minus the plain 2-layer network's on the same (fold, seed), mean and 95 % t interval; * where "
             "the interval excludes 0. lr † : the chosen rate is the smallest or largest the cell was screened at "
             "(a cell at an end of the grid is screened half a decade further, to 3e-5 or 1e-1; a cell without "
             "that record, screened before it existed, is judged by the grid's ends). Costs: where a "
             "study has a cost pass, ratios to plain depth 2 of its cells timed side by side in one interleaved "
             "pass (compare cells by these); else medians over runs, timed days apart under changing load (rough). "
             "ΔF beyond the training range (runs trained since 2026-12-07, and earlier runs that kept their "
             "model): the test force RMSE over the structures with an atom beyond the run's training range by more "
             "than 0.2 of a feature's range, paired with plain depth 2 as ΔF is; n counts the pairs where both "
             "runs have such structures. A cell that extrapolates badly, told from one that fits badly.",
             "", "## Missing", ""]
    lines += [f"- {m}" for m in gone] or ["- nothing: every cell of every study has its runs, MD and observables"]
    lines += ["", "## Recommendation per budget", "",
              "The cell of lowest mean test force RMSE over its converged runs (from `collect`).", ""]
    recommendation = document.get("recommendation") or {}
    lines += recommendation_table(recommendation) if recommendation else ["No recommendation in results.json."]
    for s in studies:
        lines += ["", f"## {s.name} ({study_words(s)})", ""]
        lines += (study_table(s, variants, list(design.get("learning_rates") or []), screened_rates(document, s.name))
                  if s.runs else ["No runs yet."])
    lines += ["", "## MD stability", ""]
    if any(s.md for s in studies):
        lines += md_table(studies, variants) + ["", "¹ survivors counted at the run length (a lower bound)."]
    else:
        lines += ["No MD stability rows in results.json."]
    lines += ["", "## Observables", ""]
    lines += observables_table(studies, variants) or ["No observables in results.json."]
    path.write_text("\n".join(lines) + "\n")
