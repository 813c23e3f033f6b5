"""Many models of one shape trained as one: seeds, folds and learning rates in one pass.

``train_many(configs, out_dirs)`` trains one potential per config — each into its own run
folder with exactly the files of :func:`~mlpot.training.train` (``config.yaml``,
``split.json``, ``metrics.csv``, ``last.pt``/``best.pt``, ``model.pt``, ``test_metrics.json``)
— but reads the data, builds the neighbour pairs and the descriptor cache once, and trains
all members in one pass per step (:class:`~mlpot.training.stack.ModelStack`,
:mod:`~mlpot.training.stack_loop`). Each member is its lone run: the same initial weights
(its seed), the same data fit, the same batches in the same order, its own optimiser state,
learning-rate schedule (and the loss weights annealed with it), EMA, gradient clipping and
early stopping; a member that stops early or finishes leaves the stack and costs nothing more.

The configs may differ only in :data:`MEMBER_KEYS` (seed, split, test set, optimiser step
size and weight decay, schedule, epochs, early stopping, EMA, clipping); anything else
would change the shape of the computation and is refused, naming the key. Member
checkpoints are ordinary checkpoints: ``resume=True`` continues every member from its
``last.pt`` (a lone ``mlpot train --resume`` can continue one as well).

With a ``finish`` section the first stages train together and then each member's finish
alone, as :func:`~mlpot.training.train` runs it (``<run>/finish``; the finished model becomes
the run's ``model.pt``); a resume continues each member at the stage where it stopped.
"""

from __future__ import annotations

import copy
import json
import math
import time
import types
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Sequence

import torch
from ase.data import chemical_symbols

from ..data import read
from ..device import resolve_device, resolve_dtype
from ..io.files import atomic_write_text
from ..io.model_file import save_model
from ..models import Potential
from .cache import DescriptorCache
from .checkpoint import rng_state, save_checkpoint, set_rng_state
from .config import TrainConfig, config_differences
from .data import BatchStore
from .distributed import SingleProcess
from .loop import StepSettings, epoch_order
from .loss import loss_from_metrics, loss_terms
from .optim import LRSchedule, build_optimizer
from .report import MetricsLog, epoch_summary, grad_column
from .stack import ModelStack, _key
from .stack_loop import StackedTraining, evaluate_members, stacked_epoch
from .stack_optim import StackedAdam, StackedEMA
from .state import RunState, early_stopping_note
from .trainer import (_Data, _evaluate_test, _initial_gradients, _open_run_folder, _Run, _set_up_scaling, build_model,
                      first_stage_to_train, run_finish, structure_weights)

__all__ = ["train_many", "MEMBER_KEYS", "check_stackable"]

#: Config keys in which the members of one stack may differ (``schedule`` as a whole).
MEMBER_KEYS = frozenset({"training.seed", "data.split_seed", "data.split_file", "data.val_fraction", "data.test",
                         "optimizer.lr", "optimizer.weight_decay", "training.epochs",
                         "training.early_stopping_patience", "training.early_stopping_min_delta",
                         "training.ema_decay", "training.grad_clip", "training.checkpoint_every", "schedule"})


def check_stackable(configs: Sequence[TrainConfig]) -> None:
    """Raise ``ValueError`` naming the keys in which ``configs`` differ beyond :data:`MEMBER_KEYS`,
    or a setting that a stack cannot train (a Kalman or L-BFGS finish, a warm start)."""
    if not configs:
        raise ValueError("train_many needs at least one config")
    for k, config in enumerate(configs):
        # The stacked optimiser is Adam(W) only, and every member starts from its own seed.
        if config.optimizer.is_finish:
            raise ValueError(f"config {k}: optimizer.name {config.optimizer.name} trains one model at a time "
                             "(mlpot train), not in a stack of models")
        if config.training.init_weights is not None:
            raise ValueError(f"config {k}: training.init_weights (a warm start) trains one model at a time "
                             "(mlpot train), not in a stack of models")

    first = configs[0].to_dict()
    for k, config in enumerate(configs[1:], start=1):
        differ = config_differences(first, config.to_dict(), MEMBER_KEYS)
        if differ:
            raise ValueError(f"config {k} differs from config 0 in {differ}: only {sorted(MEMBER_KEYS)} may differ "
                             "between models trained together")


