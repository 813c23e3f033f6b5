"""`mlpot evaluate`, `mlpot info`, `mlpot convert` and :mod:`mlpot.evaluation`."""

import json

import numpy as np
import pytest
import torch
from ase.build import bulk
from ase.calculators.emt import EMT

import mlpot
from mlpot.cli import main
from mlpot.data import collate, get_labels, labelled_atoms, read, write
from mlpot.descriptors import SymmetryFunctionSpec
from mlpot.evaluation import Predictions, evaluate, parity_plot, per_structure_errors
from mlpot.models import NetworkConfig, Potential
from mlpot.training.metrics import METRIC_KEYS, ErrorAccumulator


def emt_structures(n: int = 6, seed: int = 0, elements=("Cu", "Au")) -> list:
    """Rattled, strained 4-atom fcc cells with random Cu/Au occupation, EMT labels."""
    rng = np.random.default_rng(seed)
    out = []
    for k in range(n):
        atoms = bulk("Cu", "fcc", a=3.7, cubic=True)
        atoms.symbols = list(rng.choice(list(elements), size=len(atoms)))
        atoms.set_cell(atoms.cell.array @ (np.eye(3) + rng.uniform(-0.02, 0.02, (3, 3))),
                       scale_atoms=True)
        atoms.rattle(0.05, seed=seed * 100 + k)
        atoms.calc = EMT()
        out.append(labelled_atoms(atoms.numbers, atoms.positions, atoms.cell.array, True,
                                  energy=atoms.get_potential_energy(), forces=atoms.get_forces(),
                                  stress=atoms.get_stress(),
                                  info={"k": k, "group": "strained" if k % 3 else "bulk"}))
    return out


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    """A small fitted (untrained) Cu/Au model and an extxyz dataset it can evaluate."""
    tmp = tmp_path_factory.mktemp("evaluate")
    torch.manual_seed(0)
    model = Potential(SymmetryFunctionSpec.default(["Cu", "Au"], cutoff=4.0),
                      NetworkConfig(depth=2, width=8)).double()
    structures = emt_structures()
    model.fit_to_data([collate(structures, cutoff=model.cutoff)])
    mlpot.save(model, tmp / "model.pt", {"epoch": 3, "val_metrics": {"energy_rmse_mev_per_atom": 1.5}})
    write(tmp / "data.xyz", structures)
    structures = read(tmp / "data.xyz")  # extxyz rounds positions: compare with what was read
    return {"model": tmp / "model.pt", "data": tmp / "data.xyz", "tmp": tmp,
            "structures": structures}


def reference_metrics(model_path, structures) -> dict:
    """ErrorAccumulator fed directly, one batch: what the command must reproduce."""
    model = mlpot.load(model_path)
    batch = collate(structures, cutoff=model.cutoff)
    acc = ErrorAccumulator()
    acc.update(model(batch, forces=True, stress=True), batch)
    return acc.result()


def test_evaluate_json_is_one_object_matching_error_accumulator(files, capsys):
    assert main(["evaluate", str(files["model"]), str(files["data"]), "--json", "--batch-size", "4"]) == 0
    out = capsys.readouterr().out
    lines = out.strip().splitlines()
    assert len(lines) == 1
    result = json.loads(lines[0])
    assert list(result) == list(METRIC_KEYS)
    expected = reference_metrics(files["model"], files["structures"])
    assert result["n_structures"] == 6 and result["n_atoms"] == 24
    for key in METRIC_KEYS:
        assert result[key] == pytest.approx(expected[key], rel=1e-9), key


def test_evaluate_table_and_missing_stress_is_null(files, tmp_path, capsys):
    assert main(["evaluate", str(files["model"]), str(files["data"])]) == 0
    out = capsys.readouterr().out
    assert "meV/atom" in out and "meV/Å" in out and "GPa" in out
    # The same structures as open molecules without stress: stress_rmse_gpa is null.
    open_structures = [labelled_atoms(a.numbers, a.positions, energy=get_labels(a).energy,
                                      forces=get_labels(a).forces) for a in files["structures"]]
    write(tmp_path / "open.xyz", open_structures)
    assert main(["evaluate", str(files["model"]), str(tmp_path / "open.xyz"), "--json"]) == 0
    result = json.loads(capsys.readouterr().out)
    assert result["stress_rmse_gpa"] is None
    assert result["energy_rmse_mev_per_atom"] is not None


