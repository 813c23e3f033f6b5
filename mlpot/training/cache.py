"""Where a training store keeps its descriptors: in memory, in an HDF5 file, or nowhere.

Training on forces from cached descriptors and their pair Jacobian back-propagates through
the networks only (:meth:`~mlpot.models.Potential.forward_from_descriptors`), which is much
faster than recomputing the descriptors every step, but the cache can be large.
:class:`DescriptorCache` is the policy of ``training.descriptor_cache``: it falls back to
recomputing when the memory cache would exceed ``descriptor_cache_max_gib`` or the file
would not fit on its disk, builds (or reuses) the cache of a
:class:`~mlpot.training.data.BatchStore`, and closes what it opened.
"""

from __future__ import annotations

import contextlib
import shutil
import time
from pathlib import Path
from typing import Callable, Literal

import torch

from .config import TrainingOptions
from .data import BatchStore
from .distributed import Distributed

__all__ = ["DescriptorCache"]

CacheMode = Literal["memory", "hdf5", "none"]


class DescriptorCache:
    """The descriptor-cache policy of a run, and the caches it opened.

    Args:
        mode: ``memory``, ``hdf5`` or ``none`` (recompute every step).
        max_gib: a memory cache larger than this (GiB) falls back to ``none``.
        file_dir: folder of the HDF5 cache file.
        memory_dir: folder where a memory cache is saved to and loaded from (``None``:
            computed in every run).
        log: receives the fall-back reasons and one line per cache built.
        progress: show progress bars while computing.
    """

    def __init__(self, mode: CacheMode, max_gib: float, file_dir: str | Path, memory_dir: str | None = None,
                 log: Callable[[str], None] = print, progress: bool = False):
        self.mode, self.max_gib, self.file_dir, self.memory_dir = mode, max_gib, Path(file_dir), memory_dir
        self.log, self.progress = log, progress
        self._stores: list[BatchStore] = []

    @classmethod
    def from_options(cls, opts: TrainingOptions, run_dir: Path, log: Callable[[str], None] = print,
                     progress: bool = False) -> DescriptorCache:
        """The policy of ``training.descriptor_cache*``; the HDF5 file goes to
        ``descriptor_cache_dir``, else to ``run_dir/descriptor_cache``."""
        file_dir = Path(opts.descriptor_cache_dir) if opts.descriptor_cache_dir else run_dir / "descriptor_cache"
        return cls(opts.descriptor_cache, opts.descriptor_cache_max_gib, file_dir, opts.descriptor_cache_dir,
                   log, progress)

    def choose(self, store: BatchStore, descriptor: torch.nn.Module, dtype: torch.dtype) -> CacheMode:
        """The mode to use for ``store``: :attr:`mode`, or ``none`` (said in the log) when a
        memory cache exceeds :attr:`max_gib` or the cache file would not fit on its disk.

        The cache's size (a pass over all pairs) is computed only where a decision needs it.
        """
        mode = self.mode
        if mode != "none" and not getattr(descriptor, "supports_pair_jacobian", False):
            self.log(f"descriptor cache: the {getattr(descriptor, 'kind', type(descriptor).__name__)!r} descriptor "
                     "has no pair Jacobian: descriptors are recomputed every step instead")
            return "none"
        if mode == "memory":
            cache_gib = store.descriptor_cache_gib(descriptor, dtype)
            if cache_gib > self.max_gib:
                mode = "none"
                self.log(f"descriptor cache would need {cache_gib:.1f} GiB (> training.descriptor_cache_max_gib = "
                         f"{self.max_gib:g}): descriptors are recomputed every step instead "
                         f"(training.descriptor_cache: hdf5 keeps it on disk)")
        if mode == "hdf5" and not self._disk_has_room(store, descriptor, dtype):
            mode = "none"
        return mode

    def prepare(self, store: BatchStore, descriptor: torch.nn.Module, dtype: torch.dtype,
                device: torch.device, dist: Distributed) -> CacheMode:
        """Give ``store`` the cache :meth:`choose` picks; called by every rank.

        ``descriptor`` (the model's descriptor module, moved to ``device``) computes unscaled descriptors in float64 there;
        they are stored in ``dtype``. With a cache file, rank 0 computes and saves it and
        the others load it; a memory cache without a folder is computed by all ranks, a
        share each, and exchanged (:meth:`BatchStore.cache_descriptors`).

        Returns:
            the mode used.
        """
        mode = self.choose(store, descriptor, dtype)
        self._stores.append(store)  # before building: close() also cleans up a failed build
        if mode != "none":
            shared = mode == "hdf5" or bool(self.memory_dir)
            with dist.main_first() if shared else contextlib.nullcontext():
                self._build(store, descriptor.to(device), mode, dtype, device, dist)
        return mode

    def close(self) -> None:
        """Drop the caches of the prepared stores (closing their HDF5 files)."""
        for store in self._stores:
            store.clear_descriptor_cache()
        self._stores.clear()

    def __enter__(self) -> DescriptorCache:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def _build(self, store: BatchStore, descriptor: torch.nn.Module, mode: CacheMode, dtype: torch.dtype,
               device: torch.device, dist: Distributed) -> None:
        """Compute (or load) ``store``'s cache in ``mode`` and log where it is."""
        start = time.perf_counter()
        if mode == "hdf5":
            nbytes, loaded = store.open_or_build_descriptor_file(descriptor, self.file_dir, dtype=dtype,
                                                                 device=device, progress=self.progress, log=self.log)
            where = f"in {store.descriptor_file.path}, {'reused' if loaded else 'computed'}"
        elif self.memory_dir:
            nbytes, loaded = store.load_or_cache_descriptors(descriptor, self.memory_dir, dtype=dtype,
                                                             device=device, progress=self.progress, log=self.log)
            where = f"in memory, {'loaded from ' + self.memory_dir if loaded else 'computed'}"
        else:
            nbytes = store.cache_descriptors(descriptor, dtype=dtype, device=device, progress=self.progress,
                                             distributed=dist)
            where = "in memory, computed" + ("" if dist.world_size == 1 else f" by {dist.world_size} ranks")
        self.log(f"descriptor cache: {nbytes / 2**20:.0f} MiB for {store.data.edge_index.shape[1]} pairs {where} "
                 f"({time.perf_counter() - start:.1f} s)")

    def _disk_has_room(self, store: BatchStore, descriptor: torch.nn.Module, dtype: torch.dtype) -> bool:
        """Whether the cache file's disk can take it (or already holds it); says why not."""
        folder = self.file_dir
        path = folder / f"descriptors-{store.descriptor_cache_key(descriptor, dtype)[:20]}.h5"
        if path.exists():
            return True  # reused, or rebuilt in its place: its size is not needed
        probe = folder
        while not probe.exists():  # the folder is created later: ask about its nearest parent
            probe = probe.parent
        free_gib = shutil.disk_usage(probe).free / 2**30
        cache_gib = store.descriptor_cache_gib(descriptor, dtype)
        if cache_gib * 1.05 + 0.1 > free_gib:  # HDF5 chunk index and metadata: a few per cent
            self.log(f"descriptor cache file would need {cache_gib:.1f} GiB but {folder} has {free_gib:.1f} GiB "
                     f"free: descriptors are recomputed every step instead")
            return False
        return True
