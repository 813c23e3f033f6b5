"""The L-BFGS finish (``optimizer.name: lbfgs``): each epoch is one L-BFGS step on the loss of
the whole training set, which a strong-Wolfe line search can only lower; the objective is
that loss, checked against one computed by hand from ASE predictions; a run resumes bit for
bit; the settings that would silently do nothing are refused by name."""

from __future__ import annotations

import ase.io
import numpy as np
import pytest
import torch
from test_training_run import config, rows
from test_training_run import dataset as dataset  # noqa: F401  (the module-scoped fixture)
from test_warm_start import changed

from mlpot.calculator import MLPotCalculator
from mlpot.config import ConfigError
from mlpot.training import TrainConfig, train
from mlpot.training.many import train_many

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def adam_model(dataset, tmp_path_factory):  # noqa: F811
    out = tmp_path_factory.mktemp("adam")
    train(config(dataset, epochs=4), out, progress=False, log=lambda _: None)
    return out / "model.pt"


def lbfgs(dataset, model_path, max_iter: int = 5, **training) -> TrainConfig:  # noqa: F811
    """An L-BFGS finish of ``model_path`` on all 30 training structures (no validation split)."""
    return changed(config(dataset), data={"val_fraction": 0.0},
                   optimizer={"name": "lbfgs", "lr": 1.0, "lbfgs": {"max_iter": max_iter}},
                   training={"init_weights": str(model_path), "epochs": 3, **training})


def hand_loss(model_path, structures, energy_weight: float, forces_weight: float) -> float:
    """w_E·⟨(ΔE/n)²⟩ + w_F·⟨ΔF_iα²⟩ over ``structures`` (eV, eV/Å), predictions from ASE."""
    calc = MLPotCalculator(model_path, device="cpu", extrapolation="ignore")
    de, df = [], []
    for atoms in structures:
        e_ref, f_ref = atoms.get_potential_energy(), atoms.get_forces()
        copy = atoms.copy()
        copy.calc = calc
        de.append((copy.get_potential_energy() - e_ref) / len(atoms))
        df.append((copy.get_forces() - f_ref).ravel())
    return energy_weight * float(np.mean(np.square(de))) + forces_weight * float(np.mean(np.square(np.concatenate(df))))


def test_the_objective_is_the_loss_of_the_whole_training_set(dataset, adam_model, tmp_path):  # noqa: F811
    # The first epoch's reported loss is the objective at the warm start's weights: the
    # mean of the three batches' losses, which for equal batches of 4-atom cells is the
    # loss over all 30 structures, computed here from the calculator's predictions.
    cfg = lbfgs(dataset, adam_model, epochs=1, batch_size=10)
    train(cfg, tmp_path, progress=False, log=lambda _: None)
    structures = ase.io.read(dataset / "train.extxyz", ":")
    expected = hand_loss(adam_model, structures, cfg.loss.energy_weight, cfg.loss.forces_weight)
    assert float(rows(tmp_path / "metrics.csv")[0]["train_loss"]) == pytest.approx(expected, rel=1e-8)


def test_lbfgs_finish_lowers_the_loss_every_epoch(dataset, adam_model, tmp_path):  # noqa: F811
    # Each epoch starts where the last ended, and the line search accepts only lower losses.
    train(lbfgs(dataset, adam_model, epochs=4), tmp_path, progress=False, log=lambda _: None)
    start_losses = [float(r["train_loss"]) for r in rows(tmp_path / "metrics.csv")]
    assert all(b < a for a, b in zip(start_losses, start_losses[1:])), start_losses
    assert start_losses[-1] < 0.9 * start_losses[0], start_losses


def test_lbfgs_in_float32_says_that_float64_is_its_setting(dataset, adam_model, tmp_path):  # noqa: F811
    lines = []
    train(lbfgs(dataset, adam_model, epochs=1, dtype="float32"), tmp_path / "f32", progress=False, log=lines.append)
    assert any(line.startswith("L-BFGS in float32") and "training.dtype: float64" in line for line in lines)
    lines.clear()
    train(lbfgs(dataset, adam_model, epochs=1), tmp_path / "f64", progress=False, log=lines.append)
    assert not any("L-BFGS in float32" in line for line in lines)


def test_lbfgs_run_resumes_bit_for_bit(dataset, adam_model, tmp_path):  # noqa: F811
    train(lbfgs(dataset, adam_model, epochs=2), tmp_path / "straight", progress=False, log=lambda _: None)
    train(lbfgs(dataset, adam_model, epochs=1), tmp_path / "split", progress=False, log=lambda _: None)
    train(lbfgs(dataset, adam_model, epochs=2), tmp_path / "split", resume=True, progress=False, log=lambda _: None)
    straight, split = (torch.load(tmp_path / name / "last.pt", weights_only=True) for name in ("straight", "split"))
    for name, value in straight["model"].items():
        torch.testing.assert_close(split["model"][name], value, rtol=0, atol=0, msg=name)
    assert split["optimizer"]["state"][0]["n_iter"] == straight["optimizer"]["state"][0]["n_iter"]


@pytest.mark.parametrize(("sections", "message"), [
    ({"schedule": {"name": "cosine"}}, "schedule: does not apply to optimizer.name lbfgs"),
    ({"training": {"grad_clip": 1.0}}, "training.grad_clip: does not apply to optimizer.name lbfgs"),
    ({"training": {"ema_decay": 0.99}}, "training.ema_decay: does not apply to optimizer.name lbfgs"),
    ({"optimizer": {"name": "lbfgs", "weight_decay": 0.1}}, "optimizer.weight_decay: does not apply to .* lbfgs"),
    ({"optimizer": {"name": "lbfgs", "lbfgs": {"max_iter": 0}}}, "optimizer.lbfgs.max_iter: must be >= 1"),
    ({"optimizer": {"name": "lbfgs", "lbfgs": {"tolerance_grad": -1}}}, "optimizer.lbfgs.tolerance_grad: must be >= 0"),
    ({"loss": {"forces_weight_start": 100.0}}, "loss.forces_weight_start: .* optimizer.name lbfgs does not have"),
])
def test_lbfgs_settings_that_cannot_work_are_refused(dataset, sections, message):  # noqa: F811
    sections = {"optimizer": {"name": "lbfgs"}, **sections}
    with pytest.raises(ConfigError, match=message):
        changed(config(dataset), **sections)


def test_many_models_refuse_lbfgs(dataset, adam_model, tmp_path):  # noqa: F811
    with pytest.raises(ValueError, match="lbfgs trains one model at a time"):
        train_many([lbfgs(dataset, adam_model)], [tmp_path / "l"], progress=False, log=lambda _: None)