def test_evaluate_library_predictions(files):
    model = mlpot.load(files["model"])
    metrics, pred = evaluate(model, files["structures"], batch_size=4)
    assert isinstance(pred, Predictions)
    assert pred.energy.shape == (6,) and pred.forces.shape == (24, 3) and pred.stress.shape == (6, 3, 3)
    ref = np.array([get_labels(a).energy for a in files["structures"]])
    np.testing.assert_allclose(pred.energy_ref, ref)
    e_rmse = 1000 * np.sqrt(np.mean((pred.energy_per_atom - pred.energy_ref_per_atom) ** 2))
    assert metrics["energy_rmse_mev_per_atom"] == pytest.approx(e_rmse)
    f_rmse = 1000 * np.sqrt(np.mean((pred.forces - pred.forces_ref) ** 2))
    assert metrics["force_rmse_mev_per_a"] == pytest.approx(f_rmse)
    np.testing.assert_array_equal(pred.system_idx, np.repeat(np.arange(6), 4))
    assert not model.training


def test_errors_per_group_are_each_group_evaluated_alone(files):
    """Groups mixed within every batch (batch 4: bulk, strained, strained, bulk) give the
    errors of each group's structures evaluated on their own, and their counts add up."""
    model = mlpot.load(files["model"])
    structures = files["structures"]
    metrics, _ = evaluate(model, structures, batch_size=4, group_by="group")
    assert list(metrics["groups"]) == ["bulk", "strained"]
    for label, group in metrics["groups"].items():
        alone, _ = evaluate(model, [a for a in structures if a.info["group"] == label], batch_size=16)
        for key in METRIC_KEYS:
            assert group[key] == pytest.approx(alone[key], rel=1e-9), (label, key)
    assert sum(g["n_structures"] for g in metrics["groups"].values()) == metrics["n_structures"] == 6
    assert metrics["groups"]["bulk"]["n_structures"] == 2
    # The energy MAE of the whole is the structure-weighted mean of the groups'.
    mae = sum(g["energy_mae_mev_per_atom"] * g["n_structures"] for g in metrics["groups"].values()) / 6
    assert metrics["energy_mae_mev_per_atom"] == pytest.approx(mae, rel=1e-9)
    plain, _ = evaluate(model, structures, batch_size=4)
    assert "groups" not in plain


def test_evaluate_by_group_json_and_table(files, capsys):
    assert main(["evaluate", str(files["model"]), str(files["data"]), "--by", "group", "--json"]) == 0
    result = json.loads(capsys.readouterr().out)
    assert set(result["groups"]) == {"bulk", "strained"}
    assert list(result["groups"]["strained"]) == list(METRIC_KEYS)
    assert result["groups"]["strained"]["n_structures"] == 4
    assert main(["evaluate", str(files["model"]), str(files["data"]), "--by", "group"]) == 0
    out = capsys.readouterr().out
    assert "per info['group']" in out
    rows = {line.split()[0]: line.split() for line in out.splitlines() if line.split()[:1] in (["bulk"], ["strained"])}
    assert rows["bulk"][1] == "2" and rows["strained"][1] == "4"


