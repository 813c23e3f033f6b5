"""The training run: data → split → potential → epochs of force training → best model.

``train(config, out_dir)`` writes into ``out_dir``:

- ``config.yaml``: the resolved config; ``split.json``: the train/val(/test) indices;
- ``metrics.csv``: one row per epoch (losses, errors, learning rate, wall time, gradient
  norm per parameter tensor);
- ``last.pt`` / ``best.pt``: full checkpoints (latest / best validation loss);
- ``model.pt``: the best model (EMA weights when EMA is on), loadable with :func:`mlpot.load`;
- ``test_metrics.json``: errors of that model on the test set, if one is given.

A config with a ``finish`` section (:class:`~mlpot.training.config.FinishConfig`) trains in
two stages: the first as above, then the finish in ``out_dir/finish`` (a run folder of its
own) from the first stage's model, kept there as ``start.pt``; the finished model and its
test metrics then become ``out_dir``'s ``model.pt`` and ``test_metrics.json``.

Resuming (``resume=True``) continues from ``last.pt``; in float64 on the CPU the weights are
bit-identical to an uninterrupted run (seeded per-epoch shuffles, restored RNG, optimiser,
schedule and EMA state).

Under ``torchrun`` (or ``mlpot train --nproc N``) the run is data-parallel with the same
global batches and results as one process (:mod:`mlpot.training.distributed`); rank 0
writes every file.

This module puts a run together from parts usable on their own: :func:`build_model`, the
descriptor-cache policy (:class:`~mlpot.training.cache.DescriptorCache`), the model with
its optimiser, schedule, EMA and run state (:class:`~mlpot.training.state.Learner`), the
epoch loop (:mod:`mlpot.training.loop`), ``metrics.csv`` and the log lines
(:mod:`mlpot.training.report`), and the process group
(:class:`~mlpot.training.distributed.Distributed`, or
:class:`~mlpot.training.distributed.SingleProcess` for one process).
"""

from __future__ import annotations

import copy
import json
import math
import shutil
import time
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Sequence

import torch

from ..data import Split, element_symbols, load_split, random_split, read
from ..data.checks import check_labels
from ..descriptors import Descriptor, SymmetryFunctions
from ..device import resolve_device, resolve_dtype
from ..io.files import atomic_path, atomic_write_text
from ..io.model_file import save_model
from ..models import Potential
from .cache import DescriptorCache
from .checkpoint import RUN_FILES, CheckpointError, load_checkpoint, save_checkpoint, saved_files_note
from .config import (RESULT_NEUTRAL_TRAINING_OPTIONS, TRAINING_LENGTH_OPTIONS, TrainConfig, config_differences,
                     with_current_defaults)
from .data import BatchStore
from .distributed import Distributed, from_environment
from .gradients import LayerGradientMonitor
from .kalman import KalmanFilter
from .loop import StepSettings, TrainingError, epoch_order, evaluate_store, train_epoch
from .loss import loss_from_metrics, loss_terms
from .report import METRIC_COLUMNS, MetricsLog, epoch_summary, error_summary, grad_column
from .state import Learner, early_stopping_note
from .warm_start import warm_start_model

__all__ = ["TrainingError", "train", "build_model", "evaluate_store", "structure_weights", "resume_differences",
           "METRIC_COLUMNS", "FINISH_DIR", "first_stage_to_train", "run_finish"]

# Settings a resumed run may change; anything else must match the checkpoint.
# A resume may also extend the run and change the test set.
_RESUME_MAY_CHANGE = ({f"training.{k}" for k in RESULT_NEUTRAL_TRAINING_OPTIONS | TRAINING_LENGTH_OPTIONS}
                      | {"data.test", "finish"})  # the finish stage checks its own settings when it resumes

#: The finish stage's run folder inside the run's; it starts from the first stage's model,
#: copied there as ``start.pt``, and ``result.json`` there says how far it has finished.
FINISH_DIR = "finish"
_FINISH_START, _FINISH_RESULT = "start.pt", "result.json"


