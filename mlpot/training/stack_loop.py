"""The epoch loop of a :class:`~mlpot.training.stack.ModelStack`: every member's step in one pass.

At step k, member m trains on the k-th batch of its own shuffled training set (its lone
run's batch); the batches of all members are cut from the shared store as one batch,
member by member, and one forward and one backward pass serve all. Losses and error metrics
are per member (sums by member, the formulas of :mod:`~mlpot.training.loss` and
:class:`~mlpot.training.metrics.ErrorAccumulator`), so each member reports what its lone
run would.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Sequence

import torch

from ..progress import progress
from .config import LOSS_TERM_WEIGHTS, LossConfig
from .data import BatchStore
from .loop import EpochResult, StepSettings, _on_device, predict
from .loss import label_masks, label_weights, penalty, require_constant_weights, safe_ratio, weighted_row_sums
from .metrics import ErrorAccumulator
from .optim import LRSchedule
from .stack import ModelStack
from .stack_optim import StackedAdam, StackedEMA, clip_member_gradients, member_gradient_norms

__all__ = ["StackedTraining", "member_loss", "member_weights", "term_weights", "MemberErrors", "stacked_epoch",
           "evaluate_members"]


@dataclass
class StackedTraining:
    """The trained stack with its optimiser state (all (M,)-stacked).

    Attributes:
        stack: the members' weights.
        optimizer: their Adam/AdamW state.
        ema: their moving averages, or ``None``.
        schedules: each member's learning-rate schedule (advanced after each of its steps).
        grad_clip: (M,) maximum gradient norms (0: none).
    """

    stack: ModelStack
    optimizer: StackedAdam
    ema: StackedEMA | None
    schedules: list[LRSchedule]
    grad_clip: torch.Tensor

    @property
    def params(self) -> list[torch.nn.Parameter]:
        return list(self.stack.stacked.values())

    def lr(self) -> torch.Tensor:
        """(M,) float64: each member's current learning rate."""
        return torch.tensor([s.lr for s in self.schedules], dtype=torch.float64, device=self.grad_clip.device)

    def on_step(self, active: torch.Tensor) -> None:
        """Advance the schedules of the members that stepped (``active`` (M,) bool)."""
        for schedule, stepped in zip(self.schedules, active.tolist()):
            if stepped:
                schedule.step()

    def keep(self, members: Sequence[int]) -> None:
        """Keep only the slots ``members`` (in that order) of everything stacked."""
        index = torch.tensor(list(members), dtype=torch.long, device=self.grad_clip.device)
        self.stack.keep(members)
        self.optimizer.keep(index)
        self.optimizer.rebind(self.params)
        if self.ema is not None:
            self.ema.keep(index)
        self.grad_clip = self.grad_clip[index]
        self.schedules = [self.schedules[m] for m in members]


def term_weights(loss: LossConfig) -> dict[str, float]:
    """The weight of each term in the loss (``energy``, ``forces``, ``stress``; weight > 0)
    of constant weights ``loss``."""
    require_constant_weights(loss)
    return {name.removesuffix("_weight"): getattr(loss, name) for name in LOSS_TERM_WEIGHTS if getattr(loss, name) > 0}


def member_weights(loss: LossConfig, schedules: Sequence[LRSchedule], device: torch.device,
                   dtype: torch.dtype) -> dict[str, float | torch.Tensor]:
    """The term weights of each member's current epoch (for :func:`member_loss`): those of
    ``loss`` (numbers) when they are constant; annealed, (M,) tensors, member m's weights
    ``loss.weights_at(r_m)`` at the learning-rate ratio of its schedule
    (:meth:`~mlpot.training.optim.LRSchedule.decay_ratio`), as its lone run weighs them."""
    if not loss.anneals:
        return term_weights(loss)
    epochs = [term_weights(loss.weights_at(s.decay_ratio())) for s in schedules]
    return {term: torch.tensor([w[term] for w in epochs], dtype=dtype, device=device) for term in epochs[0]}