def test_per_structure_errors_by_hand():
    """Two structures of 1 and 2 atoms; the second has no force labels (NaN)."""
    nan = float("nan")
    pred = Predictions(
        energy=np.array([-1.0, -3.0]), energy_ref=np.array([-1.002, -2.996]), n_atoms=np.array([1, 2]),
        forces=np.array([[0.1, 0.0, -0.3], [1.0, 1.0, 1.0], [0.0, 0.0, 0.0]]),
        forces_ref=np.array([[0.0, 0.2, -0.3], [nan, nan, nan], [nan, nan, nan]]),
        numbers=np.array([14, 14, 14]), system_idx=np.array([0, 1, 1]),
        stress=np.full((2, 3, 3), nan), stress_ref=np.full((2, 3, 3), nan))
    errors = per_structure_errors(pred)
    np.testing.assert_allclose(errors.energy_error, [2.0, -2.0])          # meV/atom: (-1 + 1.002), (-3 + 2.996)/2
    assert errors.force_mae[0] == pytest.approx(1000 * (0.1 + 0.2 + 0.0) / 3)
    assert errors.force_rmse[0] == pytest.approx(1000 * np.sqrt((0.01 + 0.04) / 3))
    assert errors.force_scale[0] == pytest.approx(1000 * 0.5 / 3)
    assert np.isnan(errors.force_mae[1]) and np.isnan(errors.force_scale[1])
    assert errors.worst(5).tolist() == [0, 1]                              # NaN last, count clipped
    assert errors.worst(1, by="energy_error").tolist() == [0]              # |2.0| ties |-2.0|: stable order
    with pytest.raises(ValueError, match="by must be"):
        errors.worst(1, by="stress")


def test_evaluate_worst_rows_match_each_structure_alone(files, capsys):
    """`--worst N`: the N largest force MAEs, largest first, each equal to that structure's
    force MAE evaluated on its own."""
    assert main(["evaluate", str(files["model"]), str(files["data"]), "--json", "--by", "group", "--worst", "3",
                 "--batch-size", "4"]) == 0
    rows = json.loads(capsys.readouterr().out)["worst"]
    assert len(rows) == 3
    model = mlpot.load(files["model"])
    alone = [evaluate(model, [a])[0] for a in files["structures"]]
    every = sorted((m["force_mae_mev_per_a"] for m in alone), reverse=True)
    assert [r["force_mae_mev_per_a"] for r in rows] == pytest.approx(every[:3], rel=1e-9)
    for row in rows:
        own = alone[row["index"]]
        assert row["force_mae_mev_per_a"] == pytest.approx(own["force_mae_mev_per_a"], rel=1e-9)
        assert row["force_rmse_mev_per_a"] == pytest.approx(own["force_rmse_mev_per_a"], rel=1e-9)
        assert abs(row["energy_error_mev_per_atom"]) == pytest.approx(own["energy_mae_mev_per_atom"], rel=1e-9)
        assert row["group"] == files["structures"][row["index"]].info["group"]
        assert row["n_atoms"] == 4
    assert main(["evaluate", str(files["model"]), str(files["data"]), "--worst", "2"]) == 0
    out = capsys.readouterr().out
    assert "2 structures with the largest force MAE" in out and "F MAE/|F|" in out
    assert main(["evaluate", str(files["model"]), str(files["data"]), "--worst", "-1"]) != 0


def test_per_structure_range_excess_by_hand():
    """Atoms beyond the training range and the largest excess, per structure, from the
    per-atom excess; without it (a model that cannot check) both are NaN."""
    nan = float("nan")
    fields = dict(energy=np.zeros(3), energy_ref=np.zeros(3), n_atoms=np.array([2, 1, 2]),
                  forces=np.zeros((5, 3)), forces_ref=np.zeros((5, 3)), numbers=np.full(5, 14),
                  system_idx=np.array([0, 0, 1, 2, 2]), stress=np.full((3, 3, 3), nan),
                  stress_ref=np.full((3, 3, 3), nan))
    errors = per_structure_errors(Predictions(**fields, range_excess=np.array([0.0, 0.3, 0.0, 0.05, 0.2])))
    assert errors.atoms_beyond.tolist() == [1, 0, 2]
    np.testing.assert_array_equal(errors.max_excess, [0.3, 0.0, 0.2])
    unknown = per_structure_errors(Predictions(**fields))
    assert np.isnan(unknown.atoms_beyond).all() and np.isnan(unknown.max_excess).all()


