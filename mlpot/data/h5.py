"""One HDF5 file holding any number of labelled structures, read lazily.

Layout (format ``"mlpot-h5"``, version 1). ``n`` structures, ``A`` atoms in total; per-atom
arrays are concatenated (ragged, no padding) and ``atom_offsets`` says where each structure's
atoms start, so structure ``i`` owns rows ``atom_offsets[i]:atom_offsets[i + 1]``::

    atom_offsets  (n + 1,)   int64
    numbers       (A,)       uint8    atomic numbers
    positions     (A, 3)     float64  Å
    forces        (A, 3)     float64  eV/Å, NaN where the structure has no forces
    cell          (n, 3, 3)  float64  Å, rows are lattice vectors
    pbc           (n, 3)     bool
    energy        (n,)       float64  eV, NaN where absent
    stress        (n, 3, 3)  float64  eV/Å³ (ASE sign), NaN where absent
    has_energy, has_forces, has_stress  (n,) bool
    info          (n,)       str      ``atoms.info`` as JSON (JSON-representable values only)

Every dataset is chunked, gzip-compressed and resizable, so :meth:`H5Dataset.write` streams
structures in blocks without holding them all in memory. Values are stored in float64 as they
are, so a round trip is bit-exact.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path
from typing import TypeVar

import h5py
import numpy as np
from ase import Atoms

from ..io.files import atomic_path

from .structures import DataError, get_labels, labelled_atoms, validate_structure

__all__ = ["H5Dataset", "LazyH5File"]

FORMAT_NAME = "mlpot-h5"
FORMAT_VERSION = 1
#: Rows per chunk of per-atom datasets: small enough that random access to one structure
#: decompresses ~100 kB, large enough for good gzip ratios.
ATOM_CHUNK = 4096
_UNITS = {"length_unit": "Angstrom", "energy_unit": "eV", "forces_unit": "eV/Angstrom",
          "stress_unit": "eV/Angstrom^3 (ASE sign convention)"}
# name -> (dtype, trailing shape, per-atom?)
_LAYOUT: dict[str, tuple[object, tuple[int, ...], bool]] = {
    "numbers": (np.uint8, (), True),
    "positions": (np.float64, (3,), True),
    "forces": (np.float64, (3,), True),
    "cell": (np.float64, (3, 3), False),
    "pbc": (np.bool_, (3,), False),
    "energy": (np.float64, (), False),
    "stress": (np.float64, (3, 3), False),
    "has_energy": (np.bool_, (), False),
    "has_forces": (np.bool_, (), False),
    "has_stress": (np.bool_, (), False),
    "info": (h5py.string_dtype(), (), False),
}


_View = TypeVar("_View", bound="LazyH5File")


class LazyH5File:
    """Base of read-only views of one HDF5 file: the file is opened on first use, kept open,
    and opened anew in another process, so the view can go to ``DataLoader`` workers
    (pickled for spawn: the copy holds no handle) or be inherited through fork.

    A subclass sets ``self.path``, calls :meth:`_forget_handle` in ``__init__``, and
    implements :meth:`_open` (the ``h5py.File`` call with its own options and error) and
    :meth:`_validate`; :meth:`_handle` gives the open file.
    """

    #: further attributes that belong to one process's open file: not pickled, and reset to
    #: ``None`` with the handle
    _per_process: tuple[str, ...] = ()
    path: Path

    def _open(self) -> h5py.File:
        """Open ``self.path`` read-only (raising the subclass's error if it cannot)."""
        raise NotImplementedError

    def _validate(self, f: h5py.File) -> dict[str, h5py.Dataset]:
        """Check the freshly opened ``f`` (raise if unusable; it is then closed) and return the
        dataset handles to keep (group look-ups cost ~0.2 ms each in h5py)."""
        raise NotImplementedError

    def _forget_handle(self) -> None:
        self._file: h5py.File | None = None
        self._pid: int | None = None
        self._datasets: dict[str, h5py.Dataset] = {}
        for name in self._per_process:
            setattr(self, name, None)

    def _handle(self) -> h5py.File:
        if self._file is not None and self._pid == os.getpid():
            return self._file
        # A handle inherited through fork is left alone (not closed): it belongs to the parent.
        self._file = None
        f = self._open()
        try:
            datasets = self._validate(f)
        except BaseException:
            f.close()
            raise
        self._file, self._pid, self._datasets = f, os.getpid(), datasets
        return f

    def close(self) -> None:
        """Close the file (it re-opens on the next access)."""
        if self._file is not None and self._pid == os.getpid():
            self._file.close()
        self._file, self._datasets = None, {}

    def __enter__(self: _View) -> _View:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def __getstate__(self) -> dict:
        # h5py handles cannot be pickled; the copy re-opens the file itself.
        skip = {"_file", "_pid", "_datasets", *self._per_process}
        return {k: v for k, v in self.__dict__.items() if k not in skip}

    def __setstate__(self, state: dict) -> None:
        self.__dict__.update(state)
        self._forget_handle()


class H5Dataset(LazyH5File, Sequence):
    """A read-only, list-like view of the labelled structures in one mlpot HDF5 file.

    The file is opened on first access and re-opened when the process id changes, so the
    object can be handed to ``torch.utils.data.DataLoader`` workers (fork or spawn).

    Args:
        path: an HDF5 file written by :meth:`H5Dataset.write`.

    Raises:
        FileNotFoundError: if ``path`` does not exist.
        DataError: on first access, if the file is not a valid mlpot HDF5 file.
    """

    _per_process = ("_offsets",)  # read anew from the file each time it is opened

    def __init__(self, path: str | os.PathLike) -> None:
        self.path = Path(path)
        if not self.path.is_file():
            raise FileNotFoundError(f"no such HDF5 file: {self.path}")
        self._offsets: np.ndarray | None = None
        self._forget_handle()

    # ----------------------------------------------------------------- file handling
    def _open(self) -> h5py.File:
        try:
            return h5py.File(self.path, "r", rdcc_nbytes=16 * 2**20)
        except OSError as exc:
            raise DataError(f"{self.path}: not a readable HDF5 file ({exc})") from exc

    def _validate(self, f: h5py.File) -> dict[str, h5py.Dataset]:
        self._offsets = _check_file(f, self.path)
        return {name: f[name] for name in _LAYOUT}

    def __repr__(self) -> str:
        return f"H5Dataset({str(self.path)!r})"

    # ----------------------------------------------------------------- sequence protocol
    def __len__(self) -> int:
        self._handle()
        return len(self._offsets) - 1

    def __getitem__(self, index):
        """Return one structure for an int, a list of structures for a slice or a list."""
        n = len(self)
        if isinstance(index, slice):
            start, stop, step = index.indices(n)
            if step == 1:
                return self._read_block(start, max(start, stop))
            return [self._read_block(i, i + 1)[0] for i in range(start, stop, step)]
        if isinstance(index, (int, np.integer)):
            i = int(index)
            if not -n <= i < n:
                raise IndexError(f"structure index {i} out of range for {n} structures")
            i %= n
            return self._read_block(i, i + 1)[0]
        idx = np.asarray(index)
        if idx.ndim != 1 or not (idx.size == 0 or np.issubdtype(idx.dtype, np.integer)):
            raise TypeError(f"index must be an int, a slice or a list of ints, got {index!r}")
        return [self[int(i)] for i in idx]

    def __iter__(self) -> Iterator[Atoms]:
        # Read in blocks: one HDF5 read per dataset per block instead of per structure.
        n, block = len(self), 256
        for start in range(0, n, block):
            yield from self._read_block(start, min(n, start + block))

    def _read_block(self, start: int, stop: int) -> list[Atoms]:
        self._handle()
        off, ds = self._offsets, self._datasets
        a0, a1 = int(off[start]), int(off[stop])
        try:
            atom = {k: ds[k][a0:a1] for k, (_, _, atomic) in _LAYOUT.items() if atomic}
            struct = {k: ds[k][start:stop] for k, (_, _, atomic) in _LAYOUT.items()
                      if not atomic}
        except (OSError, ValueError, RuntimeError) as exc:
            # h5py reports damaged chunks (bad checksum, truncated data) as OSError.
            raise DataError(f"{self.path}: corrupt mlpot HDF5 file, cannot read structures "
                            f"{start}..{stop - 1} ({exc})") from exc
        out = []
        for j in range(stop - start):
            lo, hi = int(off[start + j]) - a0, int(off[start + j + 1]) - a0
            where = f"{self.path}, structure {start + j}"
            try:
                info = struct["info"][j]
                info = json.loads(info.decode() if isinstance(info, bytes) else info)
                out.append(labelled_atoms(
                    atom["numbers"][lo:hi].astype(np.int64),
                    atom["positions"][lo:hi],
                    cell=struct["cell"][j],
                    pbc=struct["pbc"][j],
                    energy=struct["energy"][j] if struct["has_energy"][j] else None,
                    forces=atom["forces"][lo:hi] if struct["has_forces"][j] else None,
                    stress=struct["stress"][j] if struct["has_stress"][j] else None,
                    info=info,
                ))
            except (DataError, json.JSONDecodeError) as exc:
                raise DataError(f"{where}: {exc}") from exc
        return out

    # ----------------------------------------------------------------- writing
    @classmethod
    def write(cls, path: str | os.PathLike, structures: Iterable[Atoms],
              chunk_size: int = 1024) -> "H5Dataset":
        """Write labelled structures to ``path`` and return the dataset opened on it.

        Streams ``structures`` (any iterable, e.g. a generator) in blocks of ``chunk_size``
        structures into resizable datasets. The file is written to ``path + ".tmp"`` and
        moved into place only when complete, so a crash never leaves a half-written file.

        Args:
            path: destination, conventionally ``*.h5``.
            structures: ase.Atoms with labels attached (see :func:`labelled_atoms`).
            chunk_size: structures per write block and per HDF5 chunk of per-structure data.

        Raises:
            DataError: if a structure is invalid (message names its index).
            ValueError: if ``structures`` is empty or ``chunk_size`` < 1.
        """
        if int(chunk_size) < 1:
            raise ValueError(f"chunk_size must be >= 1, got {chunk_size}")
        path = Path(path)
        with atomic_path(path) as tmp:
            with h5py.File(tmp, "w") as f:
                n = _write_all(f, structures, int(chunk_size), path)
            if n == 0:
                raise ValueError(f"no structures to write to {path}")
        return cls(path)


def _write_all(f: h5py.File, structures: Iterable[Atoms], chunk: int, path: Path) -> int:
    f.attrs["mlpot_format"] = FORMAT_NAME
    f.attrs["version"] = FORMAT_VERSION
    for key, value in _UNITS.items():
        f.attrs[key] = value
    for name, (dtype, shape, atomic) in _LAYOUT.items():
        rows = ATOM_CHUNK if atomic else chunk
        f.create_dataset(name, shape=(0, *shape), maxshape=(None, *shape), dtype=dtype,
                         chunks=(rows, *shape), compression="gzip", compression_opts=4,
                         shuffle=True)
    offsets = [0]
    buffer: list[Atoms] = []
    n = 0
    for k, atoms in enumerate(structures):
        if not isinstance(atoms, Atoms):
            raise TypeError(f"structure {k} is a {type(atoms).__name__}, not ase.Atoms")
        validate_structure(atoms, where=f"structure {k} (writing {path})")
        buffer.append(atoms)
        if len(buffer) == chunk:
            _append(f, buffer, offsets)
            n += len(buffer)
            buffer = []
    if buffer:
        _append(f, buffer, offsets)
        n += len(buffer)
    f.create_dataset("atom_offsets", data=np.asarray(offsets, dtype=np.int64),
                     chunks=True, compression="gzip")
    return n


def _append(f: h5py.File, block: list[Atoms], offsets: list[int]) -> None:
    cols: dict[str, list] = {name: [] for name in _LAYOUT}
    for atoms in block:
        lab = get_labels(atoms)
        n_atoms = len(atoms)
        offsets.append(offsets[-1] + n_atoms)
        cols["numbers"].append(atoms.numbers.astype(np.uint8))
        cols["positions"].append(atoms.positions)
        cols["forces"].append(np.full((n_atoms, 3), np.nan) if lab.forces is None
                              else lab.forces)
        cols["cell"].append(atoms.cell.array)
        cols["pbc"].append(atoms.pbc)
        cols["energy"].append(np.nan if lab.energy is None else lab.energy)
        cols["stress"].append(np.full((3, 3), np.nan) if lab.stress is None else lab.stress)
        cols["has_energy"].append(lab.energy is not None)
        cols["has_forces"].append(lab.forces is not None)
        cols["has_stress"].append(lab.stress is not None)
        cols["info"].append(_info_json(atoms.info))
    for name, (dtype, _, atomic) in _LAYOUT.items():
        data = (np.concatenate(cols[name]) if atomic
                else np.asarray(cols[name], dtype=object if name == "info" else dtype))
        ds = f[name]
        old = ds.shape[0]
        ds.resize(old + len(data), axis=0)
        ds[old:] = data


def _info_json(info: dict) -> str:
    """``atoms.info`` as JSON, keeping only the entries JSON can represent exactly."""
    kept = {}
    for key, value in info.items():
        if isinstance(value, np.ndarray):
            value = value.tolist()
        elif isinstance(value, np.generic):
            value = value.item()
        try:
            json.dumps(value, allow_nan=False)
        except (TypeError, ValueError):
            continue  # e.g. objects or NaN: not worth failing the whole write for metadata
        kept[str(key)] = value
    return json.dumps(kept)


def _check_file(f: h5py.File, path: Path) -> np.ndarray:
    """Validate format attributes and array shapes; return the atom offsets."""
    fmt = f.attrs.get("mlpot_format")
    if isinstance(fmt, bytes):
        fmt = fmt.decode()
    if fmt != FORMAT_NAME:
        raise DataError(f"{path}: not an mlpot HDF5 file (mlpot_format={fmt!r}, "
                        f"expected {FORMAT_NAME!r})")
    version = f.attrs.get("version")
    if version is None or int(version) > FORMAT_VERSION:
        raise DataError(f"{path}: mlpot-h5 version {version} is not supported by this "
                        f"mlpot (reads version <= {FORMAT_VERSION}); upgrade mlpot")
    missing = [k for k in ("atom_offsets", *_LAYOUT) if k not in f]
    if missing:
        raise DataError(f"{path}: corrupt mlpot HDF5 file, missing datasets {missing}")
    try:
        offsets = f["atom_offsets"][()]
    except (OSError, ValueError) as exc:
        raise DataError(f"{path}: corrupt mlpot HDF5 file, cannot read atom_offsets "
                        f"({exc})") from exc
    n = len(offsets) - 1
    if n < 0 or offsets[0] != 0 or np.any(np.diff(offsets) < 1):
        raise DataError(f"{path}: corrupt mlpot HDF5 file, atom_offsets is not increasing")
    for name, (_, shape, atomic) in _LAYOUT.items():
        expected = (int(offsets[-1]) if atomic else n, *shape)
        if f[name].shape != expected:
            raise DataError(f"{path}: corrupt mlpot HDF5 file, dataset {name!r} has shape "
                            f"{f[name].shape}, expected {expected}")
    return offsets
