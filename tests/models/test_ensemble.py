"""mlpot.models.Ensemble: the committee mean, member by member, and `mlpot evaluate` of a committee."""

import json

import numpy as np
import pytest
import torch
from ase.stress import full_3x3_to_voigt_6_stress
from structures_for_tests import water_box
from test_models import SPEC, make_model

import mlpot
from mlpot.cli import main
from mlpot.data import collate, write
from mlpot.descriptors import SymmetryFunctionSpec
from mlpot.evaluation import evaluate
from mlpot.models import Ensemble, NetworkConfig, Potential


@pytest.fixture(scope="module")
def members():
    return [make_model(NetworkConfig(depth=d, width=8, block="residual"), seed=s) for s, d in ((0, 1), (1, 2), (2, 3))]


def labelled_boxes(n: int = 3) -> list:
    """Water boxes labelled by a fourth, unrelated model (any smooth labels do)."""
    from ase.calculators.singlepoint import SinglePointCalculator

    teacher = make_model(seed=9)
    boxes = [water_box(seed=10 + k)[:24] for k in range(n)]
    batch = collate(boxes, cutoff=teacher.cutoff)
    out = {k: v.detach().numpy() for k, v in teacher(batch, stress=True).items()}
    for k, atoms in enumerate(boxes):
        atoms.calc = SinglePointCalculator(atoms, energy=float(out["energy"][k]),
                                           forces=out["forces"][batch.system_idx.numpy() == k],
                                           stress=full_3x3_to_voigt_6_stress(out["stress"][k]))
    return boxes


def test_mean_and_spread_are_those_of_the_members(members):
    boxes = [water_box(seed=s)[:30] for s in (3, 4)]
    batch = collate(boxes, cutoff=4.0)
    outs = [m(batch, stress=True) for m in members]
    committee = Ensemble(members)(batch, stress=True)
    for key in ("energy", "atomic_energies", "forces", "stress"):
        want = np.mean([o[key].detach().numpy() for o in outs], axis=0)
        np.testing.assert_allclose(committee[key].detach().numpy(), want, rtol=1e-12, atol=1e-12, err_msg=key)
    for key in ("energy", "forces"):
        want = np.std([o[key].detach().numpy() for o in outs], axis=0)  # numpy: ddof=0
        np.testing.assert_allclose(committee[f"{key}_std"].detach().numpy(), want, rtol=1e-10, atol=1e-12)
    assert (committee["energy_std"] > 0).all()  # the members do differ


def test_identical_members_give_the_member_and_no_spread(members):
    batch = collate([water_box(seed=5)[:24]], cutoff=4.0)
    one = members[0](batch)
    twice = Ensemble([members[0], members[0]])(batch)
    torch.testing.assert_close(twice["forces"], one["forces"], rtol=1e-14, atol=1e-14)
    assert float(twice["energy_std"].detach().abs().max()) == 0.0


def test_committee_errors_are_no_worse_than_the_mean_member(members):
    """Jensen: |mean of predictions − ref| ≤ mean of |prediction − ref| per label, so the
    committee's MAE (and RMSE) cannot exceed the members' mean; equality would mean no averaging."""
    boxes = labelled_boxes()
    member_metrics = [evaluate(m, boxes)[0] for m in members]
    committee, predictions = evaluate(Ensemble(members), boxes)
    for key in ("energy_mae_mev_per_atom", "force_mae_mev_per_a", "force_rmse_mev_per_a", "stress_rmse_gpa"):
        assert committee[key] <= np.mean([m[key] for m in member_metrics]) * (1 + 1e-12), key
    assert committee["force_mae_mev_per_a"] < min(m["force_mae_mev_per_a"] for m in member_metrics)
    assert predictions.forces.shape == (72, 3)


def test_members_must_agree():
    one = make_model(fit=False)
    with pytest.raises(ValueError, match="at least two members"):
        Ensemble([one])
    other = Potential(SymmetryFunctionSpec.from_dict({**SPEC, "elements": ["H", "C"]}), NetworkConfig(depth=1, width=4))
    with pytest.raises(ValueError, match="disagree on elements"):
        Ensemble([one, other.double()])
    with pytest.raises(ValueError, match="different dtypes"):
        Ensemble([one, make_model(fit=False).float()])


def test_cli_evaluates_a_committee(members, tmp_path, capsys):
    paths = []
    for k, m in enumerate(members):
        paths.append(str(tmp_path / f"m{k}.pt"))
        mlpot.save(m, paths[-1])
    write(tmp_path / "data.xyz", labelled_boxes(2))
    assert main(["evaluate", *paths, str(tmp_path / "data.xyz"), "--json"]) == 0
    got = json.loads(capsys.readouterr().out)
    from mlpot.data import read

    want, _ = evaluate(Ensemble([mlpot.load(p) for p in paths]), read(tmp_path / "data.xyz"))
    for key in ("energy_mae_mev_per_atom", "force_rmse_mev_per_a", "stress_rmse_gpa"):
        assert got[key] == pytest.approx(want[key], rel=1e-9), key
    assert main(["evaluate", paths[0], str(tmp_path / "data.xyz")]) == 0
    assert "committee of" not in capsys.readouterr().out
    assert main(["evaluate", *paths, str(tmp_path / "data.xyz")]) == 0
    assert "committee of 3" in capsys.readouterr().out