def test_evaluate_range_excess_matches_the_model_and_the_committee_takes_the_largest(files, tmp_path, capsys):
    """evaluate() reports each atom's excess beyond the training range as the model's own
    check on that structure alone: zero on the structures the scaler was fitted on, positive
    on a cell compressed by 6 %; a committee reports the larger of its members' excesses;
    `--worst-by energy_error` ranks by |ΔE| and lists the atoms outside the range."""
    from mlpot.models import Ensemble

    model = mlpot.load(files["model"])
    squeezed = [a.copy() for a in files["structures"][:2]]
    for atoms in squeezed:
        atoms.set_cell(atoms.cell.array * 0.94, scale_atoms=True)
    structures = [*files["structures"], *squeezed]
    _, pred = evaluate(model, structures, batch_size=3)
    n = len(files["structures"]) * 4
    assert pred.range_excess.shape == (len(structures) * 4,)
    # The fitted range ends at the extremes of what was read before extxyz rounding.
    assert np.all(pred.range_excess[:n] < 1e-6)
    assert np.all(pred.range_excess[n:].reshape(2, 4).max(axis=1) > 0.01)
    for k, atoms in enumerate(squeezed):
        batch = collate([atoms], cutoff=model.cutoff)
        with torch.enable_grad():
            g = model(batch, forces=True, descriptors=True)["descriptors"]
        alone = model.range_excess(g, batch.numbers).numpy()
        np.testing.assert_allclose(pred.range_excess[n + 4 * k:n + 4 * k + 4], alone, rtol=1e-12, atol=1e-15)
    # A second member fitted on the squeezed cells too: its range is wider, its excess smaller.
    torch.manual_seed(1)
    wide = Potential(model.spec, NetworkConfig(depth=2, width=8)).double()
    wide.fit_to_data([collate(structures, cutoff=wide.cutoff)])
    _, pred_wide = evaluate(wide, structures)
    _, pred_both = evaluate(Ensemble([model, wide]), structures)
    np.testing.assert_allclose(pred_both.range_excess, np.maximum(pred.range_excess, pred_wide.range_excess),
                               rtol=1e-12, atol=1e-15)
    assert np.all(pred_wide.range_excess < 1e-6)

    path = tmp_path / "with-squeezed.xyz"
    write(path, structures)
    assert main(["evaluate", str(files["model"]), str(path), "--json", "--worst", "3",
                 "--worst-by", "energy_error"]) == 0
    rows = json.loads(capsys.readouterr().out)["worst"]
    errors = per_structure_errors(evaluate(model, read(path))[1])
    largest = sorted(np.abs(errors.energy_error), reverse=True)[:3]
    assert [abs(r["energy_error_mev_per_atom"]) for r in rows] == pytest.approx(largest, rel=1e-9)
    for row in rows:
        assert row["atoms_beyond_training_range"] == int(errors.atoms_beyond[row["index"]])
        assert row["max_range_excess"] == pytest.approx(errors.max_excess[row["index"]], rel=1e-9)
    assert main(["evaluate", str(files["model"]), str(path), "--worst", "2", "--worst-by", "energy_error"]) == 0
    out = capsys.readouterr().out
    assert "largest |energy error|" in out and "beyond" in out


def test_evaluate_by_a_missing_info_key_names_structure_and_key(files, capsys):
    with pytest.raises(ValueError, match=r"group_by: structure 0 of the structures has no info\['phase'\].*'group'"):
        evaluate(mlpot.load(files["model"]), files["structures"], group_by="phase")
    assert main(["evaluate", str(files["model"]), str(files["data"]), "--by", "phase", "--json"]) == 2
    captured = capsys.readouterr()
    assert captured.out == "" and "info['phase']" in captured.err


def test_parity_plot_writes_png(files, tmp_path, capsys):
    pytest.importorskip("matplotlib")
    path = tmp_path / "parity.png"
    assert main(["evaluate", str(files["model"]), str(files["data"]), "--plot", str(path)]) == 0
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    _, pred = evaluate(mlpot.load(files["model"]), files["structures"])
    parity_plot(pred, tmp_path / "again.png")
    assert (tmp_path / "again.png").stat().st_size > 1000


