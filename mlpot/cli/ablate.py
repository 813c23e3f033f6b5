"""Train a grid of network depths and variants and write a report.

CONFIG is a training config with an ``ablation:`` section (see examples/ablation-ethanol.yaml
and mlpot.ablation.config). Each grid point is an ordinary training run in
``OUT/runs/<name>``; when all are done, OUT receives results.csv, results.json, report.md and
the plots. ``--resume`` continues an interrupted grid: finished runs are skipped, unfinished
ones continue from their last checkpoint, broken ones start again.

Examples:
  mlpot ablate examples/ablation-ethanol.yaml --out runs/ablation-ethanol --jobs 2
  mlpot ablate examples/ablation-mlearn.yaml --resume --set ablation.depths=[1,2,4]
"""

from __future__ import annotations

import argparse
from pathlib import Path

HELP = "train a grid of depths/variants and report accuracy, gradients, MD stability, cost"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("config", help="training config with an 'ablation:' section (YAML)")
    parser.add_argument("--out", help="output folder (default: runs/<config stem>)")
    parser.add_argument("--jobs", type=int, default=1,
                        help="configurations trained at once (each with its folds and seeds, in a process of its "
                        "own) (default: %(default)s)")
    parser.add_argument("--threads", type=int, help="torch threads per run (default: cores / jobs)")
    parser.add_argument("--resume", action="store_true", help="continue the grid in --out")
    parser.add_argument("--set", dest="overrides", action="extend", nargs="+", default=[],
                        metavar="KEY=VALUE",
                        help="override a config entry, e.g. training.epochs=5 ablation.depths=[1,2]")
    parser.add_argument("--only", nargs="+", metavar="RUN", help="run only these grid points (default: all)")
    parser.add_argument("--title", help="report title (default: Depth ablation)")


def run(args: argparse.Namespace) -> int:
    from ..ablation import load_ablation, run_ablation
    from ..ablation.report import render_report, write_results

    if args.jobs < 1 or (args.threads is not None and args.threads < 1):
        raise ValueError("--jobs and --threads must be >= 1")
    setup = load_ablation(args.config, args.overrides)
    out = Path(args.out) if args.out else Path("runs") / Path(args.config).stem
    results = run_ablation(setup, out, jobs=args.jobs, resume=args.resume, only=args.only,
                           threads=args.threads)
    if not results:
        print("no finished runs: nothing to report")
        return 1
    write_results(out, results)
    report = render_report(out, title=args.title)
    print(f"report: {report}")
    expected = len(args.only) if args.only else None
    return 0 if expected is None or len(results) >= expected else 1
