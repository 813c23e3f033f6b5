"""End-to-end training on a tiny EMT Cu/Au set: learning, resume, NaN stop, early stop, CLI."""

from __future__ import annotations

import csv
import json

import ase.io
import numpy as np
import pytest
import torch
import yaml
from ase.build import bulk
from ase.calculators.emt import EMT

import mlpot
from mlpot.cli import main
from mlpot.training import TrainConfig, TrainingError, load_checkpoint, train
from mlpot.training.trainer import METRIC_COLUMNS


pytestmark = pytest.mark.usefixtures("one_thread")


def emt_structures(n: int, seed: int):
    """Rattled, strained 4-atom fcc Cu/Au cells labelled by EMT (energy, forces, stress)."""
    rng = np.random.default_rng(seed)
    out = []
    for _ in range(n):
        atoms = bulk("Cu", "fcc", a=3.75, cubic=True)
        atoms.numbers[rng.permutation(4)[: rng.integers(1, 4)]] = 79
        atoms.set_cell(atoms.cell * rng.uniform(0.98, 1.03), scale_atoms=True)
        atoms.positions += rng.normal(0, 0.1, atoms.positions.shape)
        atoms.calc = EMT()
        atoms.get_stress()
        out.append(atoms)
    return out


@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
    folder = tmp_path_factory.mktemp("data")
    ase.io.write(folder / "train.extxyz", emt_structures(30, seed=0))
    ase.io.write(folder / "test.extxyz", emt_structures(6, seed=1))
    return folder


def config(dataset, **training) -> TrainConfig:
    return TrainConfig.from_dict({
        "data": {"train": str(dataset / "train.extxyz"), "val_fraction": 0.2},
        "descriptor": {"cutoff": 4.0, "cutoff_function": "poly2",
                       "radial": [{"grid": {"count": 5, "mode": "shift", "r_lower": 1.5}}],
                       "angular": [{"kind": "G5", "zetas": [1], "lambdas": [-1, 1], "eta": 0.05}]},
        "model": {"depth": 2, "width": 8},
        "optimizer": {"lr": 5e-3},
        "training": {"epochs": 3, "batch_size": 8, "dtype": "float64", **training},
    })


def rows(path):
    with open(path, newline="") as fh:
        return list(csv.DictReader(fh))


def test_training_reduces_validation_loss(dataset, tmp_path):
    cfg = config(dataset, epochs=8)
    cfg = TrainConfig.from_dict({**cfg.to_dict(), "data": {**cfg.to_dict()["data"],
                                                            "test": str(dataset / "test.extxyz")}})
    lines = []
    result = train(cfg, tmp_path, progress=False, log=lines.append)
    history = rows(tmp_path / "metrics.csv")
    assert len(history) == 8 and [int(r["epoch"]) for r in history] == list(range(1, 9))
    val = [float(r["val_loss"]) for r in history]
    assert min(val[-3:]) < 0.7 * val[0], val
    assert result["best_epoch"] == 1 + int(np.argmin(val))
    assert result["best_val_loss"] == pytest.approx(min(val))
    assert sum(line.startswith("epoch") for line in lines) == 8
    for name in ("config.yaml", "split.json", "last.pt", "best.pt", "model.pt", "test_metrics.json"):
        assert (tmp_path / name).is_file(), name
    model = mlpot.load(tmp_path / "model.pt")
    assert model.metadata["epoch"] == result["best_epoch"]
    assert model.metadata["config"] == cfg.to_dict()
    test = json.loads((tmp_path / "test_metrics.json").read_text())
    assert test["n_structures"] == 6 and test["force_rmse_mev_per_a"] > 0
    assert test["stress_rmse_gpa"] is not None  # the test set has stress labels
    assert TrainConfig.from_yaml(tmp_path / "config.yaml") == cfg


def test_training_without_a_validation_set_keeps_the_lowest_training_loss(dataset, tmp_path):
    """data.val_fraction 0 (the mlearn recipe's): every structure is trained on, no val row
    is written, and the model kept is the epoch of the lowest training loss, computed here
    from the training columns of metrics.csv with the same weights."""
    from mlpot.training import loss_from_metrics

    base = config(dataset, epochs=6).to_dict()
    cfg = TrainConfig.from_dict({**base, "data": {**base["data"], "val_fraction": 0.0}})
    lines = []
    result = train(cfg, tmp_path, progress=False, log=lines.append)
    split = json.loads((tmp_path / "split.json").read_text())
    assert len(split["train"]) == 30 and split["val"] == []
    history = rows(tmp_path / "metrics.csv")
    assert len(history) == 6 and all(r["val_loss"] == "" for r in history)
    selection = [loss_from_metrics({k: float(r[f"train_{k}"]) for k in METRIC_COLUMNS if r[f"train_{k}"] != ""},
                                   cfg.loss)
                 for r in history]
    assert result["best_epoch"] == 1 + int(np.argmin(selection))
    assert result["best_val_loss"] == pytest.approx(min(selection), rel=1e-12)
    assert torch.load(tmp_path / "model.pt", weights_only=False)["metadata"]["epoch"] == result["best_epoch"]
    assert any("no validation set" in line for line in lines)


