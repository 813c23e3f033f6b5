"""Annealed loss weights (``loss.*_weight_start``, DeePMD-kit's start/limit prefactors): the
config, the weight of an epoch, and training runs (lone, stacked, resumed) that use them."""

from __future__ import annotations

import csv
import math
import random
from dataclasses import replace

import ase.io
import pytest
import torch

from mlpot.config import ConfigError
from mlpot.training import TrainConfig, load_checkpoint, train
from mlpot.training.config import LossConfig, ScheduleConfig
from mlpot.training.loss import loss_from_metrics, loss_terms
from mlpot.training.many import train_many
from mlpot.training.optim import LRSchedule
from mlpot.training.stack_loop import member_weights
from test_many import assert_same_run
from test_training_run import METRIC_COLUMNS, config, emt_structures

pytestmark = pytest.mark.usefixtures("one_thread")

DEEPMD = {"energy_weight": 100.0, "forces_weight": 1.0, "energy_weight_start": 1.0, "forces_weight_start": 100.0}


@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
    folder = tmp_path_factory.mktemp("anneal")
    ase.io.write(folder / "train.extxyz", emt_structures(30, seed=0))
    return folder


def minimal(**sections) -> dict:
    return {"data": {"train": "train.extxyz"}, "schedule": {"name": "cosine"}, **sections}


def rows(path):
    with open(path, newline="") as fh:
        return list(csv.DictReader(fh))


def annealed(dataset, loss: dict, schedule: dict, **training) -> TrainConfig:
    """The tiny EMT run of test_training_run with ``loss`` and ``schedule`` sections."""
    base = config(dataset, **training).to_dict()
    return TrainConfig.from_dict({**base, "loss": {**base["loss"], **loss}, "schedule": schedule})


# ---------------------------------------------------------------------- config
def test_defaults_do_not_anneal_and_return_the_same_weights():
    loss = TrainConfig.from_dict(minimal()).loss
    assert (loss.energy_weight_start, loss.forces_weight_start, loss.stress_weight_start) == (None, None, None)
    assert not loss.anneals and loss.anneal_summary() is None
    for r in (0.0, 0.3, 1.0):
        assert loss.weights_at(r) is loss  # the very object: the loss is bit for bit today's


@pytest.mark.parametrize("loss, key", [
    ({"forces_weight_start": -1.0}, "loss.forces_weight_start"),
    ({"forces_weight_start": 0.0}, "loss.forces_weight_start"),  # a term is never switched off
    ({"energy_weight_start": float("nan")}, "loss.energy_weight_start"),
    ({"energy_weight_start": float("inf")}, "loss.energy_weight_start"),
    ({"energy_weight_start": "heavy"}, "loss.energy_weight_start"),
    ({"energy_weight_start": True}, "loss.energy_weight_start"),
    ({"stress_weight_start": 10.0}, "loss.stress_weight_start"),  # stress_weight 0: not in the loss
])
def test_bad_start_weight_is_named(loss, key):
    with pytest.raises(ValueError, match=key.replace(".", "[.]")):
        TrainConfig.from_dict(minimal(loss=loss))


def test_start_weight_on_a_term_that_is_off_is_refused_in_code_too():
    with pytest.raises(ConfigError, match=r"loss[.]stress_weight_start: .*loss[.]stress_weight is 0"):
        LossConfig(stress_weight_start=5.0)


@pytest.mark.parametrize("sections, needle", [
    ({"schedule": {"name": "none", "warmup_epochs": 2}}, "schedule.name none"),
    ({"schedule": {"name": "none"}, "optimizer": {"name": "kalman"}}, "optimizer.name kalman"),
])
def test_annealing_without_a_decaying_learning_rate_is_refused(sections, needle):
    with pytest.raises(ConfigError, match=r"loss[.]forces_weight_start: .*" + needle.replace(".", "[.]")):
        TrainConfig.from_dict({**minimal(loss={"forces_weight_start": 100}), **sections})


