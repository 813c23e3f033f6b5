"""The training loop: data → split → potential → epochs of force training → best model.

``train(config, out_dir)`` writes into ``out_dir``:

- ``config.yaml``: the resolved config; ``split.json``: the train/val(/test) indices;
- ``metrics.csv``: one row per epoch (losses, errors, learning rate, wall time, gradient
  norm per parameter tensor);
- ``last.pt`` / ``best.pt``: full checkpoints (latest / best validation loss);
- ``model.pt``: the best model (EMA weights when EMA is on), loadable with :func:`mlpot.load`;
- ``test_metrics.json``: errors of that model on the test set, if one is given.

Resuming (``resume=True``) continues from ``last.pt``; in float64 on the CPU the weights are
bit-identical to an uninterrupted run (seeded per-epoch shuffles, restored RNG, optimiser,
schedule and EMA state).

Under ``torchrun`` (or ``mlpot train --nproc N``) the run is data-parallel with the same
global batches and results as one process (:mod:`mlpot.training.distributed`); rank 0
writes every file.
"""

from __future__ import annotations

import contextlib
import csv
import json
import math
import time
from collections import Counter
from pathlib import Path
from typing import Callable

import torch
from ase.data import chemical_symbols
from tqdm import tqdm

from ..data import load_split, random_split, read
from ..descriptors.scaling import FeatureScaler
from ..io.files import atomic_write_text
from ..models import Potential
from .checkpoint import load_checkpoint, rng_state, save_checkpoint, set_rng_state
from .config import RESULT_NEUTRAL_TRAINING_OPTIONS, TrainConfig
from .data import BatchStore
from .distributed import Distributed, from_environment
from .gradients import LayerGradientMonitor
from .loss import loss_from_metrics, loss_terms
from .metrics import METRIC_KEYS, ErrorAccumulator
from .optim import EMA, LRSchedule, build_optimizer

__all__ = ["TrainingError", "train", "evaluate_store", "METRIC_COLUMNS"]

#: The error metrics reported per split (counts left out).
METRIC_COLUMNS = tuple(k for k in METRIC_KEYS if k not in ("n_structures", "n_atoms"))
# Settings a resumed run may change; anything else must match the checkpoint.
# A resume may also extend the run and change the test set.
_RESUME_MAY_CHANGE = ({f"training.{k}" for k in RESULT_NEUTRAL_TRAINING_OPTIONS}
                      | {"training.epochs", "training.early_stopping_patience", "data.test"})


class TrainingError(RuntimeError):
    """Training cannot go on (e.g. a non-finite loss); checkpoints of the last good epoch stay."""


def train(config: TrainConfig, out_dir: str | Path, resume: bool = False, overwrite: bool = False,
          progress: bool = True, log: Callable[[str], None] = print) -> dict:
    """Train a potential as ``config`` says and write the run into ``out_dir``.

    Args:
        config: the resolved configuration.
        out_dir: run folder (created if needed).
        resume: continue from ``out_dir/last.pt`` (``config`` may change only the number
            of epochs, early-stopping patience, checkpoint interval, device and test set).
        overwrite: allow starting afresh in a folder that already holds a run.
        progress: show a progress bar per epoch.
        log: receives one summary line per epoch and the final report.

    Returns:
        ``epochs`` completed, ``best_epoch``, ``best_val_loss``, ``stopped_early``, the
        ``train`` and ``val`` metrics of the best epoch, and ``test`` metrics (or ``None``).

    Raises:
        TrainingError: on a non-finite loss (the files of the last good epoch are kept).
        ValueError / FileNotFoundError / CheckpointError: for bad input or a bad resume.
    """
    dist, device_name = from_environment(config.training.device)
    if dist is not None and not dist.is_main:  # rank 0 alone reports
        progress, log = False, _silent
    try:
        # ``cleanup`` closes what _train opens (the descriptor cache file), also on errors.
        with contextlib.ExitStack() as cleanup:
            return _train(config, out_dir, resume, overwrite, progress, log, dist, device_name, cleanup)
    finally:
        if dist is not None:
            dist.close()


