"""Dataset checks: XYZ frame headers, coincident atoms and far-off coordinates, label checks."""

from __future__ import annotations

import io
import time
from pathlib import Path

import ase.io
import numpy as np
import pytest
from ase import Atoms
from ase.build import bulk
from ase.calculators.singlepoint import SinglePointCalculator

from mlpot.data import DataError, read, validate_structure
from mlpot.data.checks import LabelLimits, check_labels, check_xyz_frames


# ---------------------------------------------------------------------- XYZ frame headers
def test_absurd_atom_count_fails_at_once(tmp_path):
    path = tmp_path / "huge.extxyz"
    path.write_text("3000000000\nProperties=species:S:1:pos:R:3 energy=1.0\nH 0 0 0\nH 0 0 1\n")
    start = time.perf_counter()
    with pytest.raises(DataError, match=r"huge\.extxyz, line 1: .*claims 3000000000 atoms"):
        read(path)
    assert time.perf_counter() - start < 5


def test_count_beyond_the_end_and_negative_counts():
    good = "2\ncomment\nH 0 0 0\nH 0 0 1\n"
    check_xyz_frames(io.StringIO(good + good), 2 * len(good), "ok.xyz")  # two frames pass
    short = good + "3\ncomment\nH 0 0 0\nH 0 0 1\nH 0 0 2\n"[:-8]
    with pytest.raises(DataError, match=r"short\.xyz, line 5: .*claims 3 atoms.*ends after 2 of them"):
        check_xyz_frames(io.StringIO(short), len(short), "short.xyz")
    with pytest.raises(DataError, match=r"line 1: negative atom count"):
        check_xyz_frames(io.StringIO("-1\n\n"), 4, "neg.xyz")


def test_compressed_and_plain_xyz_are_checked(tmp_path):
    import gzip

    text = "5\n\nH 0 0 0\nH 0 0 1\n"
    (tmp_path / "a.xyz").write_text(text)
    with gzip.open(tmp_path / "a.extxyz.gz", "wt") as fh:
        fh.write(text)
    for name in ("a.xyz", "a.extxyz.gz"):
        with pytest.raises(DataError, match=rf"{name}, line 1: .*claims 5 atoms"):
            read(tmp_path / name)


# ---------------------------------------------------------------------- geometry
def test_coincident_atoms_name_the_structure_and_pair():
    atoms = Atoms("H3", positions=[[0, 0, 0], [0, 0, 0.74], [0, 0, 0]])
    with pytest.raises(DataError, match=r"s\.xyz, structure 4: atoms 0 and 2 are 0 Å apart"):
        validate_structure(atoms, where="s.xyz, structure 4")
    validate_structure(atoms, min_distance=0)  # the check can be switched off


def test_close_pairs_through_periodic_boundaries_triclinic():
    cell = np.array([[10.0, 0, 0], [8.0, 5.0, 0], [1.0, 2.0, 9.0]])
    atoms = Atoms("H2", positions=[[0, 0, 0], cell[0] + cell[1] - cell[2] + 0.03], cell=cell, pbc=True)
    with pytest.raises(DataError, match=r"atoms 0 and 1 are 0\.052 Å apart \(through the periodic boundary\)"):
        validate_structure(atoms)
    atoms.pbc = [False, True, True]  # the same pair is far apart without periodicity along a
    validate_structure(atoms)
    with pytest.raises(DataError, match="only 0.05 Å thick"):
        validate_structure(Atoms("H", cell=[0.05, 10, 10], pbc=True))


def test_real_crystals_pass_and_a_duplicated_atom_fails():
    crystal = bulk("Cu", "fcc", a=3.6, cubic=True).repeat((6, 6, 6))
    validate_structure(crystal)
    crystal.positions[100] = crystal.positions[5] + crystal.cell[0] + 0.001  # an image of atom 5
    with pytest.raises(DataError, match="atoms 5 and 100"):
        validate_structure(crystal)


def test_far_off_coordinates_are_refused():
    with pytest.raises(DataError, match=r"atom 1 at .* beyond ±1e\+06 Å"):
        validate_structure(Atoms("H2", positions=[[0, 0, 0], [1e300, 0, 0]]))


# ---------------------------------------------------------------------- labels
def labelled(n: int, seed: int = 0) -> list[Atoms]:
    """Water-like H2O frames with energies near -14 eV and forces ~1 eV/Å."""
    rng = np.random.default_rng(seed)
    out = []
    for _ in range(n):
        atoms = Atoms("H2O", positions=[[0, 0, 0], [0.96, 0, 0], [-0.24, 0.93, 0]] + rng.normal(0, 0.05, (3, 3)))
        atoms.calc = SinglePointCalculator(atoms, energy=-14.2 + rng.normal(0, 0.05),
                                           forces=rng.normal(0, 1.0, (3, 3)))
        out.append(atoms)
    return out


