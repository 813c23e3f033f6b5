"""Held-out structures beyond the training range: does a depth-study run extrapolate gracefully?

A fold's test structures can hold atoms whose descriptors lie beyond the range of that fold's
training set (mlearn Mo: hot AIMD frames with a pair closer than any in training). Every
model extrapolates there, and its test force error rises; a run whose error there is many
times that of the other runs of its fold fails out of distribution, which the study's test
RMSE shows only as one large number. For one study and one fold, this evaluates every run
that kept its ``model.pt`` on that fold's test structures and splits its force RMSE into the
structures with an atom beyond the training range by more than ``--excess`` (in units of the
feature's range: :func:`mlpot.ablation.stats.range_split`) and the rest. Runs trained since
2026-12-07 record the same split in their result.json (``extrapolation``) and results.json.

    python scripts/depth_study_extrapolation.py mo-2.5k --fold 0
    python scripts/depth_study_extrapolation.py mo-2.5k --fold 0 --extra runs/probe/mo-d3-lr3e-3
    python scripts/depth_study_extrapolation.py mo-2.5k --fold 1 --record
    python scripts/depth_study_extrapolation.py mo-2.5k --fold 0 --slopes

``--slopes`` adds how steep each network is where it extrapolates: the largest per-atom
|∂E_i/∂G̃_i| (eV per unit of the scaled descriptor, the network's own input) over the atoms
of the structures beyond the range, beside the largest over the fold's training atoms. A
network whose energy turns steeply just past its data shows a ratio well above 1 there.

Runs whose folder lacks ``model.pt`` (the committed archive keeps results, not models) or
``result.json`` (still training) are skipped and counted. Water's studies have no folds
(their test set is data.test, split by trajectory): their runs record the split
themselves, and this script refuses them. ``--json FILE`` writes the table as a list of
objects.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch

from mlpot.ablation.config import load_ablation
from mlpot.ablation.stats import BEYOND_RANGE_EXCESS, range_split
from mlpot.data import collate
from mlpot.data.readers import read
from mlpot.evaluation import evaluate
from mlpot.io import atomic_write_text, load_model

ROOT = Path(__file__).resolve().parent.parent


def run_folders(study_dir: Path, fold: int, extra: list[Path]) -> list[Path]:
    """Every run folder of ``fold`` (its name ends ``_f<fold>_s<seed>``) under the study's
    full stage and the ``extra`` grids, sorted by name."""
    grids = sorted(study_dir.glob("full-lr*")) + list(extra)
    found = [d for g in grids for d in (g / "runs").glob(f"*_f{fold}_s*") if d.is_dir()]
    return sorted(found, key=lambda d: (d.name, str(d)))


def split_errors(model, structures: list, indices: Sequence[int], excess: float, name: str) -> dict:
    """:func:`mlpot.ablation.stats.range_split` of ``model`` (read from ``name``) on
    ``structures`` (their indices in the data file: ``indices``), with the force RMSE over
    all of them (meV/Å)."""
    metrics, predictions = evaluate(model, structures)
    split = range_split(predictions, indices, excess)
    if split is None:
        raise SystemExit(f"{name}: its predictions carry no training range; cannot split by extrapolation")
    return {**split, "force_rmse_mev_per_a": metrics["force_rmse_mev_per_a"]}


def atom_slopes(model, structures: Sequence, batch_size: int = 16) -> np.ndarray:
    """(N,) |∂E_i/∂G̃_i| of every atom of ``structures`` in order: the norm of the gradient of
    the atom's energy (eV) with respect to its scaled descriptor G̃_i (the element network's
    input, dimensionless), in eval mode and the model's dtype."""
    model.eval()
    norms = []
    for lo in range(0, len(structures), batch_size):
        batch = collate(structures[lo:lo + batch_size], cutoff=model.cutoff, dtype=model.dtype)
        species = model.descriptor.species(batch.numbers)
        with torch.no_grad():
            raw = model.descriptor(batch, scaled=False)
        scaled = model.descriptor.scale(raw, species).detach().requires_grad_(True)
        (grad,) = torch.autograd.grad(model.atomic_energies_from_features(scaled, species).sum(), scaled)
        norms.append(grad.norm(dim=1).detach())
    return torch.cat(norms).cpu().numpy() if norms else np.zeros(0)


def slope_columns(model, structures: list, train: Sequence[int], beyond: Sequence[int]) -> dict:
    """The steepest :func:`atom_slopes` over the atoms of the ``beyond`` structures and over
    those of the ``train`` ones (indices into ``structures``, the data file), and their ratio
    (``None`` where there are no structures beyond)."""
    steepest_train = float(atom_slopes(model, [structures[i] for i in train]).max())
    steepest_beyond = float(atom_slopes(model, [structures[i] for i in beyond]).max()) if beyond else None
    return {"steepest_slope_train": steepest_train, "steepest_slope_beyond": steepest_beyond,
            "steepest_slope_ratio": None if steepest_beyond is None else steepest_beyond / steepest_train}


