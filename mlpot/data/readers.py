"""Readers for the dataset formats mlpot accepts, all returning labelled ``ase.Atoms``.

Every reader converts to mlpot's units (Å, eV, eV/Å, eV/Å³ with ASE's stress sign) on the
way in and passes each structure through :func:`labelled_atoms`, so a bad value is caught
here with a message naming the file and the structure, not deep inside training.

Formats (see :data:`FORMATS`):

- ``"ase"``: anything ``ase.io.read`` reads (extended XYZ first of all); labels come from
  the calculator results ase.io attaches. Option ``ase_format`` is passed to ase.io.
- ``"mlearn"``: the JSON lists of the mlearn benchmark (pymatgen structure dicts). Option
  ``stress_order``: the order of ``virial_stress`` (default VASP's ``"xx yy zz xy yz zx"``).
- ``"deepmd"``: DeePMD-kit "npy" systems; a folder holding several systems is read whole.
- ``"n2p2"``: n2p2 / RuNNer ``input.data``. Option ``units``: ``"angstrom_ev"`` (default),
  ``"bohr_hartree"`` or a ``(length, energy)`` factor pair.
- ``"npz"``: rMD17-style arrays in kcal/mol (also the sGDML key names ``z R E F``).
- ``"hdf5"``: mlpot's own store; :func:`read` returns the lazy :class:`H5Dataset`.

More formats plug in with :func:`register_reader`: the registry it fills drives both
:func:`read` (reader and options by format name) and :func:`detect_format` (format by file
suffix, or the one directory format).
"""

from __future__ import annotations

import inspect
import json
import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterable, Mapping, Sequence, TypeVar

import ase.io
import numpy as np
from ase import Atoms

from ..units import KBAR, KCAL_PER_MOL, unit_factors
from .checks import check_xyz_frames
from .h5 import H5Dataset
from .structures import DataError, get_labels, labelled_atoms, validate_structure

__all__ = ["FORMATS", "detect_format", "read", "register_reader", "unregister_reader", "write"]

#: Format of a file whose name no registered reader claims (ase.io guesses from the content).
DEFAULT_FORMAT = "ase"

ReaderFn = TypeVar("ReaderFn", bound=Callable[..., Sequence[Atoms]])
#: A check of one option value: raises ``ValueError`` for a bad one (its result is unused).
OptionCheck = Callable[[Any], object]


@dataclass(frozen=True)
class _Reader:
    """A registered format: its reader, options (name → value check or ``None``), the file
    suffixes it claims (lower case, with the dot) and whether it reads directories."""

    fn: Callable[..., Sequence[Atoms]]
    options: Mapping[str, OptionCheck | None]
    suffixes: tuple[str, ...]
    directory: bool


_READERS: dict[str, _Reader] = {}


def register_reader(name: str, options: Iterable[str] | Mapping[str, OptionCheck | None] = (),
                    suffixes: Iterable[str] = (), directory: bool = False
                    ) -> Callable[[ReaderFn], ReaderFn]:
    """Decorator: make ``fn(path, **options)`` the reader of format ``name``.

    The reader gets a :class:`~pathlib.Path` that exists and the options the caller of
    :func:`read` passed; it returns a sequence of labelled ``ase.Atoms`` (build each with
    :func:`~mlpot.data.labelled_atoms`: energy in eV, forces (n_atoms, 3) in eV/Å, stress
    in eV/Å³, so a bad value is reported with the file and structure). :func:`read` turns
    any other exception it raises into a :class:`DataError` naming the file and format.

    Args:
        name: the format name, for ``read(path, format=name)`` and ``data.format`` in configs.
        options: the keyword options the reader takes, as names, or as a mapping from name
            to a check called with the value before reading (it raises ``ValueError`` for a
            bad value, which :func:`read` passes on as the caller's error, not the file's).
        suffixes: file suffixes (e.g. ``".xyze"``, case-insensitive) :func:`detect_format`
            maps to this format.
        directory: the format is a folder; :func:`detect_format` gives it for any directory.

    Raises:
        ValueError: if ``name`` is already registered, a suffix or the directory is already
            claimed by another format, a suffix is not one ``.word``, or an option is not a
            keyword parameter of the reader.
    """
    if not isinstance(name, str) or not name:
        raise ValueError(f"a reader needs a non-empty format name, got {name!r}")
    checks = dict(options) if isinstance(options, Mapping) else dict.fromkeys(options)
    claimed = tuple(suffix.lower() for suffix in suffixes)

    def register(fn: ReaderFn) -> ReaderFn:
        # Checked when the decorator runs, i.e. on import: a clash or a typo in an option
        # name fails there, not on the first file of that format.
        if name in _READERS:
            raise ValueError(f"a reader for format {name!r} is already registered")
        for suffix in claimed:
            if not re.fullmatch(r"\.[^./\\]+", suffix):
                raise ValueError(f"format {name!r}: a suffix is a dot and a word, e.g. '.xyz'; "
                                 f"got {suffix!r}")
            owner = next((other for other, r in _READERS.items() if suffix in r.suffixes), None)
            if owner is not None:
                raise ValueError(f"format {name!r}: suffix {suffix!r} already belongs to format {owner!r}")
        owner = next((other for other, r in _READERS.items() if r.directory), None)
        if directory and owner is not None:
            raise ValueError(f"format {name!r}: directories already belong to format {owner!r}")
        _check_option_names(name, fn, checks)
        _READERS[name] = _Reader(fn, checks, claimed, bool(directory))
        return fn

    return register