def test_parity_plot_without_matplotlib_names_the_extra(files, monkeypatch, tmp_path):
    import builtins

    real_import = builtins.__import__

    def no_matplotlib(name, *args, **kwargs):
        if name.startswith("matplotlib"):
            raise ImportError("no matplotlib")
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", no_matplotlib)
    _, pred = evaluate(mlpot.load(files["model"]), files["structures"][:2])
    with pytest.raises(ImportError, match=r"mlpot\[plot\]"):
        parity_plot(pred, tmp_path / "x.png")


def test_unknown_element_is_a_clear_error(files, tmp_path, capsys):
    write(tmp_path / "ag.xyz", emt_structures(2, seed=1, elements=("Cu", "Ag")))
    assert main(["evaluate", str(files["model"]), str(tmp_path / "ag.xyz"), "--json"]) == 2
    captured = capsys.readouterr()
    assert captured.out == ""
    assert captured.err.startswith("mlpot evaluate: error:")
    assert "'Ag'" in captured.err and "structure 0" in captured.err


def test_missing_and_corrupt_model_files(files, tmp_path, capsys):
    assert main(["evaluate", str(tmp_path / "nope.pt"), str(files["data"])]) == 2
    err = capsys.readouterr().err
    assert "mlpot evaluate: error:" in err and "nope.pt" in err
    corrupt = tmp_path / "corrupt.pt"
    corrupt.write_bytes(files["model"].read_bytes()[:300])
    for command in (["evaluate", str(corrupt), str(files["data"])], ["info", str(corrupt)]):
        assert main(command) == 2
        err = capsys.readouterr().err
        assert f"mlpot {command[0]}: error:" in err and "not a readable mlpot model file" in err


def test_info_prints_elements_and_parameter_count(files, capsys):
    model = mlpot.load(files["model"])
    assert main(["info", str(files["model"])]) == 0
    out = capsys.readouterr().out
    assert "Cu, Au" in out
    assert f"{model.n_parameters():,}" in out
    assert "version 1" in out and "epoch" in out
    assert main(["info", str(files["model"]), "--json"]) == 0
    summary = json.loads(capsys.readouterr().out)
    assert summary["elements"] == ["Cu", "Au"]
    assert summary["network"]["parameters"] == model.n_parameters()
    assert summary["network"]["parameters_per_element"] == model.networks.n_parameters()
    assert summary["descriptor"]["features_per_element"] == model.spec.n_features()
    assert summary["metadata"]["epoch"] == 3


def test_convert_round_trip_preserves_labels(files, tmp_path, capsys):
    h5, xyz = tmp_path / "data.h5", tmp_path / "back.extxyz"
    assert main(["convert", str(files["data"]), str(h5)]) == 0
    assert "6 structures, 24 atoms" in capsys.readouterr().out
    assert main(["convert", str(h5), str(xyz)]) == 0
    assert "stress 6/6" in capsys.readouterr().out
    for a, b in zip(files["structures"], read(xyz), strict=True):
        la, lb = get_labels(a), get_labels(b)
        np.testing.assert_array_equal(a.numbers, b.numbers)
        np.testing.assert_allclose(a.positions, b.positions, rtol=0, atol=1e-12)
        np.testing.assert_allclose(a.cell.array, b.cell.array, rtol=0, atol=1e-12)
        assert lb.energy == pytest.approx(la.energy, rel=1e-12)
        np.testing.assert_allclose(lb.forces, la.forces, rtol=1e-12, atol=1e-14)
        np.testing.assert_allclose(lb.stress, la.stress, rtol=1e-12, atol=1e-14)


def test_convert_rejects_unknown_output_suffix(files, tmp_path, capsys):
    assert main(["convert", str(files["data"]), str(tmp_path / "out.csv")]) == 2
    assert ".h5" in capsys.readouterr().err


def test_read_options_reach_the_reader(files, tmp_path, capsys):
    assert main(["convert", str(files["data"]), str(tmp_path / "x.h5"),
                 "--read-option", "stress_order=xx yy zz xy zx yz"]) == 2
    assert "takes options" in capsys.readouterr().err  # extxyz has no stress_order option
