"""Batched, device-resident molecular dynamics: many replicas advance in one flat batch.

Positions, velocities, forces and the neighbour list stay on the model's device; the host
only sees the per-step "rebuild needed?" flag (one boolean, every ``check_every`` steps)
and the observables it asks for. The neighbour list is built with a Verlet skin and
rebuilt (on the device, by vesin) when any atom has moved more than skin/2.

Same units and observables as ASE: kinetic energy ½Σmv² (eV), temperature 2E_kin/(3N k_B)
(K, 3N degrees of freedom as ``Atoms.get_temperature``), potential and total energy (eV).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace

import numpy as np
import torch
from ase import Atoms, units

from ..data import collate
from .integrators import INTEGRATORS

__all__ = ["BatchedMD", "MDState", "Thermostat", "thermalised"]


@dataclass
class MDState:
    """Dynamic variables of all replicas (flat over atoms).

    Attributes:
        positions: (N, 3) Å.  velocities: (N, 3) Å per ASE time unit.
        forces: (N, 3) eV/Å.  masses: (N, 1) amu.  energy: (B,) potential energy, eV.
    """

    positions: torch.Tensor
    velocities: torch.Tensor
    forces: torch.Tensor
    masses: torch.Tensor
    energy: torch.Tensor


@dataclass(frozen=True)
class Thermostat:
    """Langevin heat bath of ``nvt`` runs (``nve`` ignores it).

    Attributes:
        temperature_K: bath temperature, K: one for all replicas, or one per replica
            (kept as a tuple).
        friction_per_fs: Langevin friction γ, 1/fs (velocity correlation time 1/γ).
        seed: seed of the Langevin noise.
    """

    temperature_K: float | Sequence[float] = 300.0
    friction_per_fs: float = 0.01
    seed: int = 0

    def __post_init__(self) -> None:
        # A per-replica list becomes a tuple, so the options stay immutable (and hashable).
        if np.ndim(self.temperature_K):
            object.__setattr__(self, "temperature_K", tuple(float(t) for t in self.temperature_K))
        if np.min(self.temperature_K) < 0:
            raise ValueError(f"temperature must be >= 0 K, got {self.temperature_K}")
        if self.friction_per_fs < 0:
            raise ValueError(f"friction must be >= 0 per fs, got {self.friction_per_fs}")


class BatchedMD:
    """Run one integrator over many structures at once with an mlpot model.

    Args:
        model: a :class:`~mlpot.models.Potential` (its device and dtype are used).
        structures: starting structures (their momenta are used if set).
        ensemble: ``"nve"`` (velocity Verlet) or ``"nvt"`` (Langevin BAOAB).
        timestep_fs: timestep, fs.
        thermostat: bath temperature, friction and noise seed for ``nvt``.
        skin: Verlet skin, Å.
        check_every: steps between neighbour-list validity checks (1 = every step; a
            larger value must keep atoms from moving skin/2 in that many steps).

    Example:
        ``BatchedMD(model, replicas, "nvt", 0.5, Thermostat(temperature_K=[300, 600], seed=1))``
    """

    def __init__(self, model, structures: Sequence[Atoms], ensemble: str = "nve",
                 timestep_fs: float = 0.5, thermostat: Thermostat = Thermostat(),
                 skin: float = 1.0, check_every: int = 1):
        if ensemble not in INTEGRATORS:
            raise ValueError(f"unknown ensemble {ensemble!r}; choose one of {sorted(INTEGRATORS)}")
        if not timestep_fs > 0:
            raise ValueError(f"timestep must be positive, got {timestep_fs} fs")
        if skin < 0 or check_every < 1:
            raise ValueError("skin must be >= 0 Å and check_every >= 1")
        self.model = model.eval()
        device = next(model.parameters()).device
        dtype = model.dtype
        self.batch = collate(list(structures), dtype=dtype, device=device, labels=False)
        self.step_fn = INTEGRATORS[ensemble]
        self.ensemble = ensemble
        self.thermostat = thermostat
        self.dt = timestep_fs * units.fs
        self.friction = thermostat.friction_per_fs / units.fs
        self.skin, self.check_every = float(skin), int(check_every)
        self.generator = torch.Generator(device=device).manual_seed(thermostat.seed)
        temps = np.broadcast_to(np.asarray(thermostat.temperature_K, dtype=float), (self.batch.n_systems,))
        self.kT = torch.as_tensor(temps * units.kB, dtype=dtype, device=device)[self.batch.system_idx].unsqueeze(1)
        masses = np.concatenate([a.get_masses() for a in structures])
        velocities = np.concatenate([a.get_velocities() for a in structures])
        t = {"dtype": dtype, "device": device}
        self.steps_done = 0
        self.neighbour_builds = 0
        self._rebuild(self.batch.positions)
        self.state = MDState(positions=self.batch.positions.clone(),
                             velocities=torch.as_tensor(velocities, **t),
                             forces=torch.zeros_like(self.batch.positions),
                             masses=torch.as_tensor(masses, **t).unsqueeze(1),
                             energy=torch.zeros(self.batch.n_systems, **t))
        self.state.forces, self.state.energy = self._evaluate(self.state.positions)

    # ------------------------------------------------------------------ forces
    def _rebuild(self, positions: torch.Tensor) -> None:
        listed = replace(self.batch, positions=positions).with_neighbours(self.model.cutoff + self.skin)
        self.batch = replace(listed, positions=positions)
        self._reference = positions.detach().clone()
        self.neighbour_builds += 1

    def _needs_rebuild(self, positions: torch.Tensor) -> bool:
        moved = (positions - self._reference).square().sum(1).max()
        return bool(moved > (0.5 * self.skin) ** 2)  # the one host sync of a step

    def _evaluate(self, positions: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(forces (N, 3), potential energies (B,)) at ``positions``."""
        batch = replace(self.batch, positions=positions.detach())
        with torch.enable_grad():
            out = self.model(batch, forces=True, create_graph=False)
        return out["forces"].detach(), out["energy"].detach()

    # ------------------------------------------------------------------ running
    def step(self) -> None:
        """Advance every replica by one timestep."""
        def forces(x: torch.Tensor) -> torch.Tensor:
            if self.steps_done % self.check_every == 0 and self._needs_rebuild(x):
                self._rebuild(x)
            f, self.state.energy = self._evaluate(x)
            return f

        self.step_fn(self.state, forces, self.dt, kT=self.kT, friction=self.friction,
                     generator=self.generator)
        self.steps_done += 1

    def run(self, steps: int, callback: Callable[[BatchedMD], None] | None = None,
            every: int = 1, progress: bool = False) -> None:
        """Run ``steps`` steps, calling ``callback(self)`` every ``every`` steps."""
        from ..progress import progress as report

        for k in report(range(steps), desc=f"MD ({self.batch.n_systems} replicas)", unit="step",
                        enabled=progress, leave=True):
            self.step()
            if callback is not None and (k + 1) % every == 0:
                callback(self)

    # ------------------------------------------------------------------ observables
    def kinetic_energy(self) -> torch.Tensor:
        """(B,) ½ Σ m v², eV."""
        ke = 0.5 * (self.state.masses * self.state.velocities.square()).sum(1)
        return ke.new_zeros(self.batch.n_systems).index_add(0, self.batch.system_idx, ke)

    def temperature(self) -> torch.Tensor:
        """(B,) instantaneous temperature, K (3N degrees of freedom, as ASE)."""
        return 2.0 * self.kinetic_energy() / (3.0 * self.batch.n_atoms * units.kB)

    def potential_energy(self) -> torch.Tensor:
        return self.state.energy

    def total_energy(self) -> torch.Tensor:
        return self.state.energy + self.kinetic_energy()

    def to_atoms(self) -> list[Atoms]:
        """Current structures with positions and momenta (on the host)."""
        pos = self.state.positions.detach().cpu().double().numpy()
        vel = self.state.velocities.detach().cpu().double().numpy()
        masses = self.state.masses.detach().cpu().double().numpy()
        out, start = [], 0
        for b in range(self.batch.n_systems):
            n = int(self.batch.n_atoms[b])
            atoms = Atoms(numbers=self.batch.numbers[start:start + n].cpu().numpy(),
                          positions=pos[start:start + n], cell=self.batch.cell[b].cpu().double().numpy(),
                          pbc=self.batch.pbc[b].cpu().numpy())
            atoms.set_momenta(masses[start:start + n] * vel[start:start + n])
            out.append(atoms)
            start += n
        return out


def thermalised(structures: Sequence[Atoms], temperature_K: float, seed: int = 0) -> list[Atoms]:
    """Copies of ``structures`` (no calculator, no labels) with Maxwell–Boltzmann momenta at
    ``temperature_K`` (K) and no centre-of-mass motion; structure k draws from ``seed + k``, so
    replicas of one start structure get distinct velocities."""
    from ase.md.velocitydistribution import Stationary

    try:  # ASE >= 3.28 renamed MaxwellBoltzmannDistribution
        from ase.md.velocitydistribution import thermalize_momenta
    except ImportError:  # pragma: no cover
        from ase.md.velocitydistribution import (
            MaxwellBoltzmannDistribution as thermalize_momenta,
        )

    starts = []
    for k, atoms in enumerate(structures):
        a = Atoms(numbers=atoms.numbers, positions=atoms.positions, cell=atoms.cell, pbc=atoms.pbc)
        thermalize_momenta(a, temperature_K=temperature_K, rng=np.random.default_rng(seed + k))
        Stationary(a)
        starts.append(a)
    return starts
