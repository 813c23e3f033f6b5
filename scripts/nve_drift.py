#!/usr/bin/env python
"""NVE energy conservation of a trained model: ASE path and batched engine side by side.

Runs velocity Verlet from one structure (velocities drawn at ``--temperature``) for
``--time`` ps at ``--timestep`` fs, in float64 and float32, through ASE (MLPotCalculator)
and through mlpot's batched engine, and prints the drift of the total energy (slope of a
least-squares line, meV/atom/ps), its RMS fluctuation (meV/atom), and the largest
difference between the two paths' total energies.

Usage: python scripts/nve_drift.py runs/ethanol/model.pt datasets/ethanol-test/ethanol-test.extxyz.gz
       [--time 10] [--timestep 0.5] [--temperature 300] [--index 0]
"""

from __future__ import annotations

import argparse
import time

import numpy as np


def drift(times_ps, energies, n_atoms):
    """(slope meV/atom/ps, RMS fluctuation about the line meV/atom)."""
    e = 1000.0 * np.asarray(energies) / n_atoms
    slope, intercept = np.polyfit(times_ps, e, 1)
    return slope, float(np.sqrt(np.mean((e - (slope * np.asarray(times_ps) + intercept)) ** 2)))


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("model")
    parser.add_argument("structure")
    parser.add_argument("--index", type=int, default=0)
    parser.add_argument("--time", type=float, default=10.0, help="ps")
    parser.add_argument("--timestep", type=float, default=0.5, help="fs")
    parser.add_argument("--temperature", type=float, default=300.0, help="K")
    parser.add_argument("--every", type=int, default=20, help="steps between energy samples")
    parser.add_argument("--dtypes", nargs="*", default=["float64", "float32"])
    args = parser.parse_args(argv)

    import torch
    from ase import units
    from ase.io import read
    from ase.md.velocitydistribution import Stationary, ZeroRotation, thermalize_momenta
    from ase.md.verlet import VelocityVerlet

    import mlpot
    from mlpot.calculator import MLPotCalculator
    from mlpot.md import BatchedMD

    torch.set_num_threads(1)
    start = read(args.structure, index=args.index)
    start.calc = None
    thermalize_momenta(start, temperature_K=args.temperature, rng=np.random.default_rng(0))
    Stationary(start)
    if not start.pbc.any():
        ZeroRotation(start)
    steps = int(round(args.time * 1000 / args.timestep))
    n = len(start)
    print(f"# NVE: {n} atoms, {steps} steps of {args.timestep} fs ({args.time} ps), start T {args.temperature} K")
    print(f"{'dtype':<9}{'path':<9}{'drift meV/atom/ps':>19}{'RMS fluct. meV/atom':>21}{'wall s':>9}")
    for name in args.dtypes:
        dtype = getattr(torch, name)
        model = mlpot.load(args.model, dtype=dtype)
        atoms = start.copy()
        atoms.calc = MLPotCalculator(model, device="cpu", extrapolation="ignore")
        dyn = VelocityVerlet(atoms, timestep=args.timestep * units.fs)
        t_ase, e_ase = [], []
        dyn.attach(lambda: (t_ase.append(dyn.get_time() / (1000 * units.fs)), e_ase.append(atoms.get_total_energy())),
                   interval=args.every)
        t0 = time.perf_counter()
        dyn.run(steps)
        wall_ase = time.perf_counter() - t0

        engine = BatchedMD(model, [start], ensemble="nve", timestep_fs=args.timestep, skin=1.0)
        e_batch = [float(engine.total_energy()[0])]
        t0 = time.perf_counter()
        engine.run(steps, callback=lambda e: e_batch.append(float(e.total_energy()[0])), every=args.every)
        wall_batch = time.perf_counter() - t0
        for path, e, wall in (("ASE", e_ase, wall_ase), ("batched", e_batch, wall_batch)):
            slope, rms = drift(t_ase[: len(e)], e, n)
            print(f"{name:<9}{path:<9}{slope:>19.4f}{rms:>21.4f}{wall:>9.1f}")
        m = min(len(e_ase), len(e_batch))
        diff = 1000 * np.max(np.abs(np.array(e_ase[:m]) - np.array(e_batch[:m]))) / n
        print(f"{name:<9}max |E_ASE − E_batched| over the run: {diff:.2e} meV/atom")


if __name__ == "__main__":
    main()
