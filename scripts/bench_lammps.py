"""MD cost of one model in LAMMPS (pair_style mlpot, 1 and 2 MPI ranks) and in mlpot's ASE MD,
in µs per atom-step, in one run.

Both integrate NVE (velocity Verlet, 0.5 fs) from the same 300 K velocities on the same
structure; the LAMMPS figure is its "Loop time" (neighbour lists, communication and
integration included), the ASE figure the wall time of ``VelocityVerlet.run`` after a few
warm-up steps (the compiled angular kernel's first call is excluded). torch runs with
``--threads`` intra-op threads per process in both (default 1: one core per rank).

usage:
  python scripts/bench_lammps.py                         # synthetic Si model, 512 atoms
  python scripts/bench_lammps.py --model runs/si/model.pt --structure si.extxyz --repeat 2
  python scripts/bench_lammps.py --ranks 1 2 4 --steps 400
"""

from __future__ import annotations

import argparse
import os
import re
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from ase import Atoms, units
from ase.build import bulk
from ase.io import read, write
from ase.md.velocitydistribution import MaxwellBoltzmannDistribution, Stationary
from ase.md.verlet import VelocityVerlet

import mlpot
from mlpot import MLPotCalculator
from mlpot.io.export import export_model
from mlpot.lammps.build import (
    cached_plugin,
    find_lammps,
    lammps_command,
    missing_prerequisites,
    runtime_env,
)


def synthetic_si_model(atoms: Atoms):
    """A seeded Si potential (radial grid + G4 terms, 3 × 24 tanh network) with scaling fitted
    on rattled copies of ``atoms``: the cost of a model does not depend on its training."""
    from ase.calculators.singlepoint import SinglePointCalculator

    from mlpot.data import collate
    from mlpot.descriptors import SymmetryFunctionSpec
    from mlpot.models import NetworkConfig, Potential

    torch.manual_seed(0)
    spec = {"elements": ["Si"], "cutoff": 5.0, "cutoff_function": "poly2",
            "radial": [{"grid": {"count": 8, "mode": "shift", "r_lower": 1.5}}],
            "angular": [{"kind": "G4", "eta": 0.05, "zetas": [1, 2, 4, 8], "lambdas": [-1, 1], "cutoff": 4.5}]}
    model = Potential(SymmetryFunctionSpec.from_dict(spec), NetworkConfig(depth=3, width=24)).double()
    structures = []
    for seed in range(3):
        copy = atoms.copy()
        copy.rattle(0.05, seed=seed)
        copy.calc = SinglePointCalculator(copy, energy=-4.0 * len(copy),
                                          forces=0.2 * np.random.default_rng(seed).normal(size=(len(copy), 3)))
        structures.append(copy)
    model.fit_to_data([collate(structures, cutoff=model.cutoff)])
    return model.eval()


@dataclass(frozen=True)
class LammpsSetup:
    """What every LAMMPS run of the benchmark shares: the LAMMPS install, the mlpot plugin
    built for it, the exported model and its element order (LAMMPS types 1, 2, ...)."""

    install: Any
    plugin: Path
    model_file: Path
    elements: list[str]


def lammps_us_per_atom_step(setup: LammpsSetup, atoms: Atoms, steps: int, ranks: int, threads: int,
                            folder: Path) -> float:
    """µs per atom-step of an NVE run in LAMMPS on ``ranks`` MPI ranks (its Loop time)."""
    install, plugin, model_file, elements = setup.install, setup.plugin, setup.model_file, setup.elements
    folder.mkdir(parents=True, exist_ok=True)
    write(folder / "data.lmp", atoms, format="lammps-data", specorder=elements, masses=True, units="metal",
          velocities=True)
    (folder / "in.lmp").write_text(f"""plugin load {plugin}
units metal
boundary p p p
atom_style atomic
read_data {folder / 'data.lmp'}
pair_style mlpot threads {threads}
pair_coeff * * {model_file} {' '.join(elements)}
neighbor 1.0 bin
timestep 0.0005
fix nve all nve
thermo {steps}
run {steps}
""")
    env = runtime_env(install)
    env["OMP_NUM_THREADS"] = str(threads)
    result = subprocess.run(lammps_command(install, folder / "in.lmp", ranks), cwd=folder, env=env,
                            capture_output=True, text=True, check=False)
    if result.returncode != 0:
        raise RuntimeError(f"LAMMPS failed:\n{result.stdout[-3000:]}{result.stderr[-3000:]}")
    found = re.search(r"Loop time of ([0-9.eE+-]+) on (\d+) procs for (\d+) steps with (\d+) atoms", result.stdout)
    if found is None:
        raise RuntimeError(f"LAMMPS finished without a 'Loop time' line; its output ends:\n{result.stdout[-3000:]}")
    seconds, n_steps, n_atoms = float(found.group(1)), int(found.group(3)), int(found.group(4))
    return seconds / (n_steps * n_atoms) * 1e6