def fold_table(folders: list[Path], structures: list, fold: int, excess: float,
               slopes: bool = False) -> tuple[list[tuple[Path, dict]], list[str]]:
    """:func:`split_errors` of every finished run folder that holds a ``model.pt``, on the
    test structures of its grid's split of ``fold`` (``<grid>/splits/fold<K>.json``, shared by
    all its runs); ``structures`` is the whole data file. Returns each evaluated folder with its row
    (``beyond``: indices into the data file) and the names of the folders skipped: unfinished
    (no result.json), or without their model. ``slopes`` adds :func:`slope_columns`."""
    subsets: dict[tuple[int, ...], list] = {}
    rows, skipped = [], []
    for folder in folders:
        # A run still training has a model.pt (its checkpoints) but no result.json yet.
        if not ((folder / "model.pt").is_file() and (folder / "result.json").is_file()):
            skipped.append(folder.name)
            continue
        split = json.loads((folder.parent.parent / "splits" / f"fold{fold}.json").read_text())
        test = tuple(split["test"])
        if not test:
            raise SystemExit(f"{folder.parent.parent}: fold {fold} holds no test structures (a study without "
                             "folds, such as water's: its runs record the split in result.json themselves)")
        subset = subsets.setdefault(test, [structures[i] for i in test])
        model = load_model(folder / "model.pt")
        row = {"run": folder.name, "grid": folder.parent.parent.name,
               **split_errors(model, subset, test, excess, str(folder / "model.pt"))}
        if slopes:
            row.update(slope_columns(model, structures, split["train"], row["beyond"]))
        rows.append((folder, row))
    return rows, skipped


def record(folder: Path, row: dict) -> bool:
    """Add ``row``'s split to the run's result.json as the runner writes it since 2026-12-07
    (``extrapolation.test``), for a run measured before; returns whether it wrote. The model
    is the one the runner measured (the test RMSE over all structures reproduces the run's)."""
    path = folder / "result.json"
    result = json.loads(path.read_text())
    if ((result.get("extrapolation") or {}).get("test")) is not None:
        return False
    result.setdefault("extrapolation", {})["test"] = {k: row[k] for k in (
        "excess", "beyond", "force_rmse_beyond_mev_per_a", "force_rmse_inside_mev_per_a")}
    result["extrapolation"]["recorded_by"] = "scripts/depth_study_extrapolation.py"
    atomic_write_text(path, json.dumps(result, indent=1) + "\n")
    return True


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    parser.add_argument("study", help="a study of scripts/depth_study.py (e.g. mo-2.5k)")
    parser.add_argument("--fold", type=int, default=0, help="the fold whose test structures are evaluated")
    parser.add_argument("--excess", type=float, default=BEYOND_RANGE_EXCESS,
                        help="a structure is beyond the training range when one of its atoms lies "
                             "beyond it by more than this, in units of the feature's range")
    parser.add_argument("--runs", type=Path, default=ROOT / "runs" / "depth-v2", help="folder of the studies")
    parser.add_argument("--extra", type=Path, nargs="*", default=[],
                        help="further ablation grids (folders with runs/) trained on the same data")
    parser.add_argument("--threads", type=int, default=1, help="torch threads")
    parser.add_argument("--json", type=Path, help="also write the table here")
    parser.add_argument("--slopes", action="store_true",
                        help="add each network's steepest |dE_i/dG~_i| beyond the range and on its training atoms")
    parser.add_argument("--record", action="store_true",
                        help="write the split into the result.json of each run of the study that lacks it "
                             "(runs measured before 2026-12-07), for collect to carry into results.json")
    args = parser.parse_args(argv)
    if args.record and args.excess != BEYOND_RANGE_EXCESS:
        raise SystemExit(f"--record writes the split at the runner's threshold, {BEYOND_RANGE_EXCESS}; "
                         f"drop --excess {args.excess:g}")
    torch.set_num_threads(args.threads)

    study_dir = args.runs / args.study
    folders = run_folders(study_dir, args.fold, args.extra)
    if not folders:
        raise SystemExit(f"no runs of fold {args.fold} under {study_dir}/full-lr*/runs")
    data = load_ablation(folders[0].parent.parent / "ablation.yaml").base.data
    structures = read(data.train, format=data.format, **data.read_options)
    evaluated, skipped = fold_table(folders, structures, args.fold, args.excess, args.slopes)
    rows = [row for _, row in evaluated]
    for row in rows:
        print(f"{row['run']:58s} {row['grid']:14s} beyond {_fmt(row['force_rmse_beyond_mev_per_a'])}  "
              f"inside {_fmt(row['force_rmse_inside_mev_per_a'])}  all {_fmt(row['force_rmse_mev_per_a'])} meV/Å"
              + (f"  steepest |dE/dG~| beyond {_fmt(row['steepest_slope_beyond'], 2)} / training "
                 f"{_fmt(row['steepest_slope_train'], 2)}" if args.slopes else ""))
    if rows:
        beyond = sorted({i for r in rows for i in r["beyond"]})
        print(f"structures beyond the range (indices in {data.train}): {beyond}")
    if skipped:
        print(f"skipped (unfinished, or no model.pt): {len(skipped)} runs", file=sys.stderr)
    if args.json:
        args.json.write_text(json.dumps(rows, indent=1))
    if args.record:
        written = sum(record(folder, row) for folder, row in evaluated if folder.parent.parent.parent == study_dir)
        print(f"recorded the split in {written} result.json file(s) of {args.study} (the others had it)")
    return 0


def _fmt(value: float | None, digits: int = 0) -> str:
    return f"{value:7.{digits}f}" if value is not None else "      –"


if __name__ == "__main__":
    raise SystemExit(main())