def set_label(atoms: Atoms, **results) -> None:
    atoms.calc.results.update(results)


def test_clean_labels_pass():
    check_labels(labelled(50), "w.xyz")


@pytest.mark.parametrize("key,value,message", [
    ("energy", 1e30, r"w\.xyz, structure 7: energy per atom \(total 1e\+30 eV\) is 3\.33333e\+29 eV/atom, beyond"),
    ("energy", float("nan"), r"structure 7: energy per atom \(total nan eV\) is nan eV/atom, not finite"),
    ("energy", -14.2 * 27.2114, r"structure 7: energy -386\.4.* robust standard deviations"),
    ("forces", "1e30", r"structure 7: force component is 1e\+30 eV/Å, beyond"),
    ("forces", "5e3", r"structure 7: force component 5000 eV/Å lies .* robust standard deviations"),
])
def test_bad_labels_are_refused_with_structure_and_value(key, value, message):
    structures = labelled(50)
    if key == "forces":
        forces = structures[7].calc.results["forces"].copy()
        forces[1, 2] = float(value)
        value = forces
    set_label(structures[7], **{key: value})
    with pytest.raises(DataError, match=message) as info:
        check_labels(structures, "w.xyz")
    assert "training.check_labels: false" in str(info.value)


def test_per_element_references_are_fitted_out():
    """Molecules of different compositions differ by hundreds of eV per atom in all-electron
    energies; only the residual of a per-element fit is compared."""
    rng = np.random.default_rng(1)
    refs = {"H": -13.6, "C": -1030.0, "O": -2040.0}
    structures = []
    for k in range(60):
        symbols = ["CH4", "H2O", "CO2"][k % 3]
        atoms = Atoms(symbols, positions=np.arange(len(Atoms(symbols)))[:, None] * [1.1, 0, 0])
        energy = sum(refs[s] for s in atoms.get_chemical_symbols()) + rng.normal(0, 0.1)
        atoms.calc = SinglePointCalculator(atoms, energy=energy)
        structures.append(atoms)
    check_labels(structures, "mix.xyz")
    set_label(structures[10], energy=structures[10].calc.results["energy"] + 300.0)
    with pytest.raises(DataError, match="structure 10"):
        check_labels(structures, "mix.xyz")
    check_labels(structures, "mix.xyz", LabelLimits(robust_z=1e6))


def test_shipped_datasets_pass():
    root = Path(__file__).resolve().parents[2] / "datasets"
    for path in (root / "ethanol" / "ethanol.extxyz.gz", root / "cuau" / "cuau.extxyz.gz"):
        check_labels(read(path), str(path))


def test_extxyz_label_round_trip_keeps_the_check(tmp_path):
    structures = labelled(20)
    set_label(structures[3], energy=1e30)
    ase.io.write(tmp_path / "bad.extxyz", structures)
    with pytest.raises(DataError, match=r"bad\.extxyz, structure 3"):
        check_labels(read(tmp_path / "bad.extxyz"), str(tmp_path / "bad.extxyz"))


def test_distance_check_agrees_with_brute_force_minimum_image():
    """Random triclinic, partly periodic and open cells: the check fires exactly when ASE's
    minimum-image distance matrix has a pair below the threshold."""
    rng = np.random.default_rng(7)
    fired = 0
    for trial in range(60):
        cell = np.diag(rng.uniform(3, 6, 3)) + np.triu(rng.uniform(-2, 2, (3, 3)), 1)
        pbc = rng.random(3) < 0.7
        atoms = Atoms("H12", positions=rng.random((12, 3)) @ cell, cell=cell, pbc=pbc)
        distances = atoms.get_all_distances(mic=True)[np.triu_indices(12, 1)]
        threshold = float(distances.min()) * rng.choice([0.999, 1.001])  # just below or above
        heights = 1.0 / np.linalg.norm(np.linalg.inv(cell), axis=0)
        if threshold >= 0.5 * heights[pbc].min(initial=np.inf):
            continue  # then the cell is too thin for the threshold (its own error)
        expected = bool((distances < threshold).any())
        try:
            validate_structure(atoms, min_distance=threshold)
            assert not expected, (trial, threshold, distances.min())
        except DataError as exc:
            assert expected, (trial, str(exc))
            fired += 1
    assert 10 < fired < 50


def test_element_symbols_are_ordered_by_atomic_number():
    from ase.build import bulk, molecule

    from mlpot.data import element_symbols

    structures = [bulk("Cu", "fcc", a=3.6), molecule("H2O"), molecule("CH4")]
    assert element_symbols(structures) == ["H", "C", "O", "Cu"]
    assert element_symbols(s for s in structures[1:2]) == ["H", "O"]  # any iterable, read once
    assert element_symbols([]) == []
