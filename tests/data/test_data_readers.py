"""Readers: every format on small hand-made files, the shared reference data, bad input."""

from __future__ import annotations

import collections
import json
import re
from pathlib import Path

import ase.units
import numpy as np
import pytest
from ase.build import bulk
from ase.calculators.emt import EMT

from mlpot.data import (
    FORMATS, DataError, H5Dataset, detect_format, get_labels, labelled_atoms, read, write,
)

KBAR = 0.1 * ase.units.GPa  # eV/Å³, computed here independently of mlpot.units


# --------------------------------------------------------------------------- helpers
def mlearn_entry(cell, symbols, positions, energy=None, forces=None, virial_kbar=None,
                 **extra) -> dict:
    """One entry as the mlearn JSON files spell it (pymatgen Structure dict)."""
    sites = [{"species": [{"element": s, "occu": 1}], "xyz": list(map(float, p)),
              "label": s} for s, p in zip(symbols, positions)]
    outputs = {}
    if energy is not None:
        outputs["energy"] = energy
    if forces is not None:
        outputs["forces"] = np.asarray(forces).tolist()
    if virial_kbar is not None:
        outputs["virial_stress"] = list(map(float, virial_kbar))
    return {"structure": {"lattice": {"matrix": np.asarray(cell).tolist()}, "sites": sites},
            "outputs": outputs, "num_atoms": len(symbols), **extra}


def write_json(path: Path, data) -> Path:
    path.write_text(json.dumps(data))
    return path


EXTXYZ = """\
2
Lattice="4.0 0.0 0.0 0.0 4.5 0.0 0.0 0.0 5.0" Properties=species:S:1:pos:R:3:forces:R:3 \
energy=-3.5 stress="0.1 0.4 0.5 0.4 0.2 0.6 0.5 0.6 0.3" pbc="T T T"
Si 0.0 0.0 0.0 0.1 -0.2 0.3
Si 1.0 1.5 2.0 -0.1 0.2 -0.3
3
Properties=species:S:1:pos:R:3 pbc="F F F"
O 0.0 0.0 0.0
H 0.96 0.0 0.0
H -0.24 0.93 0.0
"""


# --------------------------------------------------------------------------- detection
@pytest.mark.parametrize("name, expected", [
    ("a.h5", "hdf5"), ("a.HDF5", "hdf5"), ("a.npz", "npz"), ("train.json", "mlearn"),
    ("input.data", "n2p2"), ("water.data", "n2p2"), ("a.xyz", "ase"), ("a.extxyz", "ase"),
    ("OUTCAR", "ase"),
])
def test_detect_format(tmp_path, name, expected):
    assert detect_format(tmp_path / name) == expected


def test_detect_format_directory_is_deepmd(tmp_path):
    assert detect_format(tmp_path) == "deepmd"
    # A folder is never one of the file formats, whatever its suffix.
    for name in ("system.json", "water.data", "store.h5"):
        (tmp_path / name).mkdir()
        assert detect_format(tmp_path / name) == "deepmd"


def test_unknown_format_lists_valid_ones(tmp_path):
    path = write_json(tmp_path / "a.json", [])
    with pytest.raises(ValueError, match="unknown format 'cif'.*mlearn"):
        read(path, format="cif")
    assert set(FORMATS) == {"ase", "mlearn", "deepmd", "n2p2", "npz", "hdf5"}


def test_missing_path_names_it(tmp_path):
    with pytest.raises(FileNotFoundError, match="nothere.xyz"):
        read(tmp_path / "nothere.xyz")


def test_unexpected_option_is_rejected(tmp_path):
    path = write_json(tmp_path / "a.json", [])
    with pytest.raises(ValueError, match="unexpected.*'units'"):
        read(path, units="bohr_hartree")


