#!/usr/bin/env python
"""Inference cost of trained model files side by side: energy + forces through the ASE
calculator, µs per atom, each case as a ratio to the first.

A case is one model file, or several joined by commas (an ensemble: the calculator runs each
member whole, descriptor included). All cases run in this one process on the same structure;
each round times every case in turn (the order alternates between rounds), and a ratio
pairs the cases' figures of one round. Every call displaces the atoms by a small random step
(0.01 Å, like an MD step), so each call computes; the neighbour list is reused within its
Verlet skin as in MD.

The structure is ``--structure FILE[@INDEX]`` (any ASE-readable file), or by default the
ground-state crystal of the first model's element (``ase.build.bulk``, cubic cell) repeated
``--repeat`` times along each axis (Si: 64 atoms at the default 2).

Usage: python scripts/bench_models.py A.pt B.pt [C1.pt,C2.pt,C3.pt ...] [--structure FILE]
       [--repeat 2] [--calls 20] [--warmup 5] [--rounds 5] [--threads 1]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time

import numpy as np
import torch


def structure(args, element: str):
    """The benchmark structure: a file's frame or the element's cubic ground-state crystal."""
    from ase.build import bulk
    from ase.io import read

    if args.structure:
        path, _, index = args.structure.partition("@")
        return read(path, index=int(index) if index else 0)
    return bulk(element, cubic=True).repeat(args.repeat)


def time_case(calc, atoms, calls: int, warmup: int, rng: np.random.Generator) -> float:
    """Median µs per atom of ``calls`` energy + forces evaluations after ``warmup`` untimed ones."""
    atoms = atoms.copy()
    atoms.calc = calc
    times = []
    for k in range(warmup + calls):
        atoms.positions += rng.normal(scale=0.01, size=atoms.positions.shape)
        start = time.perf_counter()
        atoms.get_potential_energy()
        atoms.get_forces()
        if k >= warmup:
            times.append(time.perf_counter() - start)
    return statistics.median(times) / len(atoms) * 1e6


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("cases", nargs="+", help="model files; comma-joined files form an ensemble")
    parser.add_argument("--structure", help="FILE[@INDEX], any ASE-readable structure")
    parser.add_argument("--repeat", type=int, default=2, help="repeats of the cubic crystal per axis")
    parser.add_argument("--calls", type=int, default=20, help="timed calls per case and round")
    parser.add_argument("--warmup", type=int, default=5, help="untimed calls per case and round")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--device", default="cpu")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)

    from mlpot.calculator import MLPotCalculator

    calcs = [MLPotCalculator(case.split(","), device=args.device, extrapolation="ignore") for case in args.cases]
    atoms = structure(args, calcs[0].models[0].elements[0])
    present = set(atoms.get_chemical_symbols())
    for k, (case, calc) in enumerate(zip(args.cases, calcs), 1):
        missing = sorted(present - set(calc.models[0].elements))
        if missing:  # every case runs on the one structure: say so before any timing
            parser.error(f"case {k} ({case}) does not know {missing}, which the benchmark structure "
                         f"({atoms.get_chemical_formula()}) holds: compare models of the same elements, "
                         f"or give a --structure that all of them know")
    n_weights = [sum(p.numel() for m in c.models for p in m.parameters()) for c in calcs]
    print(f"# {len(atoms)} atoms ({atoms.get_chemical_formula()}), {args.rounds} round(s) of "
          f"{args.warmup} + {args.calls} calls per case, {args.threads} thread(s), {args.device}", flush=True)
    for k, case in enumerate(args.cases, 1):
        print(f"# case {k}: {case}")
    rng = np.random.default_rng(0)
    figures: list[list[float]] = [[] for _ in calcs]
    for r in range(args.rounds):
        order = range(len(calcs)) if r % 2 == 0 else reversed(range(len(calcs)))
        for i in order:
            figures[i].append(time_case(calcs[i], atoms, args.calls, args.warmup, rng))
        print(f"round {r + 1}/{args.rounds}: " + "  ".join(f"{f[-1]:.1f}" for f in figures), file=sys.stderr,
              flush=True)
    print(f"{'case':<6}{'models':>7}{'weights':>10}{'µs/atom':>10}  ratio to case 1: median (each round)")
    for k, (calc, weights, figure) in enumerate(zip(calcs, n_weights, figures), 1):
        ratios = [a / b for a, b in zip(figure, figures[0])]
        print(f"{k:<6}{len(calc.models):>7}{weights:>10}{statistics.median(figure):>10.1f}  "
              f"{statistics.median(ratios):.3f} ({' '.join(f'{x:.3f}' for x in ratios)})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
