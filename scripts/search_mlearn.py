#!/usr/bin/env python
"""Architecture search on the mlearn recipe: ``mlpot search`` over examples/mlearn.yaml.

The recipe as shipped (its descriptor's 96 terms chosen once on the element's whole training
set, its loss, schedule and batch size) with these searched: depth, width, plain or residual
blocks, learning rate and weight decay (:data:`SPACE`). Each trial trains the three folds of a
3-fold split of the published training set together, for at most ``--epochs`` epochs with the
recipe's cosine schedule laid out over them, and is scored by its mean held-out loss; the
successive-halving pruner stops trials that trail after 50 epochs. The published test set is
not used: the best architecture is then checked at the full budget with
``scripts/bench_mlearn.py`` like any lever (the command is printed at the end).

The search lives in ``RUNS/search-mlearn-<el>`` (Optuna's SQLite study, one folder per trial);
running this again continues it (finished trials are kept, an interrupted one resumes from its
checkpoints), and ``--trials N`` raises the target. It prints the plan, a line per finished
trial, and writes trials.csv, best.yaml and report.md there.

Usage: python scripts/search_mlearn.py [--element Si] [--epochs 200] [--trials 16] [--runs runs/accuracy]
           [--threads 1]
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import yaml
from bench_mlearn import CONFIG, MLEARN, run_overrides

#: The searched entries (mlpot.search.config): the network and the two optimiser settings that
#: interact with its size. The activation stays SiLU (tanh and CELU lost on the recipe,
#: docs/accuracy.md); max_params keeps every network under 4x the recipe's 33k weights.
SPACE = {
    "depth": {"int": [1, 8]},
    "width": {"int": [32, 128], "log": True},
    "block": {"choice": ["plain", "residual"]},
    "lr": {"float": [3.0e-4, 3.0e-3], "log": True},
    "weight_decay": {"float": [3.0e-3, 1.0e-1], "log": True},
}


def search_config(element: str, trials: int, epochs: int, root: Path) -> tuple[dict, list[str]]:
    """The search config (the recipe with a ``search`` section) and its overrides: the
    element's training data (``data.test=null`` comes after its test file and wins), the
    budget."""
    config = yaml.safe_load(CONFIG.read_text())
    config["search"] = {"trials": trials, "folds": 3, "max_params": 130_000, "pruner": "asha", "min_epochs": 50,
                        "seed": 0, "space": SPACE}
    # The recipe fits every training structure (no validation split); the search's pruner
    # compares trials by each fold's validation loss, so its folds keep 10 % for that.
    return config, run_overrides(element, epochs, ["data.test=null", "data.val_fraction=0.1"], root)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--element", default="Si")
    parser.add_argument("--data", type=Path, default=MLEARN, help="folder of <el>/training.json")
    parser.add_argument("--epochs", type=int, default=200, help="most epochs of a trial (the recipe: 1000)")
    parser.add_argument("--trials", type=int, default=16, help="finished trials to reach")
    parser.add_argument("--runs", type=Path, default=Path("runs/accuracy"))
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()

    from mlpot.search import load_search, run_search, write_outputs

    config, overrides = search_config(args.element, args.trials, args.epochs, args.data)
    setup = load_search(config, overrides)
    out = args.runs / f"search-mlearn-{args.element}"
    print(f"plan: {args.trials} trials of the recipe on {args.element} ({setup.base.data.train}), 3 folds each "
          f"trained together, at most {args.epochs} epochs, pruned after 50 if they trail; space: "
          + ", ".join(f"{k} {v.get('int') or v.get('float') or v.get('choice')}" for k, v in SPACE.items())
          + f"; into {out}", flush=True)
    run_search(setup, out, trials=args.trials, resume=(out / "study.db").exists(), threads=args.threads,
               log=lambda line: print(line, flush=True))
    report = write_outputs(out)
    print(f"report: {report}; best config: {out / 'best.yaml'}")
    print("check the best at the full budget, 3 seeds: python scripts/bench_mlearn.py --elements "
          f"{args.element} --seeds 0 1 2 --tag search-best-e1000 --runs {args.runs} --epochs 1000 --set "
          "<the best trial's model.* and optimizer.* values from best.yaml>")
    return 0


if __name__ == "__main__":
    from mlpot.allocator import tune_cpu_allocator  # large blocks stay in the heap: 2x faster on the CPU
    tune_cpu_allocator()
    sys.exit(main())
