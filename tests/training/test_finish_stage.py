"""A run with a ``finish:`` section: the first stage, then a finish from its model in
``<run>/finish``, whose model becomes the run's. The two stages together are checked against
the same two trainings done by hand (a run, then a warm-started L-BFGS run), weight for
weight; a stopped run resumes at the stage where it stopped; a finish left by an earlier run
is never taken for a new one's; bad finish settings are refused by name."""

from __future__ import annotations

import json

import pytest
import torch
from test_training_run import config, rows
from test_training_run import dataset as dataset  # noqa: F401  (the module-scoped fixture)
from test_warm_start import changed

from mlpot.config import ConfigError
from mlpot.training import TrainConfig, train
from mlpot.training.many import train_many

pytestmark = pytest.mark.usefixtures("one_thread")

FINISH = {"epochs": 2, "optimizer": {"name": "lbfgs", "lr": 1.0, "lbfgs": {"max_iter": 4}},
          "loss": {"forces_weight": 20.0}}


def with_finish(dataset, finish: dict | None = None, **training) -> TrainConfig:  # noqa: F811
    """The small test run (3 epochs of Adam, a test set) with a finish."""
    base = changed(config(dataset, **training), data={"test": str(dataset / "test.extxyz")})
    return TrainConfig.from_dict({**base.to_dict(), "finish": FINISH if finish is None else finish})


def weights(path) -> dict[str, torch.Tensor]:
    """The weights of a model file or checkpoint."""
    saved = torch.load(path, weights_only=False, map_location="cpu")
    return saved["model"] if "model" in saved else saved["state_dict"]


def assert_same_weights(a, b) -> None:
    wa, wb = weights(a), weights(b)
    assert wa.keys() == wb.keys()
    for name in wa:
        torch.testing.assert_close(wa[name], wb[name], rtol=0, atol=0, msg=name)


def quiet(_: str) -> None:
    pass


def test_finish_stage_config(dataset):  # noqa: F811
    cfg = changed(with_finish(dataset), loss={"forces_weight": 3.0, "forces_weight_start": 100.0,
                                              "stress_weight": 7.0},
                  schedule={"name": "cosine", "warmup_epochs": 1}, training={"ema_decay": 0.9, "grad_clip": 5.0})
    stage = cfg.finish_stage("first/model.pt")
    assert stage.finish is None and stage.optimizer == cfg.finish.optimizer
    assert (stage.schedule.name, stage.schedule.warmup_epochs) == ("none", 0)
    opts = stage.training
    assert (opts.epochs, opts.dtype, opts.ema_decay, opts.grad_clip, opts.init_weights) == (
        2, "float64", 0.0, 0.0, "first/model.pt")
    # The finish's own weights replace the first stage's; the others are its final weights.
    assert (stage.loss.forces_weight, stage.loss.forces_weight_start, stage.loss.stress_weight) == (20.0, None, 7.0)
    assert (stage.model, stage.descriptor, stage.data) == (cfg.model, cfg.descriptor, cfg.data)


@pytest.mark.parametrize(("finish", "message"), [
    ({"loss": {"forces_weigth": 1.0}}, r"finish: unknown config key\(s\): loss.forces_weigth"),
    ({"epochs": 0}, "finish.epochs: must be >= 1"),
    ({"optimizer": {"name": "lbfgs", "weight_decay": 0.1}},
     "finish.optimizer: optimizer.weight_decay: does not apply to optimizer.name lbfgs"),
    ({"optimizer": {"name": "kalman"}, "loss": {"huber": {"forces": 0.1}}},
     "finish: loss.huber: does not apply to optimizer.name kalman"),
    ({"loss": {"stress_weight": -1.0}}, "finish: loss.stress_weight: must be a finite number >= 0"),
    ({"dtype": "float16"}, "finish.dtype: 'float16' is not one of"),
    ({"steps": 3}, r"unknown config key\(s\): finish.steps"),
])
def test_bad_finish_settings_are_refused_by_name(dataset, finish, message):  # noqa: F811
    with pytest.raises(ConfigError, match=message):
        with_finish(dataset, finish)


