"""Run molecular dynamics with a trained model through ASE.

Examples:
  mlpot md model.pt start.xyz --ensemble nvt --temperature 300 --timestep 0.5 --steps 20000 \\
      --traj md.traj --log md.log
  mlpot md model.pt start.xyz ... --traj md.traj --restart     # resume an interrupted run
"""

from __future__ import annotations

import argparse
import sys
import warnings
from pathlib import Path

HELP = "molecular dynamics (NVE, NVT Langevin, NPT Berendsen) with a model via ASE"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("model", help="model file (mlpot train output)")
    parser.add_argument("structure", help="starting structure (any ASE-readable file; last frame)")
    parser.add_argument("--ensemble", choices=["nve", "nvt", "npt"], default="nve",
                        help="nve: velocity Verlet; nvt: Langevin; npt: Berendsen, periodic cells only"
                        " (default: %(default)s)")
    parser.add_argument("--temperature", type=float, default=300.0,
                        help="K: initial velocities (unless the structure has momenta) and the thermostat"
                        " (default: %(default)s)")
    parser.add_argument("--timestep", type=float, default=0.5, help="fs (default: %(default)s)")
    parser.add_argument("--steps", type=int, default=1000, help="MD steps (default: %(default)s)")
    parser.add_argument("--pressure", type=float, default=1.0, help="bar, npt only (default: %(default)s)")
    parser.add_argument("--friction", type=float, default=0.01,
                        help="Langevin friction, 1/fs, nvt only (default: %(default)s)")
    parser.add_argument("--interval", type=int, default=10,
                        help="steps between trajectory and log frames (default: %(default)s)")
    parser.add_argument("--device", default="auto",
                        help="cpu, cuda, cuda:N or auto: CUDA when available (default: %(default)s)")
    parser.add_argument("--dtype", choices=["float32", "float64"], default=None,
                        help="compute in this precision (default: the model's own)")
    parser.add_argument("--seed", type=int, default=0,
                        help="seed of the initial velocities and the Langevin noise (default: %(default)s)")
    parser.add_argument("--traj", help="ASE trajectory to write (.traj; default: none)")
    parser.add_argument("--log", help="MD log file (default: none)")
    parser.add_argument("--restart", action="store_true", help="continue from the last frame of --traj")


def run(args: argparse.Namespace) -> int:
    from ase.io import read

    from ..calculator import MLPotCalculator
    from ..data import DataError
    from ..md.ase_driver import MDSettings, run_md

    if args.restart and not args.traj:
        raise ValueError("--restart needs --traj (the run continues from its last frame)")
    settings = MDSettings(ensemble=args.ensemble, temperature_K=args.temperature,
                          timestep_fs=args.timestep, steps=args.steps, friction_per_fs=args.friction,
                          pressure_bar=args.pressure, interval=args.interval, seed=args.seed)
    try:
        _check_xyz_header(Path(args.structure))  # an absurd atom count must not make ASE hang
        atoms = read(args.structure)
    except (FileNotFoundError, DataError):
        raise
    except Exception as exc:
        raise ValueError(f"cannot read structure {args.structure}: {exc}") from None
    calc = MLPotCalculator(args.model, device=args.device, dtype=args.dtype)
    with warnings.catch_warnings():
        warnings.showwarning = _show_warning  # a command line has no caller's line to point at
        final = run_md(atoms, calc, settings, trajectory=args.traj, log=args.log, restart=args.restart)
    e = final.get_potential_energy() + final.get_kinetic_energy()
    print(f"done: {settings.steps} steps, T = {final.get_temperature():.1f} K, E_total = {e:.6f} eV")
    print(calc.extrapolation_summary())
    return 0


def _show_warning(message, category, filename, lineno, file=None, line=None) -> None:
    print(f"mlpot md: warning: {message}", file=file or sys.stderr)


def _check_xyz_header(path: Path) -> None:
    """The frame headers of an (extended) XYZ start structure against the file's size."""
    from ..data.checks import check_xyz_frames
    from ..data.readers import _is_xyz

    if path.is_file() and path.suffix not in (".gz", ".bz2", ".xz") and _is_xyz(path, None):
        with path.open("rb") as fh:
            check_xyz_frames(fh, path.stat().st_size, str(path))