# --------------------------------------------------------------------------- ase / extxyz
def test_extxyz_labels_and_mixed_periodicity(tmp_path):
    path = tmp_path / "a.xyz"
    path.write_text(EXTXYZ)
    crystal, water = read(path)
    assert crystal.pbc.all() and not water.pbc.any()
    np.testing.assert_array_equal(crystal.cell.array, np.diag([4.0, 4.5, 5.0]))
    labels = get_labels(crystal)
    assert labels.energy == -3.5
    np.testing.assert_array_equal(labels.forces, [[0.1, -0.2, 0.3], [-0.1, 0.2, -0.3]])
    np.testing.assert_array_equal(labels.stress, [[0.1, 0.4, 0.5], [0.4, 0.2, 0.6],
                                                  [0.5, 0.6, 0.3]])
    unlabelled = get_labels(water)
    assert unlabelled.energy is None and unlabelled.forces is None
    assert water.get_chemical_symbols() == ["O", "H", "H"]


def test_ase_format_option_is_passed_through(tmp_path):
    path = tmp_path / "structures.txt"  # a suffix ase cannot guess
    path.write_text(EXTXYZ)
    assert len(read(path, ase_format="extxyz")) == 2


def test_write_xyz_keeps_labels(tmp_path):
    src = tmp_path / "a.xyz"
    src.write_text(EXTXYZ)
    structures = read(src)
    write(tmp_path / "b.xyz", structures)
    again = read(tmp_path / "b.xyz")
    for a, b in zip(structures, again):
        la, lb = get_labels(a), get_labels(b)
        assert la.energy == lb.energy
        for x, y in ((la.forces, lb.forces), (la.stress, lb.stress)):
            assert (x is None) == (y is None)
            if x is not None:
                np.testing.assert_allclose(x, y, rtol=0, atol=1e-12)


def test_write_h5_suffix_goes_to_h5dataset(tmp_path):
    src = tmp_path / "a.xyz"
    src.write_text(EXTXYZ)
    write(tmp_path / "a.h5", read(src))
    dataset = read(tmp_path / "a.h5")
    assert isinstance(dataset, H5Dataset) and len(dataset) == 2


# --------------------------------------------------------------------------- mlearn
def test_mlearn_units_order_and_info(tmp_path):
    cell = [[5.0, 0.0, 0.0], [0.5, 5.0, 0.0], [0.0, 0.0, 6.0]]
    positions = [[0.0, 0.0, 0.0], [1.0, 2.0, 3.0]]
    forces = [[0.5, -0.5, 0.25], [-0.5, 0.5, -0.25]]
    virial = [10.0, 20.0, 30.0, 4.0, 5.0, 6.0]  # kbar: xx yy zz xy yz zx
    entry = mlearn_entry(cell, ["Si", "Si"], positions, -10.5, forces, virial,
                         group="Elastic", tag="train", description="mode 0")
    (atoms,) = read(write_json(tmp_path / "train.json", [entry]))
    assert atoms.pbc.all()
    np.testing.assert_array_equal(atoms.cell.array, cell)
    np.testing.assert_array_equal(atoms.positions, positions)
    labels = get_labels(atoms)
    assert labels.energy == -10.5
    np.testing.assert_array_equal(labels.forces, forces)
    # Hand-converted: sign flips (VASP compression positive) and kbar -> eV/Å³.
    expected = -KBAR * np.array([[10.0, 4.0, 6.0], [4.0, 20.0, 5.0], [6.0, 5.0, 30.0]])
    np.testing.assert_allclose(labels.stress, expected, rtol=1e-14)
    assert atoms.info == {"group": "Elastic", "tag": "train", "description": "mode 0"}