def train(config: TrainConfig, out_dir: str | Path, resume: bool = False, overwrite: bool = False,
          progress: bool = True, log: Callable[[str], None] = print) -> dict:
    """Train a potential as ``config`` says and write the run into ``out_dir``.

    Args:
        config: the resolved configuration.
        out_dir: run folder (created if needed).
        resume: continue from ``out_dir/last.pt`` (``config`` may change only the number
            of epochs, early-stopping patience, checkpoint interval, device and test set);
            with a finish, continue whichever stage stopped.
        overwrite: allow starting afresh in a folder that already holds a run.
        progress: show a progress bar per epoch.
        log: receives one summary line per epoch and the final report.

    Returns:
        ``epochs`` completed, ``best_epoch``, ``best_val_loss``, ``stopped_early``, the
        ``train`` and ``val`` metrics of the best epoch, and ``test`` metrics (or ``None``).
        With a finish: the finish's, and ``first_stage``, the first stage's (``None`` when it
        had finished before this call).

    Raises:
        TrainingError: on a non-finite loss (the files of the last good epoch are kept).
        ValueError / FileNotFoundError / CheckpointError: for bad input or a bad resume,
            raised before anything is written to ``out_dir``. A bad label (non-finite,
            beyond physical bounds, or far outside the set) is a ``DataError`` unless
            ``training.check_labels`` is off.
    """
    dist, device_name = from_environment(config.training.device)
    if not dist.is_main:  # rank 0 alone reports
        progress, log = False, _silent
    finished = False
    try:
        out = Path(out_dir)
        if config.finish is None:
            result = _train_stage(config, out, dist, device_name, resume, overwrite, progress, log)
        else:
            first = None
            if first_stage_to_train(out, resume, overwrite, discard=dist.is_main):
                dist.barrier()  # rank 0 has removed an earlier run's finish
                first = _train_stage(config, out, dist, device_name, resume, overwrite, progress, log)
            result = run_finish(config, out, dist, device_name, progress, log) | {"first_stage": first}
        finished = True
        return result
    finally:
        dist.close(synchronize=finished)  # after an error the other ranks may never arrive


def _train_stage(config: TrainConfig, out: Path, dist: Distributed, device_name: str, resume: bool,
                 overwrite: bool, progress: bool, log: Callable[[str], None]) -> dict:
    """One stage of training into ``out`` (:func:`train` without its finish)."""
    # Nothing is written (not even the folder) until the data and config have passed every check.
    checkpoint = _open_run_folder(out, config, resume, overwrite, create=False)
    run = _Run(config, out, dist, resolve_device(device_name, "training.device"),
               resolve_dtype(config.training.dtype, "training.dtype"), progress, log)
    # The descriptor cache (an HDF5 file, possibly) is closed also on errors.
    with DescriptorCache.from_options(config.training, out, log, progress) as cache:
        return _train(run, cache, checkpoint, resume)


def first_stage_to_train(out: str | Path, resume: bool, overwrite: bool, discard: bool = True) -> bool:
    """Whether the first stage of a run with a finish trains in this call into ``out``: not
    when a resume finds its finish started (the first stage's model copied to
    ``out/finish/start.pt``).

    A first stage that starts afresh removes, when ``discard`` (the process that writes the
    files), a finish left there by an earlier run, which a resume of the new run would
    otherwise take for its own: with ``overwrite``, or when no first stage is there to keep it
    company. With ``overwrite`` it goes even if the new run then fails its checks: the earlier
    first stage stays, and a resume of the earlier config finishes it again.
    """
    out = Path(out)
    if resume:
        return not (out / FINISH_DIR / _FINISH_START).is_file()
    if discard and (overwrite or not (out / "last.pt").exists()):
        shutil.rmtree(out / FINISH_DIR, ignore_errors=True)
    return True


