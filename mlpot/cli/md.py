"""Run molecular dynamics with a trained model through ASE.

Examples:
  mlpot md model.pt start.xyz --ensemble nvt --temperature 300 --timestep 0.5 --steps 20000 \\
      --traj md.traj --log md.log
  mlpot md model.pt start.xyz ... --traj md.traj --restart     # resume an interrupted run
"""

from __future__ import annotations

import argparse

HELP = "molecular dynamics (NVE, NVT Langevin, NPT Berendsen) with a model via ASE"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("model", help="model file (mlpot train output)")
    parser.add_argument("structure", help="starting structure (any ASE-readable file; last frame)")
    parser.add_argument("--ensemble", choices=["nve", "nvt", "npt"], default="nve")
    parser.add_argument("--temperature", type=float, default=300.0, help="K (initial velocities, thermostat)")
    parser.add_argument("--timestep", type=float, default=0.5, help="fs")
    parser.add_argument("--steps", type=int, default=1000)
    parser.add_argument("--pressure", type=float, default=1.0, help="bar (npt)")
    parser.add_argument("--friction", type=float, default=0.01, help="Langevin friction, 1/fs (nvt)")
    parser.add_argument("--interval", type=int, default=10, help="steps between trajectory/log frames")
    parser.add_argument("--device", default="auto", help="cpu, cuda, cuda:N or auto")
    parser.add_argument("--dtype", choices=["float32", "float64"], default=None)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--traj", help="ASE trajectory to write (.traj)")
    parser.add_argument("--log", help="MD log file")
    parser.add_argument("--restart", action="store_true", help="continue from the last frame of --traj")


def run(args: argparse.Namespace) -> int:
    import torch
    from ase.io import read

    from ..calculator import MLPotCalculator
    from ..md.ase_driver import MDSettings, run_md

    if args.restart and not args.traj:
        raise ValueError("--restart needs --traj (the run continues from its last frame)")
    settings = MDSettings(ensemble=args.ensemble, temperature_K=args.temperature,
                          timestep_fs=args.timestep, steps=args.steps, friction_per_fs=args.friction,
                          pressure_bar=args.pressure, interval=args.interval, seed=args.seed)
    try:
        atoms = read(args.structure)
    except FileNotFoundError:
        raise
    except Exception as exc:
        raise ValueError(f"cannot read structure {args.structure}: {exc}") from None
    dtype = getattr(torch, args.dtype) if args.dtype else None
    calc = MLPotCalculator(args.model, device=args.device, dtype=dtype)
    final = run_md(atoms, calc, settings, trajectory=args.traj, log=args.log, restart=args.restart)
    e = final.get_potential_energy() + final.get_kinetic_energy()
    print(f"done: {settings.steps} steps, T = {final.get_temperature():.1f} K, "
          f"E_total = {e:.6f} eV; extrapolation warnings in {calc.extrapolation['structures']} "
          f"of {calc.extrapolation['calls']} force calls")
    return 0
