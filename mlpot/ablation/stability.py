"""MD stability of a trained model: short runs from held-out structures until they fail.

A replica fails when the potential lets it become unphysical: a non-finite energy, two atoms
closer than a fraction of the shortest distance of its start structure (collapse), or a
temperature far above the start (energy pumped in, or atoms flying apart). Replicas run
together in :class:`~mlpot.md.BatchedMD`; one that fails is removed and the others go on.

A long run (the depth study's: 10 replicas × 50 ps) can checkpoint: every
``checkpoint_every_s`` seconds the replicas' positions, momenta and records are written
(atomically, as JSON) and a later call with the same ``checkpoint`` continues from there, so
a stop loses at most that much work. A resumed Langevin run continues with a fresh noise
stream (seeded from the steps done), so it is statistically, not bitwise, the same run.
"""

from __future__ import annotations

import json
import math
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
from ase import Atoms
from ase.neighborlist import neighbor_list

from ..io.files import atomic_write_text
from ..md import BatchedMD, Thermostat, thermalised
from .config import MDStabilityConfig

__all__ = ["md_stability", "min_distance"]


def min_distance(atoms: Atoms, cutoff: float = 3.0) -> float:
    """Shortest interatomic distance (Å; images included), ``inf`` when none is below ``cutoff``."""
    d = neighbor_list("d", atoms, cutoff)
    return float(d.min()) if len(d) else math.inf


def md_stability(model, structures: Sequence[Atoms], config: MDStabilityConfig,
                 checkpoint: str | Path | None = None, checkpoint_every_s: float = 120.0,
                 log: Callable[[str], None] | None = None) -> dict:
    """Run ``config.steps`` MD steps from each structure and record when each one fails.

    Args:
        model: a trained :class:`~mlpot.models.Potential` (on its device, in its dtype).
        structures: start structures (velocities are drawn at ``config.temperature_K``).
        config: the run length and failure criteria.
        checkpoint: a JSON file to resume from (when it exists) and to save the run's state to
            every ``checkpoint_every_s`` seconds and at its end. It must have been written for
            the same ``config`` and number of structures. The caller deletes it once it has
            kept the result.
        checkpoint_every_s: wall-clock seconds between checkpoints.
        log: receives a progress line at each checkpoint.

    Returns:
        ``replicas`` (per structure: ``survived``, ``time_to_failure_ps`` (``None`` if it
        survived), ``reason``, ``drift_mev_per_atom_ps`` (NVE, survivors: slope of the total
        energy per atom, least squares), ``max_energy_change_mev_per_atom``), and over
        replicas: ``survived_fraction``, ``mean_time_to_failure_ps`` (survivors count with
        the full run length, a lower bound), ``mean_abs_drift_mev_per_atom_ps``; the cost:
        ``wall_s`` (MD steps only), ``atom_steps`` and ``us_per_atom_step``.
    """
    path = Path(checkpoint) if checkpoint is not None else None
    progress = _Progress.load(path, config, len(structures)) if path is not None and path.is_file() else None
    if progress is None:
        starts = thermalised(structures, config.temperature_K, config.seed)
        progress = _Progress(log=_Replicas.of(starts), alive=list(range(len(starts))), current=starts)
    if config.steps:
        def save() -> None:
            if path is not None:
                progress.save(path, config)
            if log is not None:
                log(progress.line(config))

        _run(model, config, progress, save, checkpoint_every_s)
    return _summary(progress, config)


@dataclass
class _Replicas:
    """What a stability run records per replica (indexed like the start structures).

    Attributes:
        n_atoms: atoms of each replica.
        dmin0: shortest interatomic distance of each start structure, Å.
        times: sample times, ps.
        energies: total energy per atom at those times, eV.
        failure: (time, ps; reason) of each failed replica, ``None`` while it survives.
    """

    n_atoms: list[int]
    dmin0: list[float]
    times: list[list[float]]
    energies: list[list[float]]
    failure: list[tuple[float, str] | None]

    @classmethod
    def of(cls, starts: Sequence[Atoms]) -> _Replicas:
        n = len(starts)
        return cls(n_atoms=[len(a) for a in starts], dmin0=[min_distance(a) for a in starts],
                   times=[[] for _ in range(n)], energies=[[] for _ in range(n)], failure=[None] * n)

    def record(self, md: BatchedMD, alive: list[int], t: float) -> None:
        """Sample the total energy per atom of the replicas ``alive`` (in ``md``'s order) at ``t`` ps."""
        etot = md.total_energy().detach().cpu().double().numpy()
        for k, r in enumerate(alive):
            self.times[r].append(t)
            self.energies[r].append(float(etot[k]) / self.n_atoms[r])


