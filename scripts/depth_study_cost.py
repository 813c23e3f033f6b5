"""The cost pass of the depth study v2: ``python scripts/depth_study.py cost``.

The per-run costs in results.json (``train_us_per_atom`` from a run's training wall time,
``infer_us_per_atom`` from :func:`mlpot.ablation.runner.inference_time` after it) were
measured over days on a 2-core machine that other jobs shared with varying load: they say
what each run cost, but differences between cells mix the networks with the load of the
day. This pass measures every cell of a study (variant × depth at the study's budget) in one
process, interleaved (:func:`mlpot.ablation.timing.interleaved_times`): each round times
one inference and one training step of every cell, all in a new seeded random order, on the
same fixed batch of the study's training structures, after warm-up rounds. The load of the
machine during the pass then falls on every cell alike, so the ratio of a cell's median to
the reference cell's (plain, depth 2, measured in the same run) compares the networks even
on a busy machine. On the CPU the clock is the process's CPU time, not wall time: the time
slices other jobs take from the pass are then not counted (memory-bandwidth contention
still is), so the absolute µs/atom are close to those of a quiet machine.

* Inference: energy + forces in eval mode, neighbour pairs built beforehand, descriptors
  computed from positions (:func:`mlpot.ablation.timing.inference_step`), as the calculator
  and ``inference_time`` do.
* Training step: one optimiser step of the batch as ``mlpot train`` takes it
  (:func:`mlpot.ablation.timing.training_step`: forward with forces and stress, loss,
  backward, clipping, Adam, schedule, EMA), from cached descriptors when the study's config
  caches them, as training did. A lone model's step: the study trained each cell's (fold,
  seed) runs together as one stack (``mlpot.training.many``), which shares the descriptor
  work among them.
* Models: untrained, built from each cell's config (the study's grid and descriptor, weights
  from ``training.seed``, scaling fitted on the batch): the cost does not depend on the
  weights. The learning rate is the recipe's (it does not change the step's work).

Writes ``RUNS/<study>/cost.json``; ``collect`` copies it into results.json under ``"cost"``,
and the report's cost figure and tables read the ratios from there. The figure is drawn here
(:func:`plot_cost_vs_depth`, called by ``scripts/depth_study_report.py``), beside the pass
whose numbers it reads.
"""

from __future__ import annotations

import json
import os
import statistics
import time
from pathlib import Path
from typing import Callable

from mlpot.ablation.stats import is_finite_number

COST_FILE = "cost.json"
#: The cell every ratio divides by: the plain 2-layer network, the literature's default.
REFERENCE = ("plain", 2)
#: Untimed rounds first: the first training step allocates Adam's state and autograd's
#: buffers, the first inference warms caches.
WARMUP = 2
#: Seeds the batch and the orders of the rounds.
SEED = 0
KINDS = (("inference", "infer"), ("training", "train"))


def cells(runs: list) -> dict[tuple[str, int], object]:
    """(variant, depth) → one run of the cell (every run of a cell has the same network)."""
    out: dict[tuple[str, int], object] = {}
    for run in runs:
        out.setdefault((run.variant, run.depth), run)
    return out


def fixed_batch(n_structures: int, size: int, seed: int = SEED) -> list[int]:
    """``size`` indices of ``range(n_structures)`` drawn by ``seed`` (sorted): the batch every
    cell is timed on, the same in every pass."""
    import random

    return sorted(random.Random(seed).sample(range(n_structures), min(size, n_structures)))


def cell_tasks(setup, run, elements: list[str], descriptor, batch: list) -> tuple[Callable, Callable, dict]:
    """The inference and training-step callables of one cell's untrained model on ``batch``,
    and the cell's network (variant, depth, width, hidden, n_params)."""
    import torch

    from mlpot.ablation.timing import inference_step, training_step
    from mlpot.data import collate
    from mlpot.device import resolve_device
    from mlpot.training import build_model

    config = run.train_config(setup, None)
    device = resolve_device(config.training.device, "training.device")
    model = build_model(config, elements, descriptor=descriptor).to(device)
    # Fitted as the trainer fits it (float64 labels, then the training dtype); on the batch
    # only: the values do not change the cost, and a fitted model keeps the loss finite.
    model.fit_to_data([collate(batch, cutoff=model.cutoff, device=device)], config.scaling.mode,
                      tuple(config.scaling.range))
    model.to(dtype=getattr(torch, config.training.dtype))
    network = {"variant": run.variant, "depth": run.depth, "width": run.width, "hidden": list(run.hidden),
               "n_params": model.n_parameters()}
    return inference_step(model, batch, device), training_step(model, batch, config, device), network