@dataclass
class _Member:
    """One member: its run (folder, config, data split) and its training bookkeeping."""

    run: _Run
    checkpoint: dict[str, Any] | None = None
    data: _Data | None = None
    model: Potential | None = None
    schedule: LRSchedule | None = None
    state: RunState = field(default_factory=RunState)
    metrics: MetricsLog | None = None
    status: str = "training"  # training | done | stopped | failed
    error: str | None = None

    @property
    def config(self) -> TrainConfig:
        return self.run.config

    @property
    def lr(self) -> float:
        return self.schedule.optimizer.param_groups[0]["lr"]


def train_many(configs: Sequence[TrainConfig], out_dirs: Sequence[str | Path], resume: bool | Sequence[bool] = False,
               overwrite: bool = False, progress: bool = True, log: Callable[[str], None] = print,
               on_epoch: Callable[[int, list[dict | None]], None] | None = None) -> list[dict]:
    """Train one potential per config, all together (see the module docstring).

    Args:
        configs: the members' configs (differing only in :data:`MEMBER_KEYS`).
        out_dirs: one run folder per member.
        resume: continue each member from its ``last.pt`` (one flag for all, or one per member).
        overwrite: allow starting afresh in folders that hold runs.
        progress: show a progress bar per epoch.
        log: receives the set-up lines and each member's epoch lines (prefixed ``[k]``).
        on_epoch: called after every stacked epoch with the highest epoch number reached
            (1-based) and each member's latest ``metrics.csv`` row (``None`` for a member
            that did not train in it); an exception raised there (e.g. a pruned search
            trial) stops the training, leaving every member's last checkpoint.

    Returns:
        Per member, what :func:`~mlpot.training.train` returns, with ``error`` (``None``,
        or why the member stopped: a non-finite loss stops that member only) and
        ``members`` (how many models trained together); with a finish, the finish's result
        and ``first_stage`` (as :func:`~mlpot.training.train` gives them).
    """
    if len(configs) != len(out_dirs):
        raise ValueError(f"{len(configs)} configs but {len(out_dirs)} output folders")
    check_stackable(configs)
    resumes = [bool(resume)] * len(configs) if isinstance(resume, bool) else [bool(r) for r in resume]
    if configs[0].finish is None:  # (the same in every member: not a MEMBER_KEY)
        return _train_stack(configs, out_dirs, resumes, overwrite, progress, log, on_epoch)
    return _train_with_finish(configs, [Path(o) for o in out_dirs], resumes, overwrite, progress, log, on_epoch)


def _train_with_finish(configs: Sequence[TrainConfig], outs: list[Path], resumes: list[bool], overwrite: bool,
                       progress: bool, log: Callable[[str], None], on_epoch) -> list[dict]:
    """The members' first stages together (of those whose finish has not started), then
    each member's finish alone (:func:`~mlpot.training.trainer.run_finish`: L-BFGS and the
    Kalman filter train one model at a time)."""
    todo = [k for k, (out, again) in enumerate(zip(outs, resumes)) if first_stage_to_train(out, again, overwrite)]
    firsts: dict[int, dict] = {}
    if todo:
        stacked = _train_stack([configs[k] for k in todo], [outs[k] for k in todo], [resumes[k] for k in todo],
                               overwrite, progress, log, on_epoch)
        firsts = dict(zip(todo, stacked))
    results = []
    for k, (config, out) in enumerate(zip(configs, outs)):
        first = firsts.get(k)
        if first is not None and first["error"]:  # a failed first stage is not finished
            results.append(first)
            continue
        finish = run_finish(config, out, SingleProcess(), config.training.device, progress, _prefixed(log, k))
        results.append(finish | {"first_stage": first, "error": None, "members": len(todo)})
    return results


def _train_stack(configs: Sequence[TrainConfig], out_dirs: Sequence[str | Path], resumes: list[bool],
                 overwrite: bool, progress: bool, log: Callable[[str], None], on_epoch) -> list[dict]:
    """:func:`train_many` of one stage: every member in one stack."""
    base = configs[0]
    device = resolve_device(base.training.device, "training.device")
    dtype = resolve_dtype(base.training.dtype, "training.dtype")
    members = [_Member(_Run(c, Path(o), SingleProcess(), device, dtype, False, _prefixed(log, k)))
               for k, (c, o) in enumerate(zip(configs, out_dirs))]
    for m, again in zip(members, resumes):
        m.checkpoint = _open_run_folder(m.run.out, m.config, again, overwrite)
    store = _set_up(members, progress, log)
    with DescriptorCache.from_options(base.training, members[0].run.out, log, progress) as cache:
        cache.prepare(store, members[0].model.descriptor, dtype, device, SingleProcess())
        for m in members:
            m.model.to(device=device, dtype=dtype)
            _start_member(m)
        _train_members(members, store, StepSettings.from_config(base, device, members[0].run.out, progress), on_epoch)
    return [_result(m) | {"members": len(members)} for m in members]