def test_resume_is_bit_identical(dataset, tmp_path):
    """4 epochs straight == 2 epochs, then resume to 4 (float64, CPU), with EMA, clipping,
    warm-up + plateau and stochastic depth (so the RNG state matters)."""
    extra = {"ema_decay": 0.8, "grad_clip": 5.0}
    base = config(dataset, epochs=4, **extra).to_dict()
    base["model"] = {"depth": 3, "width": 8, "block": "residual", "survival": 0.7}
    base["schedule"] = {"name": "plateau", "warmup_epochs": 1, "patience": 0, "factor": 0.7}
    straight, part = TrainConfig.from_dict(base), TrainConfig.from_dict(
        {**base, "training": {**base["training"], "epochs": 2}})
    train(straight, tmp_path / "a", progress=False, log=lambda s: None)
    train(part, tmp_path / "b", progress=False, log=lambda s: None)
    assert len(rows(tmp_path / "b" / "metrics.csv")) == 2
    train(straight, tmp_path / "b", resume=True, progress=False, log=lambda s: None)
    a, b = load_checkpoint(tmp_path / "a" / "last.pt"), load_checkpoint(tmp_path / "b" / "last.pt")
    assert a["epoch"] == b["epoch"] == 4
    assert a["model"].keys() == b["model"].keys()
    for k in a["model"]:
        assert torch.equal(a["model"][k], b["model"][k]), k
    for k in a["ema"]["shadow"]:
        assert torch.equal(a["ema"]["shadow"][k], b["ema"]["shadow"][k]), k
    assert a["schedule"] == b["schedule"] and a["best_val_loss"] == b["best_val_loss"]
    ma, mb = mlpot.load(tmp_path / "a" / "model.pt"), mlpot.load(tmp_path / "b" / "model.pt")
    for (k, v), w in zip(ma.state_dict().items(), mb.state_dict().values()):
        assert torch.equal(v, w), k
    ra, rb = rows(tmp_path / "a" / "metrics.csv"), rows(tmp_path / "b" / "metrics.csv")
    assert len(ra) == len(rb) == 4
    for x, y in zip(ra, rb):
        x.pop("wall_s"), y.pop("wall_s")
        assert x == y


def test_checkpoint_of_an_older_mlpot_resumes(dataset, tmp_path):
    """A checkpoint whose config lacks a key added to mlpot later (here ``model.stem``) resumes:
    the missing key means its default, which that run trained with. A real change is refused."""
    train(config(dataset, epochs=2), tmp_path, progress=False, log=lambda s: None)
    checkpoint = torch.load(tmp_path / "last.pt", weights_only=False)
    del checkpoint["config"]["model"]["stem"]
    torch.save(checkpoint, tmp_path / "last.pt")
    result = train(config(dataset, epochs=3), tmp_path, resume=True, progress=False, log=lambda s: None)
    assert result["epochs"] == 3
    changed = TrainConfig.from_dict({**config(dataset, epochs=4).to_dict(), "model": {"depth": 2, "width": 9}})
    with pytest.raises(ValueError, match=r"model\.width"):
        train(changed, tmp_path, resume=True, progress=False, log=lambda s: None)


def test_nan_loss_stops_and_keeps_last_good_epoch(dataset, tmp_path, monkeypatch):
    import mlpot.training.trainer as trainer

    cfg = config(dataset, epochs=4)
    steps_per_epoch = 3  # 24 training structures, batch 8
    calls = {"n": 0}
    real = trainer.loss_terms

    def poisoned(pred, batch, weights):
        calls["n"] += 1
        terms = real(pred, batch, weights)
        # Call 1 measures the gradients at initialisation (grad_init.json); then the steps.
        if calls["n"] == 1 + steps_per_epoch + 2:  # second step of epoch 2
            terms["forces"] = terms["forces"] * float("nan")
            terms["total"] = terms["total"] + terms["forces"]
        return terms

    monkeypatch.setattr(trainer, "loss_terms", poisoned)
    with pytest.raises(TrainingError, match=r"non-finite training loss.*epoch 2, step 2.*forces=nan"):
        train(cfg, tmp_path, progress=False, log=lambda s: None)
    assert load_checkpoint(tmp_path / "last.pt")["epoch"] == 1
    assert load_checkpoint(tmp_path / "best.pt")["epoch"] == 1
    assert mlpot.load(tmp_path / "model.pt").metadata["epoch"] == 1
    assert len(rows(tmp_path / "metrics.csv")) == 1