def ase_us_per_atom_step(model, atoms: Atoms, steps: int, warmup: int = 5) -> float:
    """µs per atom-step of mlpot's ASE MD (VelocityVerlet, MLPotCalculator) after ``warmup``."""
    md = atoms.copy()
    md.calc = MLPotCalculator(model)
    dyn = VelocityVerlet(md, timestep=0.5 * units.fs)
    dyn.run(warmup)
    start = time.perf_counter()
    dyn.run(steps)
    return (time.perf_counter() - start) / (steps * len(md)) * 1e6


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", help="model file (default: a synthetic Si model)")
    parser.add_argument("--structure", help="structure file (default: diamond Si)")
    parser.add_argument("--repeat", type=int, default=4, help="repeat the cell this many times per axis "
                                                              "(default 4: 512 Si atoms)")
    parser.add_argument("--steps", type=int, default=200, help="MD steps per measurement (default 200)")
    parser.add_argument("--ase-steps", type=int, default=None, help="ASE MD steps (default: --steps)")
    parser.add_argument("--ranks", type=int, nargs="+", default=[1, 2], help="MPI rank counts (default 1 2)")
    parser.add_argument("--threads", type=int, default=1, help="torch threads per process (default 1)")
    args = parser.parse_args(argv)

    install = find_lammps()
    missing = missing_prerequisites(install)
    if missing:
        print("bench_lammps: cannot run LAMMPS here: " + "; ".join(missing), file=sys.stderr)
        return 2
    torch.set_num_threads(args.threads)
    base = read(args.structure) if args.structure else bulk("Si", "diamond", a=5.43, cubic=True)
    atoms = base.repeat(args.repeat)
    atoms.rattle(0.02, seed=1)
    model = mlpot.load(args.model) if args.model else synthetic_si_model(atoms)
    elements = list(model.elements)
    MaxwellBoltzmannDistribution(atoms, temperature_K=300, rng=np.random.default_rng(0))
    Stationary(atoms)
    plugin = cached_plugin(install)
    print(f"{len(atoms)} atoms ({atoms.get_chemical_formula()}), model {args.model or 'synthetic Si'} "
          f"({', '.join(elements)}; cutoff {model.cutoff:g} Å; {str(model.dtype).replace('torch.', '')}), "
          f"{args.steps} NVE steps of 0.5 fs, {args.threads} torch thread(s) per process; "
          f"{os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.1f}")
    print(f"plugin: {plugin}")
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        setup = LammpsSetup(install, plugin, export_model(model, Path(tmp) / "model-deploy.pt"), elements)
        for ranks in args.ranks:
            us = lammps_us_per_atom_step(setup, atoms, args.steps, ranks, args.threads, Path(tmp) / f"np{ranks}")
            rows.append((f"LAMMPS pair_style mlpot, {ranks} rank(s)", us))
    rows.append(("mlpot ASE MD (VelocityVerlet + MLPotCalculator)",
                 ase_us_per_atom_step(model, atoms, args.ase_steps or args.steps)))
    reference = rows[-1][1]
    print(f"\n{'engine':<52} {'µs/atom-step':>13} {'vs ASE':>8}")
    for name, us in rows:
        print(f"{name:<52} {us:>13.1f} {reference / us:>7.2f}×")
    return 0


if __name__ == "__main__":
    sys.exit(main())