def run_finish(config: TrainConfig, out: Path, dist: Distributed, device_name: str, progress: bool,
               log: Callable[[str], None]) -> dict:
    """The finish stage of the run in ``out``, whose first stage has finished: from its
    ``model.pt`` (copied to ``out/finish/start.pt``) into ``out/finish``, resumed there if
    it had stopped; then its model and test metrics become ``out``'s. Returns its result."""
    folder = out / FINISH_DIR
    start, done = folder / _FINISH_START, folder / _FINISH_RESULT
    if dist.is_main and not start.is_file():
        folder.mkdir(exist_ok=True)
        with atomic_path(start) as tmp:
            shutil.copyfile(out / "model.pt", tmp)
    dist.barrier()
    stage = config.finish_stage(start)
    result = json.loads(done.read_text()) if done.is_file() else None
    if result is None or result["epochs"] < stage.training.epochs:  # not run, stopped, or to be extended
        log(f"finish: {stage.training.epochs} epochs of {stage.optimizer.name} in {stage.training.dtype} from the "
            f"first stage's model ({start}) into {folder}")
        result = _train_stage(stage, folder, dist, device_name, (folder / "last.pt").is_file(), True, progress,
                              lambda line: log(f"[finish] {line}"))
        if dist.is_main:
            atomic_write_text(done, json.dumps(result, indent=1) + "\n")
    if dist.is_main:
        for name in ("model.pt", "test_metrics.json"):
            if (folder / name).is_file():
                with atomic_path(out / name) as tmp:
                    shutil.copyfile(folder / name, tmp)
    dist.barrier()
    log(f"finished model: {out / 'model.pt'} (the first stage's: {start})")
    return result


def build_model(config: TrainConfig, elements: list[str], train_structures: Sequence | None = None,
                descriptor: Descriptor | None = None) -> Potential:
    """The untrained potential of ``config`` for ``elements``, its weights drawn from
    ``training.seed`` (the same on every rank and in every run with that seed).

    Args:
        train_structures: the training split, on which ``descriptor.select`` chooses its
            terms (deterministically: every rank and every resume chooses the same).
        descriptor: ``config``'s descriptor, built already (e.g. its terms chosen once for
            several models); the model gets its own copy.
    """
    descriptor = (config.build_descriptor(elements, train_structures) if descriptor is None
                  else copy.deepcopy(descriptor))
    torch.manual_seed(config.training.seed)  # weight initialisation
    return Potential(descriptor, config.model)


@dataclass(frozen=True)
class _Run:
    """What every stage of one run shares."""

    config: TrainConfig
    out: Path
    dist: Distributed
    device: torch.device
    dtype: torch.dtype
    progress: bool
    log: Callable[[str], None]


@dataclass(frozen=True)
class _Data:
    """The structures of a run, their split and the store batches are cut from."""

    structures: Sequence
    split: Split
    store: BatchStore
    train_idx: torch.Tensor
    val_idx: torch.Tensor
    test_set: Sequence | None = None  # data.test, read (and so checked) before the run starts

    @property
    def has_stress(self) -> bool:
        """Whether any structure has a stress label (then validation predicts stress)."""
        return bool(self.store.data.targets.has_stress.any())


def _silent(_: str) -> None:
    pass


def _open_run_folder(out: Path, config: TrainConfig, resume: bool, overwrite: bool,
                     create: bool = True) -> dict[str, Any] | None:
    """The checkpoint to resume from (checked against ``config``), or ``None``; creates
    ``out`` when ``create`` (a lone run creates it later, once its input has passed).

    Raises:
        ValueError: ``out`` holds a run that is neither resumed nor to be overwritten, or
            ``config`` changes settings a resume must keep.
    """
    if create:
        out.mkdir(parents=True, exist_ok=True)
    if resume:
        checkpoint = load_checkpoint(out / "last.pt")
        _check_resumable(checkpoint["config"], config.to_dict(), out / "last.pt")
        return checkpoint
    if (out / "last.pt").exists() and not overwrite:
        raise ValueError(_occupied(out))
    return None


