"""The Huber loss (loss.huber): the penalty against hand-computed values, the loss terms
against a numpy reference (with and without structure weights), its equivalences with the
squared error, the stacked members against lone losses, the config checks, and short runs
(lone and many-model) that train on it."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from test_group_weights import check_member_losses, hand_built, predictions, weighted, with_loss
from test_many import assert_same_run, rows
from test_training_run import config, emt_structures

from mlpot.data import collate
from mlpot.training import TrainConfig, train
from mlpot.training.config import ConfigError, LossConfig
from mlpot.training.loss import loss_terms, penalty
from mlpot.training.many import train_many

pytestmark = pytest.mark.usefixtures("one_thread")

DELTAS = {"energy": 0.05, "forces": 0.5, "stress": 0.004}
HUBER = LossConfig(energy_weight=1.0, forces_weight=10.0, stress_weight=100.0, huber=DELTAS)
SQUARED = LossConfig(energy_weight=1.0, forces_weight=10.0, stress_weight=100.0)


def hand_huber(d: np.ndarray, delta: float) -> np.ndarray:
    """2 × the textbook Huber function, written out."""
    a = np.abs(d)
    return np.where(a <= delta, d**2, 2 * delta * (a - delta / 2))


def test_penalty_against_hand_values_and_continuous_at_the_threshold():
    d = torch.tensor([0.2, -0.5, 1.0, -2.0, 0.0], dtype=torch.float64, requires_grad=True)
    cost = penalty(d, 0.5)
    # |d| ≤ 0.5: d²; beyond: 2·0.5·|d| − 0.25.
    np.testing.assert_allclose(cost.detach().numpy(), [0.04, 0.25, 0.75, 1.75, 0.0], rtol=1e-15)
    cost.sum().backward()
    np.testing.assert_allclose(d.grad.numpy(), [0.4, -1.0, 1.0, -1.0, 0.0], rtol=1e-15)
    # Value and slope meet at ±δ from both sides.
    for side in (1.0, -1.0):
        x = torch.tensor([side * (0.5 - 1e-9), side * (0.5 + 1e-9)], dtype=torch.float64, requires_grad=True)
        y = penalty(x, 0.5)
        y.sum().backward()
        assert abs(y[1] - y[0]).item() < 1e-8 and abs(x.grad[1] - x.grad[0]).item() < 1e-8
    assert torch.equal(penalty(d.detach(), None), d.detach() ** 2)


def numpy_reference(raw, pred, w, deltas):
    """Σ w·cost / Σ w of each term, the cost the Huber one of the term's δ."""
    num, den = dict.fromkeys(deltas, 0.0), dict.fromkeys(deltas, 0.0)
    atom = 0
    for b, (r, wb) in enumerate(zip(raw, w)):
        e = (pred["energy"][b] - r["energy"]) / r["n"]
        num["energy"] += wb * hand_huber(np.array(e), deltas["energy"])
        den["energy"] += wb
        if r["forces"] is not None:
            f = pred["forces"][atom:atom + r["n"]] - r["forces"]
            num["forces"] += wb * hand_huber(f, deltas["forces"]).sum()
            den["forces"] += wb * f.size
        if r["stress"] is not None and r["periodic"]:
            s = pred["stress"][b] - r["stress"]
            num["stress"] += wb * hand_huber(s, deltas["stress"]).sum()
            den["stress"] += wb * 9
        atom += r["n"]
    return {k: num[k] / den[k] for k in num}


@pytest.mark.parametrize("w", [None, [2.0, 0.5, 1.5, 3.0]])
def test_huber_terms_equal_the_numpy_reference(w):
    structures, raw = hand_built()
    batch = collate(structures) if w is None else weighted(collate(structures), w)
    pred_np, pred = predictions(raw)
    terms = loss_terms(pred, batch, HUBER)
    ref = numpy_reference(raw, pred_np, [1.0] * len(raw) if w is None else w, DELTAS)
    for key in DELTAS:
        np.testing.assert_allclose(terms[key].item(), ref[key], rtol=1e-12, err_msg=key)
    # Each threshold is crossed by some errors of this batch: the loss differs from the squared one.
    squared = loss_terms(pred, batch, SQUARED)
    for key in DELTAS:
        assert terms[key].item() < squared[key].item() * (1 - 1e-6), key
    # The NaN stress of the open structure reaches neither the value nor the gradient.
    terms["total"].backward()
    assert all(torch.isfinite(v.grad).all() for v in pred.values())