@dataclass
class _Progress:
    """Where a stability run stands: its records, the replicas still running and their
    current states (positions and momenta, in ``alive``'s order), the steps done and the cost
    so far (``wall_s`` of MD, ``atom_steps``: atoms × steps advanced)."""

    log: _Replicas
    alive: list[int]
    current: list[Atoms]
    done: int = 0
    wall_s: float = 0.0
    atom_steps: int = 0
    saved_at: float = field(default_factory=time.monotonic)

    def line(self, config: MDStabilityConfig) -> str:
        """One progress line: simulated time, replicas alive, cost per atom-step."""
        us = 1e6 * self.wall_s / self.atom_steps if self.atom_steps else float("nan")
        return (f"{self.done * config.timestep_fs * 1e-3:.4g} of {config.steps * config.timestep_fs * 1e-3:.4g} ps, "
                f"{len(self.alive)}/{len(self.log.n_atoms)} replicas running, {us:.0f} µs/atom-step")

    def save(self, path: Path, config: MDStabilityConfig) -> None:
        """Write the state to ``path`` (JSON, atomically: a stop mid-write keeps the old one)."""
        state = {"config": asdict(config), "n_replicas": len(self.log.n_atoms), "done": self.done,
                 "wall_s": self.wall_s, "atom_steps": self.atom_steps, "alive": self.alive,
                 "log": asdict(self.log),
                 "current": [{"numbers": a.numbers.tolist(), "positions": a.positions.tolist(),
                              "momenta": a.get_momenta().tolist(), "cell": a.cell.array.tolist(),
                              "pbc": a.pbc.tolist()} for a in self.current]}
        atomic_write_text(path, json.dumps(state))
        self.saved_at = time.monotonic()

    @classmethod
    def load(cls, path: Path, config: MDStabilityConfig, n_replicas: int) -> _Progress:
        """The state saved at ``path``; ``ValueError`` if it was saved for another run."""
        state = json.loads(path.read_text())
        if state["config"] != json.loads(json.dumps(asdict(config))) or state["n_replicas"] != n_replicas:
            raise ValueError(f"{path} was written for another MD stability run "
                             f"({state['n_replicas']} replicas, {state['config']}); delete it to start again")
        current = []
        for a in state["current"]:
            atoms = Atoms(numbers=a["numbers"], positions=a["positions"], cell=a["cell"], pbc=a["pbc"])
            atoms.set_momenta(a["momenta"])
            current.append(atoms)
        log = _Replicas(**{**state["log"], "failure": [None if f is None else (f[0], f[1])
                                                         for f in state["log"]["failure"]]})
        return cls(log=log, alive=state["alive"], current=current, done=state["done"],
                   wall_s=state["wall_s"], atom_steps=state["atom_steps"])


