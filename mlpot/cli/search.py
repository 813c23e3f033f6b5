"""Search network architectures and optimiser settings, scored by k-fold cross-validation.

CONFIG is a training config with a ``search:`` section (see examples/search-ethanol.yaml and
mlpot.search.config). Each trial trains the config with sampled values on every fold at
once; bad trials are pruned early. OUT receives study.db (the Optuna study), trials.csv,
best.yaml (a ready ``mlpot train`` config), report.md and plots. ``--resume`` (or running
again after an interruption) continues: finished trials are never repeated, interrupted
ones are tried again from their checkpoints.

Examples:
  mlpot search examples/search-ethanol.yaml --out runs/search-ethanol
  mlpot search examples/search-ethanol.yaml --out runs/search-ethanol --resume --trials 40 --jobs 2
"""

from __future__ import annotations

import argparse
from pathlib import Path

HELP = "search depth, width, blocks, activations and learning rates by cross-validation (Optuna)"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("config", help="training config with a 'search:' section (YAML)")
    parser.add_argument("--out", help="output folder (default: runs/<config stem>)")
    parser.add_argument("--trials", type=int, help="finished trials to reach (default: search.trials)")
    parser.add_argument("--jobs", type=int, default=1, help="worker processes sharing the study (default: %(default)s)")
    parser.add_argument("--threads", type=int, help="torch threads per worker (default: cores / jobs)")
    parser.add_argument("--resume", action="store_true", help="continue the search in --out")
    parser.add_argument("--set", dest="overrides", action="extend", nargs="+", default=[], metavar="KEY=VALUE",
                        help="override a config entry, e.g. training.epochs=20 search.trials=10")


def run(args: argparse.Namespace) -> int:
    from ..search import load_search, run_search, write_outputs

    if args.jobs < 1 or (args.trials is not None and args.trials < 1) or (args.threads is not None and args.threads < 1):
        raise ValueError("--jobs, --trials and --threads must be >= 1")
    setup = load_search(args.config, args.overrides)
    out = Path(args.out) if args.out else Path("runs") / Path(args.config).stem
    run_search(setup, out, trials=args.trials, jobs=args.jobs, resume=args.resume, threads=args.threads)
    report = write_outputs(out)
    print(f"report: {report}")
    return 0
