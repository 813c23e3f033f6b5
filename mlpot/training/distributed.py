"""Data-parallel training over several processes with ``torch.distributed``.

Each of W processes (ranks) holds the whole model and dataset and takes a disjoint slice of
every global batch, so the global batch is the one a single process would use. The loss
stays the single-process loss: its terms are means over labelled items (structures, force
components, stress components) of the *global* batch, so each rank divides its sum of
squared errors by the global count of each term (one all-reduce of three counts; with
structure weights, of the three sums of weights), and the
ranks' gradients are summed (not averaged) in one all-reduce per step. Validation and
training metrics are summed over ranks before RMSE/MAE are formed. Rank 0 alone writes
files; the others wait at barriers.

One process is :class:`SingleProcess`: the same interface with rank 0 of one, where every
collective is the identity, so the trainer runs one code path for both.

Launch with ``torchrun --nproc_per_node N -m mlpot train CONFIG`` or ``mlpot train CONFIG
--nproc N`` (which calls torchrun). Backend: NCCL on CUDA (one GPU per rank, ``cuda:LOCAL_RANK``),
gloo on the CPU.
"""

from __future__ import annotations

import contextlib
import os
import subprocess
import sys
from typing import Iterable, Iterator

import torch
import torch.distributed as tdist

from ..device import resolve_device
from .loss import label_masks, label_weights, require_constant_weights
from .metrics import ErrorAccumulator

__all__ = ["Distributed", "SingleProcess", "from_environment", "launch"]