def unregister_reader(name: str) -> None:
    """Remove format ``name`` from the registry (a plug-in unloaded, a test cleaned up).

    Raises:
        KeyError: if no reader is registered under ``name``.
    """
    if name not in _READERS:
        raise KeyError(f"no reader is registered for format {name!r}")
    del _READERS[name]


def _check_option_names(name: str, fn: Callable, options: Mapping[str, Any]) -> None:
    """Every declared option must be a keyword parameter of ``fn`` (or ``fn`` takes ``**``)."""
    params = inspect.signature(fn).parameters
    if any(p.kind is p.VAR_KEYWORD for p in params.values()):
        return
    keywords = {k for k, p in params.items() if p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)}
    missing = sorted(set(options) - keywords)
    if missing:
        raise ValueError(f"format {name!r}: options {missing} are not keyword parameters of "
                         f"{getattr(fn, '__qualname__', fn)!r}")


def detect_format(path: str | os.PathLike) -> str:
    """Guess the format of ``path`` from its name (and whether it is a directory).

    A directory → the format registered with ``directory=True`` (deepmd); a file → the
    format that registered its suffix (``.h5``/``.hdf5`` → hdf5, ``.npz`` → npz, ``.json``
    → mlearn, ``input.data`` or ``*.data`` → n2p2); anything else → :data:`DEFAULT_FORMAT`.
    """
    path = Path(path)
    if path.is_dir():
        # A folder is never one of the file formats, whatever its name says.
        return next((name for name, r in _READERS.items() if r.directory), DEFAULT_FORMAT)
    suffix = path.suffix.lower()
    return next((name for name, r in _READERS.items() if suffix in r.suffixes), DEFAULT_FORMAT)


def read(path: str | os.PathLike, format: str | None = None,
         **options) -> list[Atoms] | H5Dataset:
    """Read every structure in ``path``.

    Args:
        path: a file, or for ``deepmd`` a system folder or a folder of systems.
        format: a registered format: one of :data:`FORMATS` or one added with
            :func:`register_reader`; guessed by :func:`detect_format` when ``None``.
        **options: format options: ``ase_format`` (ase), ``units`` (n2p2),
            ``stress_order`` (mlearn; default ``"xx yy zz xy yz zx"``. The mlearn Mo files
            store shear stress as ``"xx yy zz xy zx yz"``: see the tests).

    Returns:
        A list of labelled ``ase.Atoms``; for ``hdf5`` the list-like :class:`H5Dataset`.

    Raises:
        FileNotFoundError: if ``path`` does not exist.
        ValueError: for an unknown format name, an option the format does not take, or a
            bad option value.
        DataError: if the file cannot be parsed or a structure is invalid; the message
            names the path, the format and the problem.
    """
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"no such file or directory: {path}")
    if path.is_file() and path.stat().st_size == 0:
        raise DataError(f"{path}: the file is empty (0 bytes)")
    fmt = detect_format(path) if format is None else format
    if fmt not in _READERS:
        raise ValueError(f"unknown format {fmt!r}; valid formats are {', '.join(_READERS)}")
    reader = _READERS[fmt]
    unexpected = sorted(set(options) - set(reader.options))
    if unexpected:
        raise ValueError(f"format {fmt!r} takes options {sorted(reader.options)}, "
                         f"got unexpected {unexpected}")
    # A bad option value is the caller's ValueError, not a DataError about the file.
    for key, value in options.items():
        check = reader.options[key]
        if check is not None:
            check(value)
    try:
        structures = reader.fn(path, **options)
    except (DataError, FileNotFoundError):
        raise
    except Exception as exc:  # foreign parsers raise anything; name file and format
        raise DataError(f"{path}: cannot read as {fmt!r}: {_describe(exc)}") from exc
    if len(structures) == 0:
        raise DataError(f"{path}: no structures found (format {fmt!r})")
    return structures


