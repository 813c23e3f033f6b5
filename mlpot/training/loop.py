"""The epoch loop: one pass of optimiser steps over a store, and the evaluation of a store.

:func:`train_epoch` takes a :class:`~mlpot.training.state.Learner` (model, optimiser,
schedule, EMA), the :class:`~mlpot.training.data.BatchStore` with the structures, their
shuffled order, what every step needs (:class:`StepSettings`) and the process group; with
:class:`~mlpot.training.distributed.SingleProcess` it is the plain single-process loop.
Batches come from the store's descriptor cache when it has one (the next one read while
this one trains), else the model computes the descriptors.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace
from functools import cached_property, partial
from pathlib import Path
from typing import Callable

import torch
from ..data import AtomsBatch
from ..descriptors import PairJacobian
from ..models import Potential
from ..progress import progress
from .checkpoint import saved_files_note
from .config import LossConfig, TrainConfig
from .data import BatchStore
from .distributed import Distributed, SingleProcess
from .loss import loss_terms
from .metrics import ErrorAccumulator
from .state import Learner

__all__ = ["TrainingError", "StepSettings", "EpochResult", "epoch_order", "train_epoch", "full_batch_epoch",
           "evaluate_store", "predict"]

#: ``(predictions, batch, weights) → loss terms`` with a differentiable ``"total"``.
LossFunction = Callable[[dict, AtomsBatch, LossConfig], dict]


class TrainingError(RuntimeError):
    """Training cannot go on (e.g. a non-finite loss); checkpoints of the last good epoch stay."""


@dataclass(frozen=True)
class StepSettings:
    """What every optimiser step of a run needs besides the learner and the data.

    Attributes:
        weights: the run's loss (``loss`` config): which terms, their final weights and,
            when annealed, their start weights.
        batch_size: structures per global batch.
        grad_clip: clip the global gradient norm to this (0: no clipping).
        epochs: the run's number of epochs (for the progress bar).
        device: where the model trains.
        dtype: the training dtype.
        run_dir: the run folder, named in the non-finite-loss error.
        progress: show a progress bar per epoch.
        loss: the loss terms of a batch (:func:`~mlpot.training.loss.loss_terms`).
        lr_ratio: r of the epoch the steps belong to (lr/``optimizer.lr`` without warm-up,
            :meth:`~mlpot.training.optim.LRSchedule.decay_ratio`), which sets the annealed
            loss weights (:attr:`epoch_weights`; :meth:`for_epoch`). 1: the first epoch's.
    """

    weights: LossConfig
    batch_size: int
    grad_clip: float
    epochs: int
    device: torch.device
    dtype: torch.dtype
    run_dir: Path
    progress: bool = False
    loss: LossFunction = loss_terms
    lr_ratio: float = 1.0

    @classmethod
    def from_config(cls, config: TrainConfig, device: torch.device, run_dir: Path, progress: bool = False,
                    loss: LossFunction = loss_terms) -> StepSettings:
        """The settings of ``config`` (its ``loss`` weights and ``training`` options)."""
        opts = config.training
        return cls(config.loss, opts.batch_size, opts.grad_clip, opts.epochs, device, getattr(torch, opts.dtype),
                   run_dir, progress, loss)

    def for_epoch(self, lr_ratio: float) -> StepSettings:
        """These settings for an epoch at ``lr_ratio`` (the learning rate's, see
        :attr:`lr_ratio`); ``self`` when the weights do not anneal."""
        return replace(self, lr_ratio=lr_ratio) if self.weights.anneals else self

    @cached_property
    def epoch_weights(self) -> LossConfig:
        """The loss weights of the steps: :attr:`weights` at :attr:`lr_ratio`
        (:meth:`~mlpot.training.config.LossConfig.weights_at`), the same with constant weights."""
        return self.weights.weights_at(self.lr_ratio)

    @property
    def forces(self) -> bool:
        """Whether the loss has a force term (the model then predicts forces; in every epoch,
        as an annealed weight stays > 0)."""
        return self.weights.forces_weight > 0

    @property
    def stress(self) -> bool:
        """Whether the loss has a stress term."""
        return self.weights.stress_weight > 0

    def predict(self, model: Potential, cached: tuple) -> tuple[AtomsBatch, dict[str, torch.Tensor]]:
        """The batch (on the device, in the dtype) and the model's predictions for the loss:
        forces and stress with the graph kept for back-propagation when the loss needs them.

        Args:
            cached: ``(batch, raw, jacobian)`` of :meth:`BatchStore.cached_batch` (``raw`` and
                ``jacobian`` are ``None`` without a descriptor cache).
        """
        batch, raw, jac = _on_device(cached, self.device, self.dtype)
        # Stress of open structures is NaN and masked out of the loss (loss_terms).
        return batch, predict(model, batch, raw, jac, forces=self.forces, stress=self.stress,
                              create_graph=self.forces or self.stress)


@dataclass(frozen=True)
class EpochResult:
    """What one training epoch reports.

    Attributes:
        loss: mean of the steps' global-batch losses.
        metrics: training errors (:class:`ErrorAccumulator` result) of the predictions made
            during the epoch, over all ranks.
        grad_norms: (P,) float64 CPU: each parameter tensor's gradient norm (before
            clipping), averaged over steps.
        lr: learning rate of the epoch's last step.
    """

    loss: float
    metrics: dict
    grad_norms: torch.Tensor
    lr: float


def epoch_order(indices: torch.Tensor, seed: int, epoch: int) -> torch.Tensor:
    """``indices`` shuffled for ``epoch`` (0-based) by a generator of its own, seeded by
    ``seed`` and ``epoch``: a resumed run draws the orders the uninterrupted one did."""
    gen = torch.Generator().manual_seed(seed * 1_000_003 + epoch)
    return indices[torch.randperm(len(indices), generator=gen)]


def train_epoch(learner: Learner, store: BatchStore, order: torch.Tensor, epoch: int, step: StepSettings,
                dist: Distributed) -> EpochResult:
    """One pass of optimiser steps over ``order``, in global batches of ``step.batch_size``
    (distributed: this rank's share of each, with the loss and gradients of the whole batch).

    Args:
        learner: trained in place (weights, optimiser, schedule, EMA).
        store: the structures, with or without a descriptor cache.
        order: (S,) long: store indices in the epoch's order (:func:`epoch_order`).
        epoch: 0-based, for the progress bar and the error message.
        step: what each step needs.
        dist: the process group (:class:`SingleProcess` for one process).

    An optimiser that re-evaluates its objective (L-BFGS) takes one step on the whole of
    ``order`` instead (:func:`full_batch_epoch`).

    Raises:
        TrainingError: on a non-finite loss, on every rank alike, before the update.
    """
    if isinstance(learner.optimizer, torch.optim.LBFGS):
        return full_batch_epoch(learner, store, order, epoch, step, dist)
    learner.model.train()
    params = list(learner.params.values())
    acc = ErrorAccumulator()
    grad_sum = torch.zeros(len(params), dtype=torch.float64, device=step.device)
    loss_sum, n_steps, lr = 0.0, 0, learner.optimizer.param_groups[0]["lr"]
    step_indices = [dist.shard(order[lo:lo + step.batch_size]) for lo in range(0, len(order), step.batch_size)]
    bar = progress(total=len(step_indices), desc=f"epoch {epoch + 1}/{step.epochs}", unit="step",
                   enabled=step.progress)
    # With a cache file the next batch is read while this one trains (iter_cached_batches).
    cached_batches = store.iter_cached_batches(step_indices)
    try:
        for i, cached in enumerate(cached_batches):
            value, batch, pred = _step(learner, cached, step, dist, (epoch, i))
            grad_sum += torch.stack([p.grad.detach().double().norm() if p.grad is not None
                                     else grad_sum.new_zeros(()) for p in params])
            if step.grad_clip > 0:
                torch.nn.utils.clip_grad_norm_(params, step.grad_clip)
            lr = learner.optimizer.param_groups[0]["lr"]
            # The loss value goes along for optimisers whose update needs it (the Kalman
            # filter's measurement); Adam just returns it.
            learner.optimizer.step(partial(float, value))
            learner.schedule.step()
            if learner.ema is not None:
                learner.ema.update(learner.model)
            if pred is not None:
                acc.update({k: v.detach() for k, v in pred.items()}, batch)
            loss_sum += value
            n_steps += 1
            bar.update()
            bar.set_postfix(loss=f"{value:.3e}", lr=f"{lr:.2e}")
    finally:
        cached_batches.close()  # stops the prefetch thread if the epoch ends early
        bar.close()
    dist.reduce_metrics(acc)
    return EpochResult(loss_sum / max(n_steps, 1), acc.result(), (grad_sum / max(n_steps, 1)).cpu(), lr)


def _step(learner: Learner, cached: tuple | None, step: StepSettings, dist: Distributed,
          where: tuple[int, int]) -> tuple[float, AtomsBatch | None, dict | None]:
    """Loss and summed gradients of one global batch (this rank's share ``cached``, ``None``
    when empty): returns the global loss, the shard's batch and its predictions.

    Raises:
        TrainingError: on a non-finite loss (``where`` = 0-based epoch and step).
    """
    value, total, batch, pred = _batch_loss(learner, cached, step, dist, where)
    learner.optimizer.zero_grad(set_to_none=True)
    if total is not None:
        total.backward()
    dist.sum_gradients(learner.params.values())
    return value, batch, pred


def _batch_loss(learner: Learner, cached: tuple | None, step: StepSettings, dist: Distributed,
                where: tuple[int, int]) -> tuple[float, torch.Tensor | None, AtomsBatch | None, dict | None]:
    """The global loss of one batch (a number, the same on every rank), this rank's
    differentiable part of it (``None`` for an empty share), the shard's batch and its
    predictions.

    Raises:
        TrainingError: on a non-finite loss (``where`` = 0-based epoch and step).
    """
    batch = pred = terms = None
    if cached is not None:  # a rank's share of a short last batch may be empty
        batch, pred = step.predict(learner.model, cached)
        terms = step.loss(pred, batch, step.epoch_weights)
    total = dist.global_loss(terms, batch, step.epoch_weights)
    value = dist.loss_value(total)  # one sync per step, the same on every rank: all stop together
    if not math.isfinite(value):
        parts = ", ".join(f"{k}={float(v.detach()):.4g}" for k, v in (terms or {}).items() if k != "total")
        raise TrainingError(
            f"non-finite training loss ({value}) at epoch {where[0] + 1}, step {where[1] + 1} ({parts}); "
            f"training stopped before the update: {saved_files_note(step.run_dir)}; try a lower optimizer.lr, "
            "training.grad_clip or float64.")
    return value, total, batch, pred


def full_batch_epoch(learner: Learner, store: BatchStore, order: torch.Tensor, epoch: int, step: StepSettings,
                     dist: Distributed) -> EpochResult:
    """One step of an optimiser that re-evaluates its objective (L-BFGS: up to ``max_iter``
    iterations with line searches) on the loss of the whole of ``order``: the mean of the
    losses of its batches of ``step.batch_size``, taken in sorted order so that every epoch
    minimises the same function and the optimiser's curvature history stays valid.

    The metrics are those of the last evaluation of the objective (the last line-search
    trial, close to the weights the step ends at); ``loss`` is the objective at the start.

    Raises:
        TrainingError: on a non-finite loss at any trial point of the line search (the
            weights in memory are then that trial's; the files of the last finished epoch
            stay as they were).
    """
    learner.model.train()
    params = list(learner.params.values())
    ordered = order.sort().values
    batch_indices = [dist.shard(ordered[lo:lo + step.batch_size]) for lo in range(0, len(ordered), step.batch_size)]
    n_batches = max(len(batch_indices), 1)
    last = {"acc": ErrorAccumulator()}
    bar = progress(desc=f"epoch {epoch + 1}/{step.epochs}", unit="pass", enabled=step.progress)

    def closure() -> torch.Tensor:
        learner.optimizer.zero_grad(set_to_none=True)
        acc, loss = ErrorAccumulator(), 0.0
        cached_batches = store.iter_cached_batches(batch_indices)
        try:
            for i, cached in enumerate(cached_batches):
                value, total, batch, pred = _batch_loss(learner, cached, step, dist, (epoch, i))
                if total is not None:
                    (total / n_batches).backward()
                    acc.update({k: v.detach() for k, v in pred.items()}, batch)
                loss += value / n_batches
        finally:
            cached_batches.close()
        dist.sum_gradients(params)
        last["acc"] = acc
        bar.update()
        bar.set_postfix(loss=f"{loss:.4e}")
        return torch.tensor(loss, dtype=torch.float64)

    try:
        start_loss = float(learner.optimizer.step(closure))
    finally:
        bar.close()
    learner.schedule.step()
    grad_norms = torch.stack([p.grad.detach().double().norm().cpu() if p.grad is not None
                              else torch.zeros((), dtype=torch.float64) for p in params])
    dist.reduce_metrics(last["acc"])
    return EpochResult(start_loss, last["acc"].result(), grad_norms, learner.optimizer.param_groups[0]["lr"])


def evaluate_store(model: Potential, store: BatchStore, indices: torch.Tensor, batch_size: int,
                   device: torch.device | str, dtype: torch.dtype, stress: bool = False,
                   distributed: Distributed | None = None) -> dict:
    """Error metrics (:class:`ErrorAccumulator`) of ``model`` on ``store`` structures ``indices``.

    Runs in eval mode (stochastic depth off); forces need autograd but no graph is kept.
    With ``distributed``, each rank evaluates its share and the sums are reduced, so every
    rank returns the metrics of all ``indices``.
    """
    dist = SingleProcess() if distributed is None else distributed
    model.eval()
    acc = ErrorAccumulator()
    indices = dist.shard(torch.as_tensor(indices, dtype=torch.long))
    chunks = [indices[lo:lo + batch_size] for lo in range(0, len(indices), batch_size)]
    for cached in store.iter_cached_batches(chunks):
        batch, raw, jac = _on_device(cached, device, dtype)
        pred = predict(model, batch, raw, jac, stress=stress)
        acc.update({k: v.detach() for k, v in pred.items()}, batch)
    dist.reduce_metrics(acc)
    return acc.result()


def predict(model: Potential, batch: AtomsBatch, raw: torch.Tensor | None = None, jac: PairJacobian | None = None,
            forces: bool = True, stress: bool = False, create_graph: bool = False) -> dict[str, torch.Tensor]:
    """The model on ``batch``: from cached descriptors when ``raw`` (and ``jac``) are given,
    on the batch's device and in its dtype."""
    if raw is None:
        return model(batch, forces=forces, stress=stress, create_graph=create_graph)
    return model.forward_from_descriptors(batch, raw, jac, forces=forces, stress=stress, create_graph=create_graph)


def _on_device(cached: tuple, device: torch.device | str, dtype: torch.dtype) -> tuple:
    """``(batch, raw, jacobian)`` moved to ``device`` and ``dtype`` (``None`` entries stay)."""
    batch, raw, jac = cached
    batch = batch.to(device, dtype)
    if raw is None:
        return batch, None, None
    return batch, raw.to(device, dtype), jac.to(device, dtype)
