"""scripts/depth_study_extrapolation.py: a run's test force error split into the structures
beyond its training range and the rest, checked against errors computed by hand."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from ase.build import bulk
from ase.calculators.emt import EMT
from scripts_for_tests import load_script

import mlpot
from mlpot.data import collate, labelled_atoms
from mlpot.descriptors import SymmetryFunctionSpec
from mlpot.models import NetworkConfig, Potential


def emt_cells(n: int, squeeze: float = 1.0) -> list:
    """Rattled 4-atom Cu cells, optionally compressed by ``squeeze``, labelled by EMT."""
    out = []
    for k in range(n):
        atoms = bulk("Cu", "fcc", a=3.6 * squeeze, cubic=True)
        atoms.rattle(0.05, seed=k)
        atoms.calc = EMT()
        out.append(labelled_atoms(atoms.numbers, atoms.positions, atoms.cell.array, True,
                                  energy=atoms.get_potential_energy(), forces=atoms.get_forces()))
    return out


@pytest.fixture(scope="module")
def script():
    return load_script("depth_study_extrapolation")


def test_fold_table_splits_the_force_error_at_the_training_range(script, tmp_path, one_thread):
    """Data file: 4 normal cells (0–3), then 2 compressed by 7 % (4, 5). The model's range is
    fitted on cells 0–3, so fold 0's test set {1, 4, 5} has exactly 4 and 5 beyond it; the
    split RMSEs are those of the per-structure force errors, computed here from the model's own
    forces; a run folder without a model is skipped, not failed."""
    structures = emt_cells(4) + emt_cells(2, squeeze=0.93)
    torch.manual_seed(0)
    model = Potential(SymmetryFunctionSpec.default(["Cu"], cutoff=4.0), NetworkConfig(depth=2, width=8)).double()
    model.fit_to_data([collate(structures[:4], cutoff=model.cutoff)])
    grid = tmp_path / "mo-2.5k" / "full-lr0.003"
    (grid / "splits").mkdir(parents=True)
    (grid / "splits" / "fold0.json").write_text(json.dumps({"train": [0, 2, 3], "val": [], "test": [1, 4, 5]}))
    trained = grid / "runs" / "d02_plain_matched_xavier_uniform_silu_f0_s0"
    trained.mkdir(parents=True)
    mlpot.save(model, trained / "model.pt")
    (trained / "result.json").write_text(json.dumps({"name": trained.name, "test": {}}))
    (grid / "runs" / "d03_plain_matched_xavier_uniform_silu_f0_s0").mkdir()  # a result without its model
    training = grid / "runs" / "d04_plain_matched_xavier_uniform_silu_f0_s0"  # still training: no result.json
    training.mkdir()
    mlpot.save(model, training / "model.pt")
    (grid / "runs" / "d02_plain_matched_xavier_uniform_silu_f1_s1").mkdir()  # another fold

    folders = script.run_folders(tmp_path / "mo-2.5k", 0, [])
    assert [f.name for f in folders] == ["d02_plain_matched_xavier_uniform_silu_f0_s0",
                                         "d03_plain_matched_xavier_uniform_silu_f0_s0",
                                         "d04_plain_matched_xavier_uniform_silu_f0_s0"]
    rows, skipped = script.fold_table(folders, structures, fold=0, excess=0.0)
    assert skipped == ["d03_plain_matched_xavier_uniform_silu_f0_s0", "d04_plain_matched_xavier_uniform_silu_f0_s0"]
    ((folder, row),) = rows
    assert folder == trained
    assert row["beyond"] == [4, 5] and row["grid"] == "full-lr0.003"

    def force_rmse_mev(atoms) -> float:
        batch = collate([atoms], cutoff=model.cutoff)
        predicted = model(batch, forces=True)["forces"].detach().numpy()
        return 1000.0 * float(np.sqrt(np.mean((predicted - atoms.get_forces()) ** 2)))

    per_structure = {i: force_rmse_mev(structures[i]) for i in (1, 4, 5)}
    beyond = np.sqrt((per_structure[4] ** 2 + per_structure[5] ** 2) / 2)
    assert row["force_rmse_beyond_mev_per_a"] == pytest.approx(beyond, rel=1e-9)
    assert row["force_rmse_inside_mev_per_a"] == pytest.approx(per_structure[1], rel=1e-9)
    assert row["force_rmse_mev_per_a"] == pytest.approx(np.sqrt(np.mean([v ** 2 for v in per_structure.values()])), rel=1e-9)
    # --slopes: the steepest atom of structures 4 and 5, and of the training split {0, 2, 3}.
    ((_, sloped),), _ = script.fold_table(folders[:1], structures, fold=0, excess=0.0, slopes=True)
    beyond_max = script.atom_slopes(model, structures[4:6]).max()
    train_max = script.atom_slopes(model, [structures[i] for i in (0, 2, 3)]).max()
    assert sloped["steepest_slope_beyond"] == pytest.approx(beyond_max, rel=1e-12)
    assert sloped["steepest_slope_train"] == pytest.approx(train_max, rel=1e-12)
    assert sloped["steepest_slope_ratio"] == pytest.approx(beyond_max / train_max, rel=1e-12)
    # A threshold above every excess puts all three inside.
    ((_, loose),), _ = script.fold_table(folders[:1], structures, fold=0, excess=1e6)
    assert loose["beyond"] == [] and loose["force_rmse_beyond_mev_per_a"] is None

    # --record: into a result.json without the split, once; one that has it is left alone.
    assert script.record(trained, row) and not script.record(trained, loose)
    written = json.loads((trained / "result.json").read_text())
    assert written["extrapolation"]["test"]["beyond"] == [4, 5] and written["name"] == trained.name

    # A study without folds (water: one split, data.test its test set) is refused by name.
    (grid / "splits" / "fold0.json").write_text(json.dumps({"train": [0, 1, 2, 3], "val": [], "test": []}))
    with pytest.raises(SystemExit, match="no test structures"):
        script.fold_table(folders[:1], structures, fold=0, excess=0.2)


def test_atom_slopes_are_each_atoms_energy_gradient_in_its_scaled_descriptor(script, one_thread):
    """|∂E_i/∂G̃_i| against central differences of Potential.atomic_energies (the energy
    formula, from raw descriptors through the scaler) along each raw feature, each step
    converted to scaled units by the scaler itself; and the same whatever the batch."""
    structures = emt_cells(2) + emt_cells(1, squeeze=0.93)
    torch.manual_seed(1)
    model = Potential(SymmetryFunctionSpec.default(["Cu"], cutoff=4.0), NetworkConfig(depth=3, width=6)).double()
    model.fit_to_data([collate(structures[:2], cutoff=model.cutoff)])
    slopes = script.atom_slopes(model, structures, batch_size=2)
    assert slopes.shape == (12,)
    np.testing.assert_allclose(script.atom_slopes(model, structures, batch_size=1), slopes, rtol=1e-12)

    batch = collate(structures, cutoff=model.cutoff, dtype=torch.float64)
    species = model.descriptor.species(batch.numbers)
    with torch.no_grad():
        raw = model.descriptor(batch, scaled=False)
        h = 1e-5 * raw.abs().amax(dim=0).clamp(min=1e-3)
        for atom in (0, 5, 9):
            gradient = []
            for k in range(raw.shape[1]):
                up, down = raw.clone(), raw.clone()
                up[atom, k] += h[k]
                down[atom, k] -= h[k]
                d_energy = (model.atomic_energies(up, species)[atom] - model.atomic_energies(down, species)[atom])
                d_scaled = (model.descriptor.scale(up, species)[atom, k] - model.descriptor.scale(down, species)[atom, k])
                gradient.append(float(d_energy / d_scaled))
            assert slopes[atom] == pytest.approx(np.linalg.norm(gradient), rel=1e-6)