def test_mlearn_stress_matches_emt_for_strained_copper(tmp_path):
    """Independent check of sign, unit and component order against ASE's EMT stress."""
    atoms = bulk("Cu", "fcc", a=3.61, cubic=True)
    strain = np.array([[-0.02, 0.004, 0.001], [0.004, -0.015, 0.003], [0.001, 0.003, -0.01]])
    atoms.set_cell(atoms.cell.array @ (np.eye(3) + strain), scale_atoms=True)
    atoms.calc = EMT()
    stress = atoms.get_stress()  # ASE Voigt xx yy zz yz xz xy, eV/Å³
    assert len(set(np.round(stress[3:], 8))) == 3  # distinct shears, so order matters
    virial_kbar = -stress[[0, 1, 2, 5, 3, 4]] / (0.1 * ase.units.GPa)  # xx yy zz xy yz zx
    entry = mlearn_entry(atoms.cell.array, atoms.get_chemical_symbols(), atoms.positions,
                         atoms.get_potential_energy(), atoms.get_forces(), virial_kbar)
    (read_back,) = read(write_json(tmp_path / "cu.json", [entry]))
    np.testing.assert_allclose(read_back.get_stress(), stress, rtol=1e-12, atol=1e-16)
    assert (np.diag(read_back.get_stress(voigt=False)) < 0).all()  # compressed cell


def test_mlearn_stress_order_option(tmp_path):
    virial = [1.0, 2.0, 3.0, 4.0, 5.0, 6.0]
    entry = mlearn_entry(np.eye(3) * 4, ["Mo"], [[0, 0, 0]], -10.0, [[0, 0, 0]], virial)
    path = write_json(tmp_path / "mo.json", [entry])
    (atoms,) = read(path, stress_order="xx yy zz xy zx yz")
    np.testing.assert_allclose(atoms.get_stress(), -KBAR * np.array([1, 2, 3, 6, 5, 4]))
    with pytest.raises(ValueError, match="stress_order"):
        read(path, stress_order="xx yy zz xy xy yz")


# --------------------------------------------------------------------------- deepmd
def write_deepmd_system(root: Path, type_map, types, sets: dict[str, dict]) -> Path:
    root.mkdir(parents=True)
    (root / "type_map.raw").write_text("\n".join(type_map) + "\n")
    (root / "type.raw").write_text("\n".join(map(str, types)) + "\n")
    for name, arrays in sets.items():
        (root / name).mkdir()
        for key, value in arrays.items():
            np.save(root / name / f"{key}.npy", np.asarray(value))
    return root


def test_deepmd_folder_of_systems(tmp_path):
    rng = np.random.default_rng(0)
    box = (np.eye(3) * 10.0).ravel()
    coord_a = rng.uniform(0, 10, (3, 3 * 3))
    force_a = rng.normal(size=(3, 9))
    virial_3x3 = np.array([[1.0, 2.0, 3.0], [2.0, 4.0, 5.0], [3.0, 5.0, 6.0]])  # eV
    virial = virial_3x3.ravel()[None].repeat(3, axis=0)
    write_deepmd_system(tmp_path / "b_sys", ["O", "H"], [0, 1, 1], {
        "set.000": {"coord": coord_a[:2], "box": [box, box], "energy": [-1.0, -2.0],
                    "force": force_a[:2], "virial": virial[:2]},
        "set.001": {"coord": coord_a[2:], "box": [box], "energy": [-3.0],
                    "force": force_a[2:], "virial": virial[2:]},
    })
    coord_b = rng.uniform(0, 5, (1, 6))
    write_deepmd_system(tmp_path / "a_sys" / "nested", ["C", "H"], [0, 1], {
        "set.000": {"coord": coord_b, "energy": [-7.0], "force": np.zeros((1, 6))},
    })
    structures = read(tmp_path)
    # Systems in sorted path order (a_sys/nested first), sets in order within a system.
    assert [len(a) for a in structures] == [2, 3, 3, 3]
    open_system = structures[0]
    assert open_system.get_chemical_symbols() == ["C", "H"] and not open_system.pbc.any()
    assert get_labels(open_system).stress is None
    energies = [get_labels(a).energy for a in structures[1:]]
    assert energies == [-1.0, -2.0, -3.0]
    water = structures[3]
    assert water.get_chemical_symbols() == ["O", "H", "H"] and water.pbc.all()
    np.testing.assert_array_equal(water.positions, coord_a[2].reshape(3, 3))
    np.testing.assert_array_equal(get_labels(water).forces, force_a[2].reshape(3, 3))
    # stress = -virial / volume
    np.testing.assert_allclose(get_labels(water).stress, -virial_3x3 / 1000.0, rtol=1e-14)
    assert len(read(tmp_path / "b_sys")) == 3  # a single system folder also works


