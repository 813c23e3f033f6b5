"""Physical observables of a potential: equation of state, vacancy formation energy and
radial distribution functions (with the NVT samples to compute them from).

Each function takes an ASE calculator or an mlpot model (wrapped in
:class:`~mlpot.calculator.MLPotCalculator`), so the same code measures a trained network,
its teacher or a reference potential (EMT, Lennard-Jones) in tests. Units: Å, Å³, eV, GPa,
K, fs.

* :func:`equation_of_state`: E(V) of a crystal scaled isotropically, fitted by
  :class:`ase.eos.EquationOfState` (Birch–Murnaghan): the equilibrium volume V₀, energy E₀,
  bulk modulus B = V d²E/dV² at V₀ and the scale that takes the given cell to V₀.
* :func:`vacancy_formation_energy`: E_f = E(N−1) − (N−1)/N · E(N), the vacancy cell relaxed
  at fixed cell (the dilute-limit convention at constant volume; the cell is the perfect
  crystal's, so a supercell of the model's own lattice constant measures the model alone).
* :func:`radial_distribution`: g(r), total or per element pair, averaged over frames, from
  all periodic images (any r_max, unlike a minimum-image count); :func:`coordination_number`
  integrates it and :func:`rdf_difference` compares two.
* :func:`nvt_frames`: frames of a Langevin run of several replicas at once, to average g(r).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from ase import Atoms
from ase.calculators.calculator import Calculator
from ase.neighborlist import neighbor_list

from .units import GPA

__all__ = [
    "as_calculator",
    "coordination_number",
    "equation_of_state",
    "nvt_frames",
    "radial_distribution",
    "rdf_difference",
    "vacancy_formation_energy",
]

#: Linear strains of the cell for the equation of state: ±2 % in length is ±6 % in volume,
#: wide enough for a stable fit and close enough to V₀ for B to be the curvature at V₀.
EOS_STRAINS = tuple(np.linspace(-0.02, 0.02, 9))


def as_calculator(model_or_calc) -> Calculator:
    """``model_or_calc`` itself if it is an ASE calculator, else an
    :class:`~mlpot.calculator.MLPotCalculator` of the model on its own device and dtype
    (extrapolation warnings off: strained and defective cells are what is asked for)."""
    if isinstance(model_or_calc, Calculator):
        return model_or_calc
    from .calculator import MLPotCalculator

    device = next(model_or_calc.parameters()).device
    return MLPotCalculator(model_or_calc, device=device, extrapolation="ignore")


def equation_of_state(model_or_calc, atoms: Atoms, strains: Sequence[float] = EOS_STRAINS,
                      eos: str = "birchmurnaghan") -> dict:
    """E(V) of ``atoms`` with its cell and positions scaled by 1 + s for each strain s.

    Args:
        model_or_calc: an ASE calculator or an mlpot model.
        atoms: a periodic crystal near its equilibrium (positions fixed in fractional
            coordinates: right for a crystal whose atoms sit at symmetric sites).
        strains: linear strains of the cell (dimensionless).
        eos: an :class:`ase.eos.EquationOfState` form.

    Returns:
        ``volume_a3`` and ``energy_ev`` (lists over strains, Å³ and eV of the whole cell),
        ``v0_a3`` (Å³), ``e0_ev`` (eV), ``bulk_modulus_gpa`` and ``scale0`` =
        (V₀ / V(atoms))^(1/3), the factor that takes the cell of ``atoms`` to V₀; these four
        are ``None``, and ``fit_error`` says why, when E(V) has no minimum within the volumes
        sampled (a potential that does not bind this crystal).
    """
    from ase.eos import EquationOfState

    calc = as_calculator(model_or_calc)
    volumes, energies = [], []
    for s in strains:
        strained = Atoms(numbers=atoms.numbers, cell=atoms.cell.array * (1 + s), pbc=atoms.pbc,
                         scaled_positions=atoms.get_scaled_positions(wrap=False))
        strained.calc = calc
        volumes.append(float(strained.get_volume()))
        energies.append(float(strained.get_potential_energy()))
    result = {"volume_a3": volumes, "energy_ev": energies, "v0_a3": None, "e0_ev": None, "bulk_modulus_gpa": None,
              "scale0": None, "fit_error": None}
    try:
        v0, e0, b = EquationOfState(volumes, energies, eos=eos).fit()
    except (ValueError, RuntimeError) as exc:  # no minimum (a broken potential): report, don't stop
        return {**result, "fit_error": f"{type(exc).__name__}: {exc}"}
    if not min(volumes) <= v0 <= max(volumes):
        # A minimum outside the strains is an extrapolation of the fitted form, not a measurement.
        return {**result, "fit_error": f"minimum at {v0:.4g} Å³ outside the volumes sampled"}
    return {**result, "v0_a3": float(v0), "e0_ev": float(e0), "bulk_modulus_gpa": float(b / GPA),
            "scale0": float((v0 / atoms.get_volume()) ** (1 / 3))}


def vacancy_formation_energy(model_or_calc, bulk: Atoms, supercell: tuple[int, int, int] = (2, 2, 2),
                             fmax: float = 0.01, steps: int = 200, rattle: float = 0.0,
                             index: int = 0) -> dict:
    """Formation energy of a vacancy, E_f = E(N−1) − (N−1)/N · E(N), at fixed cell.

    Args:
        model_or_calc: an ASE calculator or an mlpot model.
        bulk: the perfect crystal's cell (e.g. the cubic cell at the potential's own lattice
            constant); repeated by ``supercell`` into N atoms.
        fmax: force threshold of the relaxation of the vacancy cell, eV/Å.
        steps: at most this many BFGS steps (0: the unrelaxed formation energy only).
        rattle: standard deviation of a seeded random displacement (Å) of the vacancy cell
            before relaxing, so that a symmetry-lowering relaxation (Si's Jahn–Teller
            distortion) is not held back by the symmetric start.
        index: the atom removed.

    Returns:
        ``formation_energy_ev`` (relaxed), ``unrelaxed_ev``, ``n_atoms`` (N),
        ``e_bulk_ev`` (E(N)), ``e_vacancy_ev`` (E(N−1), relaxed), ``relax_steps``,
        ``converged`` (max force ≤ ``fmax``).
    """
    from ase.optimize import BFGS

    calc = as_calculator(model_or_calc)
    perfect = bulk.repeat(supercell)
    perfect.calc = calc
    n = len(perfect)
    e_bulk = float(perfect.get_potential_energy())  # forces vanish by symmetry: no relaxation
    cell = Atoms(numbers=perfect.numbers, positions=perfect.positions, cell=perfect.cell, pbc=perfect.pbc)
    del cell[index]
    cell.calc = calc
    unrelaxed = float(cell.get_potential_energy()) - (n - 1) / n * e_bulk
    if rattle:
        cell.rattle(rattle, seed=0)
    taken, converged = 0, steps == 0
    if steps:
        optimizer = BFGS(cell, logfile=None)
        converged = bool(optimizer.run(fmax=fmax, steps=steps))
        taken = optimizer.get_number_of_steps()
    e_vacancy = float(cell.get_potential_energy()) if steps else unrelaxed + (n - 1) / n * e_bulk
    return {"formation_energy_ev": e_vacancy - (n - 1) / n * e_bulk, "unrelaxed_ev": unrelaxed, "n_atoms": n,
            "e_bulk_ev": e_bulk, "e_vacancy_ev": e_vacancy, "relax_steps": taken, "converged": converged}


def radial_distribution(frames: Sequence[Atoms], r_max: float, bins: int = 100,
                        pairs: Sequence[tuple[str, str]] | None = None) -> tuple[np.ndarray, dict[str, np.ndarray]]:
    """g(r) averaged over ``frames`` (periodic, fixed composition), from every image.

    For a pair (A, B): g_AB(r) = ⟨n_AB(r)⟩ / (N_A · N_B / V · 4π r² dr), with n_AB(r) the
    ordered pairs (i in A, j in B, i ≠ j) at distance r in the bin, summed over periodic
    images (so r_max may exceed half the cell). The same convention as LAMMPS ``compute
    rdf`` and ASE ≥ 3.27 (g_AB = g_BA); "all" is the total g(r) of all atoms.

    Args:
        frames: structures of one composition (an MD trajectory or a single crystal).
        r_max: largest distance, Å.
        bins: equal bins over (0, r_max].
        pairs: element pairs, e.g. ``[("O", "O"), ("O", "H")]``; ``None``: all atoms.

    Returns:
        ``(r, g)``: bin centres (bins,) Å, and ``{"all" | "A-B": (bins,) g(r)}``.
    """
    edges = np.linspace(0.0, r_max, bins + 1)
    shell = 4.0 / 3.0 * np.pi * (edges[1:] ** 3 - edges[:-1] ** 3)  # Å³, exact for each bin
    keys = ["all"] if pairs is None else [f"{a}-{b}" for a, b in pairs]
    counts = {k: np.zeros(bins) for k in keys}
    norm = dict.fromkeys(keys, 0.0)
    for atoms in frames:
        i, j, d = neighbor_list("ijd", atoms, r_max)
        symbols = np.asarray(atoms.get_chemical_symbols())
        volume = atoms.get_volume()
        for key, pair in zip(keys, [None] if pairs is None else pairs):
            if pair is None:
                chosen, n_a, n_b = d, len(atoms), len(atoms)
            else:
                chosen = d[(symbols[i] == pair[0]) & (symbols[j] == pair[1])]
                n_a, n_b = int((symbols == pair[0]).sum()), int((symbols == pair[1]).sum())
            counts[key] += np.histogram(chosen, bins=edges)[0]
            norm[key] += n_a * n_b / volume
    centres = 0.5 * (edges[1:] + edges[:-1])
    return centres, {k: counts[k] / (norm[k] * shell) if norm[k] else np.zeros(bins) for k in keys}


def coordination_number(r: np.ndarray, g: np.ndarray, density: float, r_cut: float) -> float:
    """Mean number of neighbours within ``r_cut`` (Å): 4π ρ ∫₀^r_cut g(r) r² dr over the
    bins of ``radial_distribution`` whose centres lie below ``r_cut``; ``density`` ρ in
    atoms per Å³ (of the neighbour species for a partial g)."""
    r, g = np.asarray(r, dtype=float), np.asarray(g, dtype=float)
    width = r[1] - r[0]
    lower, upper = r - width / 2, r + width / 2
    shell = 4.0 / 3.0 * np.pi * (upper ** 3 - lower ** 3)
    return float(density * np.sum((g * shell)[r < r_cut]))


def rdf_difference(g_a: np.ndarray, g_b: np.ndarray) -> float:
    """Root-mean-square difference of two g(r) on the same bins: √(∫(g_a − g_b)² dr / ∫dr)
    for equal bins (dimensionless; 0 for identical structure)."""
    g_a, g_b = np.asarray(g_a, dtype=float), np.asarray(g_b, dtype=float)
    if g_a.shape != g_b.shape:
        raise ValueError(f"g(r) on different bins: {g_a.shape} vs {g_b.shape}")
    return float(np.sqrt(np.mean((g_a - g_b) ** 2)))


def nvt_frames(model, starts: Sequence[Atoms], temperature_K: float, timestep_fs: float = 0.5,
               steps: int = 2000, every: int = 20, equilibrate: int = 500, seed: int = 0) -> list[Atoms]:
    """Frames of Langevin NVT runs from ``starts`` (one replica each, run together in
    :class:`~mlpot.md.BatchedMD`), velocities drawn at ``temperature_K`` (seed + k for
    replica k): after ``equilibrate`` steps, one frame per replica every ``every`` steps
    for ``steps`` steps (frames ordered by time, then replica)."""
    from .md import BatchedMD, Thermostat, thermalised

    md = BatchedMD(model, thermalised(starts, temperature_K, seed), ensemble="nvt", timestep_fs=timestep_fs,
                   thermostat=Thermostat(temperature_K=temperature_K, seed=seed))
    md.run(equilibrate)
    frames: list[Atoms] = []
    md.run(steps, callback=lambda engine: frames.extend(engine.to_atoms()), every=every)
    return frames