def summarise(networks: dict[tuple[str, int], dict], times: dict[tuple, list[float]], atoms: int,
              reference: tuple[str, int] = REFERENCE) -> list[dict]:
    """One row per cell: median µs/atom of inference and of a training step, their ratios to
    ``reference``'s medians, the range (min, max) of the per-round ratios (cell and reference
    timed in the same round, so the load of that round cancels) and the per-round µs/atom.

    Args:
        networks: (variant, depth) → the cell's network fields.
        times: (variant, depth, "inference" | "training") → seconds per round.
        atoms: atoms in the timed batch.
    """
    per_atom = {k: [1e6 * t / atoms for t in v] for k, v in times.items()}
    rows = []
    for cell, network in networks.items():
        row = dict(network)
        for kind, short in KINDS:
            mine, ref = per_atom[(*cell, kind)], per_atom.get((*reference, kind))
            row[f"{short}_us_per_atom"] = statistics.median(mine)
            row[f"{short}_ratio"] = statistics.median(mine) / statistics.median(ref) if ref else None
            rounds = [a / b for a, b in zip(mine, ref)] if ref else []
            row[f"{short}_ratio_range"] = [min(rounds), max(rounds)] if rounds else None
            row[f"{short}_us_per_atom_rounds"] = mine
        rows.append(row)
    return rows


def measure(config: dict, runs: list, rounds: int, seed: int = SEED,
            log: Callable[[str], None] = print) -> dict:
    """Time every cell of ``runs`` (the grid of ``config``, an ablation config) interleaved;
    returns the reference, the protocol and one row per cell (:func:`summarise`)."""
    import torch

    from mlpot.ablation.config import load_ablation
    from mlpot.ablation.timing import interleaved_times
    from mlpot.data import element_symbols, read
    from mlpot.device import resolve_device

    setup = load_ablation(config)
    data, options = setup.base.data, setup.base.training
    structures = read(data.train, format=data.format, **data.read_options)
    elements = element_symbols(structures)
    descriptor = setup.base.build_descriptor(elements, structures)  # the study's: its terms are fixed
    picked = fixed_batch(len(structures), options.batch_size, seed)
    batch = [structures[k] for k in picked]
    tasks, networks = {}, {}
    for cell, run in cells(runs).items():
        infer, train, networks[cell] = cell_tasks(setup, run, elements, descriptor, batch)
        tasks[(*cell, "inference")], tasks[(*cell, "training")] = infer, train
    atoms = sum(len(a) for a in batch)
    log(f"cost: {len(networks)} cells × (inference, training step) on {len(batch)} structures ({atoms} atoms), "
        f"{WARMUP} warm-up + {rounds} rounds, {torch.get_num_threads()} thread(s)")
    load, start = os.getloadavg()[0], time.perf_counter()
    device = resolve_device(options.device, "training.device")
    # On the CPU, the CPU time of this process: the work's own cost. Wall time on a shared
    # machine also counts the time slices other jobs take from it; measured that way, cells
    # of equal weight count differed by 1.5x in the first pass (2 other jobs on 2 cores).
    # On a GPU the device works asynchronously, so wall time around a synchronised call.
    cpu = device.type == "cpu"
    clock = time.process_time if cpu else time.perf_counter
    times = interleaved_times(tasks, rounds, seed, WARMUP, clock=clock)
    protocol = {
        "rounds": rounds, "warmup_rounds": WARMUP, "seed": seed,
        "clock": ("time.process_time (CPU time of the process)" if cpu else "time.perf_counter (wall)")
        + ", median over rounds",
        "order": "each round: every cell's inference and training step once, all in a new seeded random order",
        "batch": {"structures": len(batch), "atoms": atoms, "indices": picked, "of": str(data.train)},
        "inference": "energy + forces, eval mode, pairs built beforehand (mlpot.ablation.timing.inference_step)",
        "training_step": "one optimiser step of a lone model, as mlpot train (mlpot.ablation.timing.training_step)",
        "models": "untrained, from each cell's config (the cost does not depend on the weights)",
        "descriptor_cache": options.descriptor_cache, "dtype": options.dtype,
        "device": str(device), "threads": torch.get_num_threads(),
        "torch": torch.__version__, "wall_s": time.perf_counter() - start,
        "load_average_1min": [load, os.getloadavg()[0]], "date": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
    }
    return {"reference": dict(zip(("variant", "depth"), REFERENCE)), "protocol": protocol,
            "cells": summarise(networks, times, atoms)}