def test_early_stopping(dataset, tmp_path, monkeypatch):
    import mlpot.training.trainer as trainer

    losses = iter([1.0, 0.5, 0.6, 0.7, 0.8, 0.9, 1.0, 1.1])
    monkeypatch.setattr(trainer, "loss_from_metrics", lambda metrics, weights: next(losses))
    result = train(config(dataset, epochs=8, early_stopping_patience=2), tmp_path, progress=False,
                   log=lambda s: None)
    assert result["stopped_early"] and result["epochs"] == 4 and result["best_epoch"] == 2
    assert mlpot.load(tmp_path / "model.pt").metadata["epoch"] == 2
    assert load_checkpoint(tmp_path / "last.pt")["epoch"] == 4


def test_early_stopping_min_delta_stops_a_creeping_run(dataset, tmp_path, monkeypatch):
    """A loss that creeps down 1 % per epoch never stops with min_delta 0 (every epoch is a
    new best) but does with min_delta 0.05: no epoch is 5 % below the one that counted."""
    import mlpot.training.trainer as trainer

    for min_delta, stopped, epochs in ((0.0, False, 6), (0.05, True, 3)):
        losses = iter([1.0 * 0.99 ** k for k in range(6)])
        monkeypatch.setattr(trainer, "loss_from_metrics", lambda metrics, weights: next(losses))
        lines = []
        result = train(config(dataset, epochs=6, early_stopping_patience=2, early_stopping_min_delta=min_delta),
                       tmp_path / str(min_delta), progress=False, log=lines.append)
        assert (result["stopped_early"], result["epochs"], result["best_epoch"]) == (stopped, epochs, epochs)
        assert any("improvement of 5 % or more in 2 epochs" in line for line in lines) == stopped
    with pytest.raises(ValueError, match="early_stopping_min_delta"):
        config(dataset, early_stopping_min_delta=1.0)


def test_run_folder_guards(dataset, tmp_path):
    cfg = config(dataset, epochs=1)
    with pytest.raises(FileNotFoundError, match="last.pt"):
        train(cfg, tmp_path, resume=True, progress=False, log=lambda s: None)
    train(cfg, tmp_path, progress=False, log=lambda s: None)
    with pytest.raises(ValueError, match="already holds a training run"):
        train(cfg, tmp_path, progress=False, log=lambda s: None)
    changed = TrainConfig.from_dict({**cfg.to_dict(), "model": {"depth": 2, "width": 9}})
    with pytest.raises(ValueError, match=r"model\.width"):
        train(changed, tmp_path, resume=True, progress=False, log=lambda s: None)


def test_cli_train(dataset, tmp_path, capsys):
    cfg = config(dataset, epochs=5).to_dict()
    path = tmp_path / "tiny.yaml"
    path.write_text(yaml.safe_dump(cfg))
    out = tmp_path / "run"
    rc = main(["train", str(path), "--out", str(out), "--no-progress", "--set", "training.epochs=2",
               "loss.forces_weight=5"])
    printed = capsys.readouterr().out
    assert rc == 0, printed
    assert str(out / "model.pt") in printed and str(out / "metrics.csv") in printed
    model = mlpot.load(out / "model.pt")
    batch_energy = model(mlpot.data.collate(emt_structures(2, seed=5)), forces=True)["energy"]
    assert batch_energy.shape == (2,) and torch.isfinite(batch_energy).all()
    saved = TrainConfig.from_yaml(out / "config.yaml")
    assert saved.training.epochs == 2 and saved.loss.forces_weight == 5.0
    with open(out / "metrics.csv", newline="") as fh:
        header = next(csv.reader(fh))
    expected = (["epoch", "lr", "wall_s", "train_loss", "val_loss"]
                + [f"{s}_{k}" for s in ("train", "val") for k in METRIC_COLUMNS] + ["grad_norm/total"])
    assert header[: len(expected)] == expected
    grad = header[len(expected):]
    assert "grad_norm/Cu.blocks.0.linear.weight" in grad and "grad_norm/Au.readout.bias" in grad
    assert len(grad) == len(list(model.parameters()))
    assert len(rows(out / "metrics.csv")) == 2