def test_deepmd_force_with_wrong_size(tmp_path):
    write_deepmd_system(tmp_path / "sys", ["O", "H"], [0, 1, 1], {
        "set.000": {"coord": np.zeros((2, 9)), "energy": [0.0, 0.0],
                    "force": np.zeros((2, 6))},
    })
    with pytest.raises(DataError, match=r"force\.npy.*shape \(2, 6\).*expected \(2, 9\)"):
        read(tmp_path)


def test_deepmd_folder_without_systems(tmp_path):
    (tmp_path / "empty").mkdir()
    with pytest.raises(DataError, match="no DeePMD system"):
        read(tmp_path / "empty")


# --------------------------------------------------------------------------- n2p2
N2P2 = """\
begin
comment periodic dimer
lattice 10.0 0.0 0.0
lattice 0.0 11.0 0.0
lattice 0.0 0.0 12.0
atom 1.0 2.0 3.0 O 0.0 0.0 0.1 0.2 0.3
atom 2.0 2.0 3.0 H 0.0 0.0 -0.1 -0.2 -0.3
energy -2.5
charge 0.0
end
begin
atom 0.0 0.0 0.0 H 0.0 0.0 0.0 0.0 0.5
energy -0.25
charge 0.0
end
"""


def test_n2p2_angstrom_ev(tmp_path):
    path = tmp_path / "input.data"
    path.write_text(N2P2)
    periodic, atom = read(path)
    assert periodic.pbc.all() and not atom.pbc.any()
    np.testing.assert_array_equal(periodic.cell.array, np.diag([10.0, 11.0, 12.0]))
    np.testing.assert_array_equal(periodic.positions, [[1, 2, 3], [2, 2, 3]])
    assert get_labels(periodic).energy == -2.5
    np.testing.assert_array_equal(get_labels(atom).forces, [[0.0, 0.0, 0.5]])
    assert periodic.info["comment"] == "periodic dimer"


@pytest.mark.parametrize("units", ["bohr_hartree", (ase.units.Bohr, ase.units.Hartree)])
def test_n2p2_bohr_hartree(tmp_path, units):
    path = tmp_path / "input.data"
    path.write_text(N2P2)
    periodic, atom = read(path, units=units)
    bohr, hartree = ase.units.Bohr, ase.units.Hartree  # 0.529177 Å, 27.2114 eV
    np.testing.assert_allclose(periodic.cell.array, np.diag([10.0, 11.0, 12.0]) * bohr)
    np.testing.assert_allclose(periodic.positions, np.array([[1, 2, 3], [2, 2, 3]]) * bohr)
    assert get_labels(periodic).energy == pytest.approx(-2.5 * hartree, rel=1e-15)
    np.testing.assert_allclose(get_labels(atom).forces, [[0.0, 0.0, 0.5 * hartree / bohr]])


# --------------------------------------------------------------------------- npz
@pytest.mark.parametrize("keys", [("nuclear_charges", "coords", "energies", "forces"),
                                  ("z", "R", "E", "F")])
def test_npz_kcal_per_mol(tmp_path, keys):
    rng = np.random.default_rng(1)
    coords = rng.normal(size=(4, 3, 3))
    energies = rng.normal(size=4) - 1000.0
    forces = rng.normal(size=(4, 3, 3))
    np.savez(tmp_path / "md.npz", **dict(zip(keys, (np.array([8, 1, 1]), coords, energies,
                                                   forces))))
    structures = read(tmp_path / "md.npz")
    kcal_mol = ase.units.kcal / ase.units.mol  # ≈ 0.0433641 eV
    assert len(structures) == 4 and not structures[2].pbc.any()
    assert structures[2].get_chemical_symbols() == ["O", "H", "H"]
    np.testing.assert_array_equal(structures[2].positions, coords[2])
    assert get_labels(structures[2]).energy == pytest.approx(energies[2] * kcal_mol,
                                                             rel=1e-15)
    np.testing.assert_allclose(get_labels(structures[2]).forces, forces[2] * kcal_mol,
                               rtol=1e-15)


