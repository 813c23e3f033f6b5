"""Data-parallel training (mlpot.training.distributed): two gloo processes on the CPU give the
weights and metrics of one process with the same global batch; rank 0 alone writes; the
checkpoint of a distributed run resumes."""

from __future__ import annotations

import csv
import json
import os
import socket

import ase.io
import pytest
import torch
import torch.distributed as tdist
import torch.multiprocessing as mp

from mlpot.training import TrainConfig, load_checkpoint, train
from test_training_run import emt_structures

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
    folder = tmp_path_factory.mktemp("data")
    ase.io.write(folder / "train.extxyz", emt_structures(30, seed=0))
    return folder


def config(dataset, **training) -> dict:
    # 24 training structures in global batches of 23: the second batch has one structure,
    # so rank 1's share of it is empty, and the first splits 12/11 (counts differ by rank).
    return {
        "data": {"train": str(dataset / "train.extxyz"), "val_fraction": 0.2},
        "descriptor": {"cutoff": 4.0, "cutoff_function": "poly2",
                       "radial": [{"grid": {"count": 5, "mode": "shift", "r_lower": 1.5}}],
                       "angular": [{"kind": "G5", "zetas": [1], "lambdas": [-1, 1], "eta": 0.05}]},
        "model": {"depth": 2, "width": 8},
        "loss": {"energy_weight": 1.0, "forces_weight": 10.0, "stress_weight": 100.0},
        "optimizer": {"lr": 5e-3},
        "training": {"epochs": 2, "batch_size": 23, "dtype": "float64", **training},
    }


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _worker(rank: int, world_size: int, port: int, cfg: dict, out: str) -> None:
    """One rank: join the group through the environment (as under torchrun) and train,
    recording which files this rank writes."""
    import mlpot.training.trainer as trainer

    os.environ.update({"MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(port), "WORLD_SIZE": str(world_size),
                       "RANK": str(rank), "LOCAL_RANK": str(rank)})
    torch.set_num_threads(1)
    written, models, fits = [], [], []
    save_checkpoint, save_model = trainer.save_checkpoint, trainer._save_model
    potential, fit_to_data = trainer.Potential, trainer.Potential.fit_to_data

    def spy_potential(*args, **kwargs):  # keeps this rank's model to compare the ranks' end states
        models.append(potential(*args, **kwargs))
        return models[-1]

    def spy_fit(self, *args, **kwargs):
        fits.append(rank)
        return fit_to_data(self, *args, **kwargs)

    def spy_checkpoint(path, state):
        written.append(os.path.basename(path))
        save_checkpoint(path, state)

    def spy_model(learner, path, metadata):
        written.append(os.path.basename(path))
        save_model(learner, path, metadata)

    trainer.save_checkpoint, trainer._save_model = spy_checkpoint, spy_model
    trainer.Potential, potential.fit_to_data = spy_potential, spy_fit  # this process only
    train(TrainConfig.from_dict(cfg), out, progress=False, log=lambda _: None)
    with open(os.path.join(out, f"written-rank{rank}.json"), "w") as fh:
        json.dump({"files": written, "fits": len(fits)}, fh)
    torch.save(models[0].state_dict(), os.path.join(out, f"state-rank{rank}.pt"))
    _exit_cleanly()


def run_distributed(cfg: dict, out, world_size: int = 2) -> None:
    mp.spawn(_worker, args=(world_size, free_port(), cfg, str(out)), nprocs=world_size, join=True)


