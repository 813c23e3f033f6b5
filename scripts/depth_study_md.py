"""The MD-stability stage of the depth study: ``python scripts/depth_study.py md``.

For every cell (study, variant, depth) whose full stage has finished, one model, the run of
median validation force RMSE among the cell's seeds × folds, runs ``replicas`` Langevin
(NVT) replicas for ``ps`` ps each at a high temperature of its data set, from held-out
structures, until each fails or the time is up (:func:`mlpot.ablation.md_stability`).

* **Why the median run** (where a condition runs one model per cell): the cell's typical
  model, neither a lucky nor an unlucky seed; chosen on the validation split, so the test
  set plays no part; and one model per cell, because 10 replicas × 50 ps cost ~10⁸
  atom-steps per model.
* **Temperatures** (:data:`CONDITIONS`): within what the training data sample, near their
  hot end, where a potential is most often driven out of its data: Si at 1518 K (the
  mlearn AIMD temperature just below Si's melting point, 1687 K; the data go to 3374 K);
  Mo at 3000 K (the mlearn AIMD temperature nearest Mo's melting point, 2896 K; the data
  go to 6000 K); water at 400 K, 100 K above the teacher's 300 K trajectories (liquid at
  this density, and a mild extrapolation that tells a robust student from a fragile one).
  Si has a second, hotter condition, run first: 3000 K for 10 ps, a hot liquid still
  inside its AIMD data. At 1518 K every si-25k network of depth 2 to 32 kept all ten
  replicas for 50 ps, so that condition cannot rank them; at 3000 K plain depths 1, 2 and
  3 lost 10, 7 and 2 of ten within 10 ps and depth 4 none, at a fifth of the cost. There
  the models of a cell differ widely (plain depth 2's five: 10, 0, 10, 4 and 7 lost; plain
  depth 3's: 3, 8, 9, 10 and 2; docs/depth-study.md), so one model per cell separates
  depth 1 from the rest and no more. Since 2026-12-08 that condition runs every model of a
  cell with two replicas each (:attr:`Condition.per_model`; as many replicas as ten of one
  model), each model's part in ``models/`` beside the cell's row, which lists per model
  its failures; it needs every model of a cell on disk (the archive keeps the median one).
  Each condition keeps its cells in its own folder (``md``, ``md-3000K-models``).
* **Start structures**: the held-out test set's bulk MD frames (mlearn ``AIMD-NVT``, the
  teacher's test trajectories), those whose AIMD temperature is nearest the MD temperature
  first and spread evenly over the ties; each replica draws its own velocities (seed + k),
  so a frame used twice starts two different replicas.
* **Failure** (:mod:`mlpot.ablation.stability`): non-finite energy or positions, two atoms
  closer than half the shortest distance of the start frame, or a temperature above 5 × the
  bath's (the Langevin bath holds a sound potential near it).
* **Resumable**: each cell writes ``RUNS/<study>/md/<variant>_d<depth>.json`` atomically
  when done, and is skipped afterwards; while it runs, its state is checkpointed every
  :data:`CHECKPOINT_S` seconds beside it (``….checkpoint.json``), so a stop loses minutes.
"""

from __future__ import annotations

import json
import math
import re
import statistics
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path

from mlpot.ablation.report import collect_results
from mlpot.ablation.stats import is_finite_number


MD_DIR = "md"  # the folder of a data set's main condition in its study's folder


@dataclass(frozen=True)
class Condition:
    """One MD condition of a data set: bath temperature (K), timestep (fs), why, the
    simulated time per replica (ps) and the folder of a study that holds its cells."""

    temperature_K: float
    timestep_fs: float
    why: str
    ps: float = 50.0
    folder: str = MD_DIR
    #: 0: the cell's median model runs ``replicas`` replicas; n > 0: every model of the cell
    #: runs n (where the models of a cell differ more than one model's replicas, the cell is its models).
    per_model: int = 0


