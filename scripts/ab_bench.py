#!/usr/bin/env python
"""Before/after timing of a change: mlpot's benchmark workers run in a baseline commit and in
this working tree, alternately, in one run, and each figure is reported as a ratio.

The baseline is checked out once with ``git worktree`` beside this repository (so that both
trees find the same ``../shared`` data) and imported through ``PYTHONPATH``, so both trees run
on the same Python, torch and machine state. Each case is the worker of an existing benchmark:

- ``model-1x`` / ``model-2x``: scripts/bench_model.py, energy + forces of the ANI-like model on
  192 / 1536 water atoms, µs per atom (lower is better);
- ``train-cached`` / ``train-uncached``: scripts/bench_training.py, force training on 192-atom
  water frames with and without the descriptor cache, structures per second (higher is better).

Rounds alternate which tree goes first; a ratio pairs the two runs of one round, and the
median over rounds is printed with each round's value (new / old of the figure: < 1 is faster
for µs/atom, > 1 is faster for structures/s). One untimed round first fills numba's caches.

Usage: python scripts/ab_bench.py --baseline REF [--rounds 3] [--cases model-1x train-cached ...]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
#: case → (script, worker arguments, figure, better)
CASES = {
    "model-1x": ("bench_model.py", ["--worker", "mlpot", "1", "--repeats", "10", "--warmup", "10"], "us_per_atom", "lower"),
    "model-2x": ("bench_model.py", ["--worker", "mlpot", "2", "--repeats", "5", "--warmup", "5"], "us_per_atom", "lower"),
    "train-cached": ("bench_training.py", ["--worker", "mlpot-cached", "--frames", "40", "--batch", "4", "--steps", "10"],
                     "structures_per_s", "higher"),
    "train-uncached": ("bench_training.py", ["--worker", "mlpot-uncached", "--frames", "40", "--batch", "4",
                                             "--steps", "10"], "structures_per_s", "higher"),
}


def worktree(ref: str) -> Path:
    """A detached checkout of ``ref`` beside this repository (made once, reused)."""
    sha = subprocess.run(["git", "-C", str(REPO), "rev-parse", ref], capture_output=True, text=True,
                         check=True).stdout.strip()
    path = REPO.parent / f"{REPO.name}-ab-{sha[:12]}"
    if not (path / "mlpot").is_dir():
        subprocess.run(["git", "-C", str(REPO), "worktree", "add", "--detach", str(path), sha], check=True,
                       capture_output=True)
    return path


def run(tree: Path, case: str, threads: int) -> float:
    """The case's figure measured by its worker in ``tree`` (a fresh process)."""
    script, worker, figure, _ = CASES[case]
    env = dict(os.environ, PYTHONPATH=str(tree))
    proc = subprocess.run([sys.executable, str(tree / "scripts" / script), *worker, "--threads", str(threads)],
                          capture_output=True, text=True, env=env, cwd=tree)
    if proc.returncode != 0:
        raise RuntimeError(f"{case} in {tree} failed:\n{proc.stderr[-2000:]}")
    return float(json.loads(proc.stdout.strip().splitlines()[-1])[figure])


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--baseline", required=True, help="git ref of the 'before' tree")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--cases", nargs="+", default=list(CASES), choices=list(CASES))
    args = parser.parse_args()
    old, new = worktree(args.baseline), REPO
    print(f"# baseline {args.baseline} ({old}) vs this tree ({new}); {args.rounds} round(s), "
          f"{args.threads} thread(s); cases {args.cases}", flush=True)
    for tree in (old, new):  # untimed: compiles and caches numba's kernels of each tree
        for case in args.cases:
            run(tree, case, args.threads)
    figures: dict[tuple[str, str], list[float]] = {}
    for k in range(args.rounds):
        order = (old, new) if k % 2 == 0 else (new, old)
        for case in args.cases:
            for tree in order:
                figures.setdefault((case, "old" if tree == old else "new"), []).append(run(tree, case, args.threads))
        print(f"round {k + 1}/{args.rounds} done", file=sys.stderr, flush=True)
    print(f"{'case':<16}{'figure':<18}{'before':>10}{'after':>10}  after/before: median (each round)")
    for case in args.cases:
        before, after = figures[(case, "old")], figures[(case, "new")]
        ratios = [a / b for a, b in zip(after, before)]
        _, _, figure, better = CASES[case]
        print(f"{case:<16}{figure:<18}{statistics.median(before):>10.2f}{statistics.median(after):>10.2f}  "
              f"{statistics.median(ratios):.3f} ({' '.join(f'{r:.3f}' for r in ratios)}; {better} is better)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