def _prefixed(log: Callable[[str], None], k: int) -> Callable[[str], None]:
    return lambda line: log(f"[{k}] {line}")


def _set_up(members: list[_Member], progress: bool, log: Callable[[str], None]) -> BatchStore:
    """Read the data once, split it per member, build each member's model and data fit, and
    the shared store of neighbour pairs."""
    from ..data.checks import check_labels
    from .trainer import _read_and_split

    base = members[0].config
    structures = read(base.data.train, format=base.data.format, **base.data.read_options)
    if base.training.check_labels:  # before any member's files are written
        check_labels(structures, str(base.data.train))
    splits = []
    for m in members:
        m.config.save(m.run.out / "config.yaml")
        splits.append(_read_and_split(m.run, m.checkpoint is not None, structures)[1])
    # The loss section is the same for every member (not a MEMBER_KEY), so are the weights;
    # each member's training split is checked and reported.
    weights, lines = None, []
    for m, split in zip(members, splits):
        weights, line = structure_weights(m.config, structures, split.train)
        lines.append(line)
    element_sets = [sorted({int(z) for k in s.train for z in structures[k].numbers}) for s in splits]
    if any(e != element_sets[0] for e in element_sets):
        raise ValueError(f"the members' training sets hold different elements {element_sets}: they cannot share "
                         "one architecture")
    elements = [chemical_symbols[z] for z in element_sets[0]]
    descriptor, train = None, [structures[k] for k in splits[0].train]
    if getattr(base.descriptor, "fits_to_data", False):
        if any(s.train != splits[0].train for s in splits):
            raise ValueError("descriptor.select chooses the terms on the training split, and the members' splits "
                             "differ (data.split_seed, data.val_fraction or data.split_file): their descriptors "
                             "could differ, so they cannot be trained as one; train them apart")
        descriptor = base.build_descriptor(elements, train)  # chosen once for all members
    for m in members:
        m.model = build_model(m.config, elements, train, descriptor=descriptor)
    store = BatchStore(structures, cutoff=members[0].model.cutoff, progress=progress, weights=weights)
    fitted: dict[tuple, _Member] = {}  # the data fit depends only on the training set
    for m, split in zip(members, splits):
        m.data = _Data(structures, split, store, torch.tensor(split.train, dtype=torch.long),
                       torch.tensor(split.val, dtype=torch.long))
        key = (tuple(split.train), m.config.scaling)
        if m.checkpoint is None and key in fitted:
            _copy_fit(fitted[key], m)
            continue
        m.state.fit = _set_up_scaling(m.run, m.model, m.data, m.checkpoint)
        if m.checkpoint is None:
            fitted[key] = m
    log(f"{len(members)} models of {members[0].model.n_parameters()} parameters trained together on "
        f"{len(structures)} structures of {elements}")
    for m, line in zip(members, lines):
        for text in (line, m.config.loss.anneal_summary()):
            if text:
                m.run.log(text)
    return store


@torch.no_grad()
def _copy_fit(source: _Member, m: _Member) -> None:
    """``source``'s data fit (scaler, reference energies, energy scale) for ``m``, which trains
    on the same structures: the fit a lone run of ``m`` would compute."""
    m.model.descriptor.scaler = copy.deepcopy(source.model.descriptor.scaler)
    m.model.reference_energies.copy_(source.model.reference_energies)
    m.model.energy_scale.copy_(source.model.energy_scale)
    m.state.fit = copy.deepcopy(source.state.fit)


