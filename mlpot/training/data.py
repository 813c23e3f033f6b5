"""Training data held as one pre-collated batch, with neighbour pairs built once.

Positions never change during training, so the neighbour list of each structure is built
once (by vesin, in :func:`~mlpot.data.collate`) and every mini-batch is cut out of the
stored arrays by :func:`select`: atom and pair ranges are gathered and the pair indices
re-offset, without calling the neighbour list again.
"""

from __future__ import annotations

from dataclasses import replace
from typing import TYPE_CHECKING, Callable, Sequence

import torch

from ..data import AtomsBatch, Targets, collate
from ..descriptors import PairJacobian
from ..io.files import atomic_torch_save
from ..neighbours import edge_vectors

if TYPE_CHECKING:  # h5py is imported only when a cache file is used
    from .descriptor_file import DescriptorFile
    from .distributed import Distributed

__all__ = ["select", "concatenate", "BatchStore"]


def _ranges(starts: torch.Tensor, counts: torch.Tensor) -> torch.Tensor:
    """Concatenation of ``arange(s, s + c)`` for each (s, c): (sum(counts),) long."""
    total = int(counts.sum())
    if total == 0:
        return starts.new_zeros(0)
    ends = torch.cumsum(counts, 0)
    # Position k of the output belongs to range r(k); value = starts[r] + (k - ends[r] + counts[r]).
    return torch.repeat_interleave(starts - (ends - counts), counts, output_size=total) + \
        torch.arange(total, device=starts.device)


def _edge_counts(batch: AtomsBatch) -> torch.Tensor:
    """(B,) number of pairs of each structure (pairs are grouped by structure)."""
    return torch.bincount(batch.system_idx[batch.edge_index[0]], minlength=batch.n_systems)


def select(batch: AtomsBatch, indices: Sequence[int] | torch.Tensor, return_index: bool = False,
           edge_counts: torch.Tensor | None = None):
    """The sub-batch of structures ``indices`` (in that order), neighbour pairs included.

    Equal to ``collate([structures[k] for k in indices], cutoff)`` when ``batch`` is the
    collated list of ``structures`` with pairs at ``cutoff``, but without rebuilding pairs.

    Args:
        batch: a batch with ``edge_index`` (pairs grouped by structure and sorted by
            centre, as :func:`~mlpot.data.collate` makes them).
        indices: (K,) structure indices into ``batch``; repeats allowed.
        return_index: also return the (N',) atom and (P',) pair indices gathered, to cut
            per-atom or per-pair arrays held beside ``batch`` the same way.
        edge_counts: (B,) pairs per structure of ``batch``, if known (counting them is a
            pass over all pairs: :class:`BatchStore` counts once).
    """
    if batch.edge_index is None:
        raise ValueError("select needs a batch with neighbour pairs (collate with a cutoff)")
    idx = torch.as_tensor(indices, dtype=torch.long, device=batch.n_atoms.device)
    n_atoms = batch.n_atoms
    atom_start = torch.cumsum(n_atoms, 0) - n_atoms
    edge_count = _edge_counts(batch) if edge_counts is None else edge_counts
    edge_start = torch.cumsum(edge_count, 0) - edge_count
    sel_atoms, sel_edges = n_atoms[idx], edge_count[idx]
    atoms = _ranges(atom_start[idx], sel_atoms)
    edges = _ranges(edge_start[idx], sel_edges)
    new_start = torch.cumsum(sel_atoms, 0) - sel_atoms
    offset = torch.repeat_interleave(new_start - atom_start[idx], sel_edges, output_size=edges.numel())
    targets = None
    if batch.targets is not None:
        t = batch.targets
        targets = Targets(energy=t.energy[idx], forces=t.forces[atoms], stress=t.stress[idx],
                          has_energy=t.has_energy[idx], has_forces=t.has_forces[idx],
                          has_stress=t.has_stress[idx], weight=None if t.weight is None else t.weight[idx])
    out = replace(
        batch,
        positions=batch.positions[atoms],
        numbers=batch.numbers[atoms],
        system_idx=torch.repeat_interleave(torch.arange(len(idx), device=idx.device), sel_atoms,
                                           output_size=atoms.numel()),
        cell=batch.cell[idx],
        pbc=batch.pbc[idx],
        n_atoms=sel_atoms,
        edge_index=batch.edge_index[:, edges] + offset,
        edge_shift=batch.edge_shift[edges],
        targets=targets,
    )
    return (out, atoms, edges) if return_index else out


