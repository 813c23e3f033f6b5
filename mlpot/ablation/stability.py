"""MD stability of a trained model: short runs from held-out structures until they fail.

A replica fails when the potential lets it become unphysical: a non-finite energy, two atoms
closer than a fraction of the shortest distance of its start structure (collapse), or a
temperature far above the start (energy pumped in, or atoms flying apart). Replicas run
together in :class:`~mlpot.md.BatchedMD`; one that fails is removed and the others go on.
"""

from __future__ import annotations

import math
from typing import Sequence

import numpy as np
from ase import Atoms
from ase.md.velocitydistribution import Stationary

try:  # ASE >= 3.28 renamed MaxwellBoltzmannDistribution
    from ase.md.velocitydistribution import thermalize_momenta
except ImportError:  # pragma: no cover
    from ase.md.velocitydistribution import MaxwellBoltzmannDistribution as thermalize_momenta
from ase.neighborlist import neighbor_list

from ..md import BatchedMD
from .config import MDStabilityConfig

__all__ = ["md_stability", "min_distance"]


def min_distance(atoms: Atoms, cutoff: float = 3.0) -> float:
    """Shortest interatomic distance (Å; images included), ``inf`` when none is below ``cutoff``."""
    d = neighbor_list("d", atoms, cutoff)
    return float(d.min()) if len(d) else math.inf


def md_stability(model, structures: Sequence[Atoms], config: MDStabilityConfig) -> dict:
    """Run ``config.steps`` MD steps from each structure and record when each one fails.

    Args:
        model: a trained :class:`~mlpot.models.Potential` (on its device, in its dtype).
        structures: start structures (velocities are drawn at ``config.temperature_K``).
        config: the run length and failure criteria.

    Returns:
        ``replicas`` (per structure: ``survived``, ``time_to_failure_ps`` (``None`` if it
        survived), ``reason``, ``drift_mev_per_atom_ps`` (NVE, survivors: slope of the total
        energy per atom, least squares), ``max_energy_change_mev_per_atom``), and over
        replicas: ``survived_fraction``, ``mean_time_to_failure_ps`` (survivors count with
        the full run length, a lower bound), ``mean_abs_drift_mev_per_atom_ps``.
    """
    starts = []
    for k, atoms in enumerate(structures):
        a = Atoms(numbers=atoms.numbers, positions=atoms.positions, cell=atoms.cell, pbc=atoms.pbc)
        thermalize_momenta(a, temperature_K=config.temperature_K, rng=np.random.default_rng(config.seed + k))
        Stationary(a)
        starts.append(a)
    n = len(starts)
    dmin0 = [min_distance(a) for a in starts]
    dt_ps = config.timestep_fs * 1e-3
    n_atoms = [len(a) for a in starts]
    times: list[list[float]] = [[] for _ in range(n)]
    energies: list[list[float]] = [[] for _ in range(n)]
    failure: list[tuple[float, str] | None] = [None] * n

    def engine(atoms):
        return BatchedMD(model, atoms, ensemble=config.ensemble, timestep_fs=config.timestep_fs,
                         temperature_K=config.temperature_K, seed=config.seed)

    alive, current = list(range(n)), list(starts)
    md = engine(current) if config.steps else None
    if md is not None:
        _record(md, alive, 0.0, times, energies, n_atoms)
    done = 0
    while md is not None and alive and done < config.steps:
        chunk = min(config.check_every, config.steps - done)
        try:
            md.run(chunk)
            states = md.to_atoms()
            etot = md.total_energy().detach().cpu().double().numpy()
            temps = md.temperature().detach().cpu().double().numpy()
        except Exception as exc:  # a replica so broken that the batch cannot step
            states, etot, temps = None, None, None
            error = f"{type(exc).__name__}: {exc}"
        done += chunk
        t = done * dt_ps
        if states is None:
            # Find the culprit(s): advance each replica alone over the same chunk.
            survivors, new_states = [], []
            for r, atoms in zip(alive, current):
                try:
                    single = engine([atoms])
                    single.run(chunk)
                    s = single.to_atoms()[0]
                    bad = _failure(s, float(single.total_energy()[0]), float(single.temperature()[0]),
                                   dmin0[r], config)
                except Exception:
                    bad = f"MD step failed ({error})"
                if bad:
                    failure[r] = (t, bad)
                else:
                    survivors.append(r)
                    new_states.append(s)
        else:
            survivors, new_states = [], []
            for k, r in enumerate(alive):
                bad = _failure(states[k], etot[k], temps[k], dmin0[r], config)
                if bad:
                    failure[r] = (t, bad)
                else:
                    survivors.append(r)
                    new_states.append(states[k])
        changed = survivors != alive or states is None
        alive, current = survivors, new_states
        if alive and changed:
            md = engine(current)
        if alive:
            _record(md, alive, t, times, energies, n_atoms)

    replicas = []
    total_ps = config.steps * dt_ps
    for r in range(n):
        e = np.asarray(energies[r])
        rep = {"n_atoms": n_atoms[r], "survived": failure[r] is None,
               "time_to_failure_ps": None if failure[r] is None else failure[r][0],
               "reason": None if failure[r] is None else failure[r][1],
               "max_energy_change_mev_per_atom": float(np.abs(e - e[0]).max() * 1e3) if len(e) else None,
               "drift_mev_per_atom_ps": None}
        if failure[r] is None and config.ensemble == "nve" and len(e) >= 3:
            rep["drift_mev_per_atom_ps"] = float(np.polyfit(times[r], e, 1)[0] * 1e3)
        replicas.append(rep)
    drifts = [abs(r["drift_mev_per_atom_ps"]) for r in replicas if r["drift_mev_per_atom_ps"] is not None]
    ttf = [total_ps if r["survived"] else r["time_to_failure_ps"] for r in replicas]
    return {
        "steps": config.steps, "timestep_fs": config.timestep_fs, "ensemble": config.ensemble,
        "temperature_K": config.temperature_K, "replicas": replicas,
        "survived_fraction": sum(r["survived"] for r in replicas) / n if n else None,
        "mean_time_to_failure_ps": float(np.mean(ttf)) if ttf else None,
        "mean_abs_drift_mev_per_atom_ps": float(np.mean(drifts)) if drifts else None,
    }


def _record(md, alive, t, times, energies, n_atoms) -> None:
    etot = md.total_energy().detach().cpu().double().numpy()
    for k, r in enumerate(alive):
        times[r].append(t)
        energies[r].append(float(etot[k]) / n_atoms[r])


def _failure(atoms: Atoms, total_energy: float, temperature: float, dmin0: float,
             config: MDStabilityConfig) -> str | None:
    """Why this replica has failed, or ``None``."""
    if not (math.isfinite(total_energy) and np.isfinite(atoms.positions).all()):
        return "non-finite energy or positions"
    if temperature > config.max_temperature_factor * config.temperature_K:
        return f"temperature {temperature:.0f} K > {config.max_temperature_factor:g} × {config.temperature_K:g} K"
    if math.isfinite(dmin0):
        d = min_distance(atoms, cutoff=dmin0)
        if d < config.min_distance * dmin0:
            return f"atoms {d:.2f} Å apart (< {config.min_distance:g} × {dmin0:.2f} Å)"
    return None