def _silent(_: str) -> None:
    pass


def _train(config: TrainConfig, out_dir: str | Path, resume: bool, overwrite: bool, progress: bool,
           log: Callable[[str], None], dist: Distributed | None, device_name: str,
           cleanup: contextlib.ExitStack) -> dict:
    main = dist is None or dist.is_main
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    ckpt = None
    if resume:
        ckpt = load_checkpoint(out / "last.pt")
        _check_resumable(ckpt["config"], config.to_dict(), out / "last.pt")
    elif (out / "last.pt").exists() and not overwrite:
        raise ValueError(f"{out} already holds a training run (last.pt); resume it or choose another output folder")
    opts = config.training
    device = _device(device_name)
    dtype = getattr(torch, opts.dtype)
    if dist is not None:
        dist.barrier()  # every rank has passed the checks above before rank 0 writes
    if main:
        config.save(out / "config.yaml")

    structures = read(config.data.train, format=config.data.format, **config.data.read_options)
    if resume and (out / "split.json").is_file():
        split = load_split(out / "split.json")
    elif config.data.split_file:
        split = load_split(config.data.split_file)
    else:
        split = random_split(len(structures), config.data.val_fraction, seed=config.data.split_seed)
    if split.n_total != len(structures):
        raise ValueError(f"split has n_total={split.n_total} but {config.data.train} holds "
                         f"{len(structures)} structures")
    if main:
        split.save(out / "split.json")
    counts = Counter(int(z) for k in split.train for z in structures[k].numbers)
    elements = [chemical_symbols[z] for z in sorted(counts)]

    torch.manual_seed(opts.seed)  # weight initialisation
    model = Potential(config.descriptor_spec(elements), config.model)
    log(f"data: {len(split.train)} train / {len(split.val)} val structures of {elements}; "
        f"model: {model.n_parameters()} parameters")
    store = BatchStore(structures, cutoff=model.cutoff, progress=progress)
    cleanup.callback(store.clear_descriptor_cache)  # closes the HDF5 cache file, if one is opened
    train_idx = torch.tensor(split.train, dtype=torch.long)
    val_idx = torch.tensor(split.val, dtype=torch.long)
    fit_summary = None  # stays None on ranks other than 0 (rank 0 alone writes it)
    if ckpt is None and main:
        model.to(device)
        fit_batches = list(store.batches(train_idx, max(64, opts.batch_size), device))
        fit_summary = model.fit_to_data(fit_batches, config.scaling.mode, tuple(config.scaling.range))
        del fit_batches
    elif ckpt is None:
        # The fit would give the same values on every rank: rank 0 alone does it and
        # broadcast_module below copies its values (scaler, reference energies, energy scale)
        # into this unfitted scaler of the same shape and the other buffers.
        model.descriptor.scaler = FeatureScaler(model.descriptor.n_elements, model.descriptor.max_features,
                                                config.scaling.mode, *config.scaling.range)
    else:
        sc = ckpt["scaling"]
        model.descriptor.scaler = FeatureScaler(model.descriptor.n_elements, model.descriptor.max_features,
                                                sc["mode"], sc["s_min"], sc["s_max"])
    cache_mode = opts.descriptor_cache
    # The cache's size (a pass over all pairs) is computed only where a decision needs it.
    if cache_mode == "memory":
        cache_gib = store.descriptor_cache_gib(model.descriptor, dtype)
        if cache_gib > opts.descriptor_cache_max_gib:
            cache_mode = "none"
            log(f"descriptor cache would need {cache_gib:.1f} GiB (> training.descriptor_cache_max_gib = "
                f"{opts.descriptor_cache_max_gib:g}): descriptors are recomputed every step instead "
                f"(training.descriptor_cache: hdf5 keeps it on disk)")
    cache_dir = Path(opts.descriptor_cache_dir) if opts.descriptor_cache_dir else out / "descriptor_cache"
    if cache_mode == "hdf5" and not _disk_has_room(store, model.descriptor, dtype, cache_dir, log):
        cache_mode = "none"
    # With a cache file, rank 0 computes and saves it and the others load it; without one
    # (memory), each rank computes a share and they exchange them (cache_descriptors).
    shared_cache = dist is not None and (cache_mode == "hdf5" or (cache_mode == "memory"
                                                                  and opts.descriptor_cache_dir))
    with dist.main_first() if shared_cache else contextlib.nullcontext():
        if cache_mode != "none":
            _cache_descriptors(model, store, opts, cache_mode, cache_dir, device, dtype, progress, log, dist)
    model.to(device=device, dtype=dtype)
    if dist is not None:
        # Rank 0's fitted set-up and initial weights on every rank, before anything uses them
        # (the descriptor cache above holds unscaled descriptors) and before the EMA copies
        # the weights (a resume then loads the same checkpoint everywhere).
        dist.broadcast_module(model)

    params = dict(model.named_parameters())
    optimizer = build_optimizer(params.values(), config.optimizer)
    steps_per_epoch = math.ceil(len(train_idx) / opts.batch_size)
    schedule = LRSchedule(optimizer, config.schedule, config.optimizer.lr, opts.epochs, steps_per_epoch)
    ema = EMA(model, opts.ema_decay) if opts.ema_decay > 0 else None
    state = {"epoch": 0, "best_val_loss": math.inf, "best_epoch": None, "bad_epochs": 0,
             "history": [], "fit": fit_summary}
    if ckpt is not None:
        model.load_state_dict(ckpt["model"])
        optimizer.load_state_dict(ckpt["optimizer"])
        schedule.load_state_dict(ckpt["schedule"])
        if ema is not None:
            ema.load_state_dict(ckpt["ema"])
        state.update({k: ckpt[k] for k in ("epoch", "best_val_loss", "bad_epochs", "history")})
        state["fit"], state["best_epoch"] = ckpt.get("fit"), ckpt.get("best_epoch")
        per_rank = ckpt.get("rng_ranks")  # distributed runs keep every rank's generators
        same_world = dist is not None and per_rank is not None and len(per_rank) == dist.world_size
        set_rng_state(per_rank[dist.rank] if same_world else ckpt["rng"])
        log(f"resuming from {out / 'last.pt'} after epoch {state['epoch']}")

    grad_names = [_grad_column(n, elements) for n in params]
    columns = (["epoch", "lr", "wall_s", "train_loss", "val_loss"]
               + [f"{s}_{k}" for s in ("train", "val") for k in METRIC_COLUMNS]
               + ["grad_norm/total"] + grad_names)
    if main:
        _write_csv(out / "metrics.csv", columns, state["history"])  # rows of the checkpoint only
    eval_stress = bool(store.data.targets.has_stress.any())

    def checkpoint(path: Path) -> None:  # called by every rank: it gathers their generators
        rng = rng_state(cuda=device.type == "cuda")
        rng_ranks = None if dist is None else dist.gather_object(rng)
        if not main:
            return
        save_checkpoint(path, {
            "model": model.state_dict(), "optimizer": optimizer.state_dict(),
            "schedule": schedule.state_dict(), "ema": None if ema is None else ema.state_dict(),
            **{k: state[k] for k in ("epoch", "best_val_loss", "best_epoch", "bad_epochs", "history", "fit")},
            "config": config.to_dict(), "rng": rng, **({} if rng_ranks is None else {"rng_ranks": rng_ranks}),
            "scaling": {"mode": model.descriptor.scaler.mode, "s_min": model.descriptor.scaler.s_min,
                        "s_max": model.descriptor.scaler.s_max},
        })

    if ckpt is None and main:
        grads = _initial_gradients(model, store, train_idx, config, device, dtype)
        atomic_write_text(out / "grad_init.json", json.dumps(grads, indent=1) + "\n")

    stopped_early = False
    for epoch in range(state["epoch"], opts.epochs):
        if opts.early_stopping_patience and state["bad_epochs"] >= opts.early_stopping_patience:
            stopped_early = True  # a resumed run that had already stopped
            break
        start = time.perf_counter()
        model.train()
        gen = torch.Generator().manual_seed(opts.seed * 1_000_003 + epoch)  # resumable shuffle
        order = train_idx[torch.randperm(len(train_idx), generator=gen)]
        train_loss, train_metrics, grad_norms, lr = _train_epoch(
            model, params, store, order, config, optimizer, schedule, ema, device, dtype, epoch, progress, out,
            dist)
        if ema is not None:
            ema.swap(model)
        try:
            val_metrics = evaluate_store(model, store, val_idx, opts.batch_size, device, dtype, eval_stress,
                                         distributed=dist)
        finally:
            if ema is not None:
                ema.swap(model)
        val_loss = (loss_from_metrics(val_metrics, config.loss) if len(val_idx)
                    else loss_from_metrics(train_metrics, config.loss))  # no val set: select on train
        if not math.isfinite(val_loss):
            raise TrainingError(f"validation loss is {val_loss} after epoch {epoch + 1}; training stopped. "
                                f"Files of the last good epoch are kept in {out}.")
        schedule.epoch_end(val_loss)
        improved = val_loss < state["best_val_loss"]
        state["bad_epochs"] = 0 if improved else state["bad_epochs"] + 1
        state["epoch"] = epoch + 1
        row = {"epoch": epoch + 1, "lr": lr, "wall_s": time.perf_counter() - start,
               "train_loss": train_loss, "val_loss": val_loss if len(val_idx) else None,
               **{f"train_{k}": train_metrics[k] for k in METRIC_COLUMNS},
               **{f"val_{k}": val_metrics[k] for k in METRIC_COLUMNS},
               "grad_norm/total": float(grad_norms.pow(2).sum().sqrt()),
               **dict(zip(grad_names, grad_norms.tolist()))}
        state["history"].append(row)
        if main:
            _append_csv(out / "metrics.csv", columns, row)
        if improved:
            state["best_val_loss"], state["best_epoch"] = val_loss, epoch + 1
            if main:
                _save_model(model, ema, out / "model.pt", {
                    "epoch": epoch + 1, "val_loss": val_loss, "val_metrics": val_metrics,
                    "train_metrics": train_metrics, "config": config.to_dict(), "fit": state["fit"]})
            checkpoint(out / "best.pt")
        stop = bool(opts.early_stopping_patience) and state["bad_epochs"] >= opts.early_stopping_patience
        if (epoch + 1) % opts.checkpoint_every == 0 or epoch + 1 == opts.epochs or stop:
            checkpoint(out / "last.pt")
        if dist is not None:
            dist.barrier()  # the epoch's files are complete before any rank goes on
        log(_summary(row, opts.epochs, improved))
        if stop:
            stopped_early = True
            log(f"early stopping: no validation improvement in {opts.early_stopping_patience} epochs")
            break

    best = next((r for r in state["history"] if r["epoch"] == state["best_epoch"]), None)
    result = {"epochs": state["epoch"], "best_epoch": state["best_epoch"],
              "best_val_loss": state["best_val_loss"], "stopped_early": stopped_early,
              "train": None if best is None else {k: best[f"train_{k}"] for k in METRIC_COLUMNS},
              "val": None if best is None else {k: best[f"val_{k}"] for k in METRIC_COLUMNS},
              "test": None}
    if main:
        result["test"] = _evaluate_test(config, structures, split, out, device, dtype, opts.batch_size, log)
    if dist is not None:
        dist.barrier()  # the others wait for rank 0's test evaluation
    return result