def concatenate(batches: Sequence[AtomsBatch]) -> AtomsBatch:
    """One batch of all structures of ``batches`` in order; pair indices re-offset.

    All batches must have pairs at the same cutoff (or all none) and, if any has labels,
    all must; so must they all have structure weights (``targets.weight``) or none.
    """
    if not batches:
        raise ValueError("nothing to concatenate")
    cutoffs = {b.cutoff for b in batches}
    if len(cutoffs) != 1:
        raise ValueError(f"batches have different neighbour cutoffs {sorted(map(str, cutoffs))}")
    atom_off = torch.cumsum(torch.tensor([0] + [b.positions.shape[0] for b in batches[:-1]]), 0).tolist()
    sys_off = torch.cumsum(torch.tensor([0] + [b.n_systems for b in batches[:-1]]), 0).tolist()

    def cat(name):
        return torch.cat([getattr(b, name) for b in batches])

    targets = None
    if batches[0].targets is not None:
        weighted = {b.targets.weight is not None for b in batches}
        if len(weighted) != 1:
            raise ValueError("some batches have structure weights (targets.weight) and some not")
        names = ("energy", "forces", "stress", "has_energy", "has_forces", "has_stress") + ("weight",) * weighted.pop()
        targets = Targets(**{f: torch.cat([getattr(b.targets, f) for b in batches]) for f in names})
    edge_index = edge_shift = None
    if batches[0].edge_index is not None:
        edge_index = torch.cat([b.edge_index + o for b, o in zip(batches, atom_off)], dim=1)
        edge_shift = cat("edge_shift")
    return AtomsBatch(
        positions=cat("positions"), numbers=cat("numbers"),
        system_idx=torch.cat([b.system_idx + o for b, o in zip(batches, sys_off)]),
        cell=cat("cell"), pbc=cat("pbc"), n_atoms=cat("n_atoms"),
        edge_index=edge_index, edge_shift=edge_shift, cutoff=batches[0].cutoff, targets=targets,
    )