def test_a_finish_is_the_first_stage_then_a_warm_started_run(dataset, tmp_path):  # noqa: F811
    cfg = with_finish(dataset)
    lines = []
    result = train(cfg, tmp_path / "run", progress=False, log=lines.append)
    run = tmp_path / "run"

    # By hand: the first stage alone, then its finish started from its model.
    first = TrainConfig.from_dict({**cfg.to_dict(), "finish": None})
    train(first, tmp_path / "first", progress=False, log=quiet)
    train(cfg.finish_stage(tmp_path / "first" / "model.pt"), tmp_path / "second", progress=False, log=quiet)

    assert_same_weights(run / "finish" / "start.pt", tmp_path / "first" / "model.pt")
    assert_same_weights(run / "model.pt", tmp_path / "second" / "model.pt")
    assert_same_weights(run / "finish" / "model.pt", run / "model.pt")
    test = json.loads((run / "test_metrics.json").read_text())
    assert test == json.loads((tmp_path / "second" / "test_metrics.json").read_text())
    assert test != json.loads((tmp_path / "first" / "test_metrics.json").read_text())
    assert result["epochs"] == 2 and result["first_stage"]["epochs"] == 3
    assert len(rows(run / "metrics.csv")) == 3 and len(rows(run / "finish" / "metrics.csv")) == 2
    assert any(line.startswith("finish: 2 epochs of lbfgs in float64") for line in lines)
    assert any(line.startswith("[finish] epoch 2/2") for line in lines)


def test_a_stopped_finish_resumes_and_a_finished_run_is_not_retrained(dataset, tmp_path):  # noqa: F811
    straight, split = tmp_path / "straight", tmp_path / "split"
    train(with_finish(dataset), straight, progress=False, log=quiet)
    train(with_finish(dataset, {**FINISH, "epochs": 1}), split, progress=False, log=quiet)
    first_model = (split / "finish" / "start.pt").read_bytes()
    result = train(with_finish(dataset), split, resume=True, progress=False, log=quiet)
    assert result["first_stage"] is None  # finished before: not trained again
    assert (split / "finish" / "start.pt").read_bytes() == first_model
    assert_same_weights(split / "model.pt", straight / "model.pt")
    assert [r["epoch"] for r in rows(split / "finish" / "metrics.csv")] == ["1", "2"]

    model = (split / "model.pt").read_bytes()
    lines = []
    again = train(with_finish(dataset), split, resume=True, progress=False, log=lines.append)
    assert again["epochs"] == 2 and (split / "model.pt").read_bytes() == model
    assert not any("epoch" in line and "/" in line for line in lines)  # nothing trained


def test_a_first_stage_resumed_with_a_finish_added(dataset, tmp_path):  # noqa: F811
    plain = TrainConfig.from_dict({**with_finish(dataset).to_dict(), "finish": None})
    train(changed(plain, training={"epochs": 2}), tmp_path, progress=False, log=quiet)
    result = train(with_finish(dataset), tmp_path, resume=True, progress=False, log=quiet)
    assert result["first_stage"]["epochs"] == 3 and result["epochs"] == 2
    assert (tmp_path / "finish" / "result.json").is_file()


def test_overwrite_discards_the_earlier_finish(dataset, tmp_path):  # noqa: F811
    train(with_finish(dataset, {**FINISH, "epochs": 1}), tmp_path, progress=False, log=quiet)
    old_start = weights(tmp_path / "finish" / "start.pt")
    with pytest.raises(ValueError, match="already holds a training run"):
        train(with_finish(dataset, seed=1), tmp_path, progress=False, log=quiet)
    assert (tmp_path / "finish" / "result.json").is_file()  # a refused start removed nothing
    train(with_finish(dataset, seed=1), tmp_path, overwrite=True, progress=False, log=quiet)
    new_start = weights(tmp_path / "finish" / "start.pt")
    assert any(not torch.equal(old_start[k], new_start[k]) for k in old_start)
    assert len(rows(tmp_path / "finish" / "metrics.csv")) == 2


def test_many_models_train_their_first_stages_together_then_finish_alone(dataset, tmp_path):  # noqa: F811
    configs = [with_finish(dataset, seed=s) for s in (0, 1)]
    outs = [tmp_path / f"seed{s}" for s in (0, 1)]
    results = train_many(configs, outs, progress=False, log=quiet)
    for out, result in zip(outs, results):
        assert result["error"] is None and result["members"] == 2
        assert result["first_stage"]["epochs"] == 3 and result["epochs"] == 2
        assert_same_weights(out / "finish" / "model.pt", out / "model.pt")
        assert json.loads((out / "test_metrics.json").read_text()) == result["test"]
    lone = tmp_path / "lone"
    train(configs[1], lone, progress=False, log=quiet)
    lone_test = json.loads((lone / "test_metrics.json").read_text())
    for key in ("energy_rmse_mev_per_atom", "force_rmse_mev_per_a"):
        assert results[1]["test"][key] == pytest.approx(lone_test[key], rel=1e-6), key
    # A resume after both finished trains nothing again.
    again = train_many(configs, outs, resume=True, progress=False, log=quiet)
    assert [r["first_stage"] for r in again] == [None, None] and [r["members"] for r in again] == [0, 0]