def _occupied(out: Path) -> str:
    """Why a fresh run may not start in ``out``: what the run there is, and the ways on."""
    elsewhere = "start afresh over it with --overwrite, or choose another --out folder"
    try:
        saved = load_checkpoint(out / "last.pt")
    except (CheckpointError, OSError):
        return f"{out} already holds a training run whose last.pt cannot be read; {elsewhere}"
    opts = saved["config"].get("training", {}) if isinstance(saved["config"], dict) else {}
    epoch, epochs, patience = saved["epoch"], opts.get("epochs", 0), opts.get("early_stopping_patience", 0)
    if epoch >= epochs or (patience and saved["bad_epochs"] >= patience):
        model = out / "model.pt"
        found = f"its model is {model}" if model.is_file() else "it saved no model"
        return (f"{out} already holds a training run, finished after {epoch} epoch{'s' * (epoch != 1)} ({found}); "
                f"--resume with a larger training.epochs extends it; or {elsewhere}")
    return (f"{out} already holds a training run, stopped after epoch {epoch} of {epochs} (last.pt): "
            f"continue it with --resume, {elsewhere}")


def _train(run: _Run, cache: DescriptorCache, checkpoint: dict[str, Any] | None, resume: bool) -> dict:
    """The run after the folder checks: set-up, epochs, test evaluation."""
    config, opts, dist = run.config, run.config.training, run.dist
    structures, split, test = _read_and_check(run, resume)
    weights, weights_line = structure_weights(config, structures, split.train)  # before any file is written
    elements = element_symbols(structures[k] for k in split.train)
    if opts.init_weights is not None:
        model = warm_start_model(config, elements)
        run.log(f"weights, descriptor and scaling from {opts.init_weights} (training.init_weights)")
    else:
        model = build_model(config, elements, [structures[k] for k in split.train])
    _check_elements(model, structures, test, config)
    dist.barrier()  # every rank has passed the checks above before rank 0 writes
    if dist.is_main:
        _start_files(run.out, config, split, fresh=checkpoint is None)
    run.log(f"data: {len(split.train)} train / {len(split.val)} val structures of {elements}; "
            f"model: {model.n_parameters()} parameters")
    select = getattr(config.descriptor, "select", None)
    if select is not None:
        run.log(f"descriptor: {model.descriptor.n_features} features per element, chosen by {select.method} "
                f"from {SymmetryFunctions(config.descriptor_spec(elements)).n_features} candidates on the training split")
    for line in (weights_line, config.loss.anneal_summary()):
        if line:
            run.log(line)
    store = BatchStore(structures, cutoff=model.cutoff, progress=run.progress, weights=weights)
    data = _Data(structures, split, store, torch.tensor(split.train, dtype=torch.long),
                 torch.tensor(split.val, dtype=torch.long), test)
    fit_summary = _set_up_scaling(run, model, data, checkpoint)
    cache.prepare(store, model.descriptor, run.dtype, run.device, dist)
    model.to(device=run.device, dtype=run.dtype)
    # Rank 0's fitted set-up and initial weights on every rank, before anything uses them
    # (the descriptor cache above holds unscaled descriptors) and before the EMA copies
    # the weights (a resume then loads the same checkpoint everywhere).
    dist.broadcast_module(model)
    learner = Learner.create(model, config, math.ceil(len(data.train_idx) / opts.batch_size), fit_summary)
    if isinstance(learner.optimizer, KalmanFilter):  # its covariance dominates memory and checkpoints
        entries = learner.optimizer.covariance_entries()
        run.log(f"Kalman filter: covariance of {entries / 1e6:.1f} M entries ({entries * run.dtype.itemsize / 2**20:.0f} MiB), "
                "saved in every checkpoint (optimizer.kalman.block_size sets it)")
    if config.optimizer.name == "lbfgs" and run.dtype != torch.float64:
        # Measured on the mlearn Mo recipe model: in float32 every line search of the finish
        # stalled within 2e-4 of the start loss; in float64 the same finish went on lowering it.
        run.log("L-BFGS in float32: its line searches can stall at the rounding of the loss; "
                "training.dtype: float64 is the setting for this finish")
    if checkpoint is not None:
        learner.restore(checkpoint, dist.rank, dist.world_size)
        run.log(f"resuming from {run.out / 'last.pt'} after epoch {learner.state.epoch}")

    metrics = MetricsLog(run.out / "metrics.csv", [grad_column(n, elements) for n in learner.params],
                         write=dist.is_main)
    metrics.restart(learner.state.history)  # rows of the checkpoint only
    step = StepSettings.from_config(config, run.device, run.out, run.progress, loss=loss_terms)
    if checkpoint is None and dist.is_main:
        grads = _initial_gradients(model, store, data.train_idx, step.for_epoch(learner.schedule.decay_ratio()))
        atomic_write_text(run.out / "grad_init.json", json.dumps(grads, indent=1) + "\n")
    stopped_early = _train_epochs(run, learner, data, step, metrics)

    state, best = learner.state, learner.state.best_row()
    result = {"epochs": state.epoch, "best_epoch": state.best_epoch,
              "best_val_loss": state.best_val_loss, "stopped_early": stopped_early,
              "train": None if best is None else {k: best[f"train_{k}"] for k in METRIC_COLUMNS},
              "val": None if best is None else {k: best[f"val_{k}"] for k in METRIC_COLUMNS},
              "test": None}
    if dist.is_main:
        result["test"] = _evaluate_test(run, data)
    dist.barrier()  # the others wait for rank 0's test evaluation
    return result