def _cache_descriptors(model, store, opts, mode: str, cache_dir: Path, device, dtype, progress, log,
                       dist: Distributed | None = None) -> None:
    """Compute (or load) the store's descriptor cache: in memory (saved to / loaded from
    ``descriptor_cache_dir`` when set; otherwise, distributed, each rank computes a share and
    they exchange them) or, with ``mode == "hdf5"``, in a file in ``cache_dir``."""
    model.to(device)
    start = time.perf_counter()
    if mode == "hdf5":
        nbytes, loaded = store.open_or_build_descriptor_file(model.descriptor, cache_dir, dtype=dtype,
                                                             device=device, progress=progress, log=log)
        where = f"in {store.descriptor_file.path}, {'reused' if loaded else 'computed'}"
    elif opts.descriptor_cache_dir:
        nbytes, loaded = store.load_or_cache_descriptors(model.descriptor, opts.descriptor_cache_dir,
                                                         dtype=dtype, device=device, progress=progress)
        where = f"in memory, {'loaded from ' + opts.descriptor_cache_dir if loaded else 'computed'}"
    else:
        nbytes = store.cache_descriptors(model.descriptor, dtype=dtype, device=device, progress=progress,
                                         distributed=dist)
        where = "in memory, computed" + ("" if dist is None else f" by {dist.world_size} ranks")
    log(f"descriptor cache: {nbytes / 2**20:.0f} MiB for {store.data.edge_index.shape[1]} pairs {where} "
        f"({time.perf_counter() - start:.1f} s)")


