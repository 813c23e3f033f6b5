"""The trainer's parts used on their own: one process as a process group, the descriptor
cache policy, the run state and learner behind checkpoints, and one epoch of the loop."""

from __future__ import annotations

import math

import pytest
import torch

from mlpot.training import (DescriptorCache, ErrorAccumulator, Learner, RunState, SingleProcess, StepSettings,
                            TrainConfig, TrainingError, build_model, epoch_order, evaluate_store,
                            load_checkpoint, loss_from_metrics, loss_terms, save_checkpoint, train_epoch)
from mlpot.training.data import BatchStore
from mlpot.training.distributed import from_environment
from test_training_run import emt_structures

pytestmark = pytest.mark.usefixtures("one_thread")


def tiny_config(**training) -> TrainConfig:
    return TrainConfig.from_dict({
        "data": {"train": "unused.extxyz"},
        "descriptor": {"cutoff": 4.0, "cutoff_function": "poly2",
                       "radial": [{"grid": {"count": 4, "mode": "shift", "r_lower": 1.5}}],
                       "angular": [{"kind": "G5", "zetas": [1], "lambdas": [-1, 1], "eta": 0.05}]},
        "model": {"depth": 2, "width": 8},
        "loss": {"energy_weight": 1.0, "forces_weight": 10.0, "stress_weight": 1.0},
        "optimizer": {"lr": 5e-3},
        "training": {"epochs": 2, "batch_size": 6, "dtype": "float64", **training},
    })


@pytest.fixture(scope="module")
def structures():
    return emt_structures(18, seed=3)


def fitted_learner(config: TrainConfig, store: BatchStore) -> Learner:
    """A float64 learner whose scaler and reference energies are fitted to the whole store."""
    model = build_model(config, ["Cu", "Au"])
    model.fit_to_data(list(store.batches(torch.arange(len(store)), 64)), config.scaling.mode,
                      tuple(config.scaling.range))
    model.double()
    return Learner.create(model, config, steps_per_epoch=math.ceil(len(store) / config.training.batch_size))


# --------------------------------------------------------------------------- one process

def test_single_process_is_the_identity(structures):
    dist = SingleProcess()
    assert (dist.rank, dist.world_size, dist.is_main) == (0, 1, True)
    indices = torch.tensor([4, 1, 3])
    assert torch.equal(dist.shard(indices), indices)
    total = torch.tensor(2.5, requires_grad=True)
    assert dist.global_loss({"total": total, "energy": torch.tensor(9.0)}, None, None) is total
    assert dist.global_loss(None, None, None) is None
    assert dist.loss_value(total) == 2.5 and dist.loss_value(None) == 0.0
    assert dist.gather_object({"a": 1}) == [{"a": 1}]
    chunks = {0: (torch.zeros(2),), 1: (torch.ones(3),)}
    assert dist.all_gather_chunks(chunks, 2) == [chunks[0], chunks[1]]
    with pytest.raises(ValueError, match="all 3 chunks"):
        dist.all_gather_chunks(chunks, 3)

    acc = ErrorAccumulator()
    store = BatchStore(structures[:2], cutoff=4.0)
    batch = store.batch([0, 1])
    acc.update({"energy": batch.targets.energy + 0.1}, batch)
    before = acc.result()
    assert dist.reduce_metrics(acc) is acc and acc.result() == before

    module = torch.nn.Linear(2, 2)
    module.weight.grad = torch.ones(2, 2)
    state = {k: v.clone() for k, v in module.state_dict().items()}
    dist.broadcast_module(module)
    dist.sum_gradients(module.parameters())
    assert all(torch.equal(v, state[k]) for k, v in module.state_dict().items())
    assert torch.equal(module.weight.grad, torch.ones(2, 2)) and module.bias.grad is None
    ran = []
    with dist.main_first():
        ran.append(1)
    dist.barrier()
    dist.close()
    assert ran == [1]


def test_one_process_environment_gives_single_process(monkeypatch):
    monkeypatch.delenv("WORLD_SIZE", raising=False)
    dist, device = from_environment("cpu")
    assert isinstance(dist, SingleProcess) and device == "cpu"


# --------------------------------------------------------------------------- descriptor cache