def write(path: str | os.PathLike, structures, format: str | None = None, *,
          ase_format: str | None = None, units: str | tuple[float, float] = "angstrom_ev") -> None:
    """Write labelled structures; ``.h5``/``.hdf5`` (or ``format="hdf5"``) → :class:`H5Dataset`,
    ``input.data``/``*.data`` (or ``format="n2p2"``) → n2p2/RuNNer ``input.data``.

    Anything else goes through ``ase.io.write`` (extended XYZ for ``.xyz``/``.extxyz``), which
    keeps energy, forces and stress.

    Args:
        path: destination file.
        structures: an iterable of labelled ``ase.Atoms``.
        format: ``"hdf5"``, ``"n2p2"`` or ``"ase"``; guessed from the suffix when ``None``.
        ase_format: format name passed to ``ase.io.write`` (overrides the suffix guess).
        units: n2p2 only: the file's units, as for reading (``"bohr_hartree"``, …).
    """
    path = Path(path)
    if format is None:
        detected = detect_format(path)
        format = detected if detected in ("hdf5", "n2p2") else "ase"
    fmt = format
    if fmt == "hdf5":
        H5Dataset.write(path, structures)
    elif fmt == "n2p2":
        _write_n2p2(path, structures, units=units)
    elif fmt == "ase":
        if ase_format is None and path.suffix.lower() in (".xyz", ".extxyz"):
            ase_format = "extxyz"
        ase.io.write(path, list(structures), format=ase_format)
    else:
        raise ValueError(f"cannot write format {fmt!r}; writable formats are 'hdf5', 'n2p2', 'ase'")


# --------------------------------------------------------------------------- helpers
def _describe(exc: BaseException) -> str:
    """A foreign parser's exception in words (one line, never advice to unpickle)."""
    import zipfile

    text = str(exc)
    # numpy's texts suggest allow_pickle=True, i.e. running the file's code: never pass them on.
    if "Object arrays cannot be loaded" in text:
        return ("it holds object arrays (pickled Python objects), not numbers; mlpot does not unpickle "
                "them (nothing in the file was run)")
    if "allow_pickle" in text:
        return ("not a NumPy array file (no .npy/.npz header); as a pickle it could run code, so mlpot "
                "does not load it (nothing in the file was run)")
    if isinstance(exc, UnicodeDecodeError):
        return f"not a text file (byte {exc.start} is not UTF-8): binary or corrupt"
    if isinstance(exc, zipfile.BadZipFile):
        return f"truncated or corrupt zip archive ({exc})"
    if "could not assign tuple of length" in text:  # numpy, under ASE's extxyz parser
        return f"an atom line has a different number of columns than its frame declares ({exc})"
    if isinstance(exc, KeyError):
        key = exc.args[0] if exc.args else "?"
        # ase raises KeyError(symbol) for an unknown chemical symbol.
        if isinstance(key, str) and re.fullmatch(r"[A-Z][a-z]{0,2}", key):
            return f"unknown element symbol or missing key {key!r}"
        return f"missing key {key!r}"
    return f"{type(exc).__name__}: {exc}"


def _labelled(where: str, **kwargs) -> Atoms:
    """:func:`labelled_atoms` with ``where`` prefixed to any error."""
    try:
        return labelled_atoms(**kwargs)
    except DataError as exc:
        raise DataError(f"{where}: {exc}") from exc