def _disk_has_room(store, descriptor, dtype, folder: Path, log) -> bool:
    """Whether ``folder``'s disk can take the HDF5 cache (or already holds it); says why not."""
    import shutil

    path = folder / f"descriptors-{store.descriptor_cache_key(descriptor, dtype)[:20]}.h5"
    if path.exists():
        return True  # reused, or rebuilt in its place: its size is not needed
    probe = folder
    while not probe.exists():  # the folder is created later: ask about its nearest parent
        probe = probe.parent
    free_gib = shutil.disk_usage(probe).free / 2**30
    cache_gib = store.descriptor_cache_gib(descriptor, dtype)
    if cache_gib * 1.05 + 0.1 > free_gib:  # HDF5 chunk index and metadata: a few per cent
        log(f"descriptor cache file would need {cache_gib:.1f} GiB but {folder} has {free_gib:.1f} GiB free: "
            f"descriptors are recomputed every step instead")
        return False
    return True


def _train_epoch(model, params, store, order, config, optimizer, schedule, ema, device, dtype,
                 epoch, progress, out, dist: Distributed | None = None):
    """One pass over the shuffled training indices (distributed: this rank's share of each
    global batch, with the loss and gradients of the global batch).

    Returns:
        mean batch loss, training metrics (from the predictions made during the epoch),
        (P,) gradient norm of each parameter tensor averaged over steps (before clipping),
        and the learning rate of the epoch's last step.
    """
    opts, weights = config.training, config.loss
    forces, stress = weights.forces_weight > 0, weights.stress_weight > 0
    acc = ErrorAccumulator()
    grad_sum = torch.zeros(len(params), dtype=torch.float64, device=device)
    loss_sum, n_steps, lr = 0.0, 0, optimizer.param_groups[0]["lr"]
    steps = math.ceil(len(order) / opts.batch_size)
    bar = tqdm(total=steps, desc=f"epoch {epoch + 1}/{opts.epochs}", unit="step", leave=False,
               disable=not progress)
    step_indices = [order[lo:lo + opts.batch_size] for lo in range(0, len(order), opts.batch_size)]
    if dist is not None:
        step_indices = [dist.shard(indices) for indices in step_indices]
    # With a cache file the next batch is read while this one trains (iter_cached_batches).
    cached_batches = store.iter_cached_batches(step_indices)
    try:
        for step, cached in enumerate(cached_batches):
            pred = terms = None
            if cached is not None:  # a rank's share of a short last batch may be empty
                batch, raw, jac = cached
                batch = batch.to(device, dtype)
                # Stress of open structures is NaN and masked out of the loss (loss_terms).
                pred = _predict(model, batch, raw, jac, device, dtype, stress, create_graph=forces or stress,
                                forces=forces)
                terms = loss_terms(pred, batch, weights)
            if dist is None:
                total = terms["total"]
                value = float(total.detach())  # one sync per step: NaN must stop before the update
            else:
                total = dist.global_loss(terms, None if terms is None else batch, weights)
                value = dist.loss_value(total)  # the same on every rank: all stop together
            if not math.isfinite(value):
                parts = ", ".join(f"{k}={float(v.detach()):.4g}" for k, v in (terms or {}).items() if k != "total")
                raise TrainingError(
                    f"non-finite training loss ({value}) at epoch {epoch + 1}, step {step + 1} ({parts}); "
                    f"training stopped. last.pt, best.pt and model.pt in {out} are from the last good "
                    f"epoch; try a lower optimizer.lr, training.grad_clip or float64.")
            optimizer.zero_grad(set_to_none=True)
            if total is not None:
                total.backward()
            if dist is not None:
                dist.sum_gradients(params.values())
            grad_sum += torch.stack([p.grad.detach().double().norm() if p.grad is not None
                                     else grad_sum.new_zeros(()) for p in params.values()])
            if opts.grad_clip > 0:
                torch.nn.utils.clip_grad_norm_(list(params.values()), opts.grad_clip)
            lr = optimizer.param_groups[0]["lr"]
            optimizer.step()
            schedule.step()
            if ema is not None:
                ema.update(model)
            if pred is not None:
                acc.update({k: v.detach() for k, v in pred.items()}, batch)
            loss_sum += value
            n_steps += 1
            bar.update()
            bar.set_postfix(loss=f"{value:.3e}", lr=f"{lr:.2e}")
    finally:
        cached_batches.close()  # stops the prefetch thread if the epoch ends early
        bar.close()
    if dist is not None:
        dist.reduce_metrics(acc)
    return loss_sum / max(n_steps, 1), acc.result(), (grad_sum / max(n_steps, 1)).cpu(), lr


