"""A dataset format added from outside mlpot: registered here, read by name and by suffix,
trained on through the CLI; and the registry's own errors."""

from __future__ import annotations

import csv
from pathlib import Path

import ase.units
import numpy as np
import pytest
import yaml
from ase import Atoms
from ase.build import bulk
from ase.calculators.emt import EMT

import mlpot
from mlpot.cli import main
from mlpot.data import (DataError, detect_format, get_labels, labelled_atoms, read, register_reader,
                        unregister_reader)


# --------------------------------------------------------------------------- the new format
# Everything a new reader needs: the reader, its option check, and one register_reader call
# (in the fixture below, so that it is undone after each test).
ENERGY_UNITS = {"eV": 1.0, "kcal/mol": ase.units.kcal / ase.units.mol}  # eV per unit


def energy_scale(unit: str) -> float:
    """eV per ``unit``; a ValueError names the accepted units."""
    if unit not in ENERGY_UNITS:
        raise ValueError(f"energy_unit must be one of {sorted(ENERGY_UNITS)}, got {unit!r}")
    return ENERGY_UNITS[unit]


def read_xyze(path: Path, energy_unit: str = "eV") -> list[Atoms]:
    """XYZ with the energy in the comment line: per frame ``n``, ``energy=E``, then n lines
    ``symbol x y z fx fy fz`` (positions in Å, forces in energy_unit/Å); open boundaries."""
    scale = energy_scale(energy_unit)
    lines, out, k = path.read_text().splitlines(), [], 0
    while k < len(lines) and lines[k].strip():
        n = int(lines[k])
        energy = float(lines[k + 1].split("energy=")[1].split()[0])
        rows = [line.split() for line in lines[k + 2:k + 2 + n]]
        values = np.array([row[1:7] for row in rows], dtype=np.float64).reshape(n, 6)
        out.append(labelled_atoms(numbers=[row[0] for row in rows], positions=values[:, :3],
                                  energy=energy * scale, forces=values[:, 3:] * scale))
        k += n + 2
    return out


@pytest.fixture
def xyze():
    register_reader("xyze", options={"energy_unit": energy_scale}, suffixes=(".xyze",))(read_xyze)
    yield "xyze"
    unregister_reader("xyze")


# --------------------------------------------------------------------------- test data
def emt_clusters(n: int, seed: int) -> list[Atoms]:
    """Rattled 4-atom Cu/Au clusters (open boundaries) labelled by EMT."""
    rng = np.random.default_rng(seed)
    out = []
    for _ in range(n):
        atoms = bulk("Cu", "fcc", a=3.7, cubic=True)
        atoms.pbc = False
        atoms.numbers[rng.permutation(4)[: rng.integers(1, 4)]] = 79
        atoms.positions += rng.normal(0, 0.1, atoms.positions.shape)
        atoms.calc = EMT()
        atoms.get_forces()
        out.append(atoms)
    return out


def write_xyze(path: Path, structures: list[Atoms], unit: float = 1.0) -> Path:
    """The format above, energies and forces divided by ``unit`` (eV per file unit)."""
    lines = []
    for atoms in structures:
        lines += [str(len(atoms)), f"energy={float(atoms.get_potential_energy()) / unit!r} source=EMT"]
        for symbol, r, f in zip(atoms.get_chemical_symbols(), atoms.positions, atoms.get_forces() / unit):
            lines.append(" ".join([symbol, *(repr(float(v)) for v in (*r, *f))]))
    path.write_text("\n".join(lines) + "\n")
    return path


# --------------------------------------------------------------------------- reading
def test_new_format_by_name_and_by_suffix(xyze, tmp_path):
    structures = emt_clusters(3, seed=0)
    path = write_xyze(tmp_path / "clusters.xyze", structures)
    assert detect_format(path) == xyze
    for got in (read(path, format=xyze), read(path)):
        assert len(got) == 3
        for atoms, ref in zip(got, structures):
            labels = get_labels(atoms)
            assert atoms.get_chemical_symbols() == ref.get_chemical_symbols() and not atoms.pbc.any()
            np.testing.assert_array_equal(atoms.positions, ref.positions)
            assert labels.energy == ref.get_potential_energy()
            np.testing.assert_array_equal(labels.forces, ref.get_forces())


