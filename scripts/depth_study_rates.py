"""The depth study's learning-rate screen: which rate each cell takes (``scripts/depth_study.py``).

Every cell (variant, depth) trains fold 0, seed 0 at each rate of :data:`LRS` for the
screening budget; the rate of lowest validation loss becomes the cell's. A cell whose best
rate is the smallest or largest it has screened is screened again one step (half a decade)
beyond it, up to the rates of :func:`all_rates`, so that the rate it takes is a minimum and
not the end of a grid. :func:`write_rates` records each cell's choice and every loss it was
chosen from in ``RUNS/<study>/rates.json``, which the later stages read
(:func:`depth_study_archive.read_rates`): a cell whose rate moved after its full stage had
trained has that stage trained again at the new rate, and its runs at the old one are
superseded.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import depth_study_archive
from depth_study_archive import best_val_loss

#: 1e-2 joined after the first screen (si-2.5k): 23 of its 24 cells chose 3e-3, the top of the
#: grid then, and a rate chosen at the edge of its grid is not a choice (:func:`edge_rates`).
LRS = (3e-4, 1e-3, 3e-3, 1e-2)
#: Rates beyond each end of LRS, in the grid's own steps (half a decade), screened in turn
#: only for the cells whose best rate so far is the end of what they have screened (si-25k's
#: residual cells of depth 4 chose 3e-4, si-2.5k's deepest residual cells 1e-2).
LOWER_EXTENSION = (1e-4, 3e-5)
UPPER_EXTENSION = (3e-2, 1e-1)


def cell(run) -> tuple[str, int]:
    """A run's cell: (variant, depth)."""
    return run.variant, run.depth


def all_rates() -> tuple[float, ...]:
    """Every rate a cell may be screened at, ascending: :data:`LRS` and its extensions."""
    return (*reversed(LOWER_EXTENSION), *LRS, *UPPER_EXTENSION)


def screen_scores(study_dir: Path, runs: list) -> dict[tuple[str, int], dict[float, float]]:
    """Per cell whose screen at every rate of :data:`LRS` has finished: its best validation
    loss at each rate screened so far (:data:`LRS` and any extension)."""
    from mlpot.ablation.runner import load_result

    scores = {}
    for run in {cell(r): r for r in runs}.values():
        found = {}
        for lr in all_rates():
            folder = study_dir / f"lr-{lr:g}" / "runs" / run.name
            if load_result(folder) is not None and (loss := best_val_loss(folder)) is not None:
                found[lr] = loss
        if all(lr in found for lr in LRS):
            scores[cell(run)] = found
    return scores


def next_rate(scores: dict[float, float]) -> float | None:
    """The rate to screen next for a cell with these ``scores`` (rate → validation loss): one
    step beyond its best when that is the smallest or largest rate it has screened and
    :func:`all_rates` goes further; ``None`` when its best lies between two screened rates
    (or at the end of every rate allowed: :func:`edge_rates`)."""
    best, rates = min(scores, key=scores.get), all_rates()
    k = rates.index(best)
    if best == min(scores) and k > 0:
        return rates[k - 1]
    if best == max(scores) and k < len(rates) - 1:
        return rates[k + 1]
    return None


def chosen_rates(study_dir: Path, runs: list) -> dict[tuple[str, int], float]:
    """The learning rate of each cell whose screen is complete: every rate of :data:`LRS`
    finished, and no extension still due (:func:`pending_rates`)."""
    return {key: min(found, key=found.get) for key, found in screen_scores(study_dir, runs).items()
            if next_rate(found) is None}


def pending_rates(study_dir: Path, runs: list) -> dict[tuple[str, int], float]:
    """The cells whose best rate so far is the end of what they have screened, each with the
    rate to screen next (:func:`next_rate`)."""
    return {key: nxt for key, found in screen_scores(study_dir, runs).items()
            if (nxt := next_rate(found)) is not None}


def edge_rates(rates: dict[tuple[str, int], float]) -> list[tuple[str, int]]:
    """The cells whose chosen rate is the smallest or largest of :func:`all_rates`: their
    optimum may lie further out still, so they are reported."""
    return sorted(key for key, lr in rates.items() if lr in (min(all_rates()), max(all_rates())))


def write_rates(study_dir: Path, runs: list) -> dict[tuple[str, int], float]:
    """Write ``study_dir/rates.json`` (each cell's rate and the loss at every rate screened,
    which the later stages read: :func:`depth_study_archive.read_rates`); returns the rates."""
    from mlpot.io.files import atomic_write_text

    scores, rates = screen_scores(study_dir, runs), chosen_rates(study_dir, runs)
    document = {"grid": list(LRS), "extensions": {"lower": list(LOWER_EXTENSION), "upper": list(UPPER_EXTENSION)},
                "cells": [{"variant": v, "depth": d, "lr": rates.get((v, d)),
                           "val_loss": {f"{lr:g}": loss for lr, loss in sorted(scores[v, d].items())}}
                          for v, d in sorted(scores)]}
    atomic_write_text(study_dir / depth_study_archive.RATES_FILE, json.dumps(document, indent=1) + "\n")
    return rates


def run_screen(study_dir: Path, runs: list, screen_at: Callable[[float, list[str], str], None]) -> None:
    """The lr stage: every cell at each rate of :data:`LRS`, then, round by round, the cells
    due a rate beyond the end of what they have screened (:func:`pending_rates`) at that rate;
    then ``rates.json``. ``screen_at(lr, run names, why)`` trains the named screening runs at
    ``lr`` (finished ones are skipped, so a rerun resumes)."""
    for lr in LRS:
        screen_at(lr, [r.name for r in runs], "")
    for _ in range(max(len(LOWER_EXTENSION), len(UPPER_EXTENSION))):
        pending = pending_rates(study_dir, runs)
        for lr in sorted(set(pending.values())):
            cells = sorted(key for key, nxt in pending.items() if nxt == lr)
            screen_at(lr, [r.name for r in runs if cell(r) in cells],
                      " (best rate so far at the end of those screened: "
                      + ", ".join(f"{v} d{d}" for v, d in cells) + ")")
    if screen_scores(study_dir, runs):
        write_rates(study_dir, runs)


def collected(runs_dir: Path, names: list[str], previous_file: Path) -> dict[str, list[dict]]:
    """results.json's ``"learning_rates"``: per study, the cells of its ``rates.json`` (each
    cell's rate and the validation loss at every rate it screened), for the studies ``names``
    that have one; other studies keep their entries from ``previous_file``."""
    previous = json.loads(previous_file.read_text()).get("learning_rates", {}) if previous_file.is_file() else {}
    found = {name: json.loads(path.read_text())["cells"] for name in names
             if (path := runs_dir / name / depth_study_archive.RATES_FILE).is_file()}
    return {**{k: v for k, v in previous.items() if k not in names}, **found}