def _initial_gradients(model, store, train_idx, config, device, dtype) -> dict:
    """Per-layer gradient norms of the training loss at initialisation, on the first
    mini-batch of training structures (eval mode: stochastic depth off, no RNG used)."""
    opts, weights = config.training, config.loss
    forces, stress = weights.forces_weight > 0, weights.stress_weight > 0
    batch, raw, jac = store.cached_batch(train_idx[:opts.batch_size])
    batch = batch.to(device, dtype)
    model.eval()
    with LayerGradientMonitor(model) as monitor:
        pred = _predict(model, batch, raw, jac, device, dtype, stress, create_graph=forces or stress,
                        forces=forces)
        loss = loss_terms(pred, batch, weights)["total"]
        model.zero_grad(set_to_none=True)
        loss.backward()
        layers = monitor.norms()
    model.zero_grad(set_to_none=True)
    return {"loss": float(loss.detach()), "n_structures": batch.n_systems, "layers": layers}


def evaluate_store(model: Potential, store: BatchStore, indices: torch.Tensor, batch_size: int,
             device, dtype: torch.dtype, stress: bool = False, distributed: Distributed | None = None) -> dict:
    """Error metrics (:class:`ErrorAccumulator`) of ``model`` on ``store`` structures ``indices``.

    Runs in eval mode (stochastic depth off); forces need autograd but no graph is kept.
    With ``distributed``, each rank evaluates its share and the sums are reduced, so every
    rank returns the metrics of all ``indices``.
    """
    model.eval()
    acc = ErrorAccumulator()
    indices = torch.as_tensor(indices, dtype=torch.long)
    if distributed is not None:
        indices = distributed.shard(indices)
    chunks = [indices[lo:lo + batch_size] for lo in range(0, len(indices), batch_size)]
    for batch, raw, jac in store.iter_cached_batches(chunks):
        batch = batch.to(device, dtype)
        pred = _predict(model, batch, raw, jac, device, dtype, stress, create_graph=False)
        acc.update({k: v.detach() for k, v in pred.items()}, batch)
    if distributed is not None:
        distributed.reduce_metrics(acc)
    return acc.result()