def _group_worker(rank: int, world_size: int, port: int, fn, args: tuple) -> None:
    """One rank of a bare gloo group running ``fn(Distributed, *args)``."""
    from mlpot.training.distributed import Distributed

    os.environ.update({"MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(port)})
    torch.set_num_threads(1)
    tdist.init_process_group("gloo", rank=rank, world_size=world_size)
    dist = Distributed(rank, world_size, torch.device("cpu"), owns_group=True)
    finished = False
    try:
        fn(dist, *args)
        finished = True
    finally:
        dist.close(synchronize=finished)
    _exit_cleanly()


def _exit_cleanly() -> None:
    """End a finished rank without the interpreter's teardown. In about one run of 30 a rank
    aborted there ("terminate called without an active exception", SIGABRT, raised in a
    non-Python thread after the test's code had returned and its files were written), which
    failed the test although every result was in place."""
    import sys

    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(0)


def run_group(fn, *args, world_size: int = 2) -> None:
    mp.spawn(_group_worker, args=(world_size, free_port(), fn, args), nprocs=world_size, join=True)


def metrics(path) -> list[dict]:
    with open(path) as fh:
        return list(csv.DictReader(fh))


def assert_same_weights(a: dict, b: dict, tol: float) -> None:
    assert a.keys() == b.keys()
    for k in a:
        if a[k].is_floating_point():
            torch.testing.assert_close(a[k], b[k], rtol=tol, atol=tol, msg=k)
        else:
            assert torch.equal(a[k], b[k]), k


def test_two_processes_equal_one(dataset, tmp_path):
    cfg = config(dataset)
    run_distributed(cfg, tmp_path / "ddp")
    train(TrainConfig.from_dict(cfg), tmp_path / "single", progress=False, log=lambda _: None)

    ddp, single = load_checkpoint(tmp_path / "ddp" / "last.pt"), load_checkpoint(tmp_path / "single" / "last.pt")
    assert_same_weights(ddp["model"], single["model"], 1e-10)
    # Adam's moments too: every step saw the global gradient.
    for sa, sb in zip(ddp["optimizer"]["state"].values(), single["optimizer"]["state"].values()):
        torch.testing.assert_close(sa["exp_avg_sq"], sb["exp_avg_sq"], rtol=1e-9, atol=1e-20)
    # Metrics reduced over ranks: the same losses and errors as one process.
    for ra, rb in zip(metrics(tmp_path / "ddp" / "metrics.csv"), metrics(tmp_path / "single" / "metrics.csv")):
        for key in ("train_loss", "val_loss", "train_force_rmse_mev_per_a", "val_energy_rmse_mev_per_atom",
                    "val_stress_rmse_gpa", "grad_norm/total"):
            assert float(ra[key]) == pytest.approx(float(rb[key]), rel=1e-9), key
    assert len(ddp["rng_ranks"]) == 2

    # Rank 0 alone writes checkpoints and models, and alone fits the data-derived set-up.
    written = {r: json.loads((tmp_path / "ddp" / f"written-rank{r}.json").read_text()) for r in (0, 1)}
    assert written[1]["files"] == []
    assert "last.pt" in written[0]["files"] and "model.pt" in written[0]["files"]
    assert (written[0]["fits"], written[1]["fits"]) == (1, 0)
    # ... whose values (scaler buffers included) reached rank 1: both ranks end bit-identical.
    states = [torch.load(tmp_path / "ddp" / f"state-rank{r}.pt") for r in (0, 1)]
    assert {"descriptor.scaler.weight", "descriptor.scaler.train_max", "reference_energies",
            "energy_scale"} <= states[1].keys()
    assert not torch.equal(states[1]["descriptor.scaler.weight"], torch.zeros_like(states[1]["descriptor.scaler.weight"]))
    assert_same_weights(states[1], states[0], 0.0)

    # A distributed checkpoint resumes (here in one process) to the uninterrupted result.
    longer = config(dataset, epochs=3)
    train(TrainConfig.from_dict(longer), tmp_path / "ddp", resume=True, progress=False, log=lambda _: None)
    train(TrainConfig.from_dict(longer), tmp_path / "single3", progress=False, log=lambda _: None)
    assert_same_weights(load_checkpoint(tmp_path / "ddp" / "last.pt")["model"],
                        load_checkpoint(tmp_path / "single3" / "last.pt")["model"], 1e-10)


def test_two_processes_equal_one_with_annealed_weights(dataset, tmp_path):
    """Every rank trains each epoch with that epoch's loss weights (here r = 1, then 0.5)."""
    cfg = config(dataset)
    cfg["loss"] |= {"energy_weight_start": 5.0, "forces_weight_start": 50.0, "stress_weight_start": 10.0}
    cfg["schedule"] = {"name": "exponential", "gamma": 0.5}
    run_distributed(cfg, tmp_path / "ddp")
    train(TrainConfig.from_dict(cfg), tmp_path / "single", progress=False, log=lambda _: None)
    ddp, single = load_checkpoint(tmp_path / "ddp" / "last.pt"), load_checkpoint(tmp_path / "single" / "last.pt")
    assert_same_weights(ddp["model"], single["model"], 1e-10)
    for ra, rb in zip(metrics(tmp_path / "ddp" / "metrics.csv"), metrics(tmp_path / "single" / "metrics.csv"),
                      strict=True):
        for key in ("train_loss", "val_loss", "grad_norm/total"):
            assert float(ra[key]) == pytest.approx(float(rb[key]), rel=1e-9), key


def test_two_processes_train_a_finish_as_one(dataset, tmp_path):
    """A run with a finish stage (L-BFGS) under two processes: the first stage, the copy of
    its model, the finish and its install into the run folder, with the group held across
    both stages; the finished model equals one process's, and rank 0 alone writes."""
    cfg = config(dataset) | {"finish": {"epochs": 1, "optimizer": {"name": "lbfgs", "lr": 1.0,
                                                                   "lbfgs": {"max_iter": 3}}}}
    run_distributed(cfg, tmp_path / "ddp")
    train(TrainConfig.from_dict(cfg), tmp_path / "single", progress=False, log=lambda _: None)
    for name in ("model.pt", "finish/start.pt"):
        ddp, single = (torch.load(tmp_path / run / name, weights_only=False)["state_dict"] for run in ("ddp", "single"))
        assert_same_weights(ddp, single, 1e-8)
    assert (tmp_path / "ddp" / "finish" / "result.json").is_file()
    written = {r: json.loads((tmp_path / "ddp" / f"written-rank{r}.json").read_text()) for r in (0, 1)}
    assert written[1]["files"] == [] and written[0]["files"].count("model.pt") >= 2  # both stages'


def test_shard_loss_gradient_equals_global(dataset):
    """The rescaled per-shard losses add up to the global-batch loss (no process group: the
    count all-reduce is replaced by the sum over shards)."""
    from mlpot.data import collate
    from mlpot.models import NetworkConfig, Potential
    from mlpot.training.config import LossConfig
    from mlpot.training.distributed import _label_counts
    from mlpot.training.loss import loss_terms

    structures = emt_structures(5, seed=3)
    structures[1].calc.results.pop("stress")
    cfg = TrainConfig.from_dict(config(dataset))
    torch.manual_seed(0)
    model = Potential(cfg.descriptor_spec(["Cu", "Au"]), NetworkConfig(depth=1, width=4)).double()
    weights = LossConfig(1.0, 10.0, 100.0)
    batch = collate(structures, cutoff=model.cutoff)
    model.fit_to_data([batch])
    whole = loss_terms(model(batch, stress=True, create_graph=True), batch, weights)["total"]
    shards = [collate(structures[r::2], cutoff=model.cutoff) for r in range(2)]
    counts = sum(_label_counts(b) for b in shards)
    total = 0.0
    for b in shards:
        terms = loss_terms(model(b, stress=True, create_graph=True), b, weights)
        local = _label_counts(b)
        total = total + sum(w * terms[k] * local[i] / counts[i] for i, (k, w) in
                            enumerate((("energy", 1.0), ("forces", 10.0), ("stress", 100.0))))
    torch.testing.assert_close(total, whole, rtol=1e-12, atol=0)
    params = list(model.networks.parameters())
    g_whole = torch.autograd.grad(whole, params)
    g_total = torch.autograd.grad(total, params)
    for a, b in zip(g_whole, g_total):
        torch.testing.assert_close(a, b, rtol=1e-10, atol=1e-14)


def _broadcast_mismatched(dist, out: str) -> None:
    module = torch.nn.Linear(2, 2 + dist.rank)  # rank 1's weights have another shape
    try:
        dist.broadcast_module(module)
    except ValueError as exc:
        with open(os.path.join(out, f"error-rank{dist.rank}.txt"), "w") as fh:
            fh.write(str(exc))


def test_broadcast_module_refuses_mismatched_modules(tmp_path):
    """Every rank raises (none hangs in a broadcast of tensors of other shapes)."""
    run_group(_broadcast_mismatched, str(tmp_path))
    for rank in (0, 1):
        message = (tmp_path / f"error-rank{rank}.txt").read_text()
        assert "rank 1" in message and "weight" in message


def _cache_on_ranks(dist, spec, out: str) -> None:
    from mlpot.descriptors import SymmetryFunctions
    from mlpot.training.data import BatchStore

    descriptor = SymmetryFunctions(spec)
    store = BatchStore(emt_structures(11, seed=5), cutoff=descriptor.cutoff)
    computed = []
    chunks = store._jacobian_chunks

    def spy_chunks(*args, **kwargs):  # records the structures this rank computes
        for raw, jac, n_atoms, n_pairs in chunks(*args, **kwargs):
            computed.append(len(n_atoms))
            yield raw, jac, n_atoms, n_pairs

    store._jacobian_chunks = spy_chunks
    store.cache_descriptors(descriptor, dtype=torch.float32, chunk=3, distributed=dist)
    torch.save({"descriptors": store.descriptors, "jacobian": store.jacobian.state(), "computed": computed},
               os.path.join(out, f"cache-rank{dist.rank}.pt"))


@pytest.mark.parametrize("world_size", [2, 3])
def test_distributed_cache_equals_single_process(dataset, tmp_path, world_size):
    """Each rank computes its share of the chunks (11 structures in chunks of 3: 4 chunks,
    so with 3 ranks rank 0 has two and the others one) and all end with the whole cache."""
    from mlpot.descriptors import SymmetryFunctions
    from mlpot.training.data import BatchStore

    cfg = config(dataset)
    cfg["descriptor"]["angular"][0]["cutoff"] = 3.0  # pairs outside it: angular rows re-offset
    spec = TrainConfig.from_dict(cfg).descriptor_spec(["Cu", "Au"])
    run_group(_cache_on_ranks, spec, str(tmp_path), world_size=world_size)
    descriptor = SymmetryFunctions(spec)
    store = BatchStore(emt_structures(11, seed=5), cutoff=descriptor.cutoff)
    store.cache_descriptors(descriptor, dtype=torch.float32, chunk=3)
    want = {"descriptors": store.descriptors, **store.jacobian.state()}
    assert (store.jacobian.angular_row >= 0).any() and (store.jacobian.angular_row < 0).any()
    computed = []
    for rank in range(world_size):
        got = torch.load(tmp_path / f"cache-rank{rank}.pt")
        got = {"descriptors": got["descriptors"], **got["jacobian"], "computed": got["computed"]}
        for key, value in want.items():
            assert got[key].dtype == value.dtype and torch.equal(got[key], value), (rank, key)
        computed.append(got["computed"])
    shares = [[min(3, 11 - 3 * k) for k in range(rank, 4, world_size)] for rank in range(world_size)]
    assert computed == shares  # the work was divided, each chunk computed once


@pytest.mark.slow  # torchrun and two fresh interpreters: ~15 s on 2 cores
def test_cli_nproc_smoke(dataset, tmp_path):
    import yaml

    from mlpot.cli import main

    (tmp_path / "c.yaml").write_text(yaml.safe_dump(config(dataset, epochs=1)))
    status = main(["train", str(tmp_path / "c.yaml"), "--out", str(tmp_path / "run"), "--nproc", "2",
                   "--no-progress"])
    assert status == 0
    assert (tmp_path / "run" / "model.pt").is_file()
    assert len(load_checkpoint(tmp_path / "run" / "last.pt")["rng_ranks"]) == 2