def _item_error(where: str, fmt: str, exc: Exception) -> DataError:
    return DataError(f"{where}: invalid {fmt!r} data: {_describe(exc)}")


# --------------------------------------------------------------------------- ase
@register_reader("ase", options=("ase_format",))
def _read_ase(path: Path, ase_format: str | None = None) -> list[Atoms]:
    inner = None
    if path.suffix in (".gz", ".bz2", ".xz") and ase_format in (None, "extxyz"):
        inner = ase.io.formats.filetype(path.with_suffix(""), read=False)
    if inner == "extxyz":
        # ASE's multi-frame readers seek back and forth, and every backward seek in a
        # compressed stream decompresses it again from the start (minutes for a few MB):
        # decompress once into memory and parse the text.
        import bz2
        import gzip
        import io
        import lzma

        opener = {".gz": gzip.open, ".bz2": bz2.open, ".xz": lzma.open}[path.suffix]
        with opener(path, "rt") as fh:
            text = fh.read()
        check_xyz_frames(io.StringIO(text), len(text), str(path))
        images = ase.io.read(io.StringIO(text), index=":", format="extxyz")
    else:
        if _is_xyz(path, ase_format):
            with path.open("rb") as fh:
                check_xyz_frames(fh, path.stat().st_size, str(path))
        images = ase.io.read(path, index=":", format=ase_format)
    if isinstance(images, Atoms):
        images = [images]
    for k, atoms in enumerate(images):
        validate_structure(atoms, where=f"{path}, structure {k}")
    return list(images)


def _is_xyz(path: Path, ase_format: str | None) -> bool:
    """Whether ASE will read ``path`` as (extended) XYZ (told, or guessed from name and content)."""
    if ase_format is not None:
        return ase_format in ("extxyz", "xyz")
    try:
        return ase.io.formats.filetype(str(path)) in ("extxyz", "xyz")  # a Path is taken for a file object
    except Exception:  # an unknown or empty file: ase.io.read reports it
        return False


# --------------------------------------------------------------------------- mlearn
_VOIGT = {"xx": 0, "yy": 1, "zz": 2, "yz": 3, "zy": 3, "xz": 4, "zx": 4, "xy": 5, "yx": 5}
#: Order of ``outputs.virial_stress`` in mlearn files: VASP's OUTCAR order.
MLEARN_STRESS_ORDER = "xx yy zz xy yz zx"


def _voigt_positions(order: str) -> list[int]:
    """ASE Voigt slot of each of the 6 stored components, e.g. 'xx yy zz xy yz zx'."""
    names = order.lower().split()
    slots = [_VOIGT.get(name, -1) for name in names]
    if len(names) != 6 or sorted(slots) != list(range(6)):
        raise ValueError(f"stress_order must name the 6 distinct components, e.g. "
                         f"{MLEARN_STRESS_ORDER!r}; got {order!r}")
    return slots


@register_reader("mlearn", options={"stress_order": _voigt_positions}, suffixes=(".json",))
def _read_mlearn(path: Path, stress_order: str = MLEARN_STRESS_ORDER) -> list[Atoms]:
    slots = _voigt_positions(stress_order)
    try:
        entries = json.loads(path.read_text())
    except json.JSONDecodeError as exc:
        raise DataError(f"{path}: invalid 'mlearn' JSON ({exc})") from exc
    if not isinstance(entries, list):
        raise DataError(f"{path}: 'mlearn' data must be a JSON list of entries, "
                        f"got {type(entries).__name__}")
    out = []
    for k, entry in enumerate(entries):
        where = f"{path}, structure {k}"
        try:
            struct = entry["structure"]
            cell = np.asarray(struct["lattice"]["matrix"], dtype=np.float64)
            sites = struct["sites"]
            symbols = [site["species"][0]["element"] for site in sites]
            positions = np.asarray([site["xyz"] for site in sites], dtype=np.float64)
            outputs = entry.get("outputs", {})
            energy, forces, stress = (outputs.get(key) for key in
                                      ("energy", "forces", "virial_stress"))
            if stress is not None:
                stress = np.asarray(stress, dtype=np.float64)
                if stress.shape != (6,):
                    raise DataError(f"{where}: virial_stress must have 6 numbers, "
                                    f"got shape {stress.shape}")
                # VASP: kbar, xx yy zz xy yz zx, compression positive. ASE: eV/Å³, Voigt
                # xx yy zz yz xz xy, compression negative (as ase.io.vasp does for OUTCAR).
                voigt = np.empty(6)
                voigt[slots] = -stress * KBAR
                stress = voigt
            if "num_atoms" in entry and int(entry["num_atoms"]) != len(symbols):
                raise DataError(f"{where}: num_atoms is {entry['num_atoms']} but there "
                                f"are {len(symbols)} sites")
        except DataError:
            raise
        except (KeyError, IndexError, TypeError, ValueError) as exc:
            raise _item_error(where, "mlearn", exc) from exc
        info = {key: entry[key] for key in ("group", "tag", "description") if key in entry}
        out.append(_labelled(where, numbers=symbols, positions=positions, cell=cell,
                             pbc=True, energy=energy, forces=forces, stress=stress,
                             info=info))
    return out


