"""Costs measured side by side: interleaved timing, and the steps of a network it times.

Timings taken hours or days apart on a shared machine do not compare: other jobs load the
cores by different amounts at different times, and a network trained during a busy day
looks slower than one trained at night. :func:`interleaved_times` runs every callable once
per round, in a fresh (seeded) random order each round, so whatever load the machine carries
while it runs falls on all callables alike, and no callable always follows the same other
one. The ratio of two callables' medians is then meaningful even on a busy machine; their
absolute times are not (they carry the load of the moment).

:func:`training_step` and :func:`inference_step` make the callables that are timed: one
optimiser step as training takes it (:func:`mlpot.training.loop.train_epoch` over a single
batch, from cached descriptors when the config caches them: the set-up of
:func:`mlpot.ablation.memory.training_setup`), and energy + forces of a batch whose neighbour
pairs are built beforehand (as :func:`mlpot.ablation.runner.inference_time` measures it).
Each callable waits for the device before it returns, so a clock around it measures its work.
"""

from __future__ import annotations

import random
import statistics
import time
from dataclasses import replace
from typing import Callable, Hashable, Mapping, Sequence, TypeVar

import torch
from ase import Atoms

from ..device import synchronize

__all__ = ["interleaved_times", "interleaved_timing", "training_step", "inference_step"]

K = TypeVar("K", bound=Hashable)


def interleaved_times(tasks: Mapping[K, Callable[[], object]], rounds: int, seed: int = 0, warmup: int = 1,
                      clock: Callable[[], float] = time.perf_counter) -> dict[K, list[float]]:
    """Time every task once per round, the tasks of each round in a new random order.

    Args:
        tasks: name → a callable without arguments (it must finish its work, device work
            included, before it returns).
        rounds: timed rounds (≥ 1).
        seed: seeds the orders (``random.Random``): the same seed, the same orders.
        warmup: rounds run first and not timed (one-time allocations, optimiser state,
            caches); shuffled like the others.
        clock: seconds, monotonic (:func:`time.perf_counter`; tests pass a fake one).

    Returns:
        name → its ``rounds`` durations in seconds, in round order.
    """
    if rounds < 1 or warmup < 0:
        raise ValueError(f"need rounds ≥ 1 and warmup ≥ 0, got rounds={rounds}, warmup={warmup}")
    keys, rng = list(tasks), random.Random(seed)
    times: dict[K, list[float]] = {k: [] for k in keys}
    for r in range(warmup + rounds):
        order = keys[:]
        rng.shuffle(order)
        for k in order:
            start = clock()
            tasks[k]()
            elapsed = clock() - start
            if r >= warmup:
                times[k].append(elapsed)
    return times


def interleaved_timing(tasks: Mapping[K, Callable[[], object]], rounds: int, seed: int = 0, warmup: int = 1,
                       clock: Callable[[], float] = time.perf_counter) -> dict[K, float]:
    """The median duration (s) of each task over ``rounds`` interleaved rounds
    (:func:`interleaved_times`, same arguments)."""
    return {k: statistics.median(v) for k, v in interleaved_times(tasks, rounds, seed, warmup, clock).items()}


def training_step(model, structures: Sequence[Atoms], config, device: torch.device) -> Callable[[], None]:
    """One optimiser step of ``model`` on the batch ``structures``, as training takes it.

    Each call is one :func:`~mlpot.training.loop.train_epoch` over the batch alone: forward
    with forces (and stress when the loss has a stress term) and the graph kept, the loss,
    the backward pass, the gradient norms, clipping, the optimiser and schedule steps and
    the EMA update, from cached descriptors and their pair Jacobian when ``config`` caches
    them (:func:`~mlpot.ablation.memory.training_setup`). A per-epoch remainder (the epoch's
    error metrics) comes with every call; it is small beside the step.

    Args:
        model: a :class:`~mlpot.models.Potential` on ``device`` in the training dtype, its
            scaling fitted; each call trains it (its weights change).
        structures: the batch (labelled ``ase.Atoms``).
        config: the run's :class:`~mlpot.training.TrainConfig` (loss, optimiser, schedule,
            EMA, clipping, dtype, descriptor cache).
        device: where it trains.
    """
    from ..training.distributed import SingleProcess
    from ..training.loop import train_epoch
    from ..training.state import Learner
    from .memory import training_setup

    settings, store = training_setup(model, structures, config, device)
    settings = replace(settings, batch_size=len(structures))  # the whole batch in one step
    learner = Learner.create(model, config, steps_per_epoch=1)
    order, dist = torch.arange(len(structures)), SingleProcess()

    def step() -> None:
        train_epoch(learner, store, order, 0, settings, dist)
        synchronize(device)

    return step


def inference_step(model, structures: Sequence[Atoms], device: torch.device | str | None = None) -> Callable[[], None]:
    """Energy and forces of ``model`` on the batch ``structures`` in eval mode, the neighbour
    pairs built beforehand (as in MD between neighbour-list rebuilds), no graph kept."""
    from ..data import collate

    device = torch.device(device) if device is not None else next(model.parameters()).device
    batch = collate(list(structures), cutoff=model.cutoff, dtype=model.dtype, device=device, labels=False)

    def infer() -> None:
        model.eval()  # stochastic depth off, as in use
        model(batch, forces=True, create_graph=False)
        synchronize(device)

    return infer