def test_cli_reports_bad_override(dataset, tmp_path, capsys):
    path = tmp_path / "tiny.yaml"
    path.write_text(yaml.safe_dump(config(dataset).to_dict()))
    rc = main(["train", str(path), "--out", str(tmp_path / "run"), "--set", "training.epoch=2"])
    assert rc == 2
    assert "training.epoch" in capsys.readouterr().err


def test_descriptor_cache_gives_the_same_training(dataset, tmp_path):
    """Cached (G, ∂G/∂r) and recomputed descriptors: the same losses and metrics every epoch."""
    histories = []
    for mode in ("memory", "none"):
        cfg = TrainConfig.from_dict({**config(dataset, descriptor_cache=mode).to_dict(),
                                     "loss": {"energy_weight": 1.0, "forces_weight": 10.0, "stress_weight": 1.0}})
        train(cfg, tmp_path / mode, progress=False, log=lambda _: None)
        histories.append(rows(tmp_path / mode / "metrics.csv"))
    keys = ["train_loss", "val_loss", "val_energy_rmse_mev_per_atom", "val_force_rmse_mev_per_a",
            "val_stress_rmse_gpa"]
    for cached, direct in zip(*histories):
        for key in keys:
            assert float(cached[key]) == pytest.approx(float(direct[key]), rel=1e-9), key


def test_descriptor_cache_too_large_falls_back(dataset, tmp_path):
    lines = []
    cfg = config(dataset, epochs=1, descriptor_cache_max_gib=1e-9)
    train(cfg, tmp_path, progress=False, log=lines.append)
    assert any("recomputed every step" in line for line in lines)
    assert not any(line.startswith("descriptor cache:") for line in lines)


# ---------------------------------------------------------------------- input checked before anything is written
def write_with_label(dataset, tmp_path, energy):
    """train.extxyz of ``dataset`` with structure 5's energy replaced."""
    structures = ase.io.read(dataset / "train.extxyz", index=":")
    structures[5].calc.results["energy"] = energy
    path = tmp_path / "labels.extxyz"
    ase.io.write(path, structures)
    return path


def with_data(cfg: TrainConfig, **data) -> TrainConfig:
    d = cfg.to_dict()
    return TrainConfig.from_dict({**d, "data": {**d["data"], **data}})


def test_absurd_label_is_refused_before_anything_is_written(dataset, tmp_path):
    from mlpot.data import DataError

    cfg = with_data(config(dataset, epochs=1), train=str(write_with_label(dataset, tmp_path, 1e30)))
    out = tmp_path / "run"
    with pytest.raises(DataError, match=r"labels\.extxyz, structure 5: energy per atom \(total 1e\+30 eV\)"):
        train(cfg, out, progress=False, log=lambda s: None)
    assert not out.exists()
    off = TrainConfig.from_dict({**cfg.to_dict(), "training": {**cfg.to_dict()["training"], "check_labels": False}})
    train(off, out, progress=False, log=lambda s: None)  # the user who means it
    assert (out / "model.pt").is_file()


def test_config_errors_found_late_leave_no_files(dataset, tmp_path):
    out = tmp_path / "run"
    named = config(dataset, epochs=1).to_dict()
    named["descriptor"]["elements"] = ["Cu"]  # the data hold Au too
    with pytest.raises(ValueError, match=r"train\.extxyz, structure 0: element\(s\) \['Au'\] are not among"):
        train(TrainConfig.from_dict(named), out, progress=False, log=lambda s: None)
    mlpot.data.Split(train=(0, 1), val=(2,)).save(tmp_path / "split.json")
    with pytest.raises(ValueError, match="split has n_total=3"):
        train(with_data(config(dataset, epochs=1), split_file=str(tmp_path / "split.json")), out,
              progress=False, log=lambda s: None)
    bad_test = tmp_path / "test.xyz"
    bad_test.write_text("3000000000\n\nCu 0 0 0\n")
    with pytest.raises(mlpot.data.DataError, match=r"test\.xyz, line 1"):
        train(with_data(config(dataset, epochs=1), test=str(bad_test)), out, progress=False, log=lambda s: None)
    assert not out.exists()