# --------------------------------------------------------------------------- deepmd
@register_reader("deepmd", directory=True)
def _read_deepmd(path: Path) -> list[Atoms]:
    if (path / "type.raw").is_file():
        systems = [path]
    else:
        systems = sorted(p.parent for p in path.rglob("type.raw"))
        if not systems:
            raise DataError(f"{path}: no DeePMD system (a folder with type.raw) found "
                            "here or below (format 'deepmd')")
    return [atoms for system in systems for atoms in _read_deepmd_system(system)]


def _read_deepmd_system(system: Path) -> list[Atoms]:
    try:
        types = np.loadtxt(system / "type.raw", dtype=np.int64, ndmin=1)
    except ValueError as exc:
        raise DataError(f"{system / 'type.raw'}: {_describe(exc)} (format 'deepmd')") from exc
    type_map_file = system / "type_map.raw"
    if not type_map_file.is_file():
        raise DataError(f"{system}: DeePMD system has no type_map.raw, so the elements "
                        "are unknown (format 'deepmd')")
    type_map = type_map_file.read_text().split()
    if types.min() < 0 or types.max() >= len(type_map):
        raise DataError(f"{system}/type.raw: type index {types.max()} out of range for "
                        f"type_map.raw with {len(type_map)} entries (format 'deepmd')")
    symbols = [type_map[t] for t in types]
    n_atoms = len(types)
    periodic = not (system / "nopbc").exists()
    sets = sorted(p for p in system.glob("set.*") if p.is_dir())
    if not sets:
        raise DataError(f"{system}: DeePMD system has no set.* folders (format 'deepmd')")
    out = []
    for set_dir in sets:
        coord = _npy(set_dir, "coord", (3 * n_atoms,), required=True)
        n_frames = len(coord)
        box = _npy(set_dir, "box", (9,), n_frames)
        energy = _npy(set_dir, "energy", (), n_frames)
        force = _npy(set_dir, "force", (3 * n_atoms,), n_frames)
        virial = _npy(set_dir, "virial", (9,), n_frames)
        for k in range(n_frames):
            cell = None if box is None else box[k].reshape(3, 3)
            stress = None
            if virial is not None and cell is not None:
                # DeePMD virial is -dE/dε (eV); ASE stress = (1/V) dE/dε.
                stress = -virial[k].reshape(3, 3) / abs(np.linalg.det(cell))
            out.append(_labelled(
                f"{set_dir}, structure {k}", numbers=symbols,
                positions=coord[k].reshape(n_atoms, 3), cell=cell,
                pbc=periodic and cell is not None,
                energy=None if energy is None else energy[k],
                forces=None if force is None else force[k].reshape(n_atoms, 3),
                stress=stress))
    return out