def test_start_weights_round_trip_through_yaml_and_overrides(tmp_path):
    path = tmp_path / "run.yaml"
    # YAML reads 1e2 (no dot) as a string, and 1 as an int: both become floats.
    path.write_text("data: {train: train.extxyz}\nschedule: {name: cosine}\n"
                    "loss: {energy_weight: 100, forces_weight: 1, energy_weight_start: 1, forces_weight_start: 1e2}\n")
    cfg = TrainConfig.from_yaml(path)
    assert cfg.loss == LossConfig(**DEEPMD) and cfg.loss.energy_weight_start == 1.0
    assert isinstance(cfg.loss.energy_weight_start, float) and cfg.loss.anneals
    assert TrainConfig.from_dict(cfg.to_dict()) == cfg
    cfg.save(tmp_path / "saved.yaml")
    assert TrainConfig.from_yaml(tmp_path / "saved.yaml") == cfg
    over = TrainConfig.from_yaml(path, ["loss.forces_weight_start=null", "loss.energy_weight_start=3"])
    assert over.loss.forces_weight_start is None and over.loss.energy_weight_start == 3.0


# ---------------------------------------------------------------------- the weights of an epoch
def test_weights_at_against_hand_values():
    loss = LossConfig(**DEEPMD, stress_weight=1000.0)  # stress constant
    start, mid, final = loss.weights_at(1.0), loss.weights_at(0.5), loss.weights_at(0.0)
    assert (start.energy_weight, start.forces_weight, start.stress_weight) == (1.0, 100.0, 1000.0)
    assert (mid.energy_weight, mid.forces_weight, mid.stress_weight) == (50.5, 50.5, 1000.0)
    assert (final.energy_weight, final.forces_weight, final.stress_weight) == (100.0, 1.0, 1000.0)
    assert loss.weights_at(0.25).forces_weight == 1.0 + 99.0 * 0.25
    for w in (start, mid, final):
        assert not w.anneals and w.group_weights == loss.group_weights
    assert loss.weights_at(7.0) == start and loss.weights_at(-1.0) == final  # r clipped to [0, 1]
    # Exact at the ends whatever the numbers (start weights that are not exact in binary).
    odd = LossConfig(energy_weight=0.3, forces_weight=7.1, energy_weight_start=0.1, forces_weight_start=101.7)
    assert (odd.weights_at(1.0).energy_weight, odd.weights_at(1.0).forces_weight) == (0.1, 101.7)
    assert (odd.weights_at(0.0).energy_weight, odd.weights_at(0.0).forces_weight) == (0.3, 7.1)
    same = LossConfig(energy_weight=0.3, forces_weight=7.1, energy_weight_start=0.3, forces_weight_start=7.1)
    for r in (random.Random(k).random() for k in range(20)):
        assert same.weights_at(r) == LossConfig(energy_weight=0.3, forces_weight=7.1)


def test_anneal_summary_names_the_weights():
    line = LossConfig(**DEEPMD).anneal_summary()
    assert "energy 1 → 100" in line and "forces 100 → 1" in line and "stress" not in line


def schedule_at(config: ScheduleConfig, epochs: int, steps: int = 3) -> list[float]:
    """The schedule's decay ratio at the start of every epoch (taking ``steps`` steps each)."""
    opt = torch.optim.Adam([torch.zeros(1, requires_grad=True)], lr=2.0)
    sched = LRSchedule(opt, config, base_lr=2.0, epochs=epochs, steps_per_epoch=steps)
    out = []
    for _ in range(epochs):
        out.append(sched.decay_ratio())
        for _ in range(steps):
            sched.step()
        sched.epoch_end(1.0)
    return out


def test_decay_ratio_is_one_in_warm_up_then_follows_the_learning_rate():
    # Cosine over 4 epochs after 2 of warm-up: 1, 1 (warm-up; the lr rises from ~0), then
    # cos from 1 down: ½(1 + cos(π·k/4)), k = 0, 1, 2, 3; min_lr 0.
    ratios = schedule_at(ScheduleConfig(name="cosine", warmup_epochs=2), epochs=6)
    assert ratios[:3] == [1.0, 1.0, 1.0]
    assert ratios[3:] == pytest.approx([0.5 * (1 + math.cos(math.pi * k / 4)) for k in (1, 2, 3)])
    assert ratios[4] == pytest.approx(0.5)  # lr = lr₀/2 → the midpoint weights
    assert LossConfig(**DEEPMD).weights_at(ratios[4]).forces_weight == pytest.approx(50.5)
    assert schedule_at(ScheduleConfig(name="exponential", gamma=0.5), epochs=4) == [1.0, 0.5, 0.25, 0.125]
    # With min_lr the ratio ends at min_lr/lr₀ (≥ 0): the weights end near, not at, the final ones.
    end = schedule_at(ScheduleConfig(name="cosine", min_lr=0.2), epochs=50)[-1]
    assert 0.1 <= end < 0.11


