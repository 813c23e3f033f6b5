"""A corpus of malformed dataset files, for every reader mlpot registers.

Each :class:`Case` is a file (or a DeePMD folder) and a pattern that the one-line error must
match: the problem, in words a user can act on. Built from a valid EMT Cu/Au set, so each
file is wrong in one way only.
"""

from __future__ import annotations

import gzip
import json
import pickle
from dataclasses import dataclass
from pathlib import Path

import ase.io
import h5py
import numpy as np

from reliability_setup import emt_cells


@dataclass(frozen=True)
class Case:
    """One malformed input: its reader, a short id, the path and the expected problem."""

    reader: str
    name: str
    path: Path
    problem: str  # a regular expression searched in the error line


class Marker:
    """Pickled, it would create ``path`` when unpickled: a file that runs code on load."""

    def __init__(self, path: Path):
        self.path = str(path)

    def __reduce__(self):
        return (Path.touch, (Path(self.path),))


EXTXYZ_GOOD = ('2\nLattice="4 0 0 0 4 0 0 0 4" Properties=species:S:1:pos:R:3:forces:R:3 energy=-1.5 pbc="T T T"\n'
               "Cu 0 0 0 0.1 0.2 0.3\nAu 2 2 2 -0.1 -0.2 -0.3\n")


def _extxyz(folder: Path, marker: Path) -> list[Case]:
    def case(name, text, problem, suffix=".extxyz"):
        path = folder / f"{name}{suffix}"
        path.write_bytes(text) if isinstance(text, bytes) else path.write_text(text)
        return Case("extxyz", name, path, problem)

    bad_cell = EXTXYZ_GOOD.replace('Lattice="4 0 0 0 4 0 0 0 4"', 'Lattice="4 0 0 8 0 0 0 0 4"')
    return [
        case("xyz-empty", "", r"the file is empty \(0 bytes\)"),
        case("xyz-truncated", EXTXYZ_GOOD + EXTXYZ_GOOD[:-20], r"line 8: 2 columns, but the frame's first atom line \(line 7\) has 7"),
        case("xyz-garbage", bytes(range(256)) * 4, r"not a text file"),
        case("xyz-nan-coordinates", EXTXYZ_GOOD.replace("Au 2 2 2", "Au nan 2 2"), r"structure 0: non-finite"),
        case("xyz-inf-energy", EXTXYZ_GOOD.replace("energy=-1.5", "energy=inf"), r"structure 0: energy is inf"),
        case("xyz-nan-force", EXTXYZ_GOOD.replace("0.1 0.2 0.3", "0.1 nan 0.3"), r"structure 0: forces contain NaN"),
        case("xyz-columns", EXTXYZ_GOOD.replace("Au 2 2 2 -0.1 -0.2 -0.3", "Au 2 2 2 -0.1"), r"line 4: 5 columns"),
        case("xyz-zero-volume", bad_cell, r"structure 0: zero-volume"),
        case("xyz-absurd-count", EXTXYZ_GOOD.replace("2\n", "3000000000\n", 1), r"line 1: .*claims 3000000000 atoms"),
        case("xyz-coincident", EXTXYZ_GOOD.replace("Au 2 2 2", "Au 0 0 0"), r"structure 0: atoms 0 and 1 are 0 Å apart"),
        case("xyz-unknown-symbol", EXTXYZ_GOOD.replace("Au 2 2 2", "Qq 2 2 2"), r"'Qq'"),
        case("xyz-absurd-count-gz", gzip.compress(("7000000000\n" + EXTXYZ_GOOD[2:]).encode()),
             r"line 1: .*claims 7000000000 atoms", suffix=".extxyz.gz"),
    ]


def _mlearn_entry(**changes) -> dict:
    entry = {
        "structure": {"lattice": {"matrix": [[4, 0, 0], [0, 4, 0], [0, 0, 4]]},
                      "sites": [{"species": [{"element": "Cu"}], "xyz": [0, 0, 0]},
                                {"species": [{"element": "Au"}], "xyz": [2, 2, 2]}]},
        "outputs": {"energy": -1.5, "forces": [[0.1, 0.2, 0.3], [-0.1, -0.2, -0.3]],
                    "virial_stress": [1, 1, 1, 0, 0, 0]},
        "num_atoms": 2,
    }
    for key, value in changes.items():
        section, _, field = key.partition(".")
        if field:
            entry[section][field] = value
        else:
            entry[section] = value
    return entry