def _start_member(m: _Member) -> None:
    """The member's schedule, metrics file and run state, fresh or from its checkpoint."""
    opts = m.config.training
    proxy = types.SimpleNamespace(param_groups=[{"lr": m.config.optimizer.lr}])
    m.schedule = LRSchedule(proxy, m.config.schedule, m.config.optimizer.lr, opts.epochs,
                            math.ceil(len(m.data.train_idx) / opts.batch_size))
    names = [grad_column(n, list(m.model.elements)) for n, _ in m.model.named_parameters()]
    m.metrics = MetricsLog(m.run.out / "metrics.csv", names)
    if m.checkpoint is not None:
        m.model.load_state_dict(m.checkpoint["model"])
        m.schedule.load_state_dict(m.checkpoint["schedule"])
        m.state.load_state_dict(m.checkpoint)
        set_rng_state(m.checkpoint["rng"])
        m.run.log(f"resuming from {m.run.out / 'last.pt'} after epoch {m.state.epoch}")
    else:
        step = StepSettings.from_config(m.config, m.run.device, m.run.out, False, loss=loss_terms)
        grads = _initial_gradients(m.model, m.data.store, m.data.train_idx, step.for_epoch(m.schedule.decay_ratio()))
        atomic_write_text(m.run.out / "grad_init.json", json.dumps(grads, indent=1) + "\n")
    m.metrics.restart(m.state.history)
    _update_status(m)


def _update_status(m: _Member) -> None:
    opts = m.config.training
    if m.status == "training" and m.state.epoch >= opts.epochs:
        m.status = "done"
    elif m.status == "training" and m.state.patience_spent(opts.early_stopping_patience):
        m.status = "stopped"


def _stack(members: list[_Member]) -> StackedTraining:
    """The stacked weights, optimiser and EMA of ``members`` (in that order), with each
    member's optimiser and EMA state restored from its checkpoint."""
    stack = ModelStack([m.model for m in members])
    params = list(stack.stacked.values())
    cfg = members[0].config.optimizer
    wd = torch.tensor([m.config.optimizer.weight_decay for m in members], dtype=torch.float64)
    optimizer = StackedAdam(params, (0.9, 0.999), 1e-8, wd, decoupled=cfg.name == "adamw")
    decays = torch.tensor([m.config.training.ema_decay for m in members], dtype=torch.float64)
    ema = StackedEMA(dict(stack.stacked.items()), decays.to(params[0].device)) if bool((decays > 0).any()) else None
    names = {_key(n): n for n in stack.parameter_names}
    for s, m in enumerate(members):
        if m.checkpoint is not None:
            optimizer.load_member_state(s, m.checkpoint["optimizer"])
            if ema is not None and m.checkpoint.get("ema") is not None:
                ema.load_member_state(s, m.checkpoint["ema"], names)
    clip = torch.tensor([m.config.training.grad_clip for m in members], dtype=torch.float64,
                        device=params[0].device)
    return StackedTraining(stack, optimizer, ema, [m.schedule for m in members], clip)


def _train_members(members: list[_Member], store: BatchStore, step: StepSettings,
                   on_epoch: Callable[[int, list[dict | None]], None] | None) -> None:
    """Epochs until every member is done, stopped or failed; the stack shrinks as they leave."""
    live = [m for m in members if m.status == "training"]
    training = _stack(live) if live else None
    while live:
        start = time.perf_counter()
        orders = [epoch_order(m.data.train_idx, m.config.training.seed, m.state.epoch) for m in live]
        label = f"epoch {min(m.state.epoch for m in live) + 1} ({len(live)} models)"
        trained, failed = stacked_epoch(training, store, orders, step, label)
        for s, message in failed.items():
            live[s].status, live[s].error = "failed", message
            live[s].run.log(f"stopped: {message}; files of the last good epoch are kept in {live[s].run.out}")
        has_stress = bool(store.data.targets.has_stress.any())
        val = evaluate_members(training, store, [m.data.val_idx for m in live], step, has_stress)
        wall = (time.perf_counter() - start) / len(live)  # each member's share of the epoch
        for s, m in enumerate(live):
            if m.status == "training":
                _end_epoch(m, s, training, (trained[s], val[s]), wall)
        if on_epoch is not None:
            ids = {id(m) for m in live}
            on_epoch(max(m.state.epoch for m in live),
                     [m.state.history[-1] if id(m) in ids and m.state.history else None for m in members])
        live, training = _shrink(live, training)


