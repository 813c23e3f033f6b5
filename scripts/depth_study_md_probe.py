"""The depth study's MD protocol for chosen cells under another condition: a probe.

The md stage (``scripts/depth_study_md.py``) runs every cell at its data set's conditions
(Si: every model of a cell at 3000 K for 10 ps, then the median model at 1518 K for 50
ps). Another bath or length may rank what those cannot, or check them: this runs the same protocol (each cell's median-validation model,
Langevin NVT, held-out start frames nearest the temperature, the same failure tests) for
the cells named, at ``--temperature`` for ``--ps`` per replica, into ``RUNS/<study>/md-<T>K/``.
results.json does not read that folder (the stage's Si condition at 3000 K runs every
model of a cell, in ``md-3000K-models/``); a probe of another length than a result already
there is refused rather than overwrite it. Cells already done there are skipped; a stopped
cell resumes from its checkpoint. ``docs/depth-study/v2/si-25k-md-3000K.json`` holds the
median models of 15 si-25k cells at 3000 K, 7 of them run on 2026-12-08 by the md stage
while it still ran one model per cell (into this same folder).

    python scripts/depth_study_md_probe.py si-25k --temperature 3000 --ps 10 \\
        --cells plain:1 plain:2 plain:4 plain:16 residual_stem:32 --json docs/depth-study/v2/si-25k-md-3000K.json

``--all-runs`` runs every model of each cell (its five (fold, seed) pairs), not only the
median one, into ``<variant>_dNN_f<fold>_s<seed>.json``: whether a cell's failures belong to
the cell or to one seed. ``--models DIR`` takes every model of the named cells from another
``mlpot ablate`` folder instead (e.g. a cell's runs trained again where the archive kept
only the median model), into ``DIR/md-<T>K/``; the study still gives the start frames. ``--json`` writes one row per cell (or run) done, its failures and
times to failure, for the docs; it is rewritten after each cell.
"""

from __future__ import annotations

import argparse
import json
import statistics
from pathlib import Path

import depth_study
import depth_study_md

from mlpot.io import atomic_write_text


def parse_cell(text: str) -> tuple[str, int]:
    """``variant:depth`` → (variant, depth)."""
    variant, _, depth = text.partition(":")
    if not depth.isdigit():
        raise argparse.ArgumentTypeError(f"a cell is variant:depth (plain:2), not {text!r}")
    return variant, int(depth)


def probe_dir(runs: Path, study: str, temperature_K: float) -> Path:
    return runs / study / f"md-{temperature_K:g}K"