#: Each data set's conditions, in the order the md stage runs them.
CONDITIONS: dict[str, tuple[Condition, ...]] = {
    "si": (Condition(3000.0, 1.0, "a hot liquid inside the training data (AIMD to 3374 K): it separates networks "
                     "that all survive 1518 K; there the models of a cell differ, so every model counts",
                     ps=10.0, folder="md-3000K-models", per_model=2),
           Condition(1518.0, 1.0, "AIMD temperature of the training data just below the melting point (1687 K)")),
    # 2 fs: Mo's highest phonon (~8.5 THz) is ~1.8× slower than Si's (15.5 THz), so 2 fs takes
    # about as many steps per period as Si's 1 fs; NVE at 3000 K on a mo-2.5k model: RMS
    # fluctuation of the total energy 0.08 meV/atom over 5 ps (1 fs: 0.02), and half the cost.
    "mo": (Condition(3000.0, 2.0, "AIMD temperature of the training data nearest the melting point (2896 K)"),),
    # 0.5 fs as the teacher's own trajectories: the O–H stretch (~9 fs period) needs it.
    "water": (Condition(400.0, 0.5, "100 K above the teacher's 300 K trajectories"),),
}
CHECK_EVERY = 20  # steps between failure checks and energy samples
CHECKPOINT_S = 120.0  # seconds of MD between checkpoints


def conditions(dataset: str) -> tuple[Condition, ...]:
    """The MD conditions of a data set (``water-4traj`` → water's), in the order they run."""
    return CONDITIONS[dataset.split("-")[0]]


def condition(dataset: str) -> Condition:
    """A data set's main MD condition: the one in :data:`MD_DIR`."""
    return next(c for c in conditions(dataset) if c.folder == MD_DIR)


def full_runs(study_dir: Path) -> list[tuple[float, Path, dict]]:
    """The finished full-stage runs of a study as (lr, stage folder, result), each at its
    cell's chosen rate (``rates.json``): a run at another rate, superseded when its cell's
    learning-rate screen was extended, is left out."""
    from depth_study_archive import at_chosen_rate, read_rates

    rates = read_rates(study_dir)
    found = []
    for folder in sorted(study_dir.glob("full-lr*")):
        lr = float(folder.name.removeprefix("full-lr"))
        found += [(lr, folder, result) for result in collect_results(folder)
                  if at_chosen_rate(rates, (result["variant"], result["depth"]), lr)]
    return found


def by_cell(found: Iterable[tuple[dict, Path]]) -> dict[tuple[str, int], list[tuple[dict, Path]]]:
    """(result, ablation folder) pairs grouped by cell (variant, depth) as (result, run folder)."""
    cells: dict[tuple[str, int], list[tuple[dict, Path]]] = {}
    for result, folder in found:
        cells.setdefault((result["variant"], result["depth"]), []).append((result, folder / "runs" / result["name"]))
    return cells


def cell_runs(study_dir: Path) -> dict[tuple[str, int], list[tuple[dict, Path]]]:
    """The finished full-stage runs of a study by cell (variant, depth): (result, run folder),
    at each cell's chosen rate (:func:`full_runs`)."""
    return by_cell((result, folder) for _, folder, result in full_runs(study_dir))


def missing_models(runs: list[tuple[dict, Path]]) -> list[Path]:
    """The ``model.pt`` files of ``runs`` that are not on disk (the archive keeps each cell's
    median model only)."""
    return [d / "model.pt" for _, d in runs if not (d / "model.pt").is_file()]


def cell_results(study_dir: Path) -> list[Path]:
    """The cells' MD result files of a study, at every condition of its data set."""
    dataset = study_dir.name.rsplit("-", 1)[0]
    return sorted(p for cond in conditions(dataset) for p in (study_dir / cond.folder).glob("*_d??.json"))


def run_lr(run_dir: Path) -> float:
    """The learning rate a run folder trained at: a full stage's (``…/full-lr<lr>/runs/<name>``)
    from its stage's name, any other from its ``config.yaml``."""
    stage = run_dir.parent.parent.name
    if stage.startswith("full-lr"):
        return float(stage.removeprefix("full-lr"))
    import yaml

    return float(yaml.safe_load((run_dir / "config.yaml").read_text())["optimizer"]["lr"])