def _read_and_check(run: _Run, resume: bool) -> tuple[Sequence, Split, Sequence | None]:
    """The training structures, their split and the test set (``data.test``, else ``None``),
    with the training labels checked (``training.check_labels``); nothing is written."""
    data = run.config.data
    structures, split = _read_and_split(run, resume, save=False)
    if run.config.training.check_labels:
        check_labels(structures, str(data.train))
    test = read(data.test, format=data.format, **data.read_options) if data.test else None
    return structures, split, test


def structure_weights(config: TrainConfig, structures: Sequence,
                      train: Sequence[int]) -> tuple[list[float] | None, str | None]:
    """Each structure's loss weight (``loss.weight_by``, ``loss.group_weights``) and the line
    that reports them: the weight and number of training structures of every group, so a
    run's log shows how much each group counts. ``(None, None)`` without ``loss.weight_by``.

    Args:
        structures: all structures of ``data.train``.
        train: indices of the training split.

    Raises:
        ValueError: see :meth:`~mlpot.training.config.LossConfig.structure_weights`.
    """
    loss = config.loss
    found = loss.structure_weights(structures, str(config.data.train), train)
    if found is None:
        return None, None
    weights, labels = found
    counts = Counter(labels[k] for k in train)
    parts = [f"{g} {loss.group_weights.get(g, 1.0):g} × {counts[g]}" for g in sorted(set(labels))]
    return weights, (f"loss weights by info[{loss.weight_by!r}] (weight × training structures): "
                     + ", ".join(parts))


def _check_elements(model: Potential, structures: Sequence, test: Sequence | None, config: TrainConfig) -> None:
    """Raise ``ValueError`` if a training, validation or test structure holds an element the
    model (its descriptor's ``elements``) does not know."""
    known = set(model.elements)
    for name, dataset in ((config.data.train, structures), (config.data.test, test or ())):
        for k, atoms in enumerate(dataset):
            unknown = sorted(set(atoms.get_chemical_symbols()) - known)
            if unknown:
                raise ValueError(f"{name}, structure {k}: element(s) {unknown} are not among the model's "
                                 f"{sorted(known)} (descriptor.elements)")


def _start_files(out: Path, config: TrainConfig, split: Split, fresh: bool) -> None:
    """Create ``out`` with ``config.yaml`` and ``split.json``; a fresh run (over an old one,
    with ``overwrite``) first removes the old run's checkpoints, model and test metrics, so
    every file in ``out`` belongs to this run."""
    out.mkdir(parents=True, exist_ok=True)
    if fresh:
        for name in (*RUN_FILES, "test_metrics.json"):
            (out / name).unlink(missing_ok=True)
    config.save(out / "config.yaml")
    split.save(out / "split.json")


def _read_and_split(run: _Run, resume: bool, structures: Sequence | None = None,
                    save: bool = True) -> tuple[Sequence, Split]:
    """The training structures (read unless given) and their split: the run's own when
    resuming, else ``data.split_file`` or a random one (saved as ``split.json`` by rank 0
    when ``save``)."""
    data = run.config.data
    if structures is None:
        structures = read(data.train, format=data.format, **data.read_options)
    if resume and (run.out / "split.json").is_file():
        split = load_split(run.out / "split.json")
    elif data.split_file:
        split = load_split(data.split_file)
    else:
        split = random_split(len(structures), data.val_fraction, seed=data.split_seed,
                             groups=data.groups(structures))
    if split.n_total != len(structures):
        raise ValueError(f"split has n_total={split.n_total} but {data.train} holds "
                         f"{len(structures)} structures")
    if save and run.dist.is_main:
        split.save(run.out / "split.json")
    return structures, split