class Distributed:
    """The process group of one training run, seen from one rank.

    Args:
        rank: this process's rank, 0 … world_size − 1.
        world_size: number of processes W.
        device: where collective buffers live (the rank's GPU for NCCL, the CPU for gloo).
        owns_group: destroy the process group in :meth:`close` (it was created here).
        cpu_group: group for collectives on CPU tensors (:meth:`all_gather_chunks`): a gloo
            group beside an NCCL default group; ``None`` means the default group (gloo).
    """

    def __init__(self, rank: int, world_size: int, device: torch.device, owns_group: bool = False,
                 cpu_group: tdist.ProcessGroup | None = None):
        self.rank, self.world_size, self.device = rank, world_size, device
        self.owns_group, self.cpu_group = owns_group, cpu_group

    @property
    def is_main(self) -> bool:
        """Rank 0: the one that logs and writes files."""
        return self.rank == 0

    # ------------------------------------------------------------------ data
    def shard(self, indices: torch.Tensor) -> torch.Tensor:
        """This rank's disjoint share of ``indices`` (every W-th entry from ``rank``): the
        shares of all ranks together are exactly ``indices``. May be empty."""
        return indices[self.rank::self.world_size]

    # ------------------------------------------------------------------ loss and gradients
    def global_loss(self, terms: dict[str, torch.Tensor] | None, batch, weights) -> torch.Tensor | None:
        """This rank's part of the global-batch loss; called by every rank every step.

        :func:`~mlpot.training.loss.loss_terms` gives per-shard means sum/n_local; each is
        rescaled to sum/n_global, so the parts of all ranks add up to the loss of the
        global batch, and so do their gradients.

        Args:
            terms: ``loss_terms`` of this rank's shard, or ``None`` for an empty shard.
            batch: the shard's :class:`~mlpot.data.AtomsBatch` (``None`` when empty).
            weights: the :class:`~mlpot.training.config.LossConfig` of the step (its epoch's
                weights when they anneal, ``StepSettings.epoch_weights``).

        Returns:
            a differentiable scalar, or ``None`` for an empty shard.
        """
        local = torch.zeros(3, dtype=torch.float64, device=self.device)
        if terms is not None:
            local = _label_counts(batch, weights.energy_size_exponent).to(self.device)
        counts = local.clone()
        tdist.all_reduce(counts)
        if terms is None:
            return None
        require_constant_weights(weights)
        w = {"energy": weights.energy_weight, "forces": weights.forces_weight, "stress": weights.stress_weight}
        total = terms["total"].new_zeros(())
        for k, key in enumerate(("energy", "forces", "stress")):
            if key in terms:
                # Not max(count, 1): a weighted count (sum of weights) may be below 1.
                count = float(counts[k])
                factor = float(local[k]) / count if count > 0 else 0.0
                total = total + w[key] * terms[key] * factor
        return total

    def loss_value(self, total: torch.Tensor | None) -> float:
        """The global-batch loss (sum of the ranks' parts), identical on every rank."""
        value = torch.zeros((), dtype=torch.float64, device=self.device)
        if total is not None:
            value += total.detach().to(self.device, torch.float64)
        tdist.all_reduce(value)
        return float(value)

    def sum_gradients(self, params: Iterable[torch.nn.Parameter]) -> None:
        """Replace each ``.grad`` by its sum over ranks, in one all-reduce.

        A parameter that no rank touched keeps ``grad = None`` (as in one process, where
        the optimiser then skips it, e.g. the network of an element absent from the batch);
        one touched by some ranks only gets zeros from the others.
        """
        params = list(params)
        dtype = next((p.dtype for p in params), torch.float64)
        flat = torch.cat([(p.grad if p.grad is not None else torch.zeros_like(p)).reshape(-1).to(dtype)
                          for p in params]
                         + [torch.tensor([p.grad is not None for p in params], dtype=dtype, device=params[0].device)])
        flat = flat.to(self.device)
        tdist.all_reduce(flat)
        touched = flat[-len(params):]
        offset = 0
        for k, p in enumerate(params):
            n = p.numel()
            if touched[k] > 0:
                p.grad = flat[offset:offset + n].view_as(p).to(p.device, p.dtype).clone()
            else:
                p.grad = None
            offset += n

    # ------------------------------------------------------------------ metrics and sync
    def reduce_metrics(self, acc: ErrorAccumulator) -> ErrorAccumulator:
        """Sum the error sums and counts of every rank's accumulator into ``acc``."""
        keys_s, keys_c = sorted(acc.sums), sorted(acc.counts)
        values = torch.tensor([acc.sums[k] for k in keys_s] + [acc.counts[k] for k in keys_c]
                              + [acc.n_structures, acc.n_atoms], dtype=torch.float64, device=self.device)
        tdist.all_reduce(values)
        values = values.tolist()
        acc.sums = dict(zip(keys_s, values[:len(keys_s)]))
        acc.counts = {k: int(round(v)) for k, v in zip(keys_c, values[len(keys_s):len(keys_s) + len(keys_c)])}
        acc.n_structures, acc.n_atoms = int(round(values[-2])), int(round(values[-1]))
        return acc

    def broadcast_module(self, module: torch.nn.Module) -> None:
        """Copy rank 0's parameters and persistent buffers (its ``state_dict``) to every rank.

        This is how the data-derived set-up that rank 0 alone fits (descriptor scaler,
        reference energies, energy scale) reaches the other ranks, so their modules must
        already hold tensors of the same names, shapes and dtypes (e.g. an unfitted
        :class:`~mlpot.descriptors.scaling.FeatureScaler`).

        Raises:
            ValueError: on every rank, if the ranks' state dicts differ in names, shapes or
                dtypes (a broadcast of mismatched tensors would hang or mix up values).
        """
        state = module.state_dict()
        layout = [(name, tuple(t.shape), str(t.dtype)) for name, t in state.items()]
        layouts: list = [None] * self.world_size
        tdist.all_gather_object(layouts, layout)
        for rank, other in enumerate(layouts):
            if other != layouts[0]:
                diff = sorted(set(other) ^ set(layouts[0])) or "the same entries in another order"
                raise ValueError(f"cannot broadcast the model: rank {rank}'s parameters and buffers differ "
                                 f"from rank 0's (name, shape, dtype): {diff}")
        for tensor in state.values():
            buffer = tensor.detach().to(self.device)
            tdist.broadcast(buffer, 0)
            if buffer is not tensor:
                tensor.copy_(buffer)

    def all_gather_chunks(self, local: dict[int, tuple[torch.Tensor, ...]],
                          n_chunks: int) -> list[tuple[torch.Tensor, ...]]:
        """All ``n_chunks`` chunks on every rank, when each rank computed its share of them.

        Rank r holds chunks r, r + W, r + 2W, … (``local[k]`` for chunk k), each a tuple of
        CPU tensors; the tensors at one tuple position have the same dtype and trailing
        shape in every chunk, their row counts (first dimension) may differ. The shapes go
        to every rank in one ``all_gather_object``; then each rank broadcasts its chunks,
        concatenated along the rows, in one broadcast per tuple position over
        :attr:`cpu_group` (gloo: no copy to a GPU and back under NCCL). The values arrive
        bit for bit.

        Returns:
            the chunks in order 0 … n_chunks − 1: this rank's own tensors, and views of the
            received buffers for the others'.

        Raises:
            ValueError: (on every rank) if a rank holds other chunks than its share, or the
                chunks' tensors disagree in count, dtype or trailing shape.
        """
        if sorted(local) != list(range(self.rank, n_chunks, self.world_size)):
            layout = None  # reported by every rank below, so none waits in a broadcast
        else:
            layout = [[(tuple(t.shape), t.dtype) for t in local[k]] for k in sorted(local)]
        layouts: list = [None] * self.world_size
        tdist.all_gather_object(layouts, layout, group=self.cpu_group)
        if any(lay is None for lay in layouts):
            bad = [r for r, lay in enumerate(layouts) if lay is None]
            raise ValueError(f"all_gather_chunks: ranks {bad} do not hold exactly their chunks r, r + "
                             f"{self.world_size}, … of {n_chunks}")
        signatures = {tuple((shape[1:], dtype) for shape, dtype in chunk) for lay in layouts for chunk in lay}
        if len(signatures) > 1:
            raise ValueError(f"all_gather_chunks: the chunks' tensors differ in dtype or trailing shape: "
                             f"{sorted(map(str, signatures))}")
        chunks: list = [None] * n_chunks
        for k, tensors in local.items():
            chunks[k] = tensors
        for src, lay in enumerate(layouts):
            if not lay:  # more ranks than chunks
                continue
            columns = []
            for i, (shape, dtype) in enumerate(lay[0]):
                rows = [chunk[i][0][0] for chunk in lay]
                if src == self.rank:  # a temporary copy, dropped once sent
                    buffer = torch.cat([local[k][i] for k in sorted(local)]).contiguous()
                else:
                    buffer = torch.empty((sum(rows), *shape[1:]), dtype=dtype)
                if buffer.numel():  # every rank knows the shapes: all skip the same ones
                    tdist.broadcast(buffer, src, group=self.cpu_group)
                if src != self.rank:
                    columns.append(buffer.split(rows))
            for j, k in enumerate(range(src, n_chunks, self.world_size) if columns else ()):
                chunks[k] = tuple(column[j] for column in columns)
        return chunks

    def gather_object(self, obj) -> list | None:
        """Every rank's ``obj`` as a list on rank 0 (``None`` elsewhere)."""
        out = [None] * self.world_size if self.is_main else None
        tdist.gather_object(obj, out, dst=0)
        return out

    def barrier(self) -> None:
        tdist.barrier()

    @contextlib.contextmanager
    def main_first(self) -> Iterator[None]:
        """Rank 0 runs the block first; the others run it after (e.g. to load a cache file
        that rank 0 wrote instead of computing it again)."""
        if not self.is_main:
            self.barrier()
        yield
        if self.is_main:
            self.barrier()

    def close(self, synchronize: bool = True) -> None:
        """Destroy the process group this object created (a group it was given is left alone).

        Args:
            synchronize: wait for every rank first. gloo tears its connections down with the
                group; a rank that does so while a peer still has traffic in flight on them
                can abort its peer ("terminate called without an active exception"). Pass
                ``False`` on an error path, where the other ranks may never arrive.
        """
        if self.owns_group and tdist.is_initialized():
            if synchronize:
                tdist.barrier()
            tdist.destroy_process_group()