def test_a_threshold_above_every_error_gives_the_squared_loss_bit_for_bit():
    structures, raw = hand_built()
    batch = weighted(collate(structures), [2.0, 0.5, 1.5, 3.0])
    _, pred = predictions(raw)
    pred = {k: v.detach() for k, v in pred.items()}
    wide = LossConfig(energy_weight=1.0, forces_weight=10.0, stress_weight=100.0,
                      huber={"energy": 1e6, "forces": 1e6, "stress": 1e6})
    for b in (batch, collate(structures)):
        a, s = loss_terms(pred, b, wide), loss_terms(pred, b, SQUARED)
        for key in s:
            assert torch.equal(a[key], s[key]), key


def test_only_the_named_term_changes():
    structures, raw = hand_built()
    batch = collate(structures)
    _, pred = predictions(raw)
    pred = {k: v.detach() for k, v in pred.items()}
    forces_only = loss_terms(pred, batch, LossConfig(energy_weight=1.0, forces_weight=10.0, stress_weight=100.0,
                                                     huber={"forces": 0.5}))
    squared = loss_terms(pred, batch, SQUARED)
    assert torch.equal(forces_only["energy"], squared["energy"]) and torch.equal(forces_only["stress"], squared["stress"])
    assert forces_only["forces"] < squared["forces"]


@pytest.mark.parametrize("w", [None, [2.0, 0.5, 1.5, 3.0]])
def test_member_loss_with_huber_equals_each_lone_loss(w):
    check_member_losses(HUBER, w)


def test_annealed_weights_keep_the_thresholds():
    loss = LossConfig(energy_weight=1.0, forces_weight=1.0, forces_weight_start=100.0, huber={"forces": 0.1})
    assert loss.weights_at(0.5).huber == {"forces": 0.1}


@pytest.mark.parametrize("huber, message", [
    ({"force": 0.1}, r"loss\.huber\.force: is not a loss term: use energy, forces, stress"),
    ({"forces": 0.0}, r"loss\.huber\.forces: must be a finite number > 0"),
    ({"forces": float("nan")}, r"loss\.huber\.forces: must be a finite number > 0"),
    ({"forces": True}, r"loss\.huber\.forces: must be a finite number > 0"),
    ({"stress": 0.01}, r"loss\.huber\.stress: shapes a term that is not in the loss \(loss\.stress_weight is 0\)"),
])
def test_bad_thresholds_are_refused_by_name(huber, message):
    with pytest.raises(ConfigError, match=message):
        LossConfig(huber=huber)


def test_kalman_refuses_huber(tmp_path):
    d = config(tmp_path, epochs=1).to_dict()
    d["optimizer"] = {"name": "kalman"}
    d["schedule"] = {"name": "none"}
    d["training"]["grad_clip"] = 0.0
    d["loss"]["huber"] = {"forces": 0.1}
    with pytest.raises(ConfigError, match=r"loss\.huber: does not apply to optimizer\.name kalman"):
        TrainConfig.from_dict(d)


# ---------------------------------------------------------------------- end to end
@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
    import ase.io

    folder = tmp_path_factory.mktemp("huber")
    ase.io.write(folder / "train.extxyz", emt_structures(16, seed=3))
    return folder


def test_many_models_train_the_huber_loss_as_a_lone_run(dataset, tmp_path):
    cfg = with_loss(config(dataset, epochs=2), huber={"forces": 0.05, "energy": 0.01})
    train_many([cfg], [tmp_path / "many"], progress=False, log=lambda _: None)
    train(cfg, tmp_path / "lone", progress=False, log=lambda _: None)
    assert_same_run(tmp_path / "many", tmp_path / "lone")
    assert TrainConfig.from_yaml(tmp_path / "lone" / "config.yaml") == cfg
    # The thresholds reached the loss: the squared-error run trains on another loss from the first step.
    train(with_loss(cfg, huber={}), tmp_path / "squared", progress=False, log=lambda _: None)
    huber_loss, squared_loss = (float(rows(tmp_path / name / "metrics.csv")[0]["train_loss"])
                                for name in ("lone", "squared"))
    assert huber_loss < squared_loss * (1 - 1e-3)