def _set_up_scaling(run: _Run, model: Potential, data: _Data, checkpoint: dict[str, Any] | None) -> dict | None:
    """Give ``model`` its descriptor scaler: fitted to the training data by rank 0 of a
    fresh run (with the reference energies and energy scale; returns the fit summary),
    an unfitted one of the same shape elsewhere, or the checkpoint's settings on resume
    (the values then come with the checkpoint's weights)."""
    scaling, descriptor = run.config.scaling, model.descriptor
    if run.config.training.init_weights is not None:
        # The warm-start model brings its fitted scaler, reference energies and energy
        # scale: the weights mean nothing with another fit. A resume's checkpoint holds them too.
        return None if checkpoint is not None or not run.dist.is_main else {
            "init_weights": str(run.config.training.init_weights)}
    if checkpoint is not None:
        sc = checkpoint["scaling"]
        descriptor.empty_scaler(sc["mode"], sc["s_min"], sc["s_max"])
        return None
    if not run.dist.is_main:
        # The fit would give the same values on every rank: rank 0 alone does it and
        # broadcast_module copies its values (scaler, reference energies, energy scale)
        # into this unfitted scaler of the same shape and the other buffers.
        descriptor.empty_scaler(scaling.mode, *scaling.range)
        return None
    model.to(run.device)
    fit_batches = list(data.store.batches(data.train_idx, max(64, run.config.training.batch_size), run.device))
    return model.fit_to_data(fit_batches, scaling.mode, tuple(scaling.range))


def _train_epochs(run: _Run, learner: Learner, data: _Data, step: StepSettings, metrics: MetricsLog) -> bool:
    """Epochs from the learner's until ``training.epochs`` or early stopping, with their
    rows, checkpoints and log lines; returns whether early stopping ended the run."""
    opts, state = run.config.training, learner.state
    for epoch in range(state.epoch, opts.epochs):
        if state.patience_spent(opts.early_stopping_patience):
            return True  # a resumed run that had already stopped
        improved = _run_epoch(run, learner, data, step, epoch, metrics)
        stop = state.patience_spent(opts.early_stopping_patience)
        if (epoch + 1) % opts.checkpoint_every == 0 or epoch + 1 == opts.epochs or stop:
            _checkpoint(run, learner, run.out / "last.pt")
        run.dist.barrier()  # the epoch's files are complete before any rank goes on
        run.log(epoch_summary(state.history[-1], opts.epochs, improved))
        if stop:
            run.log(early_stopping_note(opts.early_stopping_patience, opts.early_stopping_min_delta))
            return True
    return False


def _run_epoch(run: _Run, learner: Learner, data: _Data, step: StepSettings, epoch: int,
               metrics: MetricsLog) -> bool:
    """Train and validate epoch ``epoch`` (0-based), record its row, and save the model and
    ``best.pt`` when it improved (returned)."""
    opts = run.config.training
    start = time.perf_counter()
    order = epoch_order(data.train_idx, opts.seed, epoch)
    # The epoch's loss weights (annealed with the learning rate); the selection loss below
    # keeps the final ones.
    trained = train_epoch(learner, data.store, order, epoch, step.for_epoch(learner.schedule.decay_ratio()), run.dist)
    with learner.averaged() as model:
        val_metrics = evaluate_store(model, data.store, data.val_idx, opts.batch_size, run.device, run.dtype,
                                     data.has_stress, distributed=run.dist)
    has_val = len(data.val_idx) > 0
    # Without a validation set the model is selected on the training loss.
    val_loss = loss_from_metrics(val_metrics if has_val else trained.metrics, run.config.loss)
    if not math.isfinite(val_loss):
        raise TrainingError(f"validation loss is {val_loss} after epoch {epoch + 1}; training stopped: "
                            f"{saved_files_note(run.out)}.")
    learner.schedule.epoch_end(val_loss)
    row = metrics.row(epoch + 1, time.perf_counter() - start, trained, val_loss if has_val else None, val_metrics)
    improved = learner.state.end_epoch(row, val_loss, run.config.training.early_stopping_min_delta)
    metrics.append(row)
    if improved:
        if run.dist.is_main:
            _save_model(learner, run.out / "model.pt", {
                "epoch": epoch + 1, "val_loss": val_loss, "val_metrics": val_metrics,
                "train_metrics": trained.metrics, "config": run.config.to_dict(), "fit": learner.state.fit})
        _checkpoint(run, learner, run.out / "best.pt")
    return improved