class SingleProcess(Distributed):
    """A run in one process: rank 0 of a world of one, with no process group.

    Every collective is the identity (a shard is all indices, the global loss is the
    batch's ``terms["total"]``, gradients and metrics are already complete) and every
    barrier a no-op, so code written for :class:`Distributed` runs unchanged and gives
    the single-process results bit for bit.
    """

    def __init__(self) -> None:
        super().__init__(0, 1, torch.device("cpu"))

    def shard(self, indices: torch.Tensor) -> torch.Tensor:
        return indices

    def global_loss(self, terms: dict[str, torch.Tensor] | None, batch, weights) -> torch.Tensor | None:
        return None if terms is None else terms["total"]

    def loss_value(self, total: torch.Tensor | None) -> float:
        return 0.0 if total is None else float(total.detach())

    def sum_gradients(self, params: Iterable[torch.nn.Parameter]) -> None:
        pass

    def reduce_metrics(self, acc: ErrorAccumulator) -> ErrorAccumulator:
        return acc

    def broadcast_module(self, module: torch.nn.Module) -> None:
        pass

    def all_gather_chunks(self, local: dict[int, tuple[torch.Tensor, ...]],
                          n_chunks: int) -> list[tuple[torch.Tensor, ...]]:
        if sorted(local) != list(range(n_chunks)):
            raise ValueError(f"all_gather_chunks: one process must hold all {n_chunks} chunks, got {sorted(local)}")
        return [local[k] for k in range(n_chunks)]

    def gather_object(self, obj) -> list:
        return [obj]

    def barrier(self) -> None:
        pass

    def main_first(self) -> contextlib.AbstractContextManager[None]:
        return contextlib.nullcontext()

    def close(self, synchronize: bool = True) -> None:
        pass


