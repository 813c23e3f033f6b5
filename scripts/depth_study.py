#!/usr/bin/env python
"""The depth study, v2: how deep should a Behler–Parrinello atomic network be? (docs/depth-study.md)

The design (issue "The depth study, v2"), planned for a 2-core machine and run resumably:

* **Studies**: a data set × a parameter budget per element network. Data: mlearn Si and Mo
  (../shared, with the published test sets as external checks) and, when
  ``scripts/make_teacher_water.py`` has written them, water labelled by the published n2p2
  potential as a known truth, at several training-set sizes. Budgets: the weights of a plain
  2-layer network of width 32, 139 and 296 on the recipe's descriptor (≈ 2.5k, 25k, 100k).
* **Cells**: variant (plain; residual; residual with stochastic depth) × depth
  (1, 2, 3, 4, 6, 8, 12, 16, and 24, 32 of the residual ones), the width chosen per depth
  to meet the budget (:func:`mlpot.ablation.grid.matched_hidden`). Water, the data-size
  axis, trains the ten cells of :data:`WATER_CELLS`.
* **Stage ``lr``** (``scripts/depth_study_rates.py``): every cell trains fold 0, seed 0 at
  each learning rate of :data:`depth_study_rates.LRS` for
  :data:`SCREEN_EPOCHS` epochs; the rate of lowest validation loss becomes the cell's. The
  learning rate is thus chosen per depth and variant, not fixed. A cell whose best rate is
  the smallest or largest it has screened is screened again half a decade beyond it
  (``LOWER_EXTENSION``, ``UPPER_EXTENSION``), so that its rate is a minimum, not the
  end of a grid; the choices and every screened loss go to ``RUNS/<study>/rates.json``, and
  a cell whose rate moved has its full stage trained at the new rate (the runs at the old
  one are superseded: kept, but left out of every later stage and of results.json).
* **Stage ``full``**: every cell at its rate, the (fold, seed) pairs of :data:`PAIRS`: five
  seeds, each on one fold of a 3-fold cross-validation over the training set in turn, the
  same pairs in every cell, so comparisons pair by (fold, seed) (water: one fixed split by
  trajectory and five seeds, tested on the held-out trajectories, :data:`TRAJECTORY_PAIRS`);
  a plateau schedule and
  early stopping (no 1 % improvement in :data:`PATIENCE` epochs, :data:`MIN_DELTA`) up to
  :data:`MAX_EPOCHS`. A run whose best epoch lies in its last 10 % is reported as not
  converged.
* **Stage ``md``** (``scripts/depth_study_md.py``): per cell whose full stage has finished,
  MD at each condition of its data set (a high temperature and a length: Si 3000 K for
  10 ps with every model of the cell, two replicas each, then 1518 K for 50 ps with its
  median-validation model, ``--replicas`` replicas; Mo 3000 K for 50 ps with the median
  model) from held-out frames, until each replica fails; one result file per cell and
  condition, checkpointed while it runs. After each cell it computes the cell's observables.
* **Observables** (``scripts/depth_study_observables.py``, cached beside each run): Si/Mo:
  elastic constants, equation of state and vacancy formation energy of every model; water:
  the g(r) of each cell's median run against the teacher's.
* **Stage ``collect``**: ``docs/depth-study/results.json``: one object per trained model
  under ``"runs"``, the observables of every Si/Mo model and of each water cell's median run
  under ``"observables"``, one object per cell under ``"md_stability"``, and the
  ``"recommendation"`` per budget.

Each stage of a study is an ordinary ``mlpot ablate`` grid (:func:`mlpot.ablation.run_ablation`)
in ``RUNS/<study>/<stage>``: finished runs are skipped and interrupted ones resume from their
checkpoints, so the same command continues the study after any stop. ``RUNS`` is scratch that
a fresh clone lacks: what finished runs measured is copied into the committed archive
``docs/depth-study/archive`` (``archive``; also after each stage and MD cell) and restored
from it before every command (``scripts/depth_study_archive.py``). The recipe is
``examples/mlearn.yaml`` as it was when the first study started (archived in ``recipe.yaml``;
every study keeps using it even if the example changes later).

Usage:
    python scripts/depth_study.py plan    [--studies si-2.5k ...] [--runs runs/depth-v2]
    python scripts/depth_study.py run     [--studies ...] [--stages lr full md] [--jobs 1]
    python scripts/depth_study.py md      [--studies ...] [--replicas 10] [--ps PS] [--threads 1]
    python scripts/depth_study.py archive [--studies ...] [--archive docs/depth-study/archive]
    python scripts/depth_study.py cost    [--studies ...] [--rounds 31] [--threads 1]
    python scripts/depth_study.py collect [--runs runs/depth-v2]
    python scripts/depth_study.py report  [--out docs/depth-study/results.json] [--figures docs/depth-study/v2]

``run`` takes the studies one after the other, each through its stages (by default lr, full
and md), so the first study's whole answer is there before the next one starts; ``md`` alone
runs only that stage. ``cost`` times every cell of a study side by side in one process,
interleaved (``RUNS/<study>/cost.json``, ``scripts/depth_study_cost.py``): its ratios to plain
depth 2 are the costs to compare cells by, as the per-run costs in ``"runs"`` were measured
days apart under changing load. ``collect`` writes results.json (cost passes under
``"cost"``); ``report`` draws the figures and tables.md from it (``scripts/depth_study_report.py``,
``depth_study_tables.py``, both reading it through ``depth_study_results.py``).
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import time
from pathlib import Path

import depth_study_archive
import depth_study_rates as rates_screen
import yaml
from depth_study_observables import RDF_PROTOCOL, cell_observables, observables, teacher_path
from depth_study_rates import cell

from mlpot.ablation.report import collect_results

ROOT = Path(__file__).resolve().parents[1]
MLEARN = ROOT.parent / "shared" / "datasets" / "mlearn"
TEACHER = ROOT / "runs" / "teacher-water"  # scripts/make_teacher_water.py
RECIPE = ROOT / "examples" / "mlearn.yaml"
RESULTS = ROOT / "docs" / "depth-study" / "results.json"
#: The study's durable record, committed (scripts/depth_study_archive.py).
ARCHIVE = ROOT / "docs" / "depth-study" / "archive"

#: Budget name → width of the plain 2-layer reference network whose weights every cell matches.
BUDGETS = {"2.5k": 32, "25k": 139, "100k": 296}
DEPTHS = (1, 2, 3, 4, 6, 8, 12, 16)
#: plain; residual done fairly (a plain stem to the block width, then equal-width identity
#: blocks, the branch zero-initialised as in the recipe); and the same with stochastic depth.
VARIANTS = ("plain", "residual_stem", "residual_sd_stem")
#: Depths for the residual variants only (issue 20: "24/32 for residual variants if they
#: still train"): the plain networks are already worse from depth 8 on at both Si budgets.
RESIDUAL_DEPTHS = (24, 32)
#: Every (variant, depth) cell of a study.
CELLS = tuple((v, d) for v in VARIANTS for d in DEPTHS + (RESIDUAL_DEPTHS if v != "plain" else ()))
SEEDS = (0, 1, 2, 3, 4)
FOLDS = 3
#: The full stage's (fold, seed) per cell: every seed its own, the folds in turn. Five seeds
#: crossed with three folds (15 runs a cell) cost ~12 h of this machine for the cheapest study
#: alone; five pairs keep five independent initialisations and every fold, at a third.
PAIRS = tuple((seed % FOLDS, seed) for seed in SEEDS)
#: Water's (fold, seed): no cross-validation. Its held-out trajectories (test.extxyz) are the
#: test set, and a 3-fold split by trajectory of a 4-trajectory ladder rung would train on
#: one or two trajectories of the four, a different number per fold: the data-size axis
#: would measure the folds. One split keeps every rung's training set at its size less the
#: validation trajectory; the five seeds vary the initialisation.
TRAJECTORY_PAIRS = tuple((0, seed) for seed in SEEDS)

SCREEN_EPOCHS = 150
#: Early stopping: a run ends once PATIENCE epochs have not lowered its validation loss by
#: MIN_DELTA (relative), a plateau. With any decrease counting (as at first, with a cap of
#: 1500 epochs), 4 of the first cell's 5 runs crept down ~1 % per 100 epochs to the cap and
#: were not converged; their runs are extended from their checkpoints to this cap.
MAX_EPOCHS = 4000
PATIENCE = 100
MIN_DELTA = 0.01
#: Networks with a stem have equal widths, so their weights step coarsely (one unit of width
#: is ~2(depth − 1)·w weights): each run's own count is reported beside its budget.
MATCH_TOLERANCE = 0.1
#: Studies in the order they run, the cheap and most informative first: the budget axis on
#: Si (2.5k, 25k: the recipe's size), then the data-size axis (water, smallest and largest
#: set first), then the largest budget, the second element and water at 25k.
ORDER = ("si-2.5k", "si-25k", "water-2traj-2.5k", "water-4traj-2.5k", "water-8traj-2.5k", "water-12traj-2.5k",
         "si-100k", "mo-2.5k", "mo-25k", "mo-100k", "water-2traj-25k", "water-4traj-25k", "water-8traj-25k",
         "water-12traj-25k")


#: Teacher-labelled water training sets used (trajectories of train-<n>traj.extxyz, 20 frames
#: of 192 atoms each): four sizes (issue 20), one trajectory of each held out for validation,
#: so 1, 3, 7 and 10 trajectories train (the 12-trajectory rung's 10 % validation share is
#: two whole trajectories): an 11-fold range of data from the 12 training trajectories of
#: the ladder. (Until 2026-12-07 the rungs were 4, 6, 8 and 12: a 3.7-fold range.)
WATER_SIZES = (2, 4, 8, 12)
#: The cells of the data-size axis (water), a subset of :data:`CELLS`. A water rung costs
#: 1.3–5 s per epoch (192-atom frames, the teacher's 12-bohr symmetry functions) against
#: Si's 0.5: all 28 cells at four sizes were ~160 core-hours, weeks of this machine. The
#: axis asks whether the best depth moves with data, so it keeps plain depth 1–8 around
#: the optimum Si and Mo found (plain 12 and 16 lose at every Si/Mo budget), the residual
#: network at 4, 8 and 16 (does it catch up with more data?), and stochastic depth at 8
#: (a regulariser, if anywhere useful at little data), paired with residual 8.
WATER_CELLS = (("plain", 1), ("plain", 2), ("plain", 3), ("plain", 4), ("plain", 6), ("plain", 8),
               ("residual_stem", 4), ("residual_stem", 8), ("residual_stem", 16), ("residual_sd_stem", 8))


def by_trajectory(data: dict) -> bool:
    """Whether a data set is split by trajectory (the teacher's water)."""
    return data.get("group_by") == "trajectory"


def folds(data: dict) -> int:
    """Cross-validation folds of a data set's studies: 1 (a fixed split, tested on the
    held-out trajectories) for data split by trajectory, :data:`FOLDS` otherwise."""
    return 1 if by_trajectory(data) else FOLDS


def pairs(data: dict) -> tuple[tuple[int, int], ...]:
    """The full stage's (fold, seed) pairs of a data set's studies."""
    return TRAJECTORY_PAIRS if by_trajectory(data) else PAIRS


def cells(data: dict) -> tuple[tuple[str, int], ...]:
    """The (variant, depth) cells of a data set's studies."""
    return WATER_CELLS if by_trajectory(data) else CELLS


def datasets() -> dict[str, dict]:
    """Data set name → the ``data`` section of its studies (only those whose files exist)."""
    found = {}
    for name, element, options in (("si", "Si", {}), ("mo", "Mo", {"stress_order": "xx yy zz xy zx yz"})):
        train, test = MLEARN / element / "training.json", MLEARN / element / "test.json"
        if train.is_file() and test.is_file():
            found[name] = {"train": str(train), "test": str(test), "format": "mlearn", "read_options": options,
                           "val_fraction": 0.1, "split_seed": 0}
    test = TEACHER / "test.extxyz"
    for size in WATER_SIZES:
        path = TEACHER / f"train-{size}traj.extxyz"
        if path.is_file() and test.is_file() and teacher_path({"test": test}).is_file():
            # Split by trajectory (frames 20 fs apart are near-copies); the held-out
            # trajectories of test.extxyz are the external test.
            found[f"water-{size}traj"] = {"train": str(path), "test": str(test), "format": "ase",
                                          "read_options": {}, "val_fraction": 0.1, "split_seed": 0,
                                          "group_by": "trajectory"}
    return found


def studies(selected: list[str] | None) -> list[tuple[str, dict, str]]:
    """(study name, data section, budget) in the run order of :data:`ORDER`, those whose data
    exist."""
    data = datasets()
    names = [s for s in ORDER if s.rsplit("-", 1)[0] in data]
    if selected:
        unknown = sorted(set(selected) - set(names))
        if unknown:
            raise SystemExit(f"unknown or unavailable studies {unknown}; available: {names}")
        names = [n for n in names if n in selected]
    return [(n, data[n.rsplit("-", 1)[0]], n.rsplit("-", 1)[1]) for n in names]


def unavailable_studies() -> list[tuple[str, str]]:
    """(study, what to do) for each study of :data:`ORDER` whose data are not here: mlearn
    lives in ../shared, the teacher's water is made by scripts/make_teacher_water.py."""
    data = datasets()
    missing = []
    for name in ORDER:
        dataset = name.rsplit("-", 1)[0]
        if dataset in data:
            continue
        if dataset.startswith("water"):
            why = f"no teacher data in {TEACHER} (python scripts/make_teacher_water.py, ~20 min on one core)"
        else:
            why = f"no mlearn data in {MLEARN}"
        missing.append((name, why))
    return missing


def recipe(study_dir: Path) -> dict:
    """The recipe a study trains with: the study-wide copy of examples/mlearn.yaml
    (``RUNS/recipe.yaml``, taken when the first study started), kept in each study as it
    started. Every study trains with the same recipe, so the budgets and data sets compare
    even when the example changes while the study runs (days to weeks)."""
    saved, shared = study_dir / "recipe.yaml", study_dir.parent / "recipe.yaml"
    if not shared.is_file():
        shared.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(RECIPE, shared)
    if not saved.is_file():
        study_dir.mkdir(parents=True, exist_ok=True)
        shutil.copy2(shared, saved)
    return yaml.safe_load(saved.read_text())


def teacher_descriptor(data: dict) -> dict:
    """The descriptor of the teacher that labelled a water data set."""
    import mlpot

    return mlpot.load(teacher_path(data)).spec.to_dict()


def fixed_descriptor(study_dir: Path, config: dict) -> dict:
    """The recipe's descriptor with its ``select`` resolved once per study, on the study's whole
    training set, into explicit terms (kept in ``study_dir/descriptor.json``): every cell,
    fold and stage then sees the same descriptor, and the grid's shapes are known before any
    run (:func:`grid`). :func:`mlpot.training.fixed_terms.choose_terms_once` makes the
    choice; a study whose recipe now selects otherwise is refused, not silently mixed."""
    if "select" not in (config.get("descriptor") or {}):
        return config["descriptor"]
    from mlpot.io.files import atomic_write_text
    from mlpot.training import TrainConfig
    from mlpot.training.fixed_terms import choose_terms_once

    cfg = TrainConfig.from_dict({k: v for k, v in config.items() if k != "ablation"})
    saved = study_dir / "descriptor.json"
    if saved.is_file() and "chosen_by" not in (record := json.loads(saved.read_text())):
        # Written before the choice recorded its config (the terms alone). A study's recipe is
        # frozen in its folder (recipe.yaml), so this config chose them.
        atomic_write_text(saved, json.dumps({"chosen_by": cfg.to_dict()["descriptor"], "spec": record},
                                            indent=1) + "\n")
    choose_terms_once(cfg, saved, resuming=saved.is_file(), log=print, where="depth study")
    # The terms as saved: the runs' configs (and so their resumption) were written with them.
    return json.loads(saved.read_text())["spec"]


def stage_config(runs: Path, study: str, data: dict, budget: str, stage: str, lr: float) -> dict:
    """The ablation config of one stage of one study at learning rate ``lr``."""
    config = recipe(runs / study)
    config["data"] = {**config.get("data", {}), **{k: v for k, v in data.items() if v is not None}}
    if data.get("test") is None:
        config["data"].pop("test", None)
    if by_trajectory(data):
        # The teacher's own symmetry functions: the truth is then a function of the student's
        # descriptor, and the study isolates the network (the recipe's grid is made for Si/Mo).
        config["descriptor"] = teacher_descriptor(data)
    else:
        config["descriptor"] = fixed_descriptor(runs / study, config)
    config["optimizer"] = {**config.get("optimizer", {}), "lr": lr}
    # Early stopping needs a schedule that does not depend on the epoch budget.
    config["schedule"] = {"name": "plateau", "warmup_epochs": 5, "factor": 0.5, "patience": 30, "min_lr": 1e-5}
    screening = stage == "lr"
    config["training"] = {**config.get("training", {}), "epochs": SCREEN_EPOCHS if screening else MAX_EPOCHS,
                          "early_stopping_patience": 0 if screening else PATIENCE,
                          "early_stopping_min_delta": 0.0 if screening else MIN_DELTA}
    config["ablation"] = {
        "depths": list(DEPTHS + RESIDUAL_DEPTHS), "widths": ["matched"],
        "match_reference": {"depth": 2, "width": BUDGETS[budget]},
        "match_tolerance": MATCH_TOLERANCE,
        "variants": list(VARIANTS), "survival": 0.8, "folds": folds(data),
        "seeds": [0] if screening else list(SEEDS),
        "md": {"steps": 0}, "inference_repeats": 3, "vectorize": True,
    }
    return config


_SHAPES: dict[str, list[int]] = {}


def grid(config: dict) -> list:
    """The runs of an ablation config (:func:`mlpot.ablation.grid.expand_grid`)."""
    from mlpot.ablation.config import load_ablation
    from mlpot.ablation.grid import expand_grid
    from mlpot.data import element_symbols, read

    setup = load_ablation(config)
    key = json.dumps([config["data"], config["descriptor"]], sort_keys=True, default=str)
    if key not in _SHAPES:  # the descriptor length per element, from the data (read once)
        data = setup.base.data
        structures = read(data.train, format=data.format, **data.read_options)
        elements = element_symbols(structures)
        _SHAPES[key] = list(setup.base.build_descriptor(elements, structures).n_features_per_element)
    return expand_grid(setup, _SHAPES[key])


def run_stage(args, name: str, data: dict, budget: str, stage: str) -> bool:
    """Run (or continue) one stage of one study; ``False`` if it cannot start yet."""
    from mlpot.ablation.config import load_ablation
    from mlpot.ablation.runner import run_ablation

    study_dir = args.runs / name
    depth_study_archive.check_data(study_dir, data)
    first = stage_config(args.runs, name, data, budget, "lr", rates_screen.LRS[0])
    # The ablation grid is a product of variants and depths: the plain deep ones are left out.
    screen = [r for r in grid(first) if r.fold == 0 and r.seed == 0 and cell(r) in cells(data)]

    def train(stage: str, lr: float, only: list[str], why: str = "") -> None:
        config = stage_config(args.runs, name, data, budget, stage, lr)
        label = f"lr screen at {lr:g}" if stage == "lr" else f"full at lr {lr:g}"
        print(f"[{name}] {label}: {len(only)} runs{why}", flush=True)
        folder = study_dir / (f"lr-{lr:g}" if stage == "lr" else f"full-lr{lr:g}")
        run_ablation(load_ablation(config), folder, jobs=args.jobs, resume=True, only=only, threads=args.threads,
                     log=lambda line: print(f"[{name} {stage} {lr:g}] {line}", flush=True))

    if stage == "lr":
        rates_screen.run_screen(study_dir, screen, lambda lr, only, why: train("lr", lr, only, why))
        return True
    rates = rates_screen.chosen_rates(study_dir, screen)
    recorded = depth_study_archive.recorded_rates(args.out, name)
    if recorded and not rates_screen.screen_scores(study_dir, screen):
        # Trained before the archive: its screen is lost, its choices are not.
        print(f"[{name}] full: no lr screen on disk; the {len(recorded)} cells take the rates in {args.out.name}")
        rates = recorded
    screened = {cell(r) for r in screen}
    if len(rates) < len(screened):
        due = len(rates_screen.pending_rates(study_dir, screen))
        print(f"[{name}] full: waiting for the lr screen ({len(rates)} of {len(screened)} cells have their rate; "
              f"{due} are due a screen beyond the end of their rates)")
        return False
    if rates is not recorded:
        rates_screen.write_rates(study_dir, screen)
    edge = rates_screen.edge_rates(rates)
    if edge:
        print(f"[{name}] {len(edge)} of {len(rates)} cells chose a rate at the end of {rates_screen.all_rates()}: "
              + ", ".join(f"{v} d{d} ({rates[v, d]:g})" for v, d in edge), flush=True)
    study_pairs = pairs(data)
    for lr in sorted(set(rates.values())):
        runs = grid(stage_config(args.runs, name, data, budget, "full", lr))
        train("full", lr, [r.name for r in runs if rates.get(cell(r)) == lr and (r.fold, r.seed) in study_pairs])
    return True


def run_row(result: dict, dataset: str, budget: str, lr: float, train_atoms: int,
            train_structures: int | None = None) -> dict:
    """One trained model as results.json lists it (``train_atoms``, ``train_structures``: its
    training set)."""
    val, test = result.get("val") or {}, result.get("test") or {}
    external = result.get("external_test") or {}
    # Runs measured before 2026-12-07 have no split by training range (None below).
    extrapolation = (result.get("extrapolation") or {}).get("test") or {}
    epochs, best = result["epochs"], result["best_epoch"]
    return {
        "dataset": dataset, "budget": budget, "depth": result["depth"], "width": result["width"],
        "hidden": result["hidden"], "variant": result["variant"], "activation": result["activation"],
        "seed": result["seed"], "fold": result["fold"], "n_params": result["n_parameters_model"],
        "train_structures": train_structures, "train_atoms": train_atoms,
        "epochs_run": epochs, "best_epoch": best,
        # Stopped early (patience exhausted) or best epoch outside the last 10 %: a plateau.
        "converged": bool(epochs < MAX_EPOCHS or best <= 0.9 * epochs), "lr": lr,
        **{f"val_{k}": val.get(k) for k in ("energy_rmse_mev_per_atom", "force_rmse_mev_per_a")},
        **{f"test_{k}": test.get(k) for k in ("energy_rmse_mev_per_atom", "energy_mae_mev_per_atom",
                                              "force_rmse_mev_per_a", "force_mae_mev_per_a", "stress_rmse_gpa")},
        **{f"external_test_{k}": external.get(k) for k in ("energy_mae_mev_per_atom", "force_mae_mev_per_a")},
        # The test force error over the structures beyond the training range, and the rest.
        "test_structures_beyond_range": len(extrapolation["beyond"]) if extrapolation else None,
        "test_force_rmse_beyond_range_mev_per_a": extrapolation.get("force_rmse_beyond_mev_per_a"),
        "test_force_rmse_inside_range_mev_per_a": extrapolation.get("force_rmse_inside_mev_per_a"),
        "train_us_per_atom": 1e6 * result["train_wall_s"] / max(epochs * train_atoms, 1),
        "infer_us_per_atom": result.get("inference_us_per_atom"),
        "peak_activation_mib": result.get("train_step_peak_mib"),
        # The commit that trained it (runs measured before 2026-12-08: None); retraining at
        # another commit or in another stack need not repeat its errors (docs/depth-study.md).
        "git_commit": (result.get("code") or {}).get("git_commit"),
        "peak_activation_checkpointed_mib": result.get("train_step_peak_checkpointed_mib"),
        # Gradient flow per layer as the RMS gradient per weight (comparable across widths).
        "grad_init_rms": result.get("grad_init_rms"),
        "grad_last_epoch_rms": result.get("grad_last_epoch_rms"),
    }


def recommend(rows: list[dict]) -> dict:
    """Per data set and budget: the cell (variant, depth) of lowest mean test force RMSE over
    its converged runs, beside the runner-up and the paired difference between them."""
    from mlpot.ablation.stats import paired_difference

    out = {}
    for key in sorted({(r["dataset"], r["budget"]) for r in rows}):
        cells: dict[tuple, list[dict]] = {}
        for r in rows:
            if (r["dataset"], r["budget"]) == key and r["converged"] and r["test_force_rmse_mev_per_a"] is not None:
                cells.setdefault((r["variant"], r["depth"], r["width"], r["activation"]), []).append(r)
        ranked = sorted(cells, key=lambda c: sum(r["test_force_rmse_mev_per_a"] for r in cells[c]) / len(cells[c]))
        if not ranked:
            continue
        best = ranked[0]
        # cells_compared: a study still training recommends from the cells it has so far.
        entry = {"variant": best[0], "depth": best[1], "width": best[2], "activation": best[3],
                 "runs": len(cells[best]), "cells_compared": len(ranked)}
        if len(ranked) > 1:
            runner_up = ranked[1]
            entry["runner_up"] = {"variant": runner_up[0], "depth": runner_up[1]}
            entry["paired_difference_vs_runner_up"] = paired_difference(
                [_as_ablation_run(r) for r in cells[best]], [_as_ablation_run(r) for r in cells[runner_up]],
                "force_rmse_mev_per_a")
        out[f"{key[0]}/{key[1]}"] = entry
    return out


def _as_ablation_run(row: dict) -> dict:
    """The fields :func:`mlpot.ablation.stats.paired_difference` pairs on and reads."""
    return {"fold": row["fold"], "seed": row["seed"], "test": {"force_rmse_mev_per_a": row["test_force_rmse_mev_per_a"]}}


def collect(runs_dir: Path, selected: list[tuple[str, dict, str]], out: Path) -> None:
    """Write results.json from every finished full-stage run of ``selected`` studies (and
    their cost passes)."""
    import depth_study_cost
    import depth_study_md

    from mlpot.data import load_split, read
    from mlpot.io.files import atomic_write_text

    rows, physical = [], []
    for name, data, budget in selected:
        dataset = name.rsplit("-", 1)[0]
        structures, study_pairs = None, pairs(data)
        # Water observables (an MD each) only for the median run of each finished cell.
        medians = {depth_study_md.representative(runs)[1] for runs in depth_study_md.cell_runs(runs_dir / name).values()
                   if len(runs) >= len(study_pairs)} if data.get("format") != "mlearn" else set()
        for lr, folder, result in depth_study_md.full_runs(runs_dir / name):
            if structures is None:
                structures = read(data["train"], format=data["format"], **data["read_options"])
            if (result["fold"], result["seed"]) not in study_pairs:
                continue  # a run of another design (trained before PAIRS): not comparable
            split = load_split(folder / "splits" / f"fold{result['fold']}.json")
            atoms = sum(len(structures[k]) for k in split.train)
            rows.append(run_row(result, dataset, budget, lr, atoms, len(split.train)))
            run_dir = folder / "runs" / result["name"]
            values = observables(run_dir, data, runs_dir, rdf=run_dir in medians)
            if values is not None:
                physical.append({"dataset": dataset, "budget": budget, "variant": result["variant"],
                                 "depth": result["depth"], "seed": result["seed"], "fold": result["fold"],
                                 **_lean(values)})
    stability = depth_study_md.md_rows(selected, runs_dir)
    cost = depth_study_cost.collected(runs_dir, [name for name, _, _ in selected])
    document = {"design": {"depths": DEPTHS, "residual_depths": RESIDUAL_DEPTHS, "variants": VARIANTS,
                           "water_cells": WATER_CELLS, "water_sizes": WATER_SIZES,
                           "budgets": BUDGETS, "seeds": SEEDS,
                           "folds": FOLDS, "pairs": PAIRS, "trajectory_pairs": TRAJECTORY_PAIRS,
                           "learning_rates": rates_screen.LRS,
                           "learning_rate_extensions": {"lower": rates_screen.LOWER_EXTENSION,
                                                        "upper": rates_screen.UPPER_EXTENSION},
                           "max_epochs": MAX_EPOCHS,
                           "patience": PATIENCE, "min_delta": MIN_DELTA,
                           "md": {k: [vars(c) for c in v] for k, v in depth_study_md.CONDITIONS.items()},
                           "rdf": RDF_PROTOCOL},
                "runs": rows, "observables": physical, "md_stability": stability, "cost": cost,
                "learning_rates": rates_screen.collected(runs_dir, [name for name, _, _ in selected], out)}
    depth_study_archive.carry_over(out, document, [name for name, _, _ in selected])
    document["recommendation"] = recommend(document["runs"])
    out.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_text(out, json.dumps(document, indent=1, default=list) + "\n")
    print(f"{len(document['runs'])} runs, {len(document['observables'])} observable sets, "
          f"{len(document['md_stability'])} MD cells, {len(document['cost'])} cost passes "
          f"written to {out}")


def _lean(values: dict) -> dict:
    """Observables as results.json lists them: g(r) curves stay in the run's observables.json
    (only their differences from the teacher's go in), E(V) points likewise."""
    if "rdf" in values:
        return {"rdf_difference_vs_teacher": values["rdf"]["difference_vs_teacher"]}
    return values


def plan(args) -> None:
    """Print every study's stages: runs, finished runs, the measured cost so far and whether
    its cost pass is done."""
    import depth_study_cost
    import depth_study_md

    print(f"depth study v2 in {args.runs}: {len(CELLS)} cells per study ({len(DEPTHS)} depths × {len(VARIANTS)} "
          f"variants, and depths {', '.join(map(str, RESIDUAL_DEPTHS))} of the residual ones; water: "
          f"{len(WATER_CELLS)} of them); "
          f"lr screen {len(rates_screen.LRS)} rates × {SCREEN_EPOCHS} epochs (fold 0, seed 0); full {len(PAIRS)} (fold, seed) "
          f"pairs {PAIRS} (water: one split by trajectory, {TRAJECTORY_PAIRS}), early stopping (no {MIN_DELTA:.0%} improvement in {PATIENCE} epochs, at most {MAX_EPOCHS})")
    total_hours, unknown, selected = 0.0, [], studies(args.studies)
    for name, data, budget in selected:
        study_dir = args.runs / name
        study_pairs, study_cells = pairs(data), cells(data)
        n_pairs, n_cells = len(study_pairs), len(study_cells)
        # Each stage folder's finished runs of the study's cells, read once.
        stages = {p.name: [r for r in collect_results(p) if (r["variant"], r["depth"]) in study_cells]
                  for p in study_dir.glob("*") if p.is_dir()}
        screen_done = sum(len(stages.get(f"lr-{lr:g}", [])) for lr in rates_screen.LRS)
        full = [r for _, _, r in depth_study_md.full_runs(study_dir)
                if (r["fold"], r["seed"]) in study_pairs and (r["variant"], r["depth"]) in study_cells]
        done = [r for rs in stages.values() for r in rs]
        screen_left, full_left = n_cells * len(rates_screen.LRS) - screen_done, n_cells * n_pairs - len(full)
        beyond = sum(len(stages.get(f"lr-{lr:g}", [])) for lr in rates_screen.all_rates()
                     if lr not in rates_screen.LRS)
        line = (f"  {name:<18} budget {budget:>5}: lr screen {screen_done}/{n_cells * len(rates_screen.LRS)}"
                + (f" (+{beyond} beyond the grid's ends)" if beyond else "")
                + f", full {len(full)}/{n_cells * n_pairs}")
        if not done and depth_study_archive.recorded_rates(args.out, name):
            line += f" (its runs are only in {args.out.name}; the md stage retrains them: run --stages full md)"
        if done:
            screened = [r for stage, rs in stages.items() if stage.startswith("lr-") for r in rs]
            lone, stacked, hours = depth_study_cost.training_hours_left(
                screened, full, screen_left, full_left, SCREEN_EPOCHS, MAX_EPOCHS / 3)
            total_hours += hours
            line += (f"; {lone:.2f} s/epoch per screen run, "
                     + (f"{stacked:.2f} per member-epoch of a full-stage stack" if stacked
                        else "no full-stage stack finished (priced at the lone rate)")
                     + f", ~{hours:.1f} core-hours of training left")
        elif screen_left or full_left:
            unknown.append(name)
            line += "; training time not yet measured (no finished run)"
        print(f"{line}; {depth_study_cost.status(study_dir, n_cells)}")
    for name, why in unavailable_studies():
        if not args.studies or name in args.studies:
            print(f"  {name:<18} not available here: {why}")
    print(f"estimated time left for the measured studies: ~{total_hours:.0f} core-hours (--jobs N on N cores "
          "divides it by about N)"
          + (f"; not yet measured: {len(unknown)} studies" if unknown else ""))
    # The MD stage, from the µs per atom-step of the cells already run (water's MD is not run
    # here; the MD starts from the held-out test set, so a data set without one has none).
    crystals = [study for study in selected if not by_trajectory(study[1]) and study[1].get("test")]
    if crystals:
        depth_study_md.plan_md(crystals, args.runs, len(PAIRS), len(CELLS), args.replicas, args.ps)


def archive(args, selected: list[tuple[str, dict, str]] | None = None) -> int:
    """Copy what the selected studies have measured into the committed archive
    (:func:`depth_study_archive.archive_studies`)."""
    chosen = studies(args.studies) if selected is None else selected
    # One study at a time: each data set has its own (fold, seed) pairs per cell.
    written = sum(depth_study_archive.archive_studies(args.runs, args.archive, [study], len(pairs(study[1])),
                                                      observables) for study in chosen)
    print(f"archive: {written} file(s) written to {args.archive}", flush=True)
    return 0


def md(args, selected: list[tuple[str, dict, str]] | None = None) -> int:
    """The md stage over the selected studies (``scripts/depth_study_md.py``): ``selected``
    (study, data, budget) triples, else ``--studies``. Water studies only when ``--studies``
    names them: a water cell is ~11 h of this machine (10 × 50 ps of 192 atoms at 0.5 fs),
    so water is checked by its g(r) against the teacher's and its MD waits for a bigger one."""
    import depth_study_md
    import torch

    chosen = studies(args.studies) if selected is None else selected
    named = set(args.studies or ())
    skipped = [name for name, data, _ in chosen if by_trajectory(data) and name not in named]
    if skipped:
        print(f"md stage: skips {', '.join(skipped)} (water: ~11 h per cell here; name a study in --studies "
              "to run it)", flush=True)
    chosen = [study for study in chosen if study[0] not in skipped]
    if not chosen:
        return 0
    for name, data, _ in chosen:
        depth_study_archive.check_data(args.runs / name, data)
    if args.threads:
        torch.set_num_threads(args.threads)
    for study in chosen:  # one at a time: each data set has its own cells and pairs per cell
        depth_study_md.run_md([study], args.runs, len(pairs(study[1])), len(cells(study[1])),
                              replicas=args.replicas, ps=args.ps,
                              after_cell=lambda study, runs: (cell_observables(study, runs, args.runs),
                                                              archive(args, [study])))
    return 0


#: The learning rate of the cost pass's configs: the step's work does not depend on it.
COST_LR = 1e-3


def cost(args) -> int:
    """The cost pass of the selected studies, one after the other (``scripts/depth_study_cost.py``)."""
    import depth_study_cost

    for name, data, budget in studies(args.studies):
        config = stage_config(args.runs, name, data, budget, "full", COST_LR)
        runs = [r for r in grid(config) if cell(r) in cells(data)]
        depth_study_cost.run_cost(args.runs / name, name, config, runs, args.rounds, args.threads or 1,
                                  log=lambda line, name=name: print(f"[{name}] {line}", flush=True))
    return 0


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0],
                                     formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    parser.add_argument("command", choices=["plan", "run", "md", "cost", "collect", "report", "archive"])
    parser.add_argument("--studies", nargs="+", help="studies to plan or run (default: all available)")
    parser.add_argument("--stages", nargs="+", default=["lr", "full", "md"], choices=["lr", "full", "md"],
                        help="run: the stages, each study in turn (md: its cells whose full stage is done)")
    parser.add_argument("--runs", type=Path, default=ROOT / "runs" / "depth-v2", help="folder of the studies")
    parser.add_argument("--archive", type=Path, default=ARCHIVE,
                        help="the committed record of finished runs: restored into --runs before every command")
    parser.add_argument("--jobs", type=int, default=1, help="grid points trained at once")
    parser.add_argument("--threads", type=int,
                        help="torch threads per grid point (default: cores / jobs); md, cost: threads (cost: 1)")
    parser.add_argument("--rounds", type=int, default=31, help="cost: interleaved timing rounds (medians over them)")
    parser.add_argument("--out", type=Path, default=RESULTS, help="results.json written by collect (read by report)")
    parser.add_argument("--figures", type=Path, default=RESULTS.parent / "v2",
                        help="report: folder of the figures and tables.md")
    parser.add_argument("--replicas", type=int, default=10, help="md: replicas per cell")
    parser.add_argument("--ps", type=float, help="md: simulated time per replica, ps, at every condition "
                        "(default: each condition's own, scripts/depth_study_md.py CONDITIONS)")
    args = parser.parse_args()
    if args.command == "report":  # from results.json alone: needs no data
        import depth_study_report

        expected = [name for name, _, _ in studies(args.studies)] if studies(None) else None
        depth_study_report.report(args.out, args.figures, expected)
        return 0
    if not studies(None):
        print(f"no data: mlearn is looked for in {MLEARN}, teacher water in {TEACHER}")
        return 2
    restored = depth_study_archive.restore(args.archive, args.runs)
    if restored:
        print(f"restored {restored} archived file(s) from {args.archive} into {args.runs}", flush=True)
    if args.command == "archive":
        return archive(args)
    if args.command == "plan":
        plan(args)
        return 0
    if args.command == "collect":
        collect(args.runs, studies(args.studies), args.out)
        return 0
    if args.command == "md":
        return md(args)
    if args.command == "cost":
        return cost(args)
    plan(args)
    start = time.perf_counter()
    for name, data, budget in studies(args.studies):
        for stage in args.stages:
            if stage == "md":  # one study's finished cells: its answer is complete before the next study
                md(args, [(name, data, budget)])
            elif not run_stage(args, name, data, budget, stage):
                break
            else:
                archive(args, [(name, data, budget)])
        print(f"[{name}] stages {args.stages} done or waiting; {time.perf_counter() - start:.0f} s so far", flush=True)
    return 0


if __name__ == "__main__":
    from mlpot.allocator import tune_cpu_allocator  # large blocks stay in the heap: 2x faster on the CPU
    tune_cpu_allocator()
    sys.exit(main())