def test_member_weights_are_each_members_lone_weights():
    opt = torch.optim.Adam([torch.zeros(1, requires_grad=True)], lr=1.0)
    schedules = [LRSchedule(opt, ScheduleConfig(name="exponential", gamma=g), 1.0, 5, 1) for g in (0.5, 0.8)]
    for s in schedules:
        s.epoch_end(1.0)  # epoch 1: ratios 0.5 and 0.8
    loss = LossConfig(**DEEPMD)
    w = member_weights(loss, schedules, torch.device("cpu"), torch.float64)
    assert set(w) == {"energy", "forces"}
    assert w["forces"].tolist() == [loss.weights_at(0.5).forces_weight, loss.weights_at(0.8).forces_weight]
    assert w["energy"].tolist() == [loss.weights_at(0.5).energy_weight, loss.weights_at(0.8).energy_weight]
    assert member_weights(LossConfig(), schedules, torch.device("cpu"), torch.float64) == {
        "energy": 1.0, "forces": 10.0}


def test_loss_of_a_step_refuses_the_annealed_config():
    with pytest.raises(ValueError, match="weights_at"):
        loss_terms({}, None, LossConfig(**DEEPMD))


# ---------------------------------------------------------------------- training
COSINE = {"name": "cosine", "warmup_epochs": 1, "min_lr": 0.0}


def test_start_equal_to_final_trains_as_constant_weights(dataset, tmp_path):
    constant = annealed(dataset, {}, COSINE)
    same = annealed(dataset, {"energy_weight_start": 1.0, "forces_weight_start": 10.0}, COSINE)
    assert same.loss.anneals and same.loss.weights_at(0.37) == constant.loss
    train(constant, tmp_path / "a", progress=False, log=lambda _: None)
    train(same, tmp_path / "b", progress=False, log=lambda _: None)
    ra, rb = rows(tmp_path / "a" / "metrics.csv"), rows(tmp_path / "b" / "metrics.csv")
    for x, y in zip(ra, rb, strict=True):
        x.pop("wall_s"), y.pop("wall_s")
        assert x == y
    a, b = load_checkpoint(tmp_path / "a" / "last.pt"), load_checkpoint(tmp_path / "b" / "last.pt")
    for k in a["model"]:
        assert torch.equal(a["model"][k], b["model"][k]), k


def test_each_epoch_trains_with_its_weights_and_selects_with_the_final(dataset, tmp_path, monkeypatch):
    """Cosine over 4 epochs, 1 of warm-up: r = 1 (warm-up), 1, ½(1 + cos(π/3)) = 0.75,
    ½(1 + cos(2π/3)) = 0.25 at the epochs' starts; energy 1 → 100, forces 100 → 1."""
    import mlpot.training.trainer as trainer

    cfg = annealed(dataset, DEEPMD, COSINE, epochs=4)
    seen = []

    def recording(pred, batch, weights):
        terms = loss_terms(pred, batch, weights)
        # the step's total by hand: Σ w·term over the unweighted terms
        by_hand = weights.energy_weight * terms["energy"] + weights.forces_weight * terms["forces"]
        assert float(terms["total"].detach()) == pytest.approx(float(by_hand.detach()), rel=1e-12)
        seen.append((weights.energy_weight, weights.forces_weight))
        return terms

    monkeypatch.setattr(trainer, "loss_terms", recording)
    lines = []
    train(cfg, tmp_path, progress=False, log=lines.append)
    assert any("loss weights anneal with the learning rate: energy 1 → 100, forces 100 → 1" in s for s in lines)
    steps = math.ceil(24 / 8)  # 30 structures, 20 % validation, batches of 8
    expected = [(1.0, 100.0)] * (1 + 2 * steps)  # grad_init.json, the warm-up epoch and epoch 2
    for r in (0.75, 0.25):
        expected += [(100.0 - 99.0 * r, 1.0 + 99.0 * r)] * steps
    assert seen[:1 + 2 * steps] == expected[:1 + 2 * steps]  # the start weights exactly
    assert seen == [pytest.approx(w) for w in expected]
    final = cfg.loss.weights_at(0.0)
    for row in rows(tmp_path / "metrics.csv"):
        val = {k: float(row[f"val_{k}"]) if row[f"val_{k}"] else None for k in METRIC_COLUMNS}
        assert float(row["val_loss"]) == pytest.approx(loss_from_metrics(val, final), rel=1e-12)
        assert float(row["val_loss"]) == pytest.approx(loss_from_metrics(val, cfg.loss), rel=1e-12)