def test_npz_forces_wrong_shape(tmp_path):
    np.savez(tmp_path / "md.npz", nuclear_charges=[8, 1, 1], coords=np.zeros((2, 3, 3)),
             energies=np.zeros(2), forces=np.zeros((2, 2, 3)))
    with pytest.raises(DataError, match=r"md\.npz.*forces have shape \(2, 2, 3\)"):
        read(tmp_path / "md.npz")


# --------------------------------------------------------------------------- bad input
def test_unknown_element_in_extxyz(tmp_path):
    path = tmp_path / "bad.xyz"
    path.write_text(EXTXYZ.replace("H 0.96", "Xx 0.96"))
    with pytest.raises(DataError, match=r"bad\.xyz.*'ase'.*unknown element symbol.*'Xx'"):
        read(path)


def test_unknown_element_in_n2p2(tmp_path):
    path = tmp_path / "input.data"
    path.write_text(N2P2.replace(" H 0.0 0.0 0.0 0.0 0.5", " Xx 0.0 0.0 0.0 0.0 0.5"))
    with pytest.raises(DataError, match=r"input\.data, structure 1.*unknown element.*Xx"):
        read(path)


def test_nan_coordinates(tmp_path):
    path = tmp_path / "nan.xyz"
    path.write_text(EXTXYZ.replace("H -0.24 0.93", "H nan 0.93"))
    with pytest.raises(DataError, match=r"nan\.xyz, structure 1.*non-finite.*atom 2"):
        read(path)


def test_zero_volume_cell(tmp_path):
    entry = mlearn_entry([[4, 0, 0], [0, 4, 0], [4, 4, 0]], ["Si"], [[0, 0, 0]], -1.0)
    path = write_json(tmp_path / "flat.json", [mlearn_entry(np.eye(3) * 4, ["Si"],
                                                            [[0, 0, 0]]), entry])
    with pytest.raises(DataError, match=r"flat\.json, structure 1.*zero-volume"):
        read(path)


def test_truncated_json(tmp_path):
    entry = mlearn_entry(np.eye(3) * 4, ["Si"], [[0, 0, 0]], -1.0)
    path = tmp_path / "cut.json"
    path.write_text(json.dumps([entry, entry])[:-40])
    with pytest.raises(DataError, match=r"cut\.json.*invalid 'mlearn' JSON"):
        read(path)


def test_mlearn_missing_key_and_wrong_forces(tmp_path):
    good = mlearn_entry(np.eye(3) * 4, ["Si", "Si"], [[0, 0, 0], [1, 1, 1]], -1.0)
    missing = dict(good)
    del missing["structure"]
    with pytest.raises(DataError, match=r"m\.json, structure 1.*'mlearn'.*missing key "
                                        "'structure'"):
        read(write_json(tmp_path / "m.json", [good, missing]))
    wrong = mlearn_entry(np.eye(3) * 4, ["Si", "Si"], [[0, 0, 0], [1, 1, 1]], -1.0,
                         forces=[[0, 0, 0]])
    with pytest.raises(DataError, match=r"f\.json, structure 0.*forces have shape \(1, 3\), "
                                        r"expected \(2, 3\)"):
        read(write_json(tmp_path / "f.json", [wrong]))


def test_truncated_n2p2(tmp_path):
    path = tmp_path / "input.data"
    path.write_text(N2P2.rsplit("end", 1)[0])
    with pytest.raises(DataError, match=r"input\.data.*truncated.*line 11.*no 'end'"):
        read(path)


def test_n2p2_non_numeric_token(tmp_path):
    path = tmp_path / "input.data"
    path.write_text(N2P2.replace("energy -2.5", "energy -2.5x"))
    with pytest.raises(DataError, match=r"input\.data, line 8.*-2\.5x.*'n2p2'"):
        read(path)


