"""Molecular dynamics through ASE's integrators with an mlpot calculator (``mlpot md``).

Ensembles: ``nve`` (velocity Verlet), ``nvt`` (Langevin), ``npt`` (Berendsen barostat and
thermostat; needs a periodic cell). Trajectory frames and the log are appended every
``interval`` steps; ``restart=True`` continues from the trajectory's last frame (positions,
momenta, cell) and runs only the steps still missing, so an interrupted run resumes.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
from ase import Atoms, units
from ase.io import Trajectory, read

__all__ = ["MDSettings", "run_md"]

ENSEMBLES = ("nve", "nvt", "npt")


@dataclass(frozen=True)
class MDSettings:
    """Settings of one ASE MD run (units in the names: K, fs, bar, 1/fs, GPa⁻¹)."""

    ensemble: str = "nve"
    temperature_K: float = 300.0
    timestep_fs: float = 0.5
    steps: int = 1000
    friction_per_fs: float = 0.01
    pressure_bar: float = 1.0
    taut_fs: float = 100.0
    taup_fs: float = 1000.0
    compressibility_per_gpa: float = 0.01
    interval: int = 10
    seed: int = 0

    def __post_init__(self) -> None:
        if self.ensemble not in ENSEMBLES:
            raise ValueError(f"ensemble must be one of {ENSEMBLES}, got {self.ensemble!r}")
        if not self.timestep_fs > 0:
            raise ValueError(f"timestep must be positive, got {self.timestep_fs} fs")
        if self.steps < 0 or self.interval < 1:
            raise ValueError("steps must be >= 0 and interval >= 1")
        if self.temperature_K < 0:
            raise ValueError(f"temperature must be >= 0 K, got {self.temperature_K}")


def _integrator(atoms: Atoms, s: MDSettings):
    dt = s.timestep_fs * units.fs
    if s.ensemble == "nve":
        from ase.md.verlet import VelocityVerlet

        return VelocityVerlet(atoms, timestep=dt)
    if s.ensemble == "nvt":
        from ase.md.langevin import Langevin

        return Langevin(atoms, timestep=dt, temperature_K=s.temperature_K,
                        friction=s.friction_per_fs / units.fs, fixcm=False,
                        rng=np.random.default_rng(s.seed))
    if not atoms.pbc.all():
        raise ValueError("npt needs a cell periodic in all three directions")
    from ase.md.nptberendsen import NPTBerendsen

    return NPTBerendsen(atoms, timestep=dt, temperature_K=s.temperature_K,
                        pressure_au=s.pressure_bar * units.bar, taut=s.taut_fs * units.fs,
                        taup=s.taup_fs * units.fs,
                        compressibility_au=s.compressibility_per_gpa / units.GPa)


def run_md(atoms: Atoms, calculator, settings: MDSettings, trajectory: str | Path | None = None,
           log: str | Path | None = None, restart: bool = False, progress: bool = True) -> Atoms:
    """Run (or resume) MD of ``atoms`` with ``calculator``; returns the final structure.

    Args:
        atoms: the starting structure (ignored when resuming from ``trajectory``).
        calculator: an ASE calculator, normally :class:`~mlpot.MLPotCalculator`.
        settings: ensemble, temperature, timestep, steps, ...
        trajectory: ASE ``.traj`` file, appended every ``settings.interval`` steps.
        log: text log of time, energies, temperature (and stress for npt).
        restart: continue from the last frame of ``trajectory`` if it exists.
    """
    from ase.md import MDLogger
    from ase.md.velocitydistribution import thermalize_momenta
    from ..progress import progress as report

    done = 0
    traj_path = Path(trajectory) if trajectory else None
    if restart and traj_path is not None and traj_path.exists() and traj_path.stat().st_size > 0:
        frames = read(traj_path, ":")
        atoms = frames[-1]
        done = (len(frames) - 1) * settings.interval
    else:
        atoms = atoms.copy()
        if not atoms.get_momenta().any() and settings.temperature_K > 0:
            thermalize_momenta(atoms, temperature_K=settings.temperature_K,
                               rng=np.random.default_rng(settings.seed))
        if traj_path is not None and traj_path.exists():
            traj_path.unlink()  # a fresh run replaces an old trajectory
    atoms.calc = calculator
    remaining = max(settings.steps - done, 0)
    dyn = _integrator(atoms, settings)

    def fresh(fn):
        # ASE calls observers once before the first step: on a resumed run that frame is
        # already on disk, so skip it there.
        return lambda: None if (done and dyn.nsteps == 0) else fn()

    if traj_path is not None:
        traj = Trajectory(traj_path, "a", atoms)
        dyn.attach(fresh(traj.write), interval=settings.interval)
    if log is not None:
        logger = MDLogger(dyn, atoms, str(log), header=done == 0, stress=settings.ensemble == "npt",
                          peratom=True, mode="a" if done else "w")
        dyn.attach(fresh(logger), interval=settings.interval)
    bar = report(total=settings.steps, initial=done, desc=f"MD {settings.ensemble}", unit="step",
                 enabled=progress, leave=True)
    dyn.attach(lambda: bar.update(done + dyn.nsteps - bar.n), interval=1)
    try:
        dyn.run(remaining)
    finally:
        bar.close()
        if traj_path is not None:
            traj.close()
    return atoms