def test_resume_with_annealing_is_bit_identical(dataset, tmp_path):
    """4 epochs straight == 2, then resumed to 4 (float64, CPU), with the weights annealed by
    an exponential schedule after a warm-up epoch (its lr does not depend on the epoch budget)."""
    schedule = {"name": "exponential", "warmup_epochs": 1, "gamma": 0.6}
    straight = annealed(dataset, DEEPMD, schedule, epochs=4, ema_decay=0.8, grad_clip=5.0)
    part = replace(straight, training=replace(straight.training, epochs=2))
    train(straight, tmp_path / "a", progress=False, log=lambda _: None)
    train(part, tmp_path / "b", progress=False, log=lambda _: None)
    train(straight, tmp_path / "b", resume=True, progress=False, log=lambda _: None)
    a, b = load_checkpoint(tmp_path / "a" / "last.pt"), load_checkpoint(tmp_path / "b" / "last.pt")
    assert a["epoch"] == b["epoch"] == 4
    for k in a["model"]:
        assert torch.equal(a["model"][k], b["model"][k]), k
    ra, rb = rows(tmp_path / "a" / "metrics.csv"), rows(tmp_path / "b" / "metrics.csv")
    for x, y in zip(ra, rb, strict=True):
        x.pop("wall_s"), y.pop("wall_s")
        assert x == y
    # and the annealing did change the run: constant start weights train another model
    constant = annealed(dataset, {"energy_weight": 1.0, "forces_weight": 100.0}, schedule, epochs=4, ema_decay=0.8,
                        grad_clip=5.0)
    train(constant, tmp_path / "c", progress=False, log=lambda _: None)
    c = load_checkpoint(tmp_path / "c" / "last.pt")
    assert rows(tmp_path / "c" / "metrics.csv")[1]["train_loss"] == ra[1]["train_loss"]  # r = 1 in epochs 1, 2
    assert not all(torch.equal(a["model"][k], c["model"][k]) for k in a["model"])


def test_each_stacked_member_with_annealing_equals_its_lone_run(dataset, tmp_path):
    """Members of one stack whose schedules differ anneal with their own learning rates."""
    configs = [annealed(dataset, DEEPMD, COSINE, epochs=4, seed=0, ema_decay=0.9),
               annealed(dataset, DEEPMD, {"name": "exponential", "gamma": 0.5}, epochs=3, seed=1),
               annealed(dataset, DEEPMD, {"name": "exponential", "gamma": 0.5}, epochs=3, seed=1)]
    configs[2] = replace(configs[2], optimizer=replace(configs[2].optimizer, lr=2e-3))
    lines = []
    results = train_many(configs, [tmp_path / f"many{k}" for k in range(3)], progress=False, log=lines.append)
    assert sum("loss weights anneal" in s for s in lines) == 3
    for k, c in enumerate(configs):
        lone = train(c, tmp_path / f"lone{k}", progress=False, log=lambda _: None)
        assert_same_run(tmp_path / f"many{k}", tmp_path / f"lone{k}")
        assert results[k]["best_epoch"] == lone["best_epoch"] and results[k]["error"] is None