def is_current(row: dict, runs: list[tuple[dict, Path]]) -> bool:
    """Whether a cell's MD result ``row`` is of the cell's runs now: its model trained at the
    cell's chosen rate (a result written before the rate moved is stale; one without a
    recorded rate predates the extension and is kept)."""
    lr = row.get("lr")
    return lr is None or not runs or math.isclose(lr, run_lr(runs[0][1]), rel_tol=1e-9)


def protocol(cond: Condition, replicas: int, ps: float) -> dict[str, float]:
    """The fields of an MD result that say how it was run (its :func:`run_cell` row's names)."""
    return {"temperature_k": cond.temperature_K, "timestep_fs": cond.timestep_fs, "replicas": replicas,
            "ps_per_replica": ps}


def current_result(path: Path, runs: list[tuple[dict, Path]], expected: dict[str, float] | None = None) -> dict | None:
    """The MD result in ``path`` if there is one, it :func:`is_current` for the cell's
    ``runs`` and was run as ``expected`` (a :func:`protocol`, when given); else ``None``
    (the cell is to be run, or run again)."""
    if not path.is_file():
        return None
    row = json.loads(path.read_text())
    if expected and departures(row, expected):
        return None
    return row if is_current(row, runs) else None


def departures(row: dict, expected: dict[str, float]) -> dict[str, object]:
    """The fields of ``row`` that differ from the :func:`protocol` ``expected``, with their values."""
    return {k: row.get(k) for k, v in expected.items()
            if not (is_finite_number(row.get(k)) and math.isclose(row[k], v, rel_tol=1e-9))}


