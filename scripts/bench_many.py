#!/usr/bin/env python
"""Many models trained as one against one by one: N seeds of the mlearn default recipe.

Both cases train the same N members (``examples/mlearn.yaml`` with seeds 0..N−1, on mlearn Si
from ../shared; rattled diamond Si with random labels without it) for ``--epochs`` epochs,
each in a fresh subprocess (peak memory = its own max RSS):

* ``stacked``: :func:`mlpot.training.many.train_many`, one pass per step for all members;
* ``sequential``: :func:`mlpot.training.train` N times, one after the other, sharing one
  descriptor cache folder (computed by the first run, loaded by the others, as
  ``mlpot ablate`` does), so the comparison is not about the cache.

Printed: total wall time (set-up included), the time in epochs alone (``metrics.csv``
``wall_s``; a stacked member's row holds its share of the epoch) and peak memory, with the
sequential/stacked ratios of the same run.

Usage: python scripts/bench_many.py [--models 8] [--epochs 3] [--threads 2]
(also through ``python scripts/bench_training.py --many 8``).
"""

from __future__ import annotations

import argparse
import csv
import json
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SI = ROOT.parent / "shared" / "datasets" / "mlearn" / "Si" / "training.json"


def synthetic_si(folder: Path, count: int = 200, repeat: tuple[int, int, int] = (2, 2, 2)) -> Path:
    """``count`` rattled diamond Si cells (``repeat`` of the cubic cell) with random energies
    and forces, written to ``folder/si.extxyz``: timings do not depend on the labels."""
    import ase.io
    import numpy as np
    from ase.build import bulk
    from ase.calculators.singlepoint import SinglePointCalculator

    rng = np.random.default_rng(0)
    out = []
    for _ in range(count):
        atoms = bulk("Si", "diamond", a=5.43).repeat(repeat)
        atoms.positions += rng.normal(0, 0.1, atoms.positions.shape)
        atoms.calc = SinglePointCalculator(atoms, energy=-5.4 * len(atoms) + rng.normal(),
                                           forces=rng.normal(0, 0.5, (len(atoms), 3)))
        out.append(atoms)
    path = folder / "si.extxyz"
    ase.io.write(path, out)
    return path


def _data(folder: Path) -> tuple[str, str, str]:
    """(path, format, source) of the training data."""
    if SI.exists():
        return str(SI), "mlearn", "mlearn Si (../shared)"
    return str(synthetic_si(folder)), "ase", "rattled diamond Si with random labels (no ../shared)"


def data_overrides(path: str, fmt: str) -> list[str]:
    """Overrides of examples/mlearn.yaml that train on ``path`` (format ``fmt``) without a
    test set; on data other than mlearn's (the synthetic Si), also without the recipe's
    group weights: it weighs mlearn's Elastic group, and synthetic structures carry no groups."""
    groups = [] if fmt == "mlearn" else ["loss.weight_by=null", "loss.group_weights={}"]
    return [f"data.train={path}", f"data.format={fmt}", "data.test=null", *groups]


def _configs(n: int, epochs: int, folder: Path):
    from mlpot.training import TrainConfig

    path, fmt, source = _data(folder)
    overrides = [*data_overrides(path, fmt), f"training.epochs={epochs}", "training.device=cpu",
                 "training.checkpoint_every=1000", "schedule.warmup_epochs=0",
                 f"training.descriptor_cache_dir={folder / 'cache'}"]
    configs = [TrainConfig.from_yaml(ROOT / "examples" / "mlearn.yaml", overrides + [f"training.seed={s}"])
               for s in range(n)]
    return configs, source


def worker(case: str, n: int, epochs: int, threads: int) -> dict:
    import torch

    from mlpot.training import train
    from mlpot.training.many import train_many

    torch.set_num_threads(threads)
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        configs, source = _configs(n, epochs, folder)
        outs = [folder / f"run{k}" for k in range(n)]
        start = time.perf_counter()
        if case == "stacked":
            train_many(configs, outs, progress=False, log=lambda _: None)
        else:
            for config, out in zip(configs, outs):
                train(config, out, progress=False, log=lambda _: None)
        total = time.perf_counter() - start
        epoch_s = sum(float(r["wall_s"]) for out in outs for r in csv.DictReader(open(out / "metrics.csv")))
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    return {"case": case, "total_s": total, "epochs_s": epoch_s, "peak_mib": rss, "source": source}


def run(n: int, epochs: int, threads: int) -> int:
    results = {}
    for case in ("stacked", "sequential"):
        proc = subprocess.run([sys.executable, __file__, "--worker", case, "--models", str(n), "--epochs",
                               str(epochs), "--threads", str(threads)], capture_output=True, text=True)
        if proc.returncode != 0:
            print(f"{case} failed:\n{proc.stderr[-2000:]}")
            return 1
        results[case] = json.loads(proc.stdout.strip().splitlines()[-1])
    s, q = results["stacked"], results["sequential"]
    print(f"# {n} seeds of examples/mlearn.yaml, {epochs} epochs each, CPU, {threads} thread(s); {s['source']}")
    print(f"{'case':<12}{'total s':>10}{'epochs s':>10}{'peak MiB':>10}")
    for r in (s, q):
        print(f"{r['case']:<12}{r['total_s']:>10.1f}{r['epochs_s']:>10.1f}{r['peak_mib']:>10.0f}")
    print(f"sequential / stacked: {q['total_s'] / s['total_s']:.2f}× total, "
          f"{q['epochs_s'] / s['epochs_s']:.2f}× in epochs; memory {s['peak_mib'] / q['peak_mib']:.2f}×")
    return 0


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", type=int, default=8)
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--worker", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        print(json.dumps(worker(args.worker, args.models, args.epochs, args.threads)))
        return 0
    return run(args.models, args.epochs, args.threads)


if __name__ == "__main__":
    sys.exit(main())
