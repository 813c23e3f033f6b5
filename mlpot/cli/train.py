"""Train a potential from a YAML config.

The run folder (default ``runs/<config name>``) receives config.yaml, split.json,
metrics.csv, last.pt, best.pt, model.pt (the best model, for ``mlpot.load``) and, with a
test set, test_metrics.json; with a ``finish:`` section, its stage trains in <out>/finish and
its model becomes <out>/model.pt. ``--set key.path=value`` overrides config entries (values are
YAML), e.g. ``--set training.epochs=5 model.hidden=[64,64]``.

Data-parallel training: ``--nproc N`` starts N local processes (through torchrun; gloo on
the CPU, NCCL with one GPU each on CUDA), each taking a share of every batch, with the same
global batches and results as one process. ``torchrun --nproc_per_node N -m mlpot train
CONFIG`` does the same and also spans several machines.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

HELP = "train a potential from a YAML config"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("config", help="training config (YAML)")
    parser.add_argument("--out", help="run folder (default: runs/<config stem>)")
    parser.add_argument("--resume", action="store_true", help="continue from <out>/last.pt")
    parser.add_argument("--overwrite", action="store_true",
                        help="start afresh even if <out> already holds a run")
    parser.add_argument("--set", dest="overrides", action="extend", nargs="+", default=[],
                        metavar="KEY=VALUE", help="override a config entry, e.g. training.epochs=5")
    parser.add_argument("--no-progress", action="store_true",
                        help="no progress reports (default: a bar on a terminal, a line every 30 s in a log)")
    parser.add_argument("--nproc", type=int, default=None, metavar="N",
                        help="data-parallel training in N local processes (via torchrun; default: one "
                        "process, no torchrun)")


def run(args: argparse.Namespace) -> int:
    from ..training import TrainConfig, TrainingError, train

    if args.resume and args.overwrite:
        raise ValueError("--resume and --overwrite exclude each other")
    config = TrainConfig.from_yaml(args.config, args.overrides)  # a bad config fails here, once
    out = Path(args.out) if args.out else Path("runs") / Path(args.config).stem
    if args.nproc is not None and args.nproc != 1:
        from ..training.distributed import launch

        argv = (["train", args.config, "--out", str(out)] + (["--resume"] if args.resume else [])
                + (["--overwrite"] if args.overwrite else []) + (["--no-progress"] if args.no_progress else [])
                + (["--set", *args.overrides] if args.overrides else []))
        return launch(args.nproc, argv)
    report = os.environ.get("RANK", "0") == "0"  # under torchrun, rank 0 alone reports
    try:
        result = train(config, out, resume=args.resume, overwrite=args.overwrite,
                       progress=not args.no_progress)
    except TrainingError as exc:
        if report:
            print(f"mlpot train: training stopped: {exc}", file=sys.stderr)
        return 1
    if not report:
        return 0
    best = result["best_epoch"]
    if config.finish is None:
        print(f"model (best epoch {best}): {out / 'model.pt'}")
        print(f"metrics: {out / 'metrics.csv'}")
    else:
        print(f"model (after the finish's epoch {best}): {out / 'model.pt'}")
        print(f"metrics: {out / 'metrics.csv'} (first stage), {out / 'finish' / 'metrics.csv'} (finish)")
    if result["test"] is not None:
        print(f"test metrics: {out / 'test_metrics.json'}")
    return 0