def test_cache_falls_back_to_none_over_the_memory_limit(structures, tmp_path):
    config = tiny_config()
    model = build_model(config, ["Cu", "Au"])
    store = BatchStore(structures, cutoff=model.cutoff)
    lines = []
    cache = DescriptorCache("memory", max_gib=1e-9, file_dir=tmp_path, log=lines.append)
    assert cache.prepare(store, model.descriptor, torch.float64, torch.device("cpu"), SingleProcess()) == "none"
    assert not store.has_descriptor_cache
    assert len(lines) == 1 and "descriptor_cache_max_gib = 1e-09" in lines[0] and "recomputed" in lines[0]


def test_cache_builds_in_memory_and_closes(structures, tmp_path):
    config = tiny_config()
    model = build_model(config, ["Cu", "Au"])
    store = BatchStore(structures, cutoff=model.cutoff)
    lines = []
    with DescriptorCache.from_options(config.training, tmp_path, log=lines.append) as cache:
        assert cache.file_dir == tmp_path / "descriptor_cache" and cache.memory_dir is None
        assert cache.prepare(store, model.descriptor, torch.float64, torch.device("cpu"), SingleProcess()) == "memory"
        assert store.has_descriptor_cache
    assert not store.has_descriptor_cache
    assert len(lines) == 1 and lines[0].startswith("descriptor cache: ") and "in memory, computed (" in lines[0]


def test_cache_file_falls_back_when_the_disk_is_full(structures, tmp_path, monkeypatch):
    import shutil

    from collections import namedtuple

    config = tiny_config()
    model = build_model(config, ["Cu", "Au"])
    store = BatchStore(structures, cutoff=model.cutoff)
    usage = namedtuple("usage", "total used free")
    monkeypatch.setattr(shutil, "disk_usage", lambda path: usage(1, 1, 0))
    lines = []
    cache = DescriptorCache("hdf5", max_gib=4.0, file_dir=tmp_path / "new" / "folder", log=lines.append)
    assert cache.choose(store, model.descriptor, torch.float64) == "none"
    assert len(lines) == 1 and "GiB free: descriptors are recomputed every step" in lines[0]
    assert not (tmp_path / "new").exists()


# --------------------------------------------------------------------------- run state, learner

def test_run_state_round_trip_and_bookkeeping():
    state = RunState(fit={"scale": 1.5})
    assert state.best_row() is None and not state.patience_spent(2)
    assert state.end_epoch({"epoch": 1, "val_loss": 3.0}, 3.0)
    assert not state.end_epoch({"epoch": 2, "val_loss": 4.0}, 4.0)
    assert not state.end_epoch({"epoch": 3, "val_loss": 5.0}, 5.0)
    assert (state.epoch, state.best_epoch, state.best_val_loss, state.bad_epochs) == (3, 1, 3.0, 2)
    assert state.patience_spent(2) and not state.patience_spent(3) and not state.patience_spent(0)
    assert state.best_row() == {"epoch": 1, "val_loss": 3.0}
    copy = RunState()
    copy.load_state_dict(state.state_dict())
    assert copy == state
    assert list(state.state_dict()) == ["epoch", "best_val_loss", "best_epoch", "bad_epochs", "history", "fit",
                                        "stop_reference"]
    old = RunState()  # checkpoints from before best_epoch, fit and stop_reference were kept
    old.load_state_dict({"epoch": 2, "best_val_loss": 1.0, "bad_epochs": 0, "history": []})
    assert old.best_epoch is None and old.fit is None and old.epoch == 2 and old.stop_reference == 1.0


def test_early_stopping_min_delta_counts_only_relative_improvements():
    """With min_delta 0.1, an epoch resets the patience count only when its loss is 10 %
    below that of the last epoch that did; every new best is still kept as the best."""
    state = RunState()
    counted = []
    for epoch, loss in enumerate([10.0, 9.5, 9.2, 9.1, 8.0, 7.9], start=1):
        best = state.end_epoch({"epoch": epoch}, loss, min_delta=0.1)
        counted.append((best, state.bad_epochs, state.stop_reference))
    # 9.5, 9.2 and 9.1 are new bests but not 10 % below 10; 8.0 is (< 9.0); 7.9 is not below 7.2.
    assert counted == [(True, 0, 10.0), (True, 1, 10.0), (True, 2, 10.0), (True, 3, 10.0), (True, 0, 8.0),
                       (True, 1, 8.0)]
    assert state.best_epoch == 6 and state.best_val_loss == 7.9 and state.patience_spent(1)
    plain = RunState()  # min_delta 0: any new best resets the count, as before
    for epoch, loss in enumerate([10.0, 9.5, 9.7], start=1):
        plain.end_epoch({"epoch": epoch}, loss)
    assert (plain.bad_epochs, plain.stop_reference) == (1, 9.5)