def _checkpoint(run: _Run, learner: Learner, path: Path) -> None:
    """Save the learner's checkpoint to ``path``; called by every rank (it gathers their
    generators), rank 0 writes."""
    payload = learner.checkpoint_payload(run.config.to_dict(), run.dist)
    if payload is not None:
        save_checkpoint(path, payload)


def _save_model(learner: Learner, path: Path, metadata: dict) -> None:
    """Save the model (with the EMA weights when EMA is on) as a model file."""
    with learner.averaged() as model:
        save_model(model, path, metadata)


def _initial_gradients(model: Potential, store: BatchStore, train_idx: torch.Tensor, step: StepSettings) -> dict:
    """Per-layer gradient norms of the training loss at initialisation (with the weights of
    ``step``'s epoch), on the first mini-batch of training structures (eval mode: stochastic
    depth off, no RNG used)."""
    cached = store.cached_batch(train_idx[:step.batch_size])
    model.eval()
    with LayerGradientMonitor(model) as monitor:
        batch, pred = step.predict(model, cached)
        loss = step.loss(pred, batch, step.epoch_weights)["total"]
        model.zero_grad(set_to_none=True)
        loss.backward()
        layers = monitor.norms()
    model.zero_grad(set_to_none=True)
    return {"loss": float(loss.detach()), "n_structures": batch.n_systems, "layers": layers}


def _evaluate_test(run: _Run, data: _Data) -> dict | None:
    """Errors of the saved best model on ``data.test`` (or the split's test indices)."""
    from ..io import load_model

    config = run.config
    if config.data.test:
        test = data.test_set
        if test is None:  # many.train_many reads it here
            test = read(config.data.test, format=config.data.format, **config.data.read_options)
        indices = torch.arange(len(test))
    elif data.split.test:
        test, indices = data.structures, torch.tensor(data.split.test, dtype=torch.long)
    else:
        return None
    if not (run.out / "model.pt").exists():
        return None
    model = load_model(run.out / "model.pt", device=run.device, dtype=run.dtype)
    store = BatchStore(test, cutoff=model.cutoff)
    has_stress = bool(store.data.targets.has_stress[indices].any())
    metrics = evaluate_store(model, store, indices, config.training.batch_size, run.device, run.dtype,
                             stress=has_stress)
    metrics["source"] = config.data.test or "split.json test indices"
    metrics["epoch"] = model.metadata.get("epoch")
    path = run.out / "test_metrics.json"
    path.write_text(json.dumps(metrics, indent=1) + "\n")
    run.log(f"test ({metrics['n_structures']} structures): " + error_summary(metrics) + f"  → {path}")
    return metrics


def resume_differences(saved: dict, current: dict) -> list[str]:
    """The dotted config keys in which ``current`` (``TrainConfig.to_dict``) differs from a
    run's ``saved`` config beyond what a resume may change (the run's length, result-neutral
    options such as the device, and the test set): empty when a run trained with ``saved``
    can stand for one trained with ``current``. Options added since ``saved`` was written
    compare at their defaults."""
    return config_differences(with_current_defaults(saved), current, _RESUME_MAY_CHANGE)


def _check_resumable(saved: dict, current: dict, path: Path) -> None:
    changed = resume_differences(saved, current)
    if changed:
        raise ValueError(f"cannot resume {path}: the config differs in {changed}; only "
                         f"{sorted(_RESUME_MAY_CHANGE)} may change on resume")