class BatchStore:
    """A labelled dataset collated once (on the CPU) with its neighbour pairs.

    Args:
        structures: labelled ``ase.Atoms`` (a list or any indexable sequence).
        cutoff: neighbour-list radius, Å (the descriptor's largest cutoff).
        dtype: floating dtype of positions, cells and labels.
        chunk: structures collated per call (bounds the peak memory of collation).
        progress: show a progress bar while building pairs.
        weights: one loss weight per structure (``targets.weight`` of every batch cut from
            the store; see :meth:`~mlpot.training.config.LossConfig.structure_weights`), or
            ``None`` for equal weights.
    """

    def __init__(self, structures, cutoff: float, dtype: torch.dtype = torch.float64,
                 chunk: int = 512, progress: bool = False, weights: Sequence[float] | None = None):
        from ..progress import progress as report

        n = len(structures)
        if n == 0:
            raise ValueError("cannot store an empty dataset")
        parts = []
        for lo in report(range(0, n, chunk), desc="neighbour lists", unit="chunk", enabled=progress):
            parts.append(collate([structures[k] for k in range(lo, min(n, lo + chunk))],
                                 cutoff=cutoff, dtype=dtype))
        self.data = parts[0] if len(parts) == 1 else concatenate(parts)
        if weights is not None:
            if len(weights) != n:
                raise ValueError(f"{len(weights)} structure weights for {n} structures")
            self.data = replace(self.data, targets=replace(self.data.targets,
                                                           weight=torch.as_tensor(weights, dtype=dtype)))
        self.cutoff = cutoff
        # Pairs per structure, counted once: every batch cut from the store needs them.
        self.edge_counts = _edge_counts(self.data)
        self.descriptors: torch.Tensor | None = None  # (N, F) raw, see cache_descriptors
        self.jacobian: PairJacobian | None = None
        self.descriptor_file: DescriptorFile | None = None  # see open_or_build_descriptor_file

    def descriptor_cache_gib(self, descriptor, dtype: torch.dtype = torch.float32, chunk: int = 1024) -> float:
        """GiB that :meth:`cache_descriptors` would hold: N × F descriptors, K_r + 3 values per
        pair and 3 E A per pair inside the angular cutoff (see :class:`PairJacobian`).

        The pairs inside the angular cutoff are counted ``chunk`` structures at a time, so
        this never holds more than one chunk's (P_chunk, 3) pair vectors."""
        d = self.data
        n_pairs = d.edge_index.shape[1]
        n_angular_pairs = 0
        if descriptor.angular_cutoff > 0:
            # Pairs are grouped by structure: structures [lo, hi) own pairs bounds[lo]:bounds[hi].
            bounds = [0] + torch.cumsum(self.edge_counts, 0).tolist()
            n = len(self)
            for lo in range(0, n, chunk):
                p0, p1 = bounds[lo], bounds[min(n, lo + chunk)]
                vectors = edge_vectors(d.positions, d.cell, d.system_idx, d.edge_index[:, p0:p1],
                                       d.edge_shift[p0:p1])
                n_angular_pairs += int((torch.linalg.vector_norm(vectors, dim=1) < descriptor.angular_cutoff).sum())
        values = (d.positions.shape[0] * descriptor.max_features
                  + n_pairs * descriptor.jacobian_values_per_pair(angular=False)
                  + n_angular_pairs * descriptor.jacobian_values_per_pair(angular=True))
        return (values * dtype.itemsize + 8 * n_pairs) / 2**30

    def fingerprint(self) -> str:
        """SHA-256 of the stored structures and pairs (positions, numbers, cells, pbc, cutoff)."""
        import hashlib

        h = hashlib.sha256()
        d = self.data
        for t in (d.positions.double(), d.numbers.long(), d.cell.double(), d.pbc, d.n_atoms, d.edge_index,
                  d.edge_shift.double()):
            h.update(t.detach().cpu().contiguous().numpy().tobytes())
        h.update(repr(self.cutoff).encode())
        return h.hexdigest()

    def descriptor_cache_key(self, descriptor, dtype: torch.dtype) -> str:
        """SHA-256 naming a descriptor cache: symmetry-function parameters, storage dtype and
        :meth:`fingerprint` (the .pt and the HDF5 cache share it)."""
        import hashlib
        import json

        # "layout" names the cache's content: files of another layout never match.
        return hashlib.sha256(json.dumps({"layout": "pair-jacobian-blocks-2", "spec": descriptor.cache_key_dict(),
                                          "dtype": str(dtype), "data": self.fingerprint()},
                                         sort_keys=True).encode()).hexdigest()

    def load_or_cache_descriptors(self, descriptor, folder, dtype: torch.dtype = torch.float32,
                                  device=None, progress: bool = False,
                                  log: Callable[[str], None] | None = print) -> tuple[int, bool]:
        """As :meth:`cache_descriptors`, kept in ``folder`` between runs (a torch.save file).

        The file's name is a hash of the symmetry-function parameters, the storage dtype and
        :meth:`fingerprint`, so runs on the same data with the same descriptor (an ablation
        grid, a resumed run) share it, and any change of either gives a new file. A file that
        cannot be used (truncated, foreign, another key) is recomputed and replaced, and
        ``log`` is told why.

        Returns:
            ``(bytes, loaded)``: the cache size and whether it came from ``folder``.
        """
        from pathlib import Path

        self.clear_descriptor_cache()
        key = self.descriptor_cache_key(descriptor, dtype)
        folder = Path(folder)
        path = folder / f"descriptors-{key[:20]}.pt"
        if path.is_file():
            problem = self._load_descriptor_cache(path, key)
            if problem is None:
                return self.descriptors.nbytes + self.jacobian.nbytes, True
            if log is not None:
                log(f"descriptor cache file rejected, recomputing it: {problem}")
        nbytes = self.cache_descriptors(descriptor, dtype=dtype, device=device, progress=progress)
        folder.mkdir(parents=True, exist_ok=True)
        atomic_torch_save({"key": key, "descriptors": self.descriptors, "jacobian": self.jacobian.state()}, path)
        return nbytes, False

    def _load_descriptor_cache(self, path, key: str) -> str | None:
        """Load the cache file ``path`` written for ``key``; ``None``, or why it cannot be used."""
        from ..io.model_file import read_torch_file

        try:
            saved = read_torch_file(path, "descriptor cache file", ValueError)
            if not isinstance(saved, dict) or saved.get("key") != key:
                return f"{path}: written for other data or another descriptor"
            descriptors, jacobian = saved["descriptors"], PairJacobian.from_state(saved["jacobian"])
        except ValueError as exc:
            return str(exc)
        except Exception as exc:  # a payload of the right key but the wrong layout
            return f"{path}: unusable descriptor cache ({type(exc).__name__}: {exc})"
        self.descriptors, self.jacobian = descriptors, jacobian
        return None

    def cache_descriptors(self, descriptor, dtype: torch.dtype = torch.float32, chunk: int = 16,
                          device=None, progress: bool = False, distributed: Distributed | None = None) -> int:
        """Compute and keep every structure's raw descriptors and their pair Jacobian.

        Training on forces then back-propagates through the networks only (see
        :meth:`~mlpot.models.Potential.forward_from_descriptors`). Computed in float64 on
        ``device``, stored in ``dtype`` on the CPU.

        Args:
            descriptor: the model's :class:`~mlpot.descriptors.SymmetryFunctions` (its
                cutoff must not exceed the store's).
            dtype: storage dtype (the training dtype).
            chunk: structures per Jacobian evaluation (bounds peak memory).
            distributed: called by every rank of a data-parallel run (each holding the same
                structures): rank r computes chunks r, r + W, … only, and the ranks exchange
                them (:meth:`Distributed.all_gather_chunks`), so each ends with the whole
                cache, bit for bit the one a single process computes.

        Returns:
            bytes held by the cache.
        """
        self.clear_descriptor_cache()
        rank, world = (0, 1) if distributed is None else (distributed.rank, distributed.world_size)
        parts = [(raw, jac) for raw, jac, _, _ in self._jacobian_chunks(descriptor, dtype, chunk, device, progress,
                                                                         share=(rank, world))]
        if distributed is not None:
            own = {rank + world * j: (raw, jac.radial, jac.angular, jac.angular_row, jac.direction)
                   for j, (raw, jac) in enumerate(parts)}
            gathered = distributed.all_gather_chunks(own, -(-len(self) // chunk))
            parts = [(raw, PairJacobian(radial, angular, row, direction))
                     for raw, radial, angular, row, direction in gathered]
        # Consecutive chunks of structures are consecutive atom and pair ranges.
        self.descriptors = torch.cat([raw for raw, _ in parts])
        self.jacobian = PairJacobian.cat([jac for _, jac in parts])
        return self.descriptors.nbytes + self.jacobian.nbytes

    def _jacobian_chunks(self, descriptor, dtype: torch.dtype, chunk: int, device, progress: bool,
                         share: tuple[int, int] = (0, 1)):
        """Yield ``(raw, jacobian, n_atoms, n_pairs)`` for consecutive blocks of ``chunk``
        structures: (n, F) raw descriptors and their :class:`PairJacobian` (computed in float64
        on ``device``, returned in ``dtype`` on the CPU), and (b,) atoms and pairs per structure.
        With ``share = (r, W)``, only blocks r, r + W, r + 2W, … (one rank's share)."""
        from ..progress import progress as report

        if descriptor.cutoff > self.cutoff:
            raise ValueError(f"descriptor cutoff {descriptor.cutoff} Å exceeds the stored pairs' {self.cutoff} Å")
        descriptor = descriptor.to(device=device)
        n = len(self)
        rank, world = share
        for lo in report(range(rank * chunk, n, world * chunk), desc="descriptor Jacobians", unit="chunk",
                         enabled=progress):
            b = select(self.data, torch.arange(lo, min(n, lo + chunk)), edge_counts=self.edge_counts).to(
                device, torch.float64)
            raw, jac = descriptor.jacobian(b.positions, descriptor.species(b.numbers), b.cell,
                                           b.system_idx, b.edge_index, b.edge_shift)
            yield raw.to("cpu", dtype), jac.to("cpu", dtype), b.n_atoms.cpu(), _edge_counts(b).cpu()

    def open_or_build_descriptor_file(self, descriptor, folder, dtype: torch.dtype = torch.float32,
                                      device=None, chunk: int = 16, compression: str | None = None,
                                      progress: bool = False,
                                      log: Callable[[str], None] | None = print) -> tuple[int, bool]:
        """Back the descriptor cache by an HDF5 file in ``folder`` (``descriptor_cache: hdf5``).

        The file, ``descriptors-<key>.h5`` with the key of :meth:`descriptor_cache_key`, is
        opened if it exists complete and matches; otherwise (absent, interrupted, corrupt,
        foreign) it is rebuilt, ``chunk`` structures at a time, so neither building nor
        training ever holds more than a chunk or a batch of the cache in memory (see
        :mod:`mlpot.training.descriptor_file`). :meth:`cached_batch` then reads from it.

        Args:
            descriptor: the model's :class:`~mlpot.descriptors.SymmetryFunctions`.
            folder: where the file lives (created if needed).
            dtype: storage dtype, float32 or float64 (the training dtype).
            device: where the Jacobians are computed.
            chunk: structures per Jacobian evaluation and per append to the file.
            compression: ``None`` (default: fastest to read, see scripts/bench_training.py),
                ``"lzf"`` or ``"gzip"``.
            progress: show a progress bar while building.
            log: receives a line when an existing file is rejected and rebuilt.

        Returns:
            ``(bytes, loaded)``: the file's size and whether an existing file was used.
        """
        from pathlib import Path

        from .descriptor_file import DescriptorFile, DescriptorFileError

        self.clear_descriptor_cache()
        key = self.descriptor_cache_key(descriptor, dtype)
        path = Path(folder) / f"descriptors-{key[:20]}.h5"
        counts = (self.data.n_atoms, self.edge_counts)
        if path.exists():
            try:
                self.descriptor_file = DescriptorFile(path, key, *counts)
                return self.descriptor_file.nbytes, True
            except DescriptorFileError as exc:
                if log is not None:
                    log(f"descriptor cache file rejected, rebuilding it: {exc}")
        built = DescriptorFile.build(path, key, self._jacobian_chunks(descriptor, dtype, chunk, device, progress),
                                     dtype, compression)
        built.close()
        self.descriptor_file = DescriptorFile(path, key, *counts)  # checks what was written
        return self.descriptor_file.nbytes, False

    def clear_descriptor_cache(self) -> None:
        """Drop the in-memory cache and close the cache file, if any."""
        self.descriptors = self.jacobian = None
        if self.descriptor_file is not None:
            self.descriptor_file.close()
            self.descriptor_file = None

    @property
    def has_descriptor_cache(self) -> bool:
        return self.jacobian is not None or self.descriptor_file is not None

    def cached_batch(self, indices: Sequence[int] | torch.Tensor, device=None,
                     ) -> tuple[AtomsBatch, torch.Tensor | None, PairJacobian | None]:
        """Structures ``indices`` as one batch, with their cached raw descriptors (N', F)
        and pair Jacobian, or ``None`` for both without a cache.

        The in-memory and the file-backed cache return the same values; the file-backed one
        reads the rows of ``indices`` only."""
        if not self.has_descriptor_cache:
            return self.batch(indices, device), None, None
        if self.descriptor_file is not None:
            raw, jac = self.descriptor_file.read(indices)
            return self.batch(indices, device), raw.to(device), jac.to(device)
        out, atoms, edges = select(self.data, indices, return_index=True, edge_counts=self.edge_counts)
        if device is not None:
            out = out.to(device)
        return (out, self.descriptors.index_select(0, atoms).to(device),
                self.jacobian.select(edges).to(device))

    def iter_cached_batches(self, index_lists: Sequence[torch.Tensor], prefetch: bool | None = None):
        """Yield :meth:`cached_batch` of each entry of ``index_lists`` (``None`` for an empty one).

        With a cache file (and unless ``prefetch`` is ``False``), the next batch is read in a
        background thread while the caller trains on the current one: h5py releases the GIL
        while it reads, so the read time hides behind the step's compute. One batch ahead
        only, so memory stays at two batches.
        """
        if prefetch is None:
            prefetch = self.descriptor_file is not None

        def load(indices):
            return self.cached_batch(indices) if len(indices) else None

        if not prefetch:
            for indices in index_lists:
                yield load(indices)
            return
        from concurrent.futures import ThreadPoolExecutor

        pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="mlpot-prefetch")
        try:
            pending = pool.submit(load, index_lists[0]) if len(index_lists) else None
            for k in range(len(index_lists)):
                current = pending.result()
                pending = pool.submit(load, index_lists[k + 1]) if k + 1 < len(index_lists) else None
                yield current
        finally:  # also when the caller stops early (an exception, a non-finite loss)
            pool.shutdown(wait=True, cancel_futures=True)

    def __len__(self) -> int:
        return self.data.n_systems

    @property
    def n_atoms(self) -> torch.Tensor:
        """(B,) atoms per structure."""
        return self.data.n_atoms

    def batch(self, indices: Sequence[int] | torch.Tensor, device=None) -> AtomsBatch:
        """Structures ``indices`` as one batch on ``device``."""
        out = select(self.data, indices, edge_counts=self.edge_counts)
        return out if device is None else out.to(device)

    def batches(self, indices: Sequence[int] | torch.Tensor, batch_size: int, device=None):
        """Yield batches of ``batch_size`` consecutive entries of ``indices``."""
        indices = torch.as_tensor(indices, dtype=torch.long)
        for lo in range(0, len(indices), batch_size):
            yield self.batch(indices[lo:lo + batch_size], device)