def test_occupied_folder_names_the_flags_and_the_model(dataset, tmp_path):
    cfg = config(dataset, epochs=1)
    train(cfg, tmp_path, progress=False, log=lambda s: None)
    with pytest.raises(ValueError, match=r"already holds a training run, finished after 1 epoch \(its model is "
                                         r".*model\.pt\); --resume with a larger training\.epochs extends it; "
                                         r"or start afresh over it with --overwrite, or choose another --out"):
        train(cfg, tmp_path, progress=False, log=lambda s: None)
    # A run cut short (its checkpoint's own config asks for 3 epochs) is one to resume.
    longer = TrainConfig.from_dict({**cfg.to_dict(), "training": {**cfg.to_dict()["training"], "epochs": 3}})
    ckpt = load_checkpoint(tmp_path / "last.pt")
    ckpt["config"]["training"]["epochs"] = 3
    mlpot.training.checkpoint.save_checkpoint(tmp_path / "last.pt", ckpt)
    with pytest.raises(ValueError, match=r"stopped after epoch 1 of 3 \(last\.pt\): continue it with --resume, "
                                         r"start afresh over it with --overwrite"):
        train(longer, tmp_path, progress=False, log=lambda s: None)


def test_cli_occupied_folder_message(dataset, tmp_path, capsys):
    path = tmp_path / "tiny.yaml"
    path.write_text(yaml.safe_dump(config(dataset, epochs=1).to_dict()))
    out = tmp_path / "run"
    assert main(["train", str(path), "--out", str(out), "--no-progress"]) == 0
    capsys.readouterr()
    assert main(["train", str(path), "--out", str(out), "--no-progress"]) == 2
    err = capsys.readouterr().err.strip()
    assert "\n" not in err and "--overwrite" in err and str(out / "model.pt") in err
    assert main(["train", str(path), "--out", str(out), "--no-progress", "--overwrite"]) == 0


def test_overwrite_removes_the_old_runs_files_first(dataset, tmp_path, monkeypatch):
    """After --overwrite every .pt in the folder belongs to the new run, so a stop in its
    first epoch names none."""
    import mlpot.training.trainer as trainer

    cfg = config(dataset, epochs=1)
    train(cfg, tmp_path, progress=False, log=lambda s: None)
    assert (tmp_path / "model.pt").is_file()
    calls = {"n": 0}
    real = trainer.loss_terms

    def poisoned(pred, batch, weights):
        calls["n"] += 1
        terms = real(pred, batch, weights)
        if calls["n"] == 2:  # the first training step (call 1 measures grad_init.json)
            terms["total"] = terms["total"] * float("nan")
        return terms

    monkeypatch.setattr(trainer, "loss_terms", poisoned)
    with pytest.raises(TrainingError, match=r"no checkpoint or model was saved in .* \(no epoch had completed\)"):
        train(cfg, tmp_path, overwrite=True, progress=False, log=lambda s: None)
    assert not any((tmp_path / name).exists() for name in ("last.pt", "best.pt", "model.pt"))


def test_resume_may_switch_the_label_check(dataset, tmp_path):
    cfg = config(dataset, epochs=1)
    train(cfg, tmp_path, progress=False, log=lambda s: None)
    d = cfg.to_dict()
    more = TrainConfig.from_dict({**d, "training": {**d["training"], "epochs": 2, "check_labels": False}})
    assert train(more, tmp_path, resume=True, progress=False, log=lambda s: None)["epochs"] == 2


def test_group_by_splits_whole_trajectories(tmp_path):
    structures = emt_structures(24, seed=4)
    for k, atoms in enumerate(structures):
        atoms.info["trajectory"] = k % 6  # six interleaved "trajectories" of four frames
    ase.io.write(tmp_path / "grouped.extxyz", structures)
    base = config(tmp_path, epochs=1).to_dict()
    grouped = TrainConfig.from_dict({**base, "data": {"train": str(tmp_path / "grouped.extxyz"), "val_fraction": 0.2,
                                                      "group_by": "trajectory"}})
    train(grouped, tmp_path / "run", progress=False, log=lambda s: None)
    split = json.loads((tmp_path / "run" / "split.json").read_text())
    val_groups = {k % 6 for k in split["val"]}
    assert val_groups and not val_groups & {k % 6 for k in split["train"]}
    missing = TrainConfig.from_dict({**grouped.to_dict(), "data": {**grouped.to_dict()["data"], "group_by": "run_id"}})
    with pytest.raises(ValueError, match=r"structure 0 .* has no info\['run_id'\]"):
        train(missing, tmp_path / "other", progress=False, log=lambda s: None)
