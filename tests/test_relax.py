"""Relaxation and NPT with a model trained on the shipped periodic set (datasets/cuau).

A small model is fitted for a few seconds to the set's small cells (EMT labels: energies,
forces, stress); the reference for the relaxed lattice is ASE's EMT itself, relaxed the same
way, so nothing here is compared with mlpot's own output.
"""

from pathlib import Path

import numpy as np
import pytest
import torch
from ase.build import bulk
from ase.calculators.emt import EMT
from ase.filters import FrechetCellFilter
from ase.io import write
from ase.optimize import BFGS

import mlpot
from mlpot.calculator import MLPotCalculator
from mlpot.cli import main
from mlpot.data import read
from mlpot.descriptors import SymmetryFunctionSpec
from mlpot.models import NetworkConfig, Potential
from mlpot.training.data import BatchStore

CUAU = Path(__file__).resolve().parents[1] / "datasets" / "cuau" / "cuau.extxyz.gz"


@pytest.fixture(scope="module")
def cuau_model():
    structures = [a for a in read(CUAU) if len(a) <= 16]  # ~100 bulk, strained and hot cells
    spec = SymmetryFunctionSpec.from_dict({
        "elements": ["Cu", "Au"], "cutoff": 5.5, "cutoff_function": "poly2",
        "radial": [{"grid": {"count": 8, "mode": "shift", "r_lower": 1.8}}],
        "angular": [{"kind": "G5", "zetas": [1, 4], "lambdas": [-1, 1],
                     "grid": {"count": 2, "mode": "center", "r_lower": 2.0, "r_upper": 4.5}}]})
    torch.manual_seed(0)
    model = Potential(spec, NetworkConfig(depth=2, width=16, activation="tanh")).double()
    store = BatchStore(structures, cutoff=model.cutoff)
    model.fit_to_data([store.batch(torch.arange(len(structures)))])
    store.cache_descriptors(model.descriptor, dtype=torch.float64)
    optimizer = torch.optim.Adam(model.parameters(), lr=5e-3)
    for _ in range(60):
        order = torch.randperm(len(structures))
        for lo in range(0, len(structures), 16):
            batch, raw, jac = store.cached_batch(order[lo:lo + 16])
            out = model.forward_from_descriptors(batch, raw, jac, forces=True, stress=True, create_graph=True)
            loss = (((out["energy"] - batch.targets.energy) / batch.n_atoms).pow(2).mean()
                    + (out["forces"] - batch.targets.forces).pow(2).mean()
                    + 100.0 * (out["stress"] - batch.targets.stress).pow(2).mean())
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
    return model.eval()


def _relax(atoms, fmax=0.01, steps=200):
    optimizer = BFGS(FrechetCellFilter(atoms), logfile=None)
    return optimizer.run(fmax=fmax, steps=steps), optimizer.nsteps


def test_cell_relaxation_converges_to_the_reference_lattice(cuau_model):
    start = bulk("Cu", "fcc", a=3.7, cubic=True)
    start.rattle(0.05, seed=1)
    reference = start.copy()
    reference.calc = EMT()
    assert _relax(reference)[0]
    atoms = start.copy()
    atoms.calc = MLPotCalculator(cuau_model, device="cpu")
    e_start = atoms.get_potential_energy()
    converged, steps = _relax(atoms)
    assert converged, f"BFGS on positions and cell did not reach fmax 0.01 in {steps} steps"
    assert atoms.get_potential_energy() < e_start
    np.testing.assert_allclose(atoms.cell.lengths(), reference.cell.lengths(), atol=0.03)
    assert np.abs(atoms.get_stress()).max() < 1e-3  # eV/Å³: relaxed


def test_npt_runs_on_a_shipped_periodic_structure(cuau_model, tmp_path):
    atoms = next(a for a in read(CUAU) if len(a) >= 32 and a.pbc.all())
    write(tmp_path / "start.xyz", atoms)
    mlpot.save(cuau_model, tmp_path / "model.pt")
    traj = tmp_path / "npt.traj"
    rc = main(["md", str(tmp_path / "model.pt"), str(tmp_path / "start.xyz"), "--ensemble", "npt",
               "--steps", "40", "--interval", "10", "--timestep", "2", "--temperature", "300",
               "--device", "cpu", "--traj", str(traj)])
    assert rc == 0
    from ase.io import read as ase_read

    frames = ase_read(traj, ":")
    assert len(frames) == 5 and np.isfinite(frames[-1].positions).all()
    assert np.abs(frames[-1].cell.array - frames[0].cell.array).max() > 1e-6  # the barostat acts
    assert abs(frames[-1].get_volume() / frames[0].get_volume() - 1) < 0.05  # no collapse or blow-up