def run_cost(study_dir: Path, name: str, config: dict, runs: list, rounds: int, threads: int | None = 1,
             log: Callable[[str], None] = print) -> Path:
    """Measure study ``name``'s cells (:func:`measure`) with ``threads`` torch threads and write
    ``study_dir/cost.json`` atomically; returns its path."""
    import torch

    from mlpot.io.files import atomic_write_text

    if threads:
        torch.set_num_threads(threads)
    dataset, budget = name.rsplit("-", 1)
    document = {"study": name, "dataset": dataset, "budget": budget, **measure(config, runs, rounds, log=log)}
    path = Path(study_dir) / COST_FILE
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_text(path, json.dumps(document, indent=1) + "\n")
    for row in document["cells"]:
        log(f"  {row['variant']:<18} d{row['depth']:<2}: inference {row['infer_us_per_atom']:7.2f} µs/atom "
            f"(× {_ratio(row['infer_ratio'])}), training step {row['train_us_per_atom']:7.2f} µs/atom "
            f"(× {_ratio(row['train_ratio'])})")
    log(f"written to {path}")
    return path


def _ratio(value: float | None) -> str:
    return "—" if value is None else f"{value:.2f}"


def load_cost(study_dir: Path) -> dict | None:
    """The study's cost.json, or ``None`` (absent or unreadable: the pass has not finished)."""
    try:
        document = json.loads((Path(study_dir) / COST_FILE).read_text())
    except (OSError, ValueError):
        return None
    return document if isinstance(document, dict) and "cells" in document else None


def collected(runs_dir: Path, names: list[str]) -> list[dict]:
    """results.json's ``"cost"``: one object per study of ``names`` with a cost pass (study,
    dataset, budget, reference, protocol, cells); the per-round times stay in cost.json."""
    out = []
    for name in names:
        document = load_cost(Path(runs_dir) / name)
        if document is not None:
            cells_ = [{k: v for k, v in row.items() if not k.endswith("_rounds")} for row in document["cells"]]
            out.append({**document, "cells": cells_})
    return out


def status(study_dir: Path, n_cells: int) -> str:
    """For ``plan``: whether the study's cost pass is done, when, and whether it timed all
    ``n_cells`` cells of the design (a pass from before cells were added is run again: the
    ratios compare cells timed in one run)."""
    document = load_cost(study_dir)
    if document is None:
        return "cost pass not run"
    p = document.get("protocol") or {}
    timed = len(document.get("cells", []))
    missing = f"; it timed {timed} of {n_cells} cells: run `cost` again" if timed < n_cells else ""
    return f"cost pass done ({p.get('rounds')} rounds, {p.get('date', 'date unknown')}){missing}"


# ----------------------------------------------------------------------------- the report's figure
def ratio_points(cost: dict, key: str, variant: str) -> list[tuple[int, tuple]]:
    """(depth, (ratio, (below, above), rounds)) of ``variant``'s cells in a cost pass, ``key``
    ``"infer_ratio"`` or ``"train_ratio"``: the bar spans the per-round ratios."""
    points = []
    for c in sorted((c for c in cost.get("cells", []) if c["variant"] == variant), key=lambda c: c["depth"]):
        ratio, span = c.get(key), c.get(f"{key}_range") or (None, None)
        if is_finite_number(ratio):
            bar = (ratio - span[0], span[1] - ratio) if all(is_finite_number(x) for x in span) else None
            points.append((c["depth"], (ratio, bar, (cost.get("protocol") or {}).get("rounds"))))
    return points


def run_points(cells: dict, key: str, variant: str) -> list[tuple[int, tuple]]:
    """(depth, (median, (below, above), runs)) of ``variant``'s cells over their runs' ``key``:
    the bar spans the runs."""
    points = []
    for (v, d), runs in sorted(cells.items()):
        x = [r[key] for r in runs if is_finite_number(r.get(key))]
        if v == variant and x:
            m = statistics.median(x)
            points.append((d, (m, (m - min(x), max(x) - m), len(x))))
    return points