def _predict(model: Potential, batch, raw, jac, device, dtype, stress: bool, create_graph: bool,
             forces: bool = True) -> dict:
    """The model on ``batch``: from cached descriptors when ``raw`` is given."""
    if raw is None:
        return model(batch, forces=forces, stress=stress, create_graph=create_graph)
    return model.forward_from_descriptors(batch, raw.to(device, dtype), jac.to(device, dtype),
                                          forces=forces, stress=stress, create_graph=create_graph)


def _evaluate_test(config, structures, split, out, device, dtype, batch_size, log) -> dict | None:
    """Errors of the saved best model on ``data.test`` (or the split's test indices)."""
    from ..io import load_model

    if config.data.test:
        test = read(config.data.test, format=config.data.format, **config.data.read_options)
        indices = torch.arange(len(test))
    elif split.test:
        test, indices = structures, torch.tensor(split.test, dtype=torch.long)
    else:
        return None
    if not (out / "model.pt").exists():
        return None
    model = load_model(out / "model.pt", device=device, dtype=dtype)
    store = BatchStore(test, cutoff=model.cutoff)
    has_stress = bool(store.data.targets.has_stress[indices].any())
    metrics = evaluate_store(model, store, indices, batch_size, device, dtype, stress=has_stress)
    metrics["source"] = config.data.test or "split.json test indices"
    metrics["epoch"] = model.metadata.get("epoch")
    path = out / "test_metrics.json"
    path.write_text(json.dumps(metrics, indent=1) + "\n")
    log(f"test ({metrics['n_structures']} structures): " + _errors(metrics) + f"  → {path}")
    return metrics


