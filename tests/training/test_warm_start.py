"""Warm starts (training.init_weights) and the Kalman-filter optimiser in the trainer: the run
starts from the file's weights and fit, a Kalman finish lowers the loss of an Adam-trained
model and resumes bit for bit, and the configs that cannot work are refused by name."""

from __future__ import annotations

import ase.io
import pytest
import torch
from ase.calculators.emt import EMT
from test_training_run import config, emt_structures, rows
from test_training_run import dataset as dataset  # noqa: F401  (the module-scoped fixture)

import mlpot
from mlpot.config import ConfigError
from mlpot.training import TrainConfig, train
from mlpot.training.many import train_many

pytestmark = pytest.mark.usefixtures("one_thread")


def changed(cfg: TrainConfig, **sections) -> TrainConfig:
    """``cfg`` with keys of its sections replaced: ``changed(cfg, training={"epochs": 2})``."""
    d = cfg.to_dict()
    return TrainConfig.from_dict({**d, **{k: {**(d[k] or {}), **v} for k, v in sections.items()}})


@pytest.fixture(scope="module")
def adam_model(dataset, tmp_path_factory):  # noqa: F811
    out = tmp_path_factory.mktemp("adam")
    train(config(dataset, epochs=4), out, progress=False, log=lambda _: None)
    return out / "model.pt"


def kalman(dataset, model_path, **training) -> TrainConfig:  # noqa: F811
    return changed(config(dataset), optimizer={"name": "kalman", "kalman": {"block_size": 64}},
                   training={"init_weights": str(model_path), "batch_size": 2, "epochs": 2, **training})


def test_warm_start_begins_from_the_file(dataset, adam_model, tmp_path):  # noqa: F811
    # One epoch at a vanishing learning rate: the model is the file's, fit included.
    cfg = changed(config(dataset), optimizer={"lr": 1e-12}, training={"init_weights": str(adam_model), "epochs": 1})
    lines = []
    train(cfg, tmp_path, progress=False, log=lines.append)
    before, after = mlpot.load(adam_model), mlpot.load(tmp_path / "model.pt")
    for (name, a), b in zip(before.state_dict().items(), after.state_dict().values()):
        torch.testing.assert_close(b, a, rtol=0, atol=1e-9, msg=name)
    assert any("training.init_weights" in line for line in lines)
    # the first epoch's validation loss is the Adam model's best one, not a fresh model's
    adam_best = min(float(r["val_loss"]) for r in rows(adam_model.parent / "metrics.csv"))
    assert float(rows(tmp_path / "metrics.csv")[0]["val_loss"]) == pytest.approx(adam_best, rel=1e-6)


def test_kalman_finish_lowers_the_loss_of_an_adam_model(dataset, adam_model, tmp_path):  # noqa: F811
    lines = []
    result = train(kalman(dataset, adam_model, epochs=3), tmp_path, progress=False, log=lines.append)
    assert any(line.startswith("Kalman filter: covariance of") and "MiB" in line for line in lines)
    adam_best = min(float(r["val_loss"]) for r in rows(adam_model.parent / "metrics.csv"))
    assert result["best_val_loss"] < 0.8 * adam_best, (result["best_val_loss"], adam_best)


def test_kalman_run_resumes_bit_for_bit(dataset, adam_model, tmp_path):  # noqa: F811
    train(kalman(dataset, adam_model), tmp_path / "straight", progress=False, log=lambda _: None)
    train(kalman(dataset, adam_model, epochs=1), tmp_path / "split", progress=False, log=lambda _: None)
    train(kalman(dataset, adam_model), tmp_path / "split", resume=True, progress=False, log=lambda _: None)
    straight, split = (torch.load(tmp_path / name / "last.pt", weights_only=True) for name in ("straight", "split"))
    for name, value in straight["model"].items():
        torch.testing.assert_close(split["model"][name], value, rtol=0, atol=0, msg=name)
    assert split["optimizer"]["param_groups"][0]["updates"] == straight["optimizer"]["param_groups"][0]["updates"]


def test_warm_start_refuses_another_network_and_missing_elements(dataset, adam_model, tmp_path):  # noqa: F811
    wider = changed(config(dataset), model={"width": 16}, training={"init_weights": str(adam_model)})
    with pytest.raises(ConfigError, match=r"width: file 8, config 16"):
        train(wider, tmp_path / "a", progress=False, log=lambda _: None)
    missing = changed(config(dataset), training={"init_weights": str(tmp_path / "nothing.pt")})
    with pytest.raises(FileNotFoundError, match="nothing.pt"):
        train(missing, tmp_path / "b", progress=False, log=lambda _: None)


def test_warm_start_needs_every_element_of_the_data(dataset, tmp_path):  # noqa: F811
    copper = emt_structures(12, seed=3)
    for atoms in copper:  # the Cu/Au cells made pure Cu, labelled again
        atoms.numbers[:] = 29
        atoms.calc = EMT()
        atoms.get_stress()
    ase.io.write(tmp_path / "cu.extxyz", copper)
    cu_only = changed(config(dataset), data={"train": str(tmp_path / "cu.extxyz")}, training={"epochs": 1})
    train(cu_only, tmp_path / "cu", progress=False, log=lambda _: None)
    both = changed(config(dataset), training={"init_weights": str(tmp_path / "cu" / "model.pt")})
    with pytest.raises(ConfigError, match=r"no network for \['Au'\]"):
        train(both, tmp_path / "both", progress=False, log=lambda _: None)


@pytest.mark.parametrize(("sections", "message"), [
    ({"schedule": {"name": "plateau"}}, "schedule: does not apply to optimizer.name kalman"),
    ({"schedule": {"warmup_epochs": 2}}, "schedule: does not apply"),
    ({"training": {"grad_clip": 1.0}}, "training.grad_clip: does not apply"),
    ({"optimizer": {"name": "kalman", "weight_decay": 0.1}}, "optimizer.weight_decay: does not apply"),
    ({"optimizer": {"name": "kalman", "kalman": {"lambda0": 1.2}}}, r"optimizer.kalman.lambda0: must be in \(0, 1\]"),
    ({"optimizer": {"name": "kalman", "kalman": {"block_size": 0}}}, "optimizer.kalman.block_size: must be >= 1"),
])
def test_kalman_settings_that_cannot_work_are_refused(dataset, sections, message):  # noqa: F811
    sections = {"optimizer": {"name": "kalman"}, **sections}
    with pytest.raises(ConfigError, match=message):
        changed(config(dataset), **sections)


def test_empty_init_weights_is_refused(dataset):  # noqa: F811
    with pytest.raises(ConfigError, match="training.init_weights: must be a model file or null"):
        changed(config(dataset), training={"init_weights": " "})


def test_many_models_refuse_kalman_and_warm_starts(dataset, adam_model, tmp_path):  # noqa: F811
    with pytest.raises(ValueError, match="kalman trains one model at a time"):
        train_many([kalman(dataset, adam_model)], [tmp_path / "k"], progress=False, log=lambda _: None)
    warm = changed(config(dataset), training={"init_weights": str(adam_model)})
    with pytest.raises(ValueError, match="init_weights .* one model at a time"):
        train_many([warm], [tmp_path / "w"], progress=False, log=lambda _: None)