def test_new_format_option_and_errors(xyze, tmp_path):
    structures = emt_clusters(2, seed=1)
    kcal = ENERGY_UNITS["kcal/mol"]
    path = write_xyze(tmp_path / "kcal.xyze", structures, unit=kcal)
    first = get_labels(read(path, energy_unit="kcal/mol")[0])
    assert first.energy == pytest.approx(structures[0].get_potential_energy(), rel=1e-12)
    np.testing.assert_allclose(first.forces, structures[0].get_forces(), rtol=1e-12, atol=1e-14)
    with pytest.raises(ValueError, match=r"format 'xyze' takes options \['energy_unit'\], "
                                         r"got unexpected \['units'\]"):
        read(path, units="bohr_hartree")
    with pytest.raises(ValueError, match="energy_unit must be one of"):
        read(path, energy_unit="hartree")  # the caller's error, raised before the file is read
    (tmp_path / "bad.xyze").write_text("2\nenergy=oops\n")
    with pytest.raises(DataError, match=r"bad\.xyze: cannot read as 'xyze': ValueError"):
        read(tmp_path / "bad.xyze")


def test_unregistered_format_is_gone(tmp_path):
    register_reader("xyze", suffixes=(".xyze",))(read_xyze)
    unregister_reader("xyze")
    assert detect_format(tmp_path / "a.xyze") == "ase"
    path = write_xyze(tmp_path / "a.xyze", emt_clusters(1, seed=2))
    with pytest.raises(ValueError, match="unknown format 'xyze'"):
        read(path, format="xyze")
    with pytest.raises(KeyError, match="xyze"):
        unregister_reader("xyze")


# --------------------------------------------------------------------------- registry errors
def test_registry_rejects_clashes_and_typos(xyze):
    with pytest.raises(ValueError, match="format 'xyze' is already registered"):
        register_reader("xyze")(read_xyze)
    with pytest.raises(ValueError, match="suffix '.xyze' already belongs to format 'xyze'"):
        register_reader("other", suffixes=(".XYZE",))(read_xyze)
    with pytest.raises(ValueError, match="directories already belong to format 'deepmd'"):
        register_reader("other", directory=True)(read_xyze)
    with pytest.raises(ValueError, match="a suffix is a dot and a word"):
        register_reader("other", suffixes=("xyz",))(read_xyze)
    with pytest.raises(ValueError, match=r"options \['energy_units'\] are not keyword parameters"):
        register_reader("other", options=("energy_units",))(read_xyze)
    with pytest.raises(ValueError, match="unknown format 'other'"):
        read(__file__, format="other")  # none of the failed registrations left a trace


# --------------------------------------------------------------------------- end to end
@pytest.mark.usefixtures("one_thread")
def test_cli_trains_on_the_new_format(xyze, tmp_path, capsys):
    # In-process: the reader is registered in this process only.
    data = write_xyze(tmp_path / "train.xyze", emt_clusters(24, seed=3))
    config = {
        "data": {"train": str(data), "val_fraction": 0.25},  # format guessed from ".xyze"
        "descriptor": {"cutoff": 4.0, "cutoff_function": "poly2",
                       "radial": [{"grid": {"count": 4, "mode": "shift", "r_lower": 1.5}}],
                       "angular": [{"kind": "G5", "zetas": [1], "lambdas": [-1, 1], "eta": 0.05}]},
        "model": {"depth": 1, "width": 8},
        "training": {"epochs": 5, "batch_size": 8, "dtype": "float64"},
    }
    path = tmp_path / "xyze.yaml"
    path.write_text(yaml.safe_dump(config))
    out = tmp_path / "run"
    rc = main(["train", str(path), "--out", str(out), "--no-progress", "--set", "training.epochs=2"])
    assert rc == 0, capsys.readouterr().err
    with open(out / "metrics.csv", newline="") as fh:
        history = list(csv.DictReader(fh))
    assert [int(row["epoch"]) for row in history] == [1, 2]
    assert all(np.isfinite(float(row["val_force_rmse_mev_per_a"])) for row in history)
    model = mlpot.load(out / "model.pt")
    energy = model(mlpot.data.collate(read(data)[:2]), forces=True)["energy"]
    assert energy.shape == (2,)