def _mlearn(folder: Path, marker: Path) -> list[Case]:
    def case(name, content, problem):
        path = folder / f"{name}.json"
        path.write_bytes(content) if isinstance(content, bytes) else path.write_text(
            content if isinstance(content, str) else json.dumps(content))
        return Case("mlearn", name, path, problem)

    good = json.dumps([_mlearn_entry()])
    nan_site = _mlearn_entry()
    nan_site["structure"]["sites"][1]["xyz"] = [float("nan"), 2, 2]
    return [
        case("mlearn-empty", "", r"the file is empty"),
        case("mlearn-truncated", good[: len(good) // 2], r"invalid 'mlearn' JSON"),
        case("mlearn-garbage", bytes(range(256)) * 4, r"not a text file"),
        case("mlearn-not-a-list", {"a": 1}, r"list"),
        case("mlearn-forces-length", [_mlearn_entry(**{"outputs.forces": [[0.1, 0.2, 0.3]]})], r"forces"),
        case("mlearn-nan-coordinates", [nan_site], r"non-finite"),
        case("mlearn-singular-cell", [_mlearn_entry(**{"structure.lattice": {"matrix": [[4, 0, 0], [8, 0, 0],
                                                                                           [0, 0, 4]]}})],
             r"zero-volume"),
        case("mlearn-num-atoms", [_mlearn_entry(num_atoms=3)], r"num_atoms is 3"),
        case("mlearn-nan-energy", [_mlearn_entry(**{"outputs.energy": float("nan")})], r"energy is nan"),
    ]


def _deepmd_system(folder: Path, name: str, **arrays) -> Path:
    system = folder / name
    (system / "set.000").mkdir(parents=True)
    (system / "type.raw").write_text("0 1\n")
    (system / "type_map.raw").write_text("Cu Au\n")
    good = {"coord": np.array([[0, 0, 0, 2, 2, 2.0]]), "box": np.array([[4, 0, 0, 0, 4, 0, 0, 0, 4.0]]),
            "energy": np.array([-1.5]), "force": np.array([[0.1, 0.2, 0.3, -0.1, -0.2, -0.3]])}
    good.update(arrays)
    for key, value in good.items():
        target = system / "set.000" / f"{key}.npy"
        if isinstance(value, bytes):
            target.write_bytes(value)
        elif value is not None:
            np.save(target, value, allow_pickle=True)
    return system


def _deepmd(folder: Path, marker: Path) -> list[Case]:
    def case(name, problem, **arrays):
        return Case("deepmd", name, _deepmd_system(folder, name, **arrays), problem)

    type_out = case("deepmd-type-range", r"type index 2 out of range")
    (type_out.path / "type.raw").write_text("0 2\n")
    good_coord = np.array([[0, 0, 0, 2, 2, 2.0]])
    buffer = folder / "coord-full.npy"
    np.save(buffer, good_coord)
    return [
        type_out,
        case("deepmd-coord-shape", r"coord\.npy: has shape \(1, 5\)", coord=np.zeros((1, 5))),
        case("deepmd-energy-length", r"energy\.npy: has shape \(2,\)", energy=np.array([-1.5, -1.0])),
        case("deepmd-singular-box", r"zero-volume", box=np.zeros((1, 9))),
        case("deepmd-truncated-npy", r"coord\.npy: .*not fully written", coord=buffer.read_bytes()[:-10]),
        case("deepmd-garbage-npy", r"coord\.npy: not a NumPy array file", coord=bytes(range(256))),
        case("deepmd-pickled-npy", r"coord\.npy: it holds object arrays.*nothing in the file was run",
             coord=np.array([Marker(marker)], dtype=object)),
        case("deepmd-nan-force", r"forces contain NaN", force=np.array([[0.1, np.nan, 0.3, -0.1, -0.2, -0.3]])),
    ]


N2P2_GOOD = ("begin\nlattice 4 0 0\nlattice 0 4 0\nlattice 0 0 4\n"
             "atom 0 0 0 Cu 0 0 0.1 0.2 0.3\natom 2 2 2 Au 0 0 -0.1 -0.2 -0.3\nenergy -1.5\ncharge 0\nend\n")


def _n2p2(folder: Path, marker: Path) -> list[Case]:
    def case(name, text, problem):
        sub = folder / name
        sub.mkdir()
        path = sub / "input.data"
        path.write_bytes(text) if isinstance(text, bytes) else path.write_text(text)
        return Case("n2p2", name, path, problem)

    return [
        case("n2p2-truncated", N2P2_GOOD[:-4], r"truncated file"),
        case("n2p2-columns", N2P2_GOOD.replace("Au 0 0 -0.1 -0.2 -0.3", "Au 0 0 -0.1"),
             r"line 6: expected 9 values"),
        case("n2p2-nan-force", N2P2_GOOD.replace("0.1 0.2 0.3", "0.1 nan 0.3"), r"forces contain NaN"),
        case("n2p2-unknown-element", N2P2_GOOD.replace(" Au ", " Xx "), r"'Xx'"),
        case("n2p2-two-lattice-lines", N2P2_GOOD.replace("lattice 0 0 4\n", ""), r"2 lattice lines"),
        case("n2p2-singular-lattice", N2P2_GOOD.replace("lattice 0 4 0", "lattice 8 0 0"), r"zero-volume"),
        case("n2p2-garbage", bytes(range(256)) * 4, r"not a text file"),
        case("n2p2-empty", "", r"the file is empty"),
        case("n2p2-coincident", N2P2_GOOD.replace("atom 2 2 2", "atom 0 0 0"), r"atoms 0 and 1 are 0 Å apart"),
    ]


def _npz(folder: Path, marker: Path) -> list[Case]:
    good = {"nuclear_charges": np.array([29, 79]), "coords": np.array([[[0, 0, 0], [2, 2, 2.0]]]),
            "energies": np.array([-30.0]), "forces": np.array([[[1, 2, 3], [-1, -2, -3.0]]])}

    def case(name, problem, raw: bytes | None = None, **changes):
        path = folder / f"{name}.npz"
        if raw is not None:
            path.write_bytes(raw)
        else:
            arrays = {k: v for k, v in {**good, **changes}.items() if v is not None}
            np.savez(path, **arrays)
        return Case("npz", name, path, problem)

    whole = folder / "npz-whole.npz"
    np.savez(whole, **good)
    return [
        case("npz-truncated", r"truncated or corrupt zip archive", raw=whole.read_bytes()[: whole.stat().st_size // 2]),
        case("npz-garbage", r"not a NumPy array file.*nothing in the file was run", raw=bytes(range(256)) * 4),
        case("npz-empty", r"the file is empty", raw=b""),
        case("npz-energies-length", r"energies have shape \(2,\)", energies=np.array([-30.0, -31.0])),
        case("npz-forces-shape", r"forces have shape \(1, 1, 3\)", forces=np.zeros((1, 1, 3))),
        case("npz-pickled", r"it holds object arrays.*nothing in the file was run",
             coords=np.array([Marker(marker)], dtype=object)),
        case("npz-missing-coords", r"missing array 'coords'", coords=None),
        case("npz-nan-coords", r"non-finite", coords=np.array([[[0, 0, 0], [np.nan, 2, 2.0]]])),
    ]


def _hdf5(folder: Path, marker: Path) -> list[Case]:
    from mlpot.data import H5Dataset

    whole = folder / "h5-whole.h5"
    H5Dataset.write(whole, emt_cells(4, seed=9))
    nan_positions = folder / "h5-nan-positions.h5"
    nan_positions.write_bytes(whole.read_bytes())
    with h5py.File(nan_positions, "r+") as f:
        f["positions"][1, 0] = np.nan
    foreign = folder / "h5-foreign.h5"
    with h5py.File(foreign, "w") as f:
        f["x"] = np.arange(3)
    cases = [Case("hdf5", "h5-nan-positions", nan_positions, r"structure 0: non-finite"),
             Case("hdf5", "h5-foreign", foreign, r"not an mlpot HDF5 file")]
    for name, raw, problem in [("h5-truncated", whole.read_bytes()[: whole.stat().st_size // 2], r"not a readable HDF5"),
                               ("h5-garbage", bytes(range(256)) * 4, r"not a readable HDF5"),
                               ("h5-empty", b"", r"the file is empty")]:
        path = folder / f"{name}.h5"
        path.write_bytes(raw)
        cases.append(Case("hdf5", name, path, problem))
    whole.unlink()
    return cases


def build_corpus(folder: Path, marker: Path) -> list[Case]:
    """Write every malformed input under ``folder``; a pickled one would create ``marker``."""
    folder.mkdir(parents=True, exist_ok=True)
    cases = []
    for make in (_extxyz, _mlearn, _deepmd, _n2p2, _npz, _hdf5):
        cases += make(folder, marker)
    for helper in ("coord-full.npy", "npz-whole.npz"):
        (folder / helper).unlink(missing_ok=True)
    return cases


def pickled_files(folder: Path, marker: Path) -> dict[str, Path]:
    """Files that would run code (create ``marker``) if anything unpickled them freely."""
    import torch

    folder.mkdir(parents=True, exist_ok=True)
    out = {"model.pt": folder / "model.pt", "legacy.pt": folder / "legacy.pt", "data.npz": folder / "data.npz",
           "data.pkl": folder / "data.pkl"}
    torch.save({"format": "mlpot-model", "version": 1, "payload": Marker(marker)}, out["model.pt"])
    with open(out["legacy.pt"], "wb") as fh:
        pickle.dump(Marker(marker), fh)
    np.savez(out["data.npz"], nuclear_charges=np.array([29]), coords=np.array([Marker(marker)], dtype=object))
    with open(out["data.pkl"], "wb") as fh:
        pickle.dump([Marker(marker)], fh)
    ase.io.write(folder / "good.extxyz", emt_cells(2, seed=4))
    return out
