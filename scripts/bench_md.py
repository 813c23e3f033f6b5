#!/usr/bin/env python
"""MD throughput: steps/s and µs per atom-step, mlpot (ASE and batched) against TorchANI.

Systems: the DeePMD liquid-water frame (192 atoms; an ASE stand-in without ../shared) and
its 2×2×2 supercell (1536 atoms). Models are untrained, of comparable size: TorchANI's
``simple_ani`` for H, O (128-long AEV, ANI-1x cutoffs 5.2/3.5 Å, GELU networks
128-256-192-160-1 for H and 128-192-160-128-1 for O) and mlpot with the ANI-like 128-long
descriptor of ``bench_descriptors.py`` and GELU networks 256-192-160 for both elements
(mlpot's O network is the larger: a conservative comparison). Energies are scaled down so
that the short NVE runs (0.1 fs) stay near the starting structure; timing is what counts.

Rows: (a) mlpot through ASE's VelocityVerlet with MLPotCalculator (Verlet skin 1 Å);
(b) mlpot's batched engine with R replicas; (c) TorchANI's ASE calculator. Ratios are
against TorchANI's ASE row measured in the same run. On a CUDA machine add ``--device cuda``.

Usage: python scripts/bench_md.py [--steps 20] [--replicas 1 16 128] [--device cpu] [--threads 1]
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
os.environ.setdefault("TORCHANI_NO_WARN_EXTENSIONS", "1")


def mlpot_model(device, dtype):
    import torch

    from bench_descriptors import ANI_LIKE
    from mlpot.data import collate
    from mlpot.descriptors import SymmetryFunctionSpec
    from mlpot.models import NetworkConfig, Potential

    from bench_descriptors import water

    torch.manual_seed(0)
    model = Potential(SymmetryFunctionSpec.from_dict(ANI_LIKE),
                      NetworkConfig(hidden=(256, 192, 160), activation="gelu")).to(dtype)
    atoms, _ = water(1)
    atoms.calc = None
    batch = collate([atoms], labels=False, dtype=dtype)
    model.descriptor.fit_scaling([batch], "scale_center", -1.0, 1.0)
    with torch.no_grad():
        model.energy_scale.fill_(1e-3)
    return model.to(device).eval()


def time_ase(atoms, calc, steps):
    from ase import units
    from ase.md.verlet import VelocityVerlet

    atoms = atoms.copy()
    atoms.calc = calc
    dyn = VelocityVerlet(atoms, timestep=0.1 * units.fs)
    dyn.run(2)  # warm-up
    t0 = time.perf_counter()
    dyn.run(steps)
    return (time.perf_counter() - t0) / steps


def time_batched(model, atoms, replicas, steps, device):
    from mlpot.device import synchronize
    from mlpot.md import BatchedMD

    engine = BatchedMD(model, [atoms] * replicas, ensemble="nve", timestep_fs=0.1, skin=1.0)
    engine.run(2)

    synchronize(device)
    t0 = time.perf_counter()
    engine.run(steps)
    synchronize(device)
    return (time.perf_counter() - t0) / steps


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--replicas", type=int, nargs="*", default=[1, 16, 128])
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--dtype", choices=["float32", "float64"], default="float32")
    parser.add_argument("--supercells", type=int, nargs="*", default=[1, 2])
    args = parser.parse_args(argv)

    import numpy as np
    import torch
    from ase.md.velocitydistribution import thermalize_momenta

    from bench_descriptors import water
    from mlpot.calculator import MLPotCalculator

    torch.set_num_threads(args.threads)
    dtype = getattr(torch, args.dtype)
    model = mlpot_model(args.device, dtype)
    try:
        import torchani

        ani = torchani.models.simple_ani(symbols=("H", "O"), lot="wb97x-631gd", repulsion=False,
                                         cutoff_fn="cosine", neighborlist="cell_list",
                                         radial_shifts=16, angular_shifts=4, sections=8).to(args.device, dtype)
        with torch.no_grad():
            for p in ani.parameters():
                p.mul_(0.1)  # keep the untrained forces small, as for mlpot
    except ImportError:
        ani = None
    rows = []
    for supercell in args.supercells:
        atoms, source = water(supercell)
        atoms.calc = None
        thermalize_momenta(atoms, temperature_K=300, rng=np.random.default_rng(0))
        n = len(atoms)
        calc = MLPotCalculator(model, device=args.device, skin=1.0, extrapolation="ignore")
        rows.append(("mlpot ASE", n, 1, time_ase(atoms, calc, args.steps)))
        for r in args.replicas:
            if r * n > 200_000:
                continue
            rows.append((f"mlpot batched ×{r}", n, r, time_batched(model, atoms, r, args.steps, args.device)))
        if ani is not None:
            rows.append(("TorchANI ASE", n, 1, time_ase(atoms, ani.ase(), args.steps)))
        print(".", end="", flush=True, file=sys.stderr)
    print(file=sys.stderr)
    device = torch.cuda.get_device_name() if args.device.startswith("cuda") else f"CPU, {args.threads} thread(s)"
    print(f"# MD throughput, {device}, {args.dtype}, {args.steps} NVE steps per row; system: {source}")
    print(f"{'engine':<22}{'atoms':>7}{'replicas':>10}{'steps/s':>10}{'µs/atom-step':>15}{'atom-steps/s':>15}  ratio vs TorchANI ASE")
    reference = {n: t for name, n, r, t in rows if name == "TorchANI ASE"}
    for name, n, r, t in rows:
        per_atom = 1e6 * t / (n * r)
        ratio = ""
        if n in reference:
            ratio = f"{(1e6 * reference[n] / n) / per_atom:.2f}× throughput"
        print(f"{name:<22}{n:>7}{r:>10}{1 / t:>10.2f}{per_atom:>15.2f}{n * r / t:>15.0f}  {ratio}")


if __name__ == "__main__":
    main()