def plot_cost_vs_depth(f, studies: list, words: Callable[[object], str]) -> None:
    """``cost_vs_depth.png`` (for ``scripts/depth_study_report.py``; ``f`` its ``Figures``,
    ``words`` its study title): per study (rows), inference (E + F) cost, training cost and the
    peak activation memory of a training step without (solid) and with (dashed) activation
    checkpointing, vs depth, one line per variant. Timings: where the study has a cost pass,
    each cell's ratio to plain depth 2 timed in the same interleaved pass (median over rounds,
    bars the range of the per-round ratios; one y scale for every ratio panel); else µs/atom
    per run (median over the cell's runs, bars fastest–slowest), timed days apart under
    changing load. Memory: per run (median, bars min–max)."""
    studies = [s for s in studies if s.runs or s.cost]
    if not studies:
        return
    fig, axes = f.plt.subplots(len(studies), 3, figsize=(13, 2.9 * len(studies) + 0.8), squeeze=False,
                               layout="constrained")
    depths = sorted({d for s in studies for _, d in s.cells()} | {c["depth"] for s in studies for c in
                                                                  (s.cost or {}).get("cells", [])})
    ratio_axes = []
    for i, study in enumerate(studies):
        panels = ((("infer_ratio", "inference, E + F\n(× plain depth 2)"), ("train_ratio", "training step\n(× plain depth 2)"))
                  if study.cost else (("infer_us_per_atom", "inference, E + F (µs/atom)"),
                                      ("train_us_per_atom", "training (µs/atom/epoch)")))
        for j, (key, label) in enumerate((*panels, ("peak_activation_mib", "peak activation memory (MiB)"))):
            ax = axes[i][j]
            for v in f.variants:
                if key.endswith("_ratio"):
                    f.errorbar(ax, ratio_points(study.cost, key, v), v)
                    continue
                for k, ls in ((key, "-"), ("peak_activation_checkpointed_mib", "--")) if j == 2 else ((key, "-"),):
                    # The checkpointed line is named once, in the black legend entries below.
                    f.errorbar(ax, run_points(study.cells(), k, v), v, ls=ls, **({"label": None} if ls == "--" else {}))
            if key.endswith("_ratio"):
                ax.axhline(1.0, color="k", lw=0.8)
                ratio_axes.append(ax)
            elif not study.runs:
                ax.text(0.5, 0.5, "no runs yet", transform=ax.transAxes, ha="center")
            # Linear from zero: a cost reads as a multiple of the shallow network's.
            ax.set_ylim(bottom=0)
            f.depth_axis(ax, depths)
            ax.set_xlim(depths[0] / 1.25, depths[-1] * 1.25)  # the cost pass may cover depths without runs yet
            ax.set_ylabel(label)
            ax.set_title(words(study) if j == 0 else "", fontsize=9, loc="left")
    top = max((ax.get_ylim()[1] for ax in ratio_axes), default=None)
    for ax in ratio_axes:  # one scale: the ratios of all studies and both timings compare
        ax.set_ylim(0, top)
    axes[0][2].plot([], [], "k-", label="peak memory without checkpointing")
    axes[0][2].plot([], [], "k--", label="peak memory with checkpointing")
    parts = ["timings of studies with a cost pass: ratio to plain depth 2 timed side by side (median over rounds, "
             "bars: per-round ratios)"] if ratio_axes else []
    if not all(s.cost for s in studies):
        parts.append("timings of the others: per run (median over runs, bars fastest–slowest)")
    fig.suptitle("\n".join(["Cost vs depth", *parts, "memory: per run (median over runs, bars min–max)"]), fontsize=10)
    f.legend(fig, axes.ravel())
    f.save(fig, "cost_vs_depth.png")


def training_hours_left(screen: list[dict], full: list[dict], screen_left: int, full_left: int,
                        screen_epochs: int, guessed_epochs: float) -> tuple[float, float | None, float]:
    """(s per epoch of a screen run, s per member-epoch of a full-stage stack or ``None`` before
    one has finished, core-hours of training left) from the finished ``screen`` and ``full``
    runs, with ``screen_left`` screen runs of ``screen_epochs`` and ``full_left`` full-stage
    runs still to train.

    A screen run trains alone; the full stage trains a cell's (fold, seed) pairs together in
    one process, and each member's ``train_wall_s`` is its share of every epoch it was live in
    (``mlpot.training.many`` divides an epoch's wall time among the live members), so the
    members' times add up to the stack's and sum(wall) / sum(epochs) is the cost of one
    member-epoch. It is within about 30 % of a lone epoch either way (s/epoch, screen against
    member-epoch: si-25k 0.44 and 0.55, mo-2.5k 0.54 and 0.41, si-100k 0.81 and 0.59,
    water-2traj-2.5k 0.51 and 0.36), so until a stack has finished, the lone rate stands in.
    Epochs to early stopping: the full runs' mean, or ``guessed_epochs`` until one exists."""
    def per_epoch(runs: list[dict]) -> float | None:
        return sum(r["train_wall_s"] for r in runs) / sum(max(r["epochs"], 1) for r in runs) if runs else None

    lone, stacked = per_epoch(screen), per_epoch(full)
    epochs = sum(r["epochs"] for r in full) / len(full) if full else guessed_epochs
    hours = (screen_left * screen_epochs * (lone or stacked or 0.0)
             + full_left * epochs * (stacked or lone or 0.0)) / 3600
    return lone or stacked, stacked, hours