def _save_model(model, ema, path: Path, metadata: dict) -> None:
    if ema is not None:
        ema.swap(model)
    try:
        model.save(path, metadata=metadata)
    finally:
        if ema is not None:
            ema.swap(model)


def _device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise ValueError(f"training.device is {name!r} but CUDA is not available")
    return torch.device(name)


def _grad_column(name: str, elements: list[str]) -> str:
    """``networks.networks.0.blocks.0.linear.weight`` → ``grad_norm/Cu.blocks.0.linear.weight``."""
    prefix = "networks.networks."
    if name.startswith(prefix):
        index, _, rest = name[len(prefix):].partition(".")
        name = f"{elements[int(index)]}.{rest}"
    return f"grad_norm/{name}"


def _check_resumable(saved: dict, current: dict, path: Path) -> None:
    def flat(d, prefix=""):
        out = {}
        for k, v in d.items():
            key = f"{prefix}{k}"
            if isinstance(v, dict) and k not in ("descriptor", "read_options"):
                out.update(flat(v, key + "."))
            else:
                out[key] = v
        return out

    a, b = flat(saved), flat(current)
    changed = sorted(k for k in set(a) | set(b) if a.get(k) != b.get(k) and k not in _RESUME_MAY_CHANGE)
    if changed:
        raise ValueError(f"cannot resume {path}: the config differs in {changed}; only "
                         f"{sorted(_RESUME_MAY_CHANGE)} may change on resume")


def _fmt(value) -> str:
    if value is None:
        return ""
    if isinstance(value, float):
        return repr(value)
    return str(value)


def _write_csv(path: Path, columns: list[str], rows: list[dict]) -> None:
    with open(path, "w", newline="") as fh:
        writer = csv.writer(fh)
        writer.writerow(columns)
        for row in rows:
            writer.writerow([_fmt(row.get(c)) for c in columns])


def _append_csv(path: Path, columns: list[str], row: dict) -> None:
    with open(path, "a", newline="") as fh:
        csv.writer(fh).writerow([_fmt(row.get(c)) for c in columns])


def _errors(m: dict, prefix: str = "") -> str:
    def g(k):
        return m.get(prefix + k)

    parts = []
    if g("energy_rmse_mev_per_atom") is not None:
        parts.append(f"E {g('energy_rmse_mev_per_atom'):.2f} meV/atom")
    if g("force_rmse_mev_per_a") is not None:
        parts.append(f"F {g('force_rmse_mev_per_a'):.1f} meV/Å")
    if g("stress_rmse_gpa") is not None:
        parts.append(f"σ {g('stress_rmse_gpa'):.3f} GPa")
    return ", ".join(parts) or "no labels"


def _summary(row: dict, epochs: int, improved: bool) -> str:
    val = row["val_loss"]
    width = len(str(epochs))
    return (f"epoch {row['epoch']:>{width}}/{epochs}  lr {row['lr']:.2e}  loss train {row['train_loss']:.4e}"
            + (f" val {val:.4e}" if val is not None else "")
            + f"  | val RMSE {_errors(row, 'val_')}  | {row['wall_s']:.1f} s" + ("  *" if improved else ""))
