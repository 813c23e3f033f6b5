"""What a training run carries from epoch to epoch, and how it goes into a checkpoint.

:class:`RunState` is the bookkeeping of a run (epochs done, best validation loss, the
early-stopping counter, the metrics history, the data fit). :class:`Learner` bundles one
model with everything that changes while it trains (optimiser, learning-rate schedule,
EMA, run state) and turns them into the checkpoint payload of
:mod:`mlpot.training.checkpoint`, or back; resuming from that payload continues the run
bit for bit (random generators included).
"""

from __future__ import annotations

import contextlib
import math
from dataclasses import dataclass, field
from typing import Any, Iterator

import torch

from ..models import Potential
from .checkpoint import rng_state, set_rng_state
from .config import TrainConfig
from .distributed import Distributed
from .optim import EMA, LRSchedule, build_optimizer

__all__ = ["RunState", "Learner"]


def early_stopping_note(patience: int, min_delta: float) -> str:
    """The log line of a run that early stopping ended."""
    by = f" of {100 * min_delta:.3g} % or more" if min_delta else ""
    return f"early stopping: no validation improvement{by} in {patience} epochs"


@dataclass
class RunState:
    """The bookkeeping of a training run, saved in every checkpoint.

    Attributes:
        epoch: epochs completed.
        best_val_loss: lowest validation loss so far (``inf`` before the first epoch).
        best_epoch: the (1-based) epoch that reached it, ``None`` before the first epoch.
        bad_epochs: epochs since the last improvement that counts for early stopping
            (one by ``min_delta`` of :meth:`end_epoch`).
        stop_reference: the validation loss of that epoch (``inf`` before the first).
        history: one metrics row (a ``metrics.csv`` line as a dict) per completed epoch.
        fit: summary of the data-derived set-up (scaler, reference energies) of the
            fresh run; ``None`` on ranks other than 0 (rank 0 alone writes it).
    """

    epoch: int = 0
    best_val_loss: float = math.inf
    best_epoch: int | None = None
    bad_epochs: int = 0
    history: list[dict[str, Any]] = field(default_factory=list)
    fit: dict[str, Any] | None = None
    stop_reference: float = math.inf

    def end_epoch(self, row: dict[str, Any], val_loss: float, min_delta: float = 0.0) -> bool:
        """Record epoch ``row["epoch"]`` with its selection loss; returns whether it improved
        (a new best). For early stopping, only a loss below (1 − ``min_delta``) ×
        :attr:`stop_reference` resets :attr:`bad_epochs` (0: any new best does)."""
        improved = val_loss < self.best_val_loss
        counts = val_loss < self.stop_reference * (1.0 - min_delta)
        if counts:
            self.stop_reference = val_loss
        self.bad_epochs = 0 if counts else self.bad_epochs + 1
        self.epoch = row["epoch"]
        self.history.append(row)
        if improved:
            self.best_val_loss, self.best_epoch = val_loss, row["epoch"]
        return improved

    def patience_spent(self, patience: int) -> bool:
        """Whether early stopping (``patience`` epochs without improvement; 0: off) is due."""
        return bool(patience) and self.bad_epochs >= patience

    def best_row(self) -> dict[str, Any] | None:
        """The history row of the best epoch, if there is one."""
        return next((r for r in self.history if r["epoch"] == self.best_epoch), None)

    def state_dict(self) -> dict[str, Any]:
        """The checkpoint entries of the run state (plain values, in checkpoint order)."""
        return {"epoch": self.epoch, "best_val_loss": self.best_val_loss, "best_epoch": self.best_epoch,
                "bad_epochs": self.bad_epochs, "history": self.history, "fit": self.fit,
                "stop_reference": self.stop_reference}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore from :meth:`state_dict` or a whole checkpoint (other entries are ignored);
        ``best_epoch``, ``fit`` and ``stop_reference`` may be missing (older checkpoints;
        the reference is then the best loss, which is what it was without ``min_delta``)."""
        self.epoch, self.best_val_loss = state["epoch"], state["best_val_loss"]
        self.bad_epochs, self.history = state["bad_epochs"], state["history"]
        self.best_epoch, self.fit = state.get("best_epoch"), state.get("fit")
        self.stop_reference = state.get("stop_reference", self.best_val_loss)


@dataclass
class Learner:
    """One model in training: the model and all the state that its training changes.

    Attributes:
        model: the potential, already on its device and in its dtype.
        params: its named parameters (the optimiser's, in this order; gradient-norm
            columns follow it).
        optimizer: over ``params``.
        schedule: the learning-rate schedule driving ``optimizer``.
        ema: the moving average of the weights, or ``None`` without EMA.
        state: the run's bookkeeping.
    """

    model: Potential
    params: dict[str, torch.nn.Parameter]
    optimizer: torch.optim.Optimizer
    schedule: LRSchedule
    ema: EMA | None
    state: RunState

    @classmethod
    def create(cls, model: Potential, config: TrainConfig, steps_per_epoch: int,
               fit: dict[str, Any] | None = None) -> Learner:
        """Optimiser, schedule and EMA for ``model`` as ``config`` says, at epoch 0.

        Args:
            model: on its training device and dtype (the EMA copies its weights now).
            config: the run's configuration.
            steps_per_epoch: optimiser steps per epoch (for the warm-up).
            fit: the data-fit summary kept in the run state.
        """
        params = dict(model.named_parameters())
        optimizer = build_optimizer(params.values(), config.optimizer)
        schedule = LRSchedule(optimizer, config.schedule, config.optimizer.lr, config.training.epochs,
                              steps_per_epoch)
        ema = EMA(model, config.training.ema_decay) if config.training.ema_decay > 0 else None
        return cls(model, params, optimizer, schedule, ema, RunState(fit=fit))

    @contextlib.contextmanager
    def averaged(self) -> Iterator[Potential]:
        """The model with the EMA weights inside the block (the trained ones again after,
        also on errors); the plain model without EMA."""
        if self.ema is not None:
            self.ema.swap(self.model)
        try:
            yield self.model
        finally:
            if self.ema is not None:
                self.ema.swap(self.model)

    def checkpoint_payload(self, config: dict[str, Any], dist: Distributed) -> dict[str, Any] | None:
        """The checkpoint entries (:func:`~mlpot.training.checkpoint.save_checkpoint`).

        Every rank must call this: it gathers their random generator states, which a
        resume on the same number of ranks restores on each (``rng_ranks``, written only
        by distributed runs). Returns ``None`` on ranks other than 0.

        Args:
            config: the resolved config as a dict (``TrainConfig.to_dict``).
            dist: the run's process group (:class:`~mlpot.training.distributed.SingleProcess`
                for one process).
        """
        rng = rng_state(cuda=any(p.is_cuda for p in self.params.values()))
        rng_ranks = dist.gather_object(rng)
        if not dist.is_main:
            return None
        scaler = self.model.descriptor.scaler
        return {
            "model": self.model.state_dict(), "optimizer": self.optimizer.state_dict(),
            "schedule": self.schedule.state_dict(), "ema": None if self.ema is None else self.ema.state_dict(),
            **self.state.state_dict(),
            "config": config, "rng": rng, **({"rng_ranks": rng_ranks} if dist.world_size > 1 else {}),
            "scaling": {"mode": scaler.mode, "s_min": scaler.s_min, "s_max": scaler.s_max},
        }

    def restore(self, checkpoint: dict[str, Any], rank: int = 0, world_size: int = 1) -> None:
        """Continue from ``checkpoint`` (:func:`~mlpot.training.checkpoint.load_checkpoint`):
        weights, optimiser, schedule, EMA, run state and random generators.

        The model's scaler must already have the checkpoint's settings (``scaling``).
        Rank ``rank`` of ``world_size`` gets its own generators back when the checkpoint
        was written by as many ranks, rank 0's (``rng``) otherwise.
        """
        self.model.load_state_dict(checkpoint["model"])
        self.optimizer.load_state_dict(checkpoint["optimizer"])
        self.schedule.load_state_dict(checkpoint["schedule"])
        if self.ema is not None:
            self.ema.load_state_dict(checkpoint["ema"])
        self.state.load_state_dict(checkpoint)
        per_rank = checkpoint.get("rng_ranks")
        same_world = per_rank is not None and len(per_rank) == world_size
        set_rng_state(per_rank[rank] if same_world else checkpoint["rng"])