def representative(runs: list[tuple[dict, Path]]) -> tuple[dict, Path]:
    """The run of median validation force RMSE (the lower middle of an even count; ties by
    fold, then seed): the cell's typical model, picked without the test set."""
    scored = [(r, d) for r, d in runs if (r.get("val") or {}).get("force_rmse_mev_per_a") is not None]
    if not scored:
        raise ValueError("no run of this cell has a validation force error")
    ranked = sorted(scored, key=lambda rd: (rd[0]["val"]["force_rmse_mev_per_a"], rd[0]["fold"], rd[0]["seed"]))
    return ranked[(len(ranked) - 1) // 2]


def _aimd_temperature(atoms) -> float | None:
    """The temperature (K) of a frame's AIMD run, from the mlearn description, or ``None``."""
    found = re.search(r"at (\d+(?:\.\d+)?) K", str(atoms.info.get("description", "")))
    return float(found.group(1)) if found else None


def start_structures(data: dict, temperature_K: float, n: int) -> list:
    """``n`` held-out start frames (see the module docstring), cycled if the test set has fewer."""
    import numpy as np

    from mlpot.data import read

    if not data.get("test"):
        raise ValueError("the MD stage starts from the held-out test set; this data set has none")
    frames = read(data["test"], format=data["format"], **data["read_options"])
    if data["format"] == "mlearn":  # bulk MD frames: the crystal and the melt, not surfaces
        frames = [a for a in frames if a.info.get("group") == "AIMD-NVT"]
    gap = [abs(t - temperature_K) if (t := _aimd_temperature(a)) is not None else 0.0 for a in frames]
    order = sorted(range(len(frames)), key=lambda k: gap[k])
    if len(order) > n:
        tied = [k for k in order if gap[k] <= gap[order[n - 1]]]  # as near as the n-th nearest
        order = [tied[int(k)] for k in np.linspace(0, len(tied) - 1, n).round()]
    return [frames[order[k % len(order)]] for k in range(n)]


def _label(atoms) -> str:
    """Which held-out frame a replica started from (mlearn description, or teacher trajectory and step)."""
    info = atoms.info
    return str(info.get("description") or f"trajectory {info.get('trajectory')} step {info.get('step')}")


def md_config(cond: Condition, replicas: int, ps: float):
    """The :class:`~mlpot.ablation.MDStabilityConfig` of one cell's run."""
    from mlpot.ablation import MDStabilityConfig

    return MDStabilityConfig(structures=replicas, steps=round(ps * 1000 / cond.timestep_fs),
                             timestep_fs=cond.timestep_fs, temperature_K=cond.temperature_K, ensemble="nvt",
                             check_every=CHECK_EVERY, seed=0)


def cell_file(study_dir: Path, key: tuple[str, int], cond: Condition | None = None) -> Path:
    """Where a cell's MD result at ``cond`` (the main condition when ``None``) lives."""
    return study_dir / (MD_DIR if cond is None else cond.folder) / f"{key[0]}_d{key[1]:02d}.json"


def run_cell(study: tuple[str, dict, str], key: tuple[str, int], runs: list[tuple[dict, Path]],
             out: Path, replicas: int, ps: float, log: Callable[[str], None], cond: Condition | None = None,
             run: tuple[dict, Path] | None = None) -> dict:
    """Run (or continue) one cell's MD and write its result to ``out`` (atomically); at
    ``cond``, or the study's own :data:`CONDITIONS` entry when ``None``; with ``run`` (one of
    ``runs``), that model rather than the cell's :func:`representative`."""
    import torch

    import mlpot
    from mlpot.ablation import md_stability
    from mlpot.io.files import atomic_write_text

    name, data, budget = study
    dataset = name.rsplit("-", 1)[0]
    cond = condition(dataset) if cond is None else cond
    result, run_dir = representative(runs) if run is None else run
    config = md_config(cond, replicas, ps)
    starts = start_structures(data, cond.temperature_K, replicas)
    checkpoint = out.with_suffix(".checkpoint.json")
    if out.is_file():
        other = departures(json.loads(out.read_text()), protocol(cond, replicas, ps))
        if other:  # hours of MD: not replaced by a run of another length, silently
            raise FileExistsError(f"{out} holds a result run otherwise ({other}); move it away to run this "
                                  f"cell at {cond.temperature_K:g} K, {replicas} replicas × {ps:g} ps")
        out.unlink()  # stale (is_current): the cell's rate has moved, its model with it
        checkpoint.unlink(missing_ok=True)
    model = mlpot.load(run_dir / "model.pt", dtype=torch.float64)  # failures are the potential's, not rounding
    out.parent.mkdir(parents=True, exist_ok=True)
    stability = md_stability(model, starts, config, checkpoint=checkpoint, checkpoint_every_s=CHECKPOINT_S,
                             log=lambda line: log(f"[{name} {key[0]} d{key[1]}] {line}"))
    ttf = [rep["time_to_failure_ps"] for rep in stability["replicas"]]
    row = {"dataset": dataset, "budget": budget, "variant": key[0], "depth": key[1], "width": result["width"],
           "seed": result["seed"], "fold": result["fold"], "run": result["name"], "lr": run_lr(run_dir),
           "val_force_rmse_mev_per_a": result["val"]["force_rmse_mev_per_a"],
           "temperature_k": cond.temperature_K, "timestep_fs": cond.timestep_fs, "ensemble": config.ensemble,
           "replicas": replicas, "ps_per_replica": ps, "time_to_failure_ps": ttf,
           "n_failed": sum(t is not None for t in ttf),
           "failure_reasons": [rep["reason"] for rep in stability["replicas"] if rep["reason"]],
           "start_structures": [_label(a) for a in starts],
           "us_per_atom_step": stability["us_per_atom_step"], "wall_s": stability["wall_s"],
           "stability": stability}
    atomic_write_text(out, json.dumps(row, indent=1) + "\n")
    checkpoint.unlink(missing_ok=True)
    return row


def models_file(cell_out: Path, run: tuple[dict, Path]) -> Path:
    """Where one model's part of a per-model cell (``cell_out``) lives."""
    result = run[0]
    return cell_out.parent / "models" / f"{cell_out.stem}_f{result['fold']}_s{result['seed']}.json"


def run_cell_models(study: tuple[str, dict, str], key: tuple[str, int], runs: list[tuple[dict, Path]],
                    out: Path, ps: float, log: Callable[[str], None], cond: Condition) -> dict:
    """A cell at a per-model condition: each of its models (by fold, seed) runs
    ``cond.per_model`` replicas by :func:`run_cell` into its own file (skipped when done, so a
    stop loses at most one model's MD), then the cell's row, written to ``out``: the replicas
    of all models together, and per model its outcome (``"models"``)."""
    from mlpot.io.files import atomic_write_text

    parts = []
    for run in sorted(runs, key=lambda rd: (rd[0]["fold"], rd[0]["seed"])):
        part_out = models_file(out, run)
        part = current_result(part_out, runs, protocol(cond, cond.per_model, ps))
        parts.append(part or run_cell(study, key, runs, part_out, cond.per_model, ps, log, cond=cond, run=run))
    ttf = [t for p in parts for t in p["time_to_failure_ps"]]
    row = {**{k: parts[0][k] for k in ("dataset", "budget", "variant", "depth", "width", "lr", "temperature_k",
                                       "timestep_fs", "ensemble", "ps_per_replica")},
           "seed": None, "fold": None, "run": None, "replicas": len(ttf), "replicas_per_model": cond.per_model,
           "time_to_failure_ps": ttf, "n_failed": sum(t is not None for t in ttf),
           "failure_reasons": [r for p in parts for r in p["failure_reasons"]],
           "models": [{k: p[k] for k in ("fold", "seed", "run", "val_force_rmse_mev_per_a", "n_failed",
                                         "time_to_failure_ps")} for p in parts],
           "models_failed": sum(p["n_failed"] > 0 for p in parts),
           "start_structures": parts[0]["start_structures"],
           "us_per_atom_step": statistics.fmean(p["us_per_atom_step"] for p in parts),
           "wall_s": sum(p["wall_s"] for p in parts)}
    out.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_text(out, json.dumps(row, indent=1) + "\n")
    return row


def _measured(studies: list[tuple[str, dict, str]], runs_dir: Path) -> dict[str, float]:
    """Mean µs per atom-step of the finished cells, per data set kind (si, mo, water)."""
    cost: dict[str, list[float]] = {}
    for name, _, _ in studies:
        for path in cell_results(runs_dir / name):
            row = json.loads(path.read_text())
            if row.get("us_per_atom_step"):
                cost.setdefault(name.split("-")[0], []).append(row["us_per_atom_step"])
    return {kind: statistics.fmean(values) for kind, values in cost.items()}


def md_priority(key: tuple[str, int], cells: list[tuple[str, int]]) -> tuple:
    """The order a study's MD cells run in: first each variant's depth 1, 2 and deepest cell
    (where failures appeared, the reference, and the deepest networks), then the rest by
    variant and depth. A study that stops part-way then has its MD answer in outline: at
    1518 K si-25k lost replicas only at depth 1, so the middle cells add survivals."""
    variant, depth = key
    deepest = max(d for v, d in cells if v == variant)
    return (0 if depth in (1, 2) or depth == deepest else 1, variant, depth)


def plan_md(studies: list[tuple[str, dict, str]], runs_dir: Path, runs_per_cell: int, n_cells: int,
            replicas: int, ps: float | None = None) -> dict[tuple[str, Condition], list[tuple[str, int]]]:
    """Print the stage's plan (per study and condition: cells, replicas, steps, the cost of the
    cells not yet done from the µs per atom-step measured on finished cells) and return the
    cells ready to run per (study, condition). ``ps`` overrides each condition's own length."""
    measured = _measured(studies, runs_dir)
    todo, hours, unmeasured = {}, 0.0, []
    for name, data, _ in studies:
        cells = cell_runs(runs_dir / name)
        ready = sorted(k for k, runs in cells.items() if len(runs) >= runs_per_cell)
        for cond in conditions(name.rsplit("-", 1)[0]):
            length = cond.ps if ps is None else ps
            steps = md_config(cond, replicas, length).steps
            # Per model: each model's replicas from the same frames; else the median model's.
            per_cell, starts = ((runs_per_cell * cond.per_model, cond.per_model) if cond.per_model
                                else (replicas, replicas))
            expected = protocol(cond, per_cell, length)
            done = [k for k in ready if current_result(cell_file(runs_dir / name, k, cond), cells[k], expected)]
            # A per-model cell needs every model; the archive keeps each cell's median one only.
            modelless = [k for k in ready if k not in done and cond.per_model and missing_models(cells[k])]
            todo[name, cond] = sorted((k for k in ready if k not in done and k not in modelless),
                                      key=lambda k: md_priority(k, ready))
            left = n_cells - len(done)
            atom_steps = (sum(len(a) for a in start_structures(data, cond.temperature_K, starts)) * steps
                          * (per_cell // starts) if left else 0)
            line = (f"  {name:<18} {cond.temperature_K:g} K, {length:g} ps ({cond.timestep_fs:g} fs × {steps} steps"
                    + (f"; every model × {cond.per_model} replicas" if cond.per_model else "") + "): "
                    f"{len(done)}/{n_cells} cells done, {len(todo[name, cond])} ready, {n_cells - len(ready)} waiting "
                    f"for the full stage"
                    + (f", {len(modelless)} without all their models here (retrain them)" if modelless else "")
                    + f"; {atom_steps:.2g} atom-steps per cell")
            kind = name.split("-")[0]
            if left and kind in measured:
                cell_h = atom_steps * measured[kind] * 1e-6 / 3600
                hours += cell_h * left
                line += (f", {measured[kind]:.0f} µs/atom-step measured: ~{cell_h:.1f} h per cell, "
                         f"~{cell_h * left:.0f} h left")
            elif left and name not in unmeasured:
                unmeasured.append(name)
            print(line)
    left_line = (f"~{hours:.0f} h left for the studies whose cost is measured"
                 if len(unmeasured) < len(studies) else "no cell finished yet, so no time estimate")
    print(f"md stage: {replicas} replicas per cell (NVT), the conditions of each data set in the order above; "
          f"{left_line}" + (f"; cost measured after the first cell of: {', '.join(unmeasured)}" if unmeasured else ""),
          flush=True)
    return todo


def run_md(studies: list[tuple[str, dict, str]], runs_dir: Path, runs_per_cell: int, n_cells: int,
           replicas: int = 10, ps: float | None = None, after_cell: Callable | None = None) -> int:
    """Run every ready cell not yet done, at each condition of its data set in turn (``ps``:
    every condition's length, when given); returns the number of cells run. ``after_cell(study,
    runs)`` is called after each (the depth study computes the cell's observables there)."""
    todo = plan_md(studies, runs_dir, runs_per_cell, n_cells, replicas, ps)
    ran, start = 0, time.perf_counter()
    for study in studies:
        name = study[0]
        cells = cell_runs(runs_dir / name)
        for cond in conditions(name.rsplit("-", 1)[0]):
            length = cond.ps if ps is None else ps
            for k, key in enumerate(todo[name, cond]):
                out, log = cell_file(runs_dir / name, key, cond), lambda line: print(line, flush=True)
                row = (run_cell_models(study, key, cells[key], out, length, log, cond) if cond.per_model else
                       run_cell(study, key, cells[key], out, replicas, length, log, cond=cond))
                ran += 1
                # The condition's other ready cells cost about as much as this one (same data, same steps).
                left = len(todo[name, cond]) - k - 1
                print(f"[{name} {key[0]} d{key[1]}] {cond.temperature_K:g} K done: {row['n_failed']} of {row['replicas']} "
                      f"replicas failed; {row['us_per_atom_step']:.0f} µs/atom-step, {row['wall_s'] / 3600:.2f} h; "
                      f"{left} ready cells left at this condition, ~{left * row['wall_s'] / 3600:.1f} h; "
                      f"{time.perf_counter() - start:.0f} s so far", flush=True)
                if after_cell is not None:
                    after_cell(study, cells[key])
    return ran


#: The fields of a cell's result that results.json lists under "md_stability".
ROW_FIELDS = ("dataset", "budget", "variant", "depth", "width", "seed", "fold", "lr", "temperature_k", "timestep_fs",
              "replicas", "ps_per_replica", "time_to_failure_ps", "n_failed", "failure_reasons",
              "ensemble", "us_per_atom_step", "replicas_per_model", "models", "models_failed")


def md_rows(studies: list[tuple[str, dict, str]], runs_dir: Path) -> list[dict]:
    """One object per finished cell and condition for results.json's ``"md_stability"``."""
    rows = []
    for name, _, _ in studies:
        cells = cell_runs(runs_dir / name)
        for path in cell_results(runs_dir / name):
            row = json.loads(path.read_text())
            if is_current(row, cells.get((row["variant"], row["depth"]), [])):
                rows.append({k: row.get(k) for k in ROW_FIELDS})
    return rows