def _label_counts(batch, energy_size_exponent: float = 0.0) -> torch.Tensor:
    """(3,) float64 counts that :func:`~mlpot.training.loss.loss_terms` divides by: labelled
    energies, force components and stress components of the periodic structures; with
    structure weights (``targets.weight``) or an energy size exponent, their weighted
    counts Σ w (the denominators of the weighted means)."""
    masks, rows = label_masks(batch), label_weights(batch, energy_size_exponent)
    values_per_row = {"energy": 1, "forces": 3, "stress": 9}
    if rows is None:
        return torch.stack([values_per_row[k] * masks[k].sum()
                            for k in ("energy", "forces", "stress")]).to(torch.float64)
    return torch.stack([values_per_row[k] * torch.where(masks[k] & (rows[k] > 0), rows[k].double(), 0.0).sum()
                        for k in ("energy", "forces", "stress")])


def from_environment(device_name: str) -> tuple[Distributed, str]:
    """Join the process group described by torchrun's environment, if any.

    With ``WORLD_SIZE`` > 1 (set by torchrun, or by a test) this initialises the default
    process group (unless one exists): NCCL when training on CUDA, gloo otherwise. Each rank
    then trains on ``cuda:LOCAL_RANK``.

    Args:
        device_name: ``training.device`` of the config.

    Returns:
        ``(context, device_name)``: :class:`SingleProcess` and the name unchanged for one
        process; otherwise the process group's context and the device this rank trains on.
    """
    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    if world_size <= 1 and not tdist.is_initialized():
        return SingleProcess(), device_name
    cuda = resolve_device(device_name, "training.device").type == "cuda"
    if cuda:
        local_rank = int(os.environ.get("LOCAL_RANK", "0"))
        if local_rank >= torch.cuda.device_count():
            raise ValueError(f"rank with LOCAL_RANK={local_rank} has no GPU: {torch.cuda.device_count()} "
                             "visible; start at most one process per GPU")
        device_name = f"cuda:{local_rank}"
        torch.cuda.set_device(local_rank)
    owns = False
    if not tdist.is_initialized():
        tdist.init_process_group(backend="nccl" if cuda else "gloo")
        owns = True
    if tdist.get_world_size() <= 1:
        if owns:
            tdist.destroy_process_group()
        return SingleProcess(), device_name
    nccl = tdist.get_backend() == "nccl"
    collective = torch.device(device_name) if nccl else torch.device("cpu")
    # NCCL moves GPU tensors only; CPU data (the descriptor cache) goes through gloo.
    cpu_group = tdist.new_group(backend="gloo") if nccl else None
    return Distributed(tdist.get_rank(), tdist.get_world_size(), collective, owns, cpu_group), device_name


def launch(nproc: int, argv: list[str]) -> int:
    """Run ``python -m mlpot <argv>`` in ``nproc`` local processes through torchrun.

    ``--standalone`` gives the rendezvous a free local port; torchrun sets one thread per
    process and stops all of them if one fails.

    Returns:
        the exit status of torchrun.
    """
    if nproc < 1:
        raise ValueError(f"--nproc must be >= 1, got {nproc}")
    if int(os.environ.get("WORLD_SIZE", "1")) > 1:
        raise ValueError("--nproc inside an already distributed run (WORLD_SIZE is set); use one or the other")
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={nproc}",
           "-m", "mlpot", *argv]
    return subprocess.call(cmd)