def member_loss(pred: dict[str, torch.Tensor], batch, weights: LossConfig | dict[str, float | torch.Tensor],
                member: torch.Tensor, n_members: int, loss: LossConfig | None = None) -> dict[str, torch.Tensor]:
    """Each member's :func:`~mlpot.training.loss.loss_terms` over its own structures: ``total``
    and the unweighted terms, each (M,); ``member`` (B,) is the member of each structure.
    With structure weights (``batch.targets.weight``) each member's means are weighted as
    :func:`~mlpot.training.loss.loss_terms` weights them.

    Args:
        weights: constant loss weights of every member, or the weight of each term in the
            loss, a number or (M,) per member (:func:`member_weights`).
        loss: the loss config whose shape the members share besides the term weights: the
            Huber thresholds (``loss.huber``) and ``loss.energy_size_exponent``; ``None``:
            ``weights`` when it is a :class:`LossConfig`, else squared errors, exponent 0.
    """
    w = term_weights(weights) if isinstance(weights, LossConfig) else weights
    if loss is None and isinstance(weights, LossConfig):
        loss = weights
    huber = loss.huber if loss is not None else {}
    exponent = loss.energy_size_exponent if loss is not None else 0.0
    t, masks, rows = batch.targets, label_masks(batch), label_weights(batch, exponent)
    atom_member = member[batch.system_idx]

    def mean_cost(diff: torch.Tensor, key: str, owner: torch.Tensor) -> torch.Tensor:
        zeros = diff.new_zeros(n_members)
        if rows is not None:
            sq, count = weighted_row_sums(diff, masks[key], rows[key], huber.get(key))
            return safe_ratio(zeros.index_add(0, owner, sq), zeros.index_add(0, owner, count))
        mask = masks[key]
        m = mask.reshape(mask.shape + (1,) * (diff.dim() - 1)).expand_as(diff)
        sq = penalty(torch.where(m, diff, torch.zeros_like(diff)), huber.get(key)).flatten(1).sum(1)
        count = m.flatten(1).sum(1).to(diff.dtype)
        return zeros.index_add(0, owner, sq) / zeros.index_add(0, owner, count).clamp(min=1)

    terms: dict[str, torch.Tensor] = {}
    if "energy" in w:
        per_atom = (pred["energy"] - torch.nan_to_num(t.energy)) / batch.n_atoms.to(t.energy.dtype)
        terms["energy"] = mean_cost(per_atom.unsqueeze(1), "energy", member)
    if "forces" in w and "forces" in pred:
        terms["forces"] = mean_cost(pred["forces"] - torch.nan_to_num(t.forces), "forces", atom_member)
    if "stress" in w and "stress" in pred:
        terms["stress"] = mean_cost(pred["stress"] - torch.nan_to_num(t.stress), "stress", member)
    terms["total"] = sum((w[k] * v for k, v in terms.items()), start=pred["energy"].new_zeros(n_members))
    return terms


class MemberErrors:
    """Per-member sums of squared and absolute errors (one :class:`ErrorAccumulator` each,
    filled from tensors summed on the device: one synchronisation per epoch)."""

    def __init__(self, n_members: int):
        self.n = n_members
        self.sums: torch.Tensor | None = None  # (M, 10): e2 e1 ne f2 f1 nf s2 ns structures atoms

    @torch.no_grad()
    def update(self, pred: dict[str, torch.Tensor], batch, member: torch.Tensor) -> None:
        t, masks = batch.targets, label_masks(batch)
        atom_member = member[batch.system_idx]
        rows = torch.zeros(self.n, 10, dtype=torch.float64, device=member.device)
        err = torch.where(masks["energy"], (pred["energy"].double() - t.energy.double()) / batch.n_atoms.double(), 0.0)
        rows[:, 0].index_add_(0, member, err * err)
        rows[:, 1].index_add_(0, member, err.abs())
        rows[:, 2].index_add_(0, member, masks["energy"].double())
        if "forces" in pred:
            ferr = torch.where(masks["forces"].unsqueeze(1), pred["forces"].double() - t.forces.double(), 0.0)
            rows[:, 3].index_add_(0, atom_member, (ferr * ferr).sum(1))
            rows[:, 4].index_add_(0, atom_member, ferr.abs().sum(1))
            rows[:, 5].index_add_(0, atom_member, 3.0 * masks["forces"].double())
        if "stress" in pred:
            serr = torch.where(masks["stress"].view(-1, 1, 1), pred["stress"].double() - t.stress.double(), 0.0)
            rows[:, 6].index_add_(0, member, (serr * serr).flatten(1).sum(1))
            rows[:, 7].index_add_(0, member, 9.0 * masks["stress"].double())
        rows[:, 8].index_add_(0, member, torch.ones_like(member, dtype=torch.float64))
        rows[:, 9].index_add_(0, member, batch.n_atoms.double())
        self.sums = rows if self.sums is None else self.sums + rows

    def result(self, m: int) -> dict:
        """Member ``m``'s metrics, as :meth:`ErrorAccumulator.result`."""
        acc = ErrorAccumulator()
        if self.sums is not None:
            s = self.sums[m].tolist()
            acc.sums.update(e2=s[0], e1=s[1], f2=s[3], f1=s[4], s2=s[6])
            acc.counts.update(e=int(s[2]), f=int(s[5]), s=int(s[7]))
            acc.n_structures, acc.n_atoms = int(s[8]), int(s[9])
        return acc.result()


def _member_batches(orders: Sequence[torch.Tensor], batch_size: int) -> list[list[torch.Tensor]]:
    """Per step, each member's batch of store indices (empty once its epoch is over)."""
    n_steps = max((math.ceil(len(o) / batch_size) for o in orders), default=0)
    return [[o[k * batch_size:(k + 1) * batch_size] for o in orders] for k in range(n_steps)]


