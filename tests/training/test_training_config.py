"""Training config: defaults, strict keys, value checks and command-line overrides."""

from __future__ import annotations

import pytest
import yaml

from mlpot.config import ConfigError
from mlpot.training.config import TrainConfig, apply_overrides


def minimal(**sections) -> dict:
    return {"data": {"train": "train.extxyz"}, **sections}


def test_defaults_and_round_trip(tmp_path):
    cfg = TrainConfig.from_dict(minimal())
    assert cfg.training.epochs == 100 and cfg.training.batch_size == 16
    assert cfg.loss.forces_weight == 10.0 and cfg.scaling.range == (-1.0, 1.0)
    assert cfg.optimizer.name == "adam" and cfg.schedule.name == "none"
    assert TrainConfig.from_dict(cfg.to_dict()) == cfg
    cfg.save(tmp_path / "config.yaml")
    assert TrainConfig.from_yaml(tmp_path / "config.yaml") == cfg


@pytest.mark.parametrize("data, key", [
    (minimal(trainig={"epochs": 3}), "trainig"),
    (minimal(training={"epoch": 3}), "training.epoch"),
    (minimal(model={"widht": 3}), "model.widht"),
    ({"data": {"train": "x", "val_frac": 0.2}}, "data.val_frac"),
    (minimal(descriptor={"cutof": 4.0}), "descriptor.cutof"),
])
def test_unknown_key_is_named(data, key):
    with pytest.raises(ConfigError, match=rf"\b{key.replace('.', '[.]')}\b"):
        TrainConfig.from_dict(data)


@pytest.mark.parametrize("data, key", [
    (minimal(training={"epochs": 0}), "training.epochs"),
    (minimal(training={"batch_size": "many"}), "training.batch_size"),
    (minimal(training={"dtype": "float16"}), "training.dtype"),
    (minimal(training={"device": "tpu"}), "training.device"),
    (minimal(training={"ema_decay": 1.0}), "training.ema_decay"),
    (minimal(optimizer={"name": "sgd"}), "optimizer.name"),
    (minimal(optimizer={"lr": -1.0}), "optimizer.lr"),
    (minimal(loss={"forces_weight": -1.0}), "loss.forces_weight"),
    (minimal(loss={"group_weights": {"Surface": 2.0}}), "loss.group_weights: needs loss.weight_by"),
    (minimal(loss={"weight_by": "group", "group_weights": {"Surface": -1.0}}), "loss.group_weights.Surface"),
    (minimal(loss={"weight_by": "group", "group_weights": {"Surface": float("inf")}}), "loss.group_weights.Surface"),
    (minimal(loss={"weight_by": "group", "group_weights": {"Surface": float("nan")}}), "loss.group_weights.Surface"),
    (minimal(loss={"weight_by": "group", "group_weights": {"Elastic": "heavy"}}), "loss.group_weights.Elastic"),
    (minimal(loss={"weight_by": "group", "group_weights": {"Elastic": True}}), "loss.group_weights.Elastic"),
    (minimal(loss={"weight_by": "group", "group_weights": [2.0]}), "loss.group_weights"),
    (minimal(loss={"weight_by": ""}), "loss.weight_by"),
    (minimal(loss={"weight_by": 3}), "loss.weight_by"),
    (minimal(schedule={"name": "step"}), "schedule.name"),
    (minimal(scaling={"mode": "minmax"}), "scaling.mode"),
    (minimal(scaling={"range": [1, -1]}), "scaling.range"),
    ({"data": {"train": "x", "val_fraction": 1.5}}, "data.val_fraction"),
    ({"data": {"test": "x"}}, "data.train"),
    ({}, "data.train"),
    (minimal(model={"depth": 0}), "model.depth"),
    (minimal(descriptor={"elements": ["Cu"], "cutoff": -1.0}), "descriptor"),
])
def test_bad_value_is_named(data, key):
    with pytest.raises(ValueError, match=key.replace(".", "[.]")):
        TrainConfig.from_dict(data)


def test_from_yaml_with_overrides(tmp_path):
    path = tmp_path / "run.yaml"
    path.write_text(yaml.safe_dump(minimal(training={"epochs": 50})))
    cfg = TrainConfig.from_yaml(path, ["training.epochs=5", "data.train=x.json", "model.hidden=[8, 8]",
                                       "optimizer.lr=3e-4", "data.test=null", "schedule.name=cosine"])
    assert cfg.training.epochs == 5
    assert cfg.data.train == "x.json" and cfg.data.test is None
    assert cfg.model.hidden == (8, 8)
    assert cfg.optimizer.lr == 3e-4 and cfg.schedule.name == "cosine"