def test_empty_file_is_an_error(tmp_path):
    with pytest.raises(DataError, match=r"empty\.json.*no structures"):
        read(write_json(tmp_path / "empty.json", []))
    (tmp_path / "empty.xyz").write_text("")
    with pytest.raises(DataError, match=r"empty\.xyz"):
        read(tmp_path / "empty.xyz")


def test_labelled_atoms_rejects_wrong_forces():
    with pytest.raises(DataError, match=r"forces have shape \(3, 3\), expected \(2, 3\)"):
        labelled_atoms([1, 1], np.zeros((2, 3)), forces=np.zeros((3, 3)))


# --------------------------------------------------------------------------- shared data
@pytest.fixture(scope="module")
def mlearn(shared_datasets):
    return {el: read(shared_datasets / "mlearn" / el / "training.json") for el in ("Si", "Mo")}


@pytest.mark.parametrize("element, n_configs, n_atoms", [("Si", 214, 13233),
                                                         ("Mo", 194, 10087)])
def test_mlearn_reference_counts(mlearn, element, n_configs, n_atoms):
    structures = mlearn[element]
    assert len(structures) == n_configs
    assert sum(len(a) for a in structures) == n_atoms
    assert all(a.pbc.all() and set(a.get_chemical_symbols()) == {element}
               for a in structures)
    assert {a.info["group"] for a in structures} == {"AIMD-NVT", "Vacancy", "Elastic",
                                                     "Surface"}


def matrix_log(matrix: np.ndarray, terms: int = 12) -> np.ndarray:
    """log(F) by its series in (F - I); |F - I| <= 0.2 here, so 12 terms reach 1e-10."""
    x = matrix - np.eye(3)
    power, log = np.eye(3), np.zeros((3, 3))
    for k in range(1, terms + 1):
        power = power @ x
        log += (-1) ** (k + 1) * power / k
    return log


def elastic_work(structures):
    """(V σ : Δε predicted, ΔE observed) for neighbouring strains of each elastic mode.

    dE = V σ : dε along a deformation path (ions relaxed or not, forces do no work), so a
    trapezoid rule over each pair of neighbouring strains predicts ΔE to second order.
    """
    modes = collections.defaultdict(list)
    for atoms in structures:
        match = re.match(r"(.*mode \d+), strain (\S+)", atoms.info.get("description", ""))
        if atoms.info["group"] == "Elastic" and match:
            modes[match.group(1)].append((float(match.group(2)), atoms))
    pairs = []
    for items in modes.values():
        items.sort(key=lambda item: item[0])
        for (_, a), (_, b) in zip(items, items[1:]):
            deformation = np.linalg.solve(a.cell.array, b.cell.array).T  # b = F a
            strain = matrix_log(deformation)
            strain = 0.5 * (strain + strain.T)
            work = 0.5 * (a.get_volume() * a.get_stress(voigt=False)
                          + b.get_volume() * b.get_stress(voigt=False))
            pairs.append((np.sum(work * strain),
                          b.get_potential_energy() - a.get_potential_energy()))
    return np.array(pairs)


def check_elastic_work(pairs):
    predicted, observed = pairs.T
    big = np.abs(observed) > 0.05  # eV; smaller steps are dominated by DFT noise
    assert big.sum() > 30
    ratio = predicted[big] / observed[big]
    # A flipped sign gives ratio -1, a misplaced shear component ratio ~0.
    assert ratio.min() > 0.8 and ratio.max() < 1.5, ratio
    slope = np.dot(predicted, observed) / np.dot(observed, observed)
    assert slope == pytest.approx(1.0, abs=0.03)


def test_mlearn_si_stress_is_the_strain_derivative_of_energy(mlearn):
    check_elastic_work(elastic_work(mlearn["Si"]))


def test_mlearn_mo_stores_shear_stress_as_xy_zx_yz(shared_datasets):
    """The Mo file's virial_stress has yz and zx swapped relative to Si and the README.

    With the documented order the yz/zx shear modes get ~zero predicted work; with
    ``stress_order="xx yy zz xy zx yz"`` they match ΔE like every other mode.
    """
    path = shared_datasets / "mlearn" / "Mo" / "training.json"
    check_elastic_work(elastic_work(read(path, stress_order="xx yy zz xy zx yz")))
    predicted, observed = elastic_work(read(path)).T
    shear_missed = (np.abs(observed) > 0.3) & (np.abs(predicted) < 0.05 * np.abs(observed))
    assert shear_missed.sum() >= 8