def _joint(store: BatchStore, parts: list[torch.Tensor], step: StepSettings) -> tuple:
    """One batch of all members' parts (in member order), its predictions' inputs and the
    member of each structure."""
    member = torch.cat([torch.full((len(p),), m, dtype=torch.long) for m, p in enumerate(parts)])
    batch, raw, jac = _on_device(store.cached_batch(torch.cat(parts)), step.device, step.dtype)
    return batch, raw, jac, member.to(step.device)


def stacked_epoch(training: StackedTraining, store: BatchStore, orders: Sequence[torch.Tensor],
                  step: StepSettings, label: str) -> tuple[list[EpochResult], dict[int, str]]:
    """One epoch of every member (``orders[m]``: member m's shuffled training indices).

    Returns:
        each member's :class:`EpochResult`, and the members whose loss stopped being finite
        (slot → message; ``label`` names the epoch). Such a member is not updated from that
        step on: its weights stay those of its last good step, as a lone run stops there.
    """
    stack, n_members = training.stack, training.stack.n_members
    stack.train()
    errors = MemberErrors(n_members)
    device = step.device
    grad_sum = torch.zeros(n_members, len(training.params), dtype=torch.float64, device=device)
    loss_sum = torch.zeros(n_members, dtype=torch.float64, device=device)
    n_steps = torch.zeros(n_members, dtype=torch.float64, device=device)
    alive = torch.ones(n_members, dtype=torch.bool, device=device)
    failed: dict[int, str] = {}
    last_lr = training.lr().clone()
    steps = _member_batches(orders, step.batch_size)
    weights = member_weights(step.weights, training.schedules, device, step.dtype)  # at the epoch's start
    for k, parts in enumerate(progress(steps, desc=label, unit="step", enabled=step.progress)):
        batch, raw, jac, member = _joint(store, parts, step)
        with stack.assign(member[batch.system_idx]):
            pred = predict(stack, batch, raw, jac, forces=step.forces, stress=step.stress,
                           create_graph=step.forces or step.stress)
        terms = member_loss(pred, batch, weights, member, n_members, step.weights)
        values = terms["total"].detach()
        active = alive & torch.tensor([len(p) > 0 for p in parts], device=device) & torch.isfinite(values)
        for m in torch.nonzero(alive & ~torch.isfinite(values)).squeeze(1).tolist():
            failed[m] = (f"non-finite training loss ({float(values[m])}) in {label}, step {k + 1}; try a lower "
                         "optimizer.lr, training.grad_clip or float64")
        alive &= torch.isfinite(values)
        training.optimizer.zero_grad()
        torch.where(active, terms["total"], torch.zeros_like(terms["total"])).sum().backward()
        _zero_inactive_gradients(training.params, active)
        norms = member_gradient_norms(training.params)
        grad_sum += norms * active.unsqueeze(1)
        clip_member_gradients(training.params, norms, training.grad_clip)
        lr = training.lr()
        last_lr = torch.where(active, lr, last_lr)
        training.optimizer.step(lr, active)
        training.on_step(active)
        if training.ema is not None:
            training.ema.update(dict(stack.stacked.items()), active)
        errors.update({key: v.detach() for key, v in pred.items()}, batch, member)
        loss_sum += torch.where(active, values.double(), 0.0)
        n_steps += active.double()
    per_step = n_steps.clamp(min=1)
    mean_loss, mean_grads = (loss_sum / per_step).tolist(), (grad_sum / per_step.unsqueeze(1)).cpu()
    results = [EpochResult(mean_loss[m], errors.result(m), mean_grads[m], float(last_lr[m])) for m in range(n_members)]
    return results, failed


@torch.no_grad()
def _zero_inactive_gradients(params: Sequence[torch.Tensor], active: torch.Tensor) -> None:
    """Members without a (finite) loss this step get zero gradients (NaN-free)."""
    if bool(active.all()):
        return
    for p in params:
        if p.grad is not None:
            p.grad[~active] = 0.0


@torch.no_grad()
def _swap_ema(training: StackedTraining) -> None:
    if training.ema is None:
        return
    for key, p in training.stack.stacked.items():
        shadow = training.ema.shadow[key]
        tmp = p.detach().clone()
        p.copy_(shadow)
        shadow.copy_(tmp)


def evaluate_members(training: StackedTraining, store: BatchStore, indices: Sequence[torch.Tensor],
                     step: StepSettings, stress: bool) -> list[dict]:
    """Each member's error metrics on its ``indices`` (with its EMA weights when EMA is on),
    in eval mode; batches of ``step.batch_size`` per member, evaluated together."""
    stack = training.stack
    stack.eval()
    errors = MemberErrors(stack.n_members)
    _swap_ema(training)
    try:
        for parts in _member_batches(indices, step.batch_size):
            batch, raw, jac, member = _joint(store, parts, step)
            with stack.assign(member[batch.system_idx]):
                pred = predict(stack, batch, raw, jac, stress=stress)
            errors.update({k: v.detach() for k, v in pred.items()}, batch, member)
    finally:
        _swap_ema(training)
    return [errors.result(m) for m in range(stack.n_members)]