def _npy(set_dir: Path, name: str, row_shape: tuple, n_frames: int | None = None,
         required: bool = False) -> np.ndarray | None:
    """Load ``set_dir/name.npy`` as float64 with shape (n_frames, *row_shape), or None."""
    file = set_dir / f"{name}.npy"
    if not file.is_file():
        if required:
            raise DataError(f"{file}: missing (format 'deepmd')")
        return None
    try:
        array = np.load(file, allow_pickle=False).astype(np.float64)
    except (ValueError, OSError, EOFError) as exc:  # name the file, not just its folder
        raise DataError(f"{file}: {_describe(exc)} (format 'deepmd')") from exc
    size = int(np.prod(row_shape, dtype=np.int64))
    frames = len(array) if n_frames is None else n_frames
    if array.ndim == 0 or array.size != frames * size:
        raise DataError(f"{file}: has shape {array.shape}, expected ({frames}, "
                        f"{size}) (format 'deepmd')" if row_shape else
                        f"{file}: has shape {array.shape}, expected ({frames},) "
                        "(format 'deepmd')")
    return array.reshape(frames, *row_shape)


# --------------------------------------------------------------------------- n2p2
# ``input.data``, the name n2p2 expects, has the suffix ".data" too.
@register_reader("n2p2", options={"units": unit_factors}, suffixes=(".data",))
def _read_n2p2(path: Path, units: str | tuple[float, float] = "angstrom_ev") -> list[Atoms]:
    length, energy_unit = unit_factors(units)
    out: list[Atoms] = []
    block: dict | None = None
    start = 0
    with path.open() as fh:
        for lineno, line in enumerate(fh, start=1):
            tokens = line.split()
            if not tokens:
                continue
            key, values = tokens[0], tokens[1:]
            where = f"{path}, line {lineno}"
            if key == "begin":
                if block is not None:
                    raise DataError(f"{where}: 'begin' before the 'end' of the structure "
                                    f"started at line {start} (format 'n2p2')")
                block, start = {"lattice": [], "atoms": [], "info": {}}, lineno
                continue
            if block is None:
                raise DataError(f"{where}: {key!r} outside a begin/end block (format 'n2p2')")
            try:
                if key == "end":
                    out.append(_n2p2_structure(block, f"{path}, structure {len(out)} "
                                               f"(line {start})", length, energy_unit))
                    block = None
                elif key == "comment":
                    block["info"]["comment"] = line.split(None, 1)[1].strip() if values else ""
                elif key == "lattice":
                    block["lattice"].append([float(v) for v in _n(values, 3)])
                elif key == "atom":
                    # x y z element charge energy fx fy fz; the per-atom charge and energy
                    # columns are n2p2 bookkeeping, not reference labels.
                    x, y, z, element, _, _, fx, fy, fz = _n(values, 9)
                    block["atoms"].append((element, [float(x), float(y), float(z)],
                                           [float(fx), float(fy), float(fz)]))
                elif key == "energy":
                    block["energy"] = float(_n(values, 1)[0])
                elif key == "charge":
                    block["info"]["charge"] = float(_n(values, 1)[0])
                else:
                    raise ValueError(f"unknown keyword {key!r}")
            except ValueError as exc:
                if isinstance(exc, DataError):
                    raise
                raise DataError(f"{where}: {exc} (format 'n2p2')") from exc
    if block is not None:
        raise DataError(f"{path}: truncated file, the structure started at line {start} "
                        "has no 'end' (format 'n2p2')")
    return out


def _write_n2p2(path: Path, structures, units: str | tuple[float, float] = "angstrom_ev") -> None:
    """n2p2 ``input.data``: energy and forces are required (the format has no way to mark
    them missing); structures must be periodic in 3D or not at all. Floats are written with
    17 significant digits, so reading back in the same units is exact."""
    length, energy_unit = unit_factors(units)
    lines = []
    for k, atoms in enumerate(structures):
        where = f"structure {k}"
        labels = get_labels(atoms)
        missing = [n for n in ("energy", "forces") if getattr(labels, n) is None]
        if missing:
            raise DataError(f"{where}: n2p2 input.data needs an energy and forces; this structure "
                            f"lacks {' and '.join(missing)}")
        pbc = np.asarray(atoms.pbc, dtype=bool)
        if pbc.any() and not pbc.all():
            raise DataError(f"{where}: n2p2 input.data holds fully periodic or open structures, "
                            f"not pbc={pbc.tolist()}")
        g = lambda v: format(float(v), ".17g")  # noqa: E731
        lines.append("begin")
        comment = atoms.info.get("comment")
        if comment:
            lines.append(f"comment {comment}")
        if pbc.all():
            for row in atoms.cell.array / length:
                lines.append("lattice " + " ".join(g(v) for v in row))
        forces = labels.forces / (energy_unit / length)
        for symbol, r, f in zip(atoms.get_chemical_symbols(), atoms.positions / length, forces):
            lines.append(f"atom {g(r[0])} {g(r[1])} {g(r[2])} {symbol} 0 0 {g(f[0])} {g(f[1])} {g(f[2])}")
        lines.append(f"energy {g(labels.energy / energy_unit)}")
        lines.append(f"charge {g(atoms.info.get('charge', 0.0))}")
        lines.append("end")
    path.write_text("\n".join(lines) + "\n")