def _run(model, config: MDStabilityConfig, progress: _Progress, save: Callable[[], None],
         checkpoint_every_s: float) -> None:
    """Advance the replicas ``config.check_every`` steps at a time, checking and sampling each
    after every chunk and dropping the failed ones, until ``config.steps`` or none is left;
    ``save()`` every ``checkpoint_every_s`` seconds and at the end."""
    def engine(atoms: list[Atoms]) -> BatchedMD:
        # The noise seed moves with the steps done: a new engine (after a failure or a
        # resume) does not replay the noise its predecessor already used.
        return BatchedMD(model, atoms, ensemble=config.ensemble, timestep_fs=config.timestep_fs,
                         thermostat=Thermostat(temperature_K=config.temperature_K, seed=config.seed + progress.done))

    dt_ps = config.timestep_fs * 1e-3
    log = progress.log
    md = engine(progress.current) if progress.alive else None
    if progress.done == 0 and md is not None:
        log.record(md, progress.alive, 0.0)
    while progress.alive and progress.done < config.steps:
        chunk = min(config.check_every, config.steps - progress.done)
        alive, current = progress.alive, progress.current
        batch_failed = False
        start = time.perf_counter()
        try:
            md.run(chunk)
            states = md.to_atoms()
            etot = md.total_energy().detach().cpu().double().numpy()
            temps = md.temperature().detach().cpu().double().numpy()
        except Exception as exc:  # noqa: BLE001 - any error: a replica so broken that the batch cannot step
            batch_failed = True
            error = f"{type(exc).__name__}: {exc}"
            states, verdicts = _culprits(engine, alive, current, chunk, log, config, error)
        else:
            verdicts = [_failure(states[k], etot[k], temps[k], log.dmin0[r], config) for k, r in enumerate(alive)]
        progress.wall_s += time.perf_counter() - start
        progress.atom_steps += chunk * sum(log.n_atoms[r] for r in alive)
        progress.done += chunk
        t = progress.done * dt_ps
        survivors, new_states = [], []
        for r, state, bad in zip(alive, states, verdicts):
            if bad:
                log.failure[r] = (t, bad)
            else:
                survivors.append(r)
                new_states.append(state)
        # A new engine only when the batch changed (or its step failed, leaving its state
        # unusable): an unchanged batch goes on as one uninterrupted run, noise stream included.
        changed = survivors != alive or batch_failed
        progress.alive, progress.current = survivors, new_states
        if survivors and changed:
            md = engine(new_states)
        if survivors:
            log.record(md, survivors, t)
        if time.monotonic() - progress.saved_at >= checkpoint_every_s:
            save()
    save()


def _culprits(engine: Callable[[list[Atoms]], BatchedMD], alive: list[int], current: list[Atoms],
              chunk: int, log: _Replicas, config: MDStabilityConfig,
              error: str) -> tuple[list[Atoms | None], list[str | None]]:
    """After the batch failed to step: advance each replica alone over the same ``chunk`` steps
    to find the one(s) at fault; returns each replica's new state and why it failed (or ``None``).
    A replica that cannot step alone either fails with the batch's ``error``."""
    states: list[Atoms | None] = []
    verdicts: list[str | None] = []
    for r, atoms in zip(alive, current):
        state = None
        try:
            single = engine([atoms])
            single.run(chunk)
            state = single.to_atoms()[0]
            bad = _failure(state, float(single.total_energy()[0]), float(single.temperature()[0]),
                           log.dmin0[r], config)
        except Exception:  # noqa: BLE001 - whatever stops it, this replica has failed
            bad = f"MD step failed ({error})"
        states.append(state)
        verdicts.append(bad)
    return states, verdicts


def _summary(progress: _Progress, config: MDStabilityConfig) -> dict:
    """The result of :func:`md_stability` from its per-replica records."""
    log = progress.log
    dt_ps = config.timestep_fs * 1e-3
    n = len(log.n_atoms)
    replicas = []
    total_ps = config.steps * dt_ps
    for r in range(n):
        e = np.asarray(log.energies[r])
        failure = log.failure[r]
        rep = {"n_atoms": log.n_atoms[r], "survived": failure is None,
               "time_to_failure_ps": None if failure is None else failure[0],
               "reason": None if failure is None else failure[1],
               "max_energy_change_mev_per_atom": float(np.abs(e - e[0]).max() * 1e3) if len(e) else None,
               "drift_mev_per_atom_ps": None}
        if failure is None and config.ensemble == "nve" and len(e) >= 3:
            rep["drift_mev_per_atom_ps"] = float(np.polyfit(log.times[r], e, 1)[0] * 1e3)
        replicas.append(rep)
    drifts = [abs(r["drift_mev_per_atom_ps"]) for r in replicas if r["drift_mev_per_atom_ps"] is not None]
    ttf = [total_ps if r["survived"] else r["time_to_failure_ps"] for r in replicas]
    return {
        "steps": config.steps, "timestep_fs": config.timestep_fs, "ensemble": config.ensemble,
        "temperature_K": config.temperature_K, "replicas": replicas,
        "survived_fraction": sum(r["survived"] for r in replicas) / n if n else None,
        "mean_time_to_failure_ps": float(np.mean(ttf)) if ttf else None,
        "mean_abs_drift_mev_per_atom_ps": float(np.mean(drifts)) if drifts else None,
        "wall_s": progress.wall_s, "atom_steps": progress.atom_steps,
        "us_per_atom_step": 1e6 * progress.wall_s / progress.atom_steps if progress.atom_steps else None,
    }


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
