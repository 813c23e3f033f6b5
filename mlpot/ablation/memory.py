"""The memory one training step of a run's network takes, measured for that run alone.

The process that trained a run cannot say this: the folds and seeds of a grid point train
together in one process (``ablation.vectorize``), and a process's peak resident set also
holds the interpreter, torch, the data and the descriptor cache. So each run is measured
on its own, after training: one optimiser step's worth of work (the forward pass with the
forces the loss needs and its graph, the loss, the backward pass) of the run's network on
one batch of ``training.batch_size`` training structures, through the same path as training
(cached descriptors and their pair Jacobian when the run used the descriptor cache).

What is reported is the peak of the bytes torch's allocator holds during that step, above
what it held before (the model's weights and the batch): activations kept for the
backward pass, temporaries, and the gradients. On CUDA that is the caching allocator's own
peak (``torch.cuda.max_memory_allocated``); on the CPU it is the running sum of the
allocator's allocation and free events recorded by ``torch.profiler`` (``profile_memory``).
Memory numpy or numba allocate outside torch is not included (the descriptor kernels on the
CPU without the cache; the same for every network of a grid). Each step runs once as
trained and once with gradient checkpointing, after one warm-up step that is not measured.
"""

from __future__ import annotations

import os
import sys
from contextlib import contextmanager
from typing import TYPE_CHECKING, Callable, Sequence

import torch
from ase import Atoms

if TYPE_CHECKING:  # annotations only: the functions import these where they use them
    from ..training.data import BatchStore
    from ..training.loop import StepSettings

__all__ = ["training_step_memory", "training_setup", "peak_allocated_bytes"]

#: How the peak is measured, by device type (recorded with each result).
METHODS = {"cuda": "torch.cuda.max_memory_allocated during one training step",
           "cpu": "torch.profiler CPU allocator events during one training step"}


def training_step_memory(model, structures: Sequence[Atoms], config, device: torch.device) -> dict:
    """Peak memory of one training step of ``model`` on ``structures`` (one batch).

    Args:
        model: the run's :class:`~mlpot.models.Potential` (on ``device``); its mode,
            gradients and checkpointing setting are restored afterwards.
        structures: the batch (labelled ``ase.Atoms``).
        config: the run's :class:`~mlpot.training.TrainConfig` (loss weights, dtype, cache).
        device: where the run trained.

    Returns:
        ``train_step_peak_mib`` (as trained), ``train_step_peak_checkpointed_mib`` (with
        gradient checkpointing), both MiB above the memory held before the step (``None``
        where the measurement is not available), ``train_step_batch`` (structures, atoms)
        and ``train_step_method``.
    """
    settings, store = training_setup(model, structures, config, device)
    cached = store.cached_batch(torch.arange(len(structures)))

    def step() -> None:
        batch, pred = settings.predict(model, cached)
        settings.loss(pred, batch, settings.epoch_weights)["total"].backward()  # the first epoch's weights

    result = {"train_step_batch": {"structures": len(structures), "atoms": int(sum(len(a) for a in structures))},
              "train_step_method": METHODS["cuda" if torch.device(device).type == "cuda" else "cpu"]}
    for key, checkpointing in (("train_step_peak_mib", None), ("train_step_peak_checkpointed_mib", True)):
        peak = _measured(model, step, device, checkpointing)
        result[key] = None if peak is None else peak / 2**20
    return result


def training_setup(model, structures: Sequence[Atoms], config, device: torch.device) -> tuple[StepSettings, BatchStore]:
    """What a training step of ``model`` on the batch ``structures`` needs, set up as training
    sets it up: the step settings of ``config`` and a store of the batch, with its descriptors
    and their pair Jacobian cached when the config caches them (the cache then holds the
    whole batch, in the training dtype).

    Returns:
        ``(settings, store)``: a :class:`~mlpot.training.loop.StepSettings` and a
        :class:`~mlpot.training.data.BatchStore` of ``structures`` in their order.
    """
    from ..training.data import BatchStore
    from ..training.loop import StepSettings

    settings = StepSettings.from_config(config, device, run_dir=".")
    store = BatchStore(list(structures), cutoff=model.cutoff)
    if config.training.descriptor_cache != "none" and model.descriptor.supports_pair_jacobian:
        store.cache_descriptors(model.descriptor, dtype=getattr(torch, config.training.dtype), device=device)
    return settings, store


def _measured(model, step: Callable[[], None], device, checkpointing: bool | None) -> int | None:
    """Peak bytes of ``step`` (after a warm-up run), in train mode with ``checkpointing``
    (``None``: as configured) and a fixed random stream, everything restored afterwards."""
    networks = [m for m in model.modules() if isinstance(getattr(m, "checkpointing", None), bool)]
    saved = [m.checkpointing for m in networks]
    was_training = model.training
    try:
        model.train()  # stochastic depth and checkpointing act in train mode only, as in training
        if checkpointing is not None:
            for m in networks:
                m.checkpointing = checkpointing
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(0)
            step()  # warm-up: one-time allocations (e.g. library workspaces) stay outside
            model.zero_grad(set_to_none=True)
            torch.manual_seed(0)
            return peak_allocated_bytes(step, device)
    finally:
        model.zero_grad(set_to_none=True)
        for m, flag in zip(networks, saved):
            m.checkpointing = flag
        model.train(was_training)


def peak_allocated_bytes(fn: Callable[[], None], device) -> int | None:
    """Peak bytes torch's allocator holds while ``fn()`` runs, above what it held before
    (``None`` where the profiler cannot record memory)."""
    device = torch.device(device)
    if device.type == "cuda":
        torch.cuda.synchronize(device)
        torch.cuda.reset_peak_memory_stats(device)
        before = torch.cuda.memory_allocated(device)
        fn()
        torch.cuda.synchronize(device)
        return int(torch.cuda.max_memory_allocated(device) - before)
    try:
        from torch.profiler import ProfilerActivity, profile

        with _quiet_stderr(), profile(activities=[ProfilerActivity.CPU], profile_memory=True) as prof:
            fn()
        events = prof.profiler.kineto_results.events()
        # Allocations (+) and frees (−) in time order; their running sum is what the step holds.
        deltas = sorted((e.start_ns(), e.nbytes()) for e in events if e.name() == "[memory]")
    except Exception:  # an older or trimmed torch without memory events
        return None
    held = peak = 0
    for _, nbytes in deltas:
        held += nbytes
        peak = max(peak, held)
    return int(peak)


@contextmanager
def _quiet_stderr():
    """File descriptor 2 to /dev/null: the profiler's C++ side prints start/stop lines there."""
    sys.stderr.flush()
    try:
        saved = os.dup(2)
    except OSError:  # no file descriptor 2 to redirect
        yield
        return
    try:
        with open(os.devnull, "w") as null:
            os.dup2(null.fileno(), 2)
            yield
    finally:
        os.dup2(saved, 2)
        os.close(saved)
