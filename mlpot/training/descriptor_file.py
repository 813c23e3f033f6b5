"""The descriptor cache on disk: one HDF5 file streamed in and read a batch at a time.

``training.descriptor_cache: hdf5`` keeps what :meth:`BatchStore.cache_descriptors
<mlpot.training.data.BatchStore.cache_descriptors>` would hold in memory in a file instead,
so datasets whose cache exceeds the RAM still train through the networks only. The file is
written chunk by chunk (never whole in memory) and each training batch reads only its own
structures' rows.

Layout (format ``"mlpot-descriptor-cache"``, version 2). ``B`` structures, ``N`` atoms, ``P``
pairs, ``Q`` pairs inside the angular cutoff, in the store's order (structures, then atoms, then
pairs grouped by structure); structure ``s`` owns the rows ``offsets[s]:offsets[s + 1]`` of
each per-atom, per-pair and per-angular-row dataset::

    atom_offsets     (B + 1,)        int64
    pair_offsets     (B + 1,)        int64
    angular_offsets  (B + 1,)        int64
    descriptors      (N, F)          raw symmetry functions G (unscaled)
    radial           (P, K_r)        dφ/dr of the radial terms, Å⁻¹ (see PairJacobian)
    direction        (P, 3)          unit pair vectors r̂_p
    angular          (Q, 3, E, A)    ∂G/∂r_p, angular blocks, Å⁻¹
    angular_inside   (P,)            bool, pair p has an angular row

``PairJacobian.angular_row`` is not stored: angular rows are in pair order, so the rows of
any selection of whole structures are ``cumsum(angular_inside) − 1`` where inside. Attributes:
``key`` (the cache key, see :meth:`BatchStore.descriptor_cache_key`), ``dtype``, and
``complete`` — written last, just before the file is closed and renamed into place, so a
file without it (a crash, a full disk) is never trusted.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Iterable, Sequence

import h5py
import numpy as np
import torch

from ..data.h5 import LazyH5File
from ..io.files import atomic_path
from ..descriptors import PairJacobian

__all__ = ["DescriptorFile", "DescriptorFileError"]

FORMAT_NAME = "mlpot-descriptor-cache"
FORMAT_VERSION = 2  # 2: radial blocks stored as dφ/dr and r̂_p
#: Target bytes of one HDF5 chunk. A chunk is the unit HDF5 reads (and decompresses), so a
#: batch of scattered structures reads at most one partial chunk at either end of each
#: structure; 256 KiB is below one water frame's rows in every dataset (~0.2–3 MB) and large
#: enough that the chunk index stays small for files of 100+ GB.
CHUNK_BYTES = 256 * 2**10
_NUMPY = {torch.float32: np.float32, torch.float64: np.float64}
_PER_PAIR = ("radial", "direction", "angular_inside")


class DescriptorFileError(RuntimeError):
    """The file is missing, incomplete, of another layout or does not match the store."""


class DescriptorFile(LazyH5File):
    """A read-only view of a complete descriptor cache file (see the module docstring).

    Holds the three (B + 1,) offset arrays and the file handle, nothing of the size of the
    cache: :meth:`read` returns the rows of the requested structures only. The file opens
    lazily, anew in another process (see :class:`~mlpot.data.h5.LazyH5File`), and closes with
    :meth:`close` or at the end of a ``with`` block.

    Args:
        path: a file written by :meth:`build`.
        key: the expected cache key; ``None`` accepts any.
        n_atoms: (B,) atoms per structure the store holds, to check against the file.
        n_pairs: (B,) pairs per structure the store holds.

    Raises:
        DescriptorFileError: if the file is unreadable, incomplete or does not match.
    """

    def __init__(self, path: str | os.PathLike, key: str | None = None,
                 n_atoms: torch.Tensor | None = None, n_pairs: torch.Tensor | None = None) -> None:
        self.path = Path(path)
        self.key = key
        self._forget_handle()
        #: rows read per dataset since opening (diagnostics; tests check that a batch reads
        #: exactly its own rows).
        self.rows_read: dict[str, int] = {}
        self._handle()  # validate now: a bad file must be rebuilt before training starts
        self.atom_offsets, self.pair_offsets, self.angular_offsets = self._offsets
        for name, want, have in (("atoms", n_atoms, self.atom_offsets), ("pairs", n_pairs, self.pair_offsets)):
            if want is not None and not np.array_equal(np.diff(have), np.asarray(want, dtype=np.int64)):
                self.close()
                raise DescriptorFileError(f"{self.path}: {name} per structure differ from the dataset's")

    # ----------------------------------------------------------------- file handling
    def _open(self) -> h5py.File:
        try:
            # The file is never modified in place (it is renamed into place whole), so HDF5's
            # file locking protects nothing and would fail on file systems without locks.
            # rdcc_nbytes=0: no chunk cache, so HDF5 reads uncompressed chunks straight into
            # the output (a cache would copy them once more; batches rarely share chunks).
            return h5py.File(self.path, "r", locking=False, rdcc_nbytes=0)
        except (OSError, ValueError) as exc:
            raise DescriptorFileError(f"{self.path}: not a readable HDF5 file ({exc})") from exc

    def _validate(self, f: h5py.File) -> dict[str, h5py.Dataset]:
        self._offsets = _check(f, self.path, self.key)
        return {name: f[name] for name in ("descriptors", "radial", "direction", "angular", "angular_inside")}

    def __len__(self) -> int:
        return len(self.atom_offsets) - 1

    @property
    def nbytes(self) -> int:
        """Size of the file, bytes."""
        return self.path.stat().st_size

    @property
    def dtype(self) -> torch.dtype:
        return torch.float64 if self._handle()["descriptors"].dtype == np.float64 else torch.float32

    # ----------------------------------------------------------------- reading
    def read(self, structures: Sequence[int] | torch.Tensor) -> tuple[torch.Tensor, PairJacobian]:
        """Raw descriptors and pair Jacobian of ``structures`` (in that order, repeats allowed).

        Equal, bit for bit, to the rows that :meth:`PairJacobian.select` and ``index_select``
        cut from an in-memory cache of the same data. Each structure's rows are read once,
        straight into their place in the output (``read_direct``: no intermediate copy), as one
        contiguous slice per dataset and run of consecutive indices (h5py's scattered-row
        selection is far slower); a repeated structure is copied from its first place.

        Args:
            structures: (K,) structure indices.

        Returns:
            ``(raw, jacobian)``: (N', F) raw descriptors and the :class:`PairJacobian` of the
            (P',) pairs of the structures, on the CPU in the file's dtype.
        """
        idx = torch.as_tensor(structures, dtype=torch.long).cpu().numpy().reshape(-1)
        if idx.size and (idx.min() < 0 or idx.max() >= len(self)):
            raise IndexError(f"structure indices must be in [0, {len(self)}), got {idx.min()}..{idx.max()}")
        self._handle()
        _, first_pos, inverse = np.unique(idx, return_index=True, return_inverse=True)
        source = first_pos[inverse.reshape(-1)]  # (K,) position of each entry's first occurrence
        is_first = source == np.arange(idx.size)
        # Runs of positions [k0, k1) read as one slice: first occurrences of consecutive structures.
        runs: list[list[int]] = []
        for k in np.flatnonzero(is_first).tolist():
            if runs and runs[-1][1] == k and idx[k] == idx[k - 1] + 1:
                runs[-1][1] = k + 1
            else:
                runs.append([k, k + 1])

        def gather(name: str, offsets: np.ndarray) -> torch.Tensor:
            ds = self._datasets[name]
            counts = offsets[idx + 1] - offsets[idx]
            dest = np.cumsum(counts) - counts
            out = np.empty((int(counts.sum()), *ds.shape[1:]), dtype=ds.dtype)
            for k0, k1 in runs:
                lo, hi = int(offsets[idx[k0]]), int(offsets[idx[k1 - 1] + 1])
                if hi > lo:
                    self.rows_read[name] = self.rows_read.get(name, 0) + (hi - lo)
                    ds.read_direct(out, np.s_[lo:hi], np.s_[int(dest[k0]):int(dest[k0]) + hi - lo])
            for k in np.flatnonzero(~is_first):  # repeats: already read at position source[k]
                a, b, c = int(dest[k]), int(dest[source[k]]), int(counts[k])
                out[a:a + c] = out[b:b + c]
            return torch.from_numpy(out)

        raw = gather("descriptors", self.atom_offsets)
        inside = gather("angular_inside", self.pair_offsets)
        row = torch.where(inside, torch.cumsum(inside, 0) - 1, torch.full(inside.shape, -1, dtype=torch.long))
        jac = PairJacobian(gather("radial", self.pair_offsets), gather("angular", self.angular_offsets), row,
                           gather("direction", self.pair_offsets))
        return raw, jac

    # ----------------------------------------------------------------- writing
    @classmethod
    def build(cls, path: str | os.PathLike, key: str,
              chunks: Iterable[tuple[torch.Tensor, PairJacobian, torch.Tensor, torch.Tensor]],
              dtype: torch.dtype, compression: str | None = None) -> "DescriptorFile":
        """Write a cache file from ``chunks``, one block of structures at a time.

        Only one block is in memory at a time: each is appended to resizable datasets of a
        temporary file beside ``path`` and dropped; ``complete`` is set last and the file
        renamed onto ``path`` (atomic on POSIX), so readers see the old file or the whole new one.

        Args:
            path: destination (``descriptors-<key>.h5``).
            key: the cache key stored in the file.
            chunks: yields ``(raw, jacobian, n_atoms, n_pairs)`` for
                consecutive blocks of structures: (n, F) raw descriptors, their
                :class:`PairJacobian`, and (b,) atoms and pairs per structure of the block.
            dtype: storage dtype, ``torch.float32`` or ``torch.float64``.
            compression: ``None``, ``"lzf"`` or ``"gzip"`` for the float datasets.
        """
        if dtype not in _NUMPY:
            raise ValueError(f"the descriptor file stores float32 or float64, not {dtype}")
        if compression not in (None, "lzf", "gzip"):
            raise ValueError(f"compression must be None, 'lzf' or 'gzip', got {compression!r}")
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        np_dtype = _NUMPY[dtype]
        with atomic_path(path) as tmp:
            with h5py.File(tmp, "w", locking=False) as f:
                f.attrs.update(mlpot_format=FORMAT_NAME, version=FORMAT_VERSION, key=key, dtype=str(dtype))
                offsets = {"atom": [0], "pair": [0], "angular": [0]}
                for raw, jac, n_atoms, n_pairs in chunks:
                    inside = jac.angular_row >= 0
                    # Angular rows per structure: the pairs of structure s are a consecutive
                    # range, so a cumulative sum at the range ends counts its inside pairs.
                    ends = torch.cumsum(n_pairs.long(), 0)
                    cum = torch.cat([inside.new_zeros(1, dtype=torch.long), torch.cumsum(inside.long(), 0)])
                    n_angular = torch.diff(torch.cat([ends.new_zeros(1), cum[ends]]))
                    for name, counts in (("atom", n_atoms), ("pair", n_pairs), ("angular", n_angular)):
                        offsets[name].extend((offsets[name][-1] + torch.cumsum(counts.long(), 0)).tolist())
                    _append(f, "descriptors", raw.detach().cpu().to(dtype).numpy(), np_dtype, compression)
                    _append(f, "radial", jac.radial.detach().cpu().to(dtype).numpy(), np_dtype, compression)
                    _append(f, "direction", jac.direction.detach().cpu().to(dtype).numpy(), np_dtype, compression)
                    _append(f, "angular", jac.angular.detach().cpu().to(dtype).numpy(), np_dtype, compression)
                    _append(f, "angular_inside", inside.cpu().numpy(), np.bool_, compression)
                for name, values in offsets.items():
                    f.create_dataset(f"{name}_offsets", data=np.asarray(values, dtype=np.int64))
                f.attrs["complete"] = True  # last: a file without it is never trusted
        return cls(path, key)


def _append(f: h5py.File, name: str, values: np.ndarray, dtype, compression: str | None) -> None:
    """Append ``values`` along the first axis of dataset ``name`` (created on first use)."""
    if name not in f:
        row_bytes = max(1, int(np.prod(values.shape[1:], dtype=np.int64)) * np.dtype(dtype).itemsize)
        rows = max(1, CHUNK_BYTES // row_bytes)
        # A zero-width block (no radial or no angular terms) still needs positive chunk
        # sizes; HDF5 allows them only along unlimited axes.
        tail = values.shape[1:]
        f.create_dataset(name, shape=(0, *tail), maxshape=(None, *(None if d == 0 else d for d in tail)),
                         dtype=dtype, chunks=(rows, *(max(1, d) for d in tail)), compression=compression,
                         shuffle=compression is not None)
    ds = f[name]
    old = ds.shape[0]
    ds.resize(old + len(values), axis=0)
    ds[old:] = values


def _check(f: h5py.File, path: Path, key: str | None) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Validate the attributes and shapes; return the atom, pair and angular offsets."""
    attrs = dict(f.attrs)
    if attrs.get("mlpot_format") != FORMAT_NAME or attrs.get("version") != FORMAT_VERSION:
        raise DescriptorFileError(f"{path}: not an mlpot descriptor cache (version {FORMAT_VERSION})")
    if not attrs.get("complete", False):
        raise DescriptorFileError(f"{path}: incomplete descriptor cache (its writing was interrupted)")
    if key is not None and attrs.get("key") != key:
        raise DescriptorFileError(f"{path}: made for other data or another descriptor (key mismatch)")
    try:
        offsets = tuple(f[f"{n}_offsets"][()] for n in ("atom", "pair", "angular"))
        rows = {n: f[n].shape[0] for n in ("descriptors", "radial", "direction", "angular", "angular_inside")}
    except (KeyError, OSError, ValueError) as exc:
        raise DescriptorFileError(f"{path}: corrupt descriptor cache ({exc})") from exc
    atom, pair, angular = offsets
    if not (len(atom) == len(pair) == len(angular) >= 2 and all(np.all(np.diff(o) >= 0) for o in offsets)
            and rows["descriptors"] == atom[-1] and rows["radial"] == rows["direction"] == rows["angular_inside"] == pair[-1]
            and rows["angular"] == angular[-1]):
        raise DescriptorFileError(f"{path}: corrupt descriptor cache (offsets and row counts disagree)")
    return atom, pair, angular