def _shrink(live: list[_Member], training: StackedTraining) -> tuple[list[_Member], StackedTraining | None]:
    """Drop members that left (done, stopped, failed) from the stack."""
    keep = [s for s, m in enumerate(live) if m.status == "training"]
    if len(keep) == len(live):
        return live, training
    if not keep:
        return [], None
    training.keep(keep)
    return [live[s] for s in keep], training


def _end_epoch(m: _Member, s: int, training: StackedTraining, results: tuple, wall: float) -> None:
    """Member ``m`` (slot ``s``) after its epoch: selection loss, schedule, metrics row,
    model and checkpoints, log line, early stopping — as a lone run does."""
    trained, val_metrics = results
    epoch, opts = m.state.epoch, m.config.training
    has_val = len(m.data.val_idx) > 0
    val_loss = loss_from_metrics(val_metrics if has_val else trained.metrics, m.config.loss)
    if not math.isfinite(val_loss):
        m.status, m.error = "failed", f"validation loss is {val_loss} after epoch {epoch + 1}"
        m.run.log(f"stopped: {m.error}; files of the last good epoch are kept in {m.run.out}")
        return
    m.schedule.epoch_end(val_loss)
    row = m.metrics.row(epoch + 1, wall, trained, val_loss if has_val else None, val_metrics)
    improved = m.state.end_epoch(row, val_loss, m.config.training.early_stopping_min_delta)
    m.metrics.append(row)
    if improved:
        _save_member_model(m, s, training, {"epoch": epoch + 1, "val_loss": val_loss, "val_metrics": val_metrics,
                                            "train_metrics": trained.metrics, "config": m.config.to_dict(),
                                            "fit": m.state.fit})
        save_checkpoint(m.run.out / "best.pt", _payload(m, s, training))
    _update_status(m)
    stop = m.status == "stopped"
    if (epoch + 1) % opts.checkpoint_every == 0 or epoch + 1 == opts.epochs or stop:
        save_checkpoint(m.run.out / "last.pt", _payload(m, s, training))
    m.run.log(epoch_summary(row, opts.epochs, improved))
    if stop:
        m.run.log(early_stopping_note(opts.early_stopping_patience, opts.early_stopping_min_delta))


def _save_member_model(m: _Member, s: int, training: StackedTraining, metadata: dict) -> None:
    """``model.pt`` of member ``m``: its EMA weights when EMA is on, else its weights."""
    weights = None
    if training.ema is not None and m.config.training.ema_decay > 0:
        weights = {n: training.ema.shadow[_key(n)][s] for n in training.stack.parameter_names}
    save_model(training.stack.store_member(s, m.model, weights), m.run.out / "model.pt", metadata)


def _payload(m: _Member, s: int, training: StackedTraining) -> dict[str, Any]:
    """Member ``m``'s checkpoint, in the format of a lone run's."""
    model = training.stack.store_member(s, m.model)
    group = build_optimizer(model.parameters(), m.config.optimizer).state_dict()["param_groups"][0]
    group = {k: v for k, v in group.items() if k != "params"} | {"lr": m.lr}
    ema = None
    if training.ema is not None and m.config.training.ema_decay > 0:
        ema = training.ema.member_state(s, {_key(n): n for n in training.stack.parameter_names})
    scaler = model.descriptor.scaler
    return {"model": model.state_dict(), "optimizer": training.optimizer.member_state(s, group),
            "schedule": m.schedule.state_dict(), "ema": ema, **m.state.state_dict(), "config": m.config.to_dict(),
            "rng": rng_state(cuda=m.run.device.type == "cuda"),
            "scaling": {"mode": scaler.mode, "s_min": scaler.s_min, "s_max": scaler.s_max}}


def _result(m: _Member) -> dict:
    """What :func:`~mlpot.training.train` returns, for member ``m`` (and ``error``)."""
    from .report import METRIC_COLUMNS

    state, best = m.state, m.state.best_row()
    result = {"epochs": state.epoch, "best_epoch": state.best_epoch, "best_val_loss": state.best_val_loss,
              "stopped_early": m.status == "stopped",
              "train": None if best is None else {k: best[f"train_{k}"] for k in METRIC_COLUMNS},
              "val": None if best is None else {k: best[f"val_{k}"] for k in METRIC_COLUMNS},
              "test": None, "error": m.error}
    if m.status != "failed":
        result["test"] = _evaluate_test(m.run, m.data)
    return result