@pytest.mark.parametrize("override, needle", [
    ("training.epoch=5", "training.epoch"),
    ("trainin.epochs=5", "trainin"),
    ("training", "key.path=value"),
    ("=5", "key.path=value"),
    ("data.train.x=1", "data.train"),
    ("training.epochs=[", "training.epochs"),
])
def test_bad_override_is_named(override, needle):
    with pytest.raises(ConfigError, match=needle.replace(".", "[.]")):
        apply_overrides(minimal(), [override])


def test_override_value_is_type_checked(tmp_path):
    path = tmp_path / "run.yaml"
    path.write_text(yaml.safe_dump(minimal()))
    with pytest.raises(ConfigError, match="training[.]epochs"):
        TrainConfig.from_yaml(path, ["training.epochs=five"])


def test_free_form_sections_take_any_key():
    data = apply_overrides(minimal(), ["data.read_options.stress_order=xx yy zz xy zx yz",
                                       "descriptor.cutoff=4.5"])
    assert data["data"]["read_options"] == {"stress_order": "xx yy zz xy zx yz"}
    assert data["descriptor"] == {"cutoff": 4.5}


def test_data_path_found_beside_the_config(tmp_path, monkeypatch):
    folder = tmp_path / "cfg"
    folder.mkdir()
    (folder / "train.extxyz").write_text("")
    (folder / "run.yaml").write_text(yaml.safe_dump(minimal()))
    monkeypatch.chdir(tmp_path)
    cfg = TrainConfig.from_yaml(folder / "run.yaml")
    assert cfg.data.train == str(folder / "train.extxyz")


def test_missing_config_file(tmp_path):
    with pytest.raises(FileNotFoundError, match="nope.yaml"):
        TrainConfig.from_yaml(tmp_path / "nope.yaml")


def test_descriptor_without_elements_takes_data_elements():
    cfg = TrainConfig.from_dict(minimal(descriptor={"cutoff": 4.0, "radial": [{"eta": 0.5}]}))
    spec = cfg.descriptor_spec(["Cu", "Au"])
    assert spec.elements == ("Cu", "Au") and spec.cutoff == 4.0
    default = TrainConfig.from_dict(minimal(descriptor_cutoff=4.5)).descriptor_spec(["Ni"])
    assert default.cutoff == 4.5 and default.elements == ("Ni",)


def test_check_labels_switch():
    assert TrainConfig.from_dict(minimal()).training.check_labels is True
    assert TrainConfig.from_dict(minimal(training={"check_labels": False})).training.check_labels is False
    with pytest.raises(ConfigError, match=r"training\.check_labels"):
        TrainConfig.from_dict(minimal(training={"check_labels": "maybe"}))
    # It decides whether a run starts, never what it computes: a resume and a finished
    # ablation run may differ in it.
    from mlpot.training.config import RESULT_NEUTRAL_TRAINING_OPTIONS

    assert "check_labels" in RESULT_NEUTRAL_TRAINING_OPTIONS


def test_group_weights_parse_round_trip_and_override(tmp_path):
    assert TrainConfig.from_dict(minimal()).loss.weight_by is None
    path = tmp_path / "run.yaml"
    # YAML reads 1e-1 (no dot) as a string and the label 3 as an int: both are normalised.
    path.write_text("data: {train: train.extxyz}\nloss: {weight_by: group, group_weights: {Surface: 1e-1, 3: 2}}\n")
    cfg = TrainConfig.from_yaml(path)
    assert cfg.loss.weight_by == "group" and cfg.loss.group_weights == {"Surface": 0.1, "3": 2.0}
    assert TrainConfig.from_dict(cfg.to_dict()) == cfg
    cfg.save(tmp_path / "saved.yaml")
    assert TrainConfig.from_yaml(tmp_path / "saved.yaml") == cfg
    over = TrainConfig.from_yaml(path, ["loss.group_weights.Elastic=0", "loss.weight_by=kind"])
    assert over.loss.group_weights == {"Surface": 0.1, "3": 2.0, "Elastic": 0.0} and over.loss.weight_by == "kind"
    # A zero weight alone is valid (it leaves that group out); an all-zero training split
    # is refused at run time, where the groups are known.
    TrainConfig.from_dict(minimal(loss={"weight_by": "group", "group_weights": {"Surface": 0}}))