def summary_row(row: dict) -> dict:
    """The fields of a cell's MD result that the probe reports."""
    times = [t for t in row["time_to_failure_ps"] if t is not None]
    return {k: row[k] for k in ("dataset", "budget", "variant", "depth", "width", "seed", "fold", "lr", "temperature_k",
                                "timestep_fs", "replicas", "ps_per_replica", "n_failed", "time_to_failure_ps")} | {
        "median_time_to_failure_ps": statistics.median(times) if times else None}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    parser.add_argument("study", help="a study of scripts/depth_study.py whose cells have finished (e.g. si-25k)")
    parser.add_argument("--cells", type=parse_cell, nargs="+", required=True, help="variant:depth, e.g. plain:2")
    parser.add_argument("--temperature", type=float, required=True, help="bath temperature, K")
    parser.add_argument("--ps", type=float, default=10.0, help="ps per replica")
    parser.add_argument("--replicas", type=int, default=10)
    parser.add_argument("--timestep", type=float, help="fs (default: the study's md stage's)")
    parser.add_argument("--runs", type=Path, default=depth_study.ROOT / "runs" / "depth-v2")
    parser.add_argument("--threads", type=int, default=1, help="torch threads")
    parser.add_argument("--all-runs", action="store_true", help="every model of each cell, not only its median one")
    parser.add_argument("--models", type=Path, help="an mlpot ablate folder whose runs of the cells to run "
                        "instead of the study's own (implies --all-runs)")
    parser.add_argument("--json", type=Path, help="also write the cells' rows here")
    args = parser.parse_args(argv)
    import torch

    torch.set_num_threads(args.threads)
    (study,) = depth_study.studies([args.study])
    own = depth_study_md.condition(study[0].rsplit("-", 1)[0])
    cond = depth_study_md.Condition(args.temperature, args.timestep or own.timestep_fs,
                                    f"probe ({own.temperature_K:g} K in the md stage)")
    if args.models:
        cells, base, out_dir = other_runs(args.models), args.models, probe_dir(args.models.parent, args.models.name,
                                                                               args.temperature)
        args.all_runs = True
        missing = [c for c in args.cells if not cells.get(c)]
    else:
        cells, base, out_dir = (depth_study_md.cell_runs(args.runs / args.study), args.runs,
                                probe_dir(args.runs, args.study, args.temperature))
        missing = [c for c in args.cells if len(cells.get(c, [])) < len(depth_study.pairs(study[1]))]
    if missing:
        raise SystemExit(f"{args.models or args.study}: cells {missing} have not finished their full stage here")
    absent = [str(m.relative_to(base)) for key in args.cells for m in depth_study_md.missing_models(
        cells[key] if args.all_runs else [depth_study_md.representative(cells[key])])]
    if absent:  # before any MD: a probe that stops at its third cell has wasted the first two's hours
        raise SystemExit(f"{args.models or args.study}: {len(absent)} model files are not here: "
                         f"{', '.join(absent[:3])}{' …' if len(absent) > 3 else ''}. The committed archive keeps "
                         f"each cell's median model only: --all-runs needs the cell's runs trained on this machine "
                         f"(or drop --all-runs)")
    print(f"{args.study}: {len(args.cells)} cells × {args.replicas} replicas × {args.ps:g} ps at "
          f"{args.temperature:g} K ({cond.timestep_fs:g} fs) into {out_dir}", flush=True)
    rows = []
    for key in args.cells:
        cell_out = out_dir / f"{key[0]}_d{key[1]:02d}.json"
        todo = ([(cell_out, None)] if not args.all_runs else
                [(out_dir / f"{key[0]}_d{key[1]:02d}_f{r['fold']}_s{r['seed']}.json", (r, d))
                 for r, d in sorted(cells[key], key=lambda rd: (rd[0]["fold"], rd[0]["seed"]))])
        for out, run in todo:
            row = _done(out, args, cond, cells[key]) or (
                _done(cell_out, args, cond, cells[key], run) if run is not None else None)
            if row is None:
                row = depth_study_md.run_cell(study, key, cells[key], out, args.replicas, args.ps,
                                              log=lambda line: print(line, flush=True), cond=cond, run=run)
            rows.append(summary_row(row))
            print(f"{key[0]} depth {key[1]} (fold {row['fold']}, seed {row['seed']}): {row['n_failed']} of "
                  f"{row['replicas']} replicas failed (median time to failure "
                  f"{_fmt(rows[-1]['median_time_to_failure_ps'])} ps)", flush=True)
        if args.json:  # after every cell: a probe stopped part-way keeps its table so far
            atomic_write_text(args.json, json.dumps(rows, indent=1) + "\n")
    return 0


def other_runs(folder: Path) -> dict[tuple[str, int], list[tuple[dict, Path]]]:
    """The finished runs of an ``mlpot ablate`` folder by cell (variant, depth): (result, run folder)."""
    from mlpot.ablation.report import collect_results

    return depth_study_md.by_cell((result, folder) for result in collect_results(folder))


def _done(out: Path, args, cond, runs: list, run: tuple[dict, Path] | None = None) -> dict | None:
    """The result in ``out`` if it is of this probe's length, replicas and timestep, of the
    cell's models now (:func:`depth_study_md.is_current`), and of ``run``'s model when given
    (the median run's cell file serves its own (fold, seed)); else ``None``."""
    row = depth_study_md.current_result(out, runs, depth_study_md.protocol(cond, args.replicas, args.ps))
    if row is None:
        return None
    if run is not None and (row["fold"], row["seed"]) != (run[0]["fold"], run[0]["seed"]):
        return None
    return row


def _fmt(value: float | None) -> str:
    return "–" if value is None else f"{value:.2f}"


if __name__ == "__main__":
    raise SystemExit(main())