def test_deepmd_water(shared_datasets):
    structures = read(shared_datasets / "deepmd-water")
    assert len(structures) == 400
    assert {len(a) for a in structures} == {192}
    water = structures[0]
    assert water.get_chemical_symbols().count("O") == 64 and water.pbc.all()
    np.testing.assert_allclose(water.cell.lengths(), 12.44, atol=0.01)
    assert get_labels(water).forces.shape == (192, 3)


def test_n2p2_water_potential_input(shared_datasets):
    path = shared_datasets.parent / "potentials" / "n2p2-H2O_RPBE-D3" / "input.data"
    if not path.is_file():
        pytest.skip(f"{path} is absent")
    (raw,) = read(path)
    (converted,) = read(path, units="bohr_hartree")
    assert len(raw) == 1080 and raw.get_chemical_symbols().count("O") == 360
    assert raw.cell[0, 0] == pytest.approx(42.888632301285426, rel=1e-15)  # Bohr
    np.testing.assert_allclose(converted.cell.lengths(), raw.cell.lengths() * ase.units.Bohr,
                               rtol=1e-15)
    np.testing.assert_allclose(converted.positions, raw.positions * ase.units.Bohr,
                               rtol=1e-15)


def test_n2p2_writer_round_trip(tmp_path):
    """write → read in the same units is exact; Bohr/Hartree files convert both ways."""
    from ase.build import bulk, molecule
    from ase.calculators.emt import EMT

    from mlpot.data import read, write
    from mlpot.data.structures import DataError

    crystal = bulk("Cu", "fcc", a=3.6).repeat((2, 1, 1))
    crystal.rattle(0.05, seed=2)
    mol = molecule("CH4")
    mol.positions += 0.01 * np.arange(15).reshape(5, 3)
    out = []
    for atoms in (crystal, mol):
        atoms.calc = EMT() if atoms is crystal else None
        if atoms is mol:
            from ase.calculators.singlepoint import SinglePointCalculator

            atoms.calc = SinglePointCalculator(atoms, energy=-3.25, forces=np.linspace(-1, 1, 15).reshape(5, 3))
        atoms.get_forces()
        out.append(atoms)
    for units in ("angstrom_ev", "bohr_hartree"):
        path = tmp_path / units / "input.data"
        path.parent.mkdir()
        write(path, out, units=units)
        back = read(path, units=units)
        assert len(back) == 2
        for a, b in zip(out, back):
            assert list(a.numbers) == list(b.numbers) and list(a.pbc) == list(b.pbc)
            tol = 0 if units == "angstrom_ev" else 1e-12
            np.testing.assert_allclose(b.positions, a.positions, rtol=tol, atol=tol)
            np.testing.assert_allclose(b.cell.array, a.cell.array, rtol=tol, atol=tol)
            np.testing.assert_allclose(b.get_forces(), a.get_forces(), rtol=tol, atol=tol)
            assert b.get_potential_energy() == pytest.approx(a.get_potential_energy(), rel=tol, abs=tol)
    text = (tmp_path / "bohr_hartree" / "input.data").read_text()
    first_x = float(next(line for line in text.splitlines() if line.startswith("atom")).split()[1])
    assert first_x == pytest.approx(crystal.positions[0, 0] / 0.529177210903, rel=1e-6)  # Bohr
    slab = bulk("Cu", "fcc", a=3.6)
    slab.pbc = [True, True, False]
    slab.calc = EMT()
    slab.get_forces()
    with pytest.raises(DataError, match="pbc"):
        write(tmp_path / "slab.data", [slab])
    unlabelled = molecule("H2O")
    with pytest.raises(DataError, match="lacks energy and forces"):
        write(tmp_path / "x.data", [unlabelled])