def test_learner_checkpoint_restores_a_fresh_learner(structures, tmp_path):
    config = tiny_config(ema_decay=0.9)
    store = BatchStore(structures, cutoff=4.0)
    learner = fitted_learner(config, store)
    step = StepSettings.from_config(config, torch.device("cpu"), tmp_path)
    train_epoch(learner, store, epoch_order(torch.arange(len(store)), 0, 0), 0, step, SingleProcess())
    learner.state.end_epoch({"epoch": 1}, 1.0)
    payload = learner.checkpoint_payload(config.to_dict(), SingleProcess())
    assert "rng_ranks" not in payload  # one process: its generators are "rng"
    save_checkpoint(tmp_path / "last.pt", payload)

    other = fitted_learner(config, store)  # the first one's starting weights
    torch.manual_seed(123)  # and another generator state
    checkpoint = load_checkpoint(tmp_path / "last.pt")
    sc = checkpoint["scaling"]
    assert (sc["mode"], sc["s_min"], sc["s_max"]) == ("scale_center", -1.0, 1.0)
    other.restore(checkpoint)
    assert torch.equal(torch.get_rng_state(), payload["rng"]["torch"])
    for (name, a), b in zip(learner.model.state_dict().items(), other.model.state_dict().values()):
        assert torch.equal(a, b), name
    assert other.schedule.state_dict() == learner.schedule.state_dict()
    assert other.state == learner.state and other.ema.n_updates == learner.ema.n_updates == 3
    with other.averaged() as model:  # the EMA weights inside, the trained ones after
        for name, p in model.named_parameters():
            assert torch.equal(p, learner.ema.shadow[name]), name
    for name, p in other.model.named_parameters():
        assert torch.equal(p, learner.model.get_parameter(name)), name


# --------------------------------------------------------------------------- the loop

def test_one_epoch_lowers_the_loss(structures, tmp_path):
    config = tiny_config()
    store = BatchStore(structures, cutoff=4.0)
    learner = fitted_learner(config, store)
    indices = torch.arange(len(store))

    def loss() -> float:
        metrics = evaluate_store(learner.model, store, indices, 6, "cpu", torch.float64, stress=True)
        return loss_from_metrics(metrics, config.loss)

    before = loss()
    step = StepSettings.from_config(config, torch.device("cpu"), tmp_path)
    result = train_epoch(learner, store, epoch_order(indices, 0, 0), 0, step, SingleProcess())
    assert loss() < 0.8 * before
    assert result.metrics["n_structures"] == len(store) and math.isfinite(result.loss)
    assert result.grad_norms.shape == (len(learner.params),) and result.grad_norms.dtype == torch.float64
    assert learner.schedule.step_count == 3 and result.lr == config.optimizer.lr


def test_epoch_order_is_a_seeded_permutation():
    indices = torch.arange(10, 20)
    a, b = epoch_order(indices, 7, 3), epoch_order(indices, 7, 3)
    assert torch.equal(a, b) and sorted(a.tolist()) == indices.tolist()
    assert not torch.equal(a, epoch_order(indices, 7, 4))


def test_non_finite_loss_stops_the_epoch_before_the_update(structures, tmp_path):
    config = tiny_config()
    store = BatchStore(structures, cutoff=4.0)
    learner = fitted_learner(config, store)
    weights = {k: v.clone() for k, v in learner.model.state_dict().items()}

    def poisoned(pred, batch, loss_weights):
        terms = loss_terms(pred, batch, loss_weights)
        terms["energy"] = terms["energy"] * float("nan")
        terms["total"] = terms["total"] + terms["energy"]
        return terms

    step = StepSettings.from_config(config, torch.device("cpu"), tmp_path, loss=poisoned)
    with pytest.raises(TrainingError, match=r"non-finite training loss \(nan\) at epoch 2, step 1 \(energy=nan"):
        train_epoch(learner, store, torch.arange(len(store)), 1, step, SingleProcess())
    for k, v in learner.model.state_dict().items():
        assert torch.equal(v, weights[k]), k