def _n(values: list[str], count: int) -> list[str]:
    if len(values) != count:
        raise ValueError(f"expected {count} values, got {len(values)}: {' '.join(values)}")
    return values


def _n2p2_structure(block: dict, where: str, length: float, energy_unit: float) -> Atoms:
    if len(block["lattice"]) not in (0, 3):
        raise DataError(f"{where}: {len(block['lattice'])} lattice lines, expected 0 or 3")
    rows = block["atoms"]
    symbols = [r[0] for r in rows]
    positions = np.array([r[1] for r in rows], dtype=np.float64) * length
    forces = np.array([r[2] for r in rows], dtype=np.float64) * (energy_unit / length)
    energy = block.get("energy")
    periodic = bool(block["lattice"])
    return _labelled(
        where, numbers=symbols, positions=positions.reshape(len(rows), 3),
        cell=np.array(block["lattice"]) * length if periodic else None, pbc=periodic,
        energy=None if energy is None else energy * energy_unit,
        forces=forces.reshape(len(rows), 3), info=block["info"])


# --------------------------------------------------------------------------- npz
# rMD17 key -> sGDML (original MD17) key.
_NPZ_KEYS = {"nuclear_charges": "z", "coords": "R", "energies": "E", "forces": "F"}


@register_reader("npz", suffixes=(".npz",))
def _read_npz(path: Path) -> list[Atoms]:
    with np.load(path, allow_pickle=False) as data:
        arrays = {}
        for key, alias in _NPZ_KEYS.items():
            name = key if key in data else alias if alias in data else None
            if name is None and key in ("nuclear_charges", "coords"):
                raise DataError(f"{path}: missing array {key!r} (or {alias!r}); found "
                                f"{sorted(data.files)} (format 'npz')")
            arrays[key] = None if name is None else np.asarray(data[name])
    numbers = arrays["nuclear_charges"].astype(np.int64).ravel()
    coords = arrays["coords"].astype(np.float64)
    n_atoms = len(numbers)
    if coords.ndim == 2:
        coords = coords[None]  # a single configuration
    if coords.shape[1:] != (n_atoms, 3):
        raise DataError(f"{path}: coords have shape {arrays['coords'].shape}, expected "
                        f"(n_frames, {n_atoms}, 3) (format 'npz')")
    n_frames = len(coords)
    energies, forces = arrays["energies"], arrays["forces"]
    if energies is not None:
        if energies.size != n_frames:
            raise DataError(f"{path}: energies have shape {energies.shape}, expected "
                            f"({n_frames},) (format 'npz')")
        energies = energies.astype(np.float64).ravel() * KCAL_PER_MOL
    if forces is not None:
        if forces.shape != coords.shape:
            raise DataError(f"{path}: forces have shape {forces.shape}, expected "
                            f"{coords.shape} (format 'npz')")
        forces = forces.astype(np.float64) * KCAL_PER_MOL
    return [_labelled(f"{path}, structure {k}", numbers=numbers, positions=coords[k],
                      energy=None if energies is None else energies[k],
                      forces=None if forces is None else forces[k])
            for k in range(n_frames)]


# --------------------------------------------------------------------------- hdf5
@register_reader("hdf5", suffixes=(".h5", ".hdf5"))
def _read_hdf5(path: Path) -> H5Dataset:
    dataset = H5Dataset(path)
    len(dataset)  # open now, so a bad file fails here rather than in the training loop
    return dataset


#: The built-in formats (:func:`register_reader` adds more; :func:`read` lists all in errors).
FORMATS: tuple[str, ...] = tuple(_READERS)
