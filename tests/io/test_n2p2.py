"""n2p2 potentials (mlpot.io.n2p2): agreement with n2p2's own predictions for the RPBE-D3
water potential, exact export → import round trips, units, the CLI and bad input."""

from __future__ import annotations

import re
import shutil
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch
from ase import Atoms

import mlpot
from mlpot.cli import main
from mlpot.data import collate
from mlpot.descriptors import SymmetryFunctionSpec
from mlpot.io.n2p2 import N2P2Error, n2p2_feature_order, read_potential, write_potential
from mlpot.models import NetworkConfig, Potential
from mlpot.units import BOHR, HARTREE
from structures_for_tests import water_box

WATER = (Path(__file__).parents[2] / ".." / "shared" / "potentials" / "n2p2-H2O_RPBE-D3").resolve()
# n2p2's example LAMMPS factors for this potential (reference/README.md) and CODATA 2018.
N2P2_EXAMPLE_UNITS = (1 / 1.8897261328, 1 / 0.0367493254)
CODATA2018_UNITS = (0.529177210903, 27.211386245988)


# --------------------------------------------------------------------------- helpers
def predict(model, atoms: Atoms) -> dict[str, np.ndarray]:
    """eV, eV/Å and raw descriptors (mlpot's feature order) of one structure."""
    batch = collate([atoms], cutoff=model.cutoff)
    out = model(batch, descriptors=True)
    return {"energy": out["energy"].detach().numpy(), "forces": out["forces"].detach().numpy(),
            "atomic": out["atomic_energies"].detach().numpy(), "G": out["descriptors"].numpy(),
            "species": model.descriptor.species(batch.numbers)}


def reference_atoms(ref: dict, length: float) -> Atoms:
    return Atoms(symbols=list(ref["elements"]), positions=ref["positions_bohr"] * length,
                 cell=ref["lattice_bohr"] * length, pbc=True)


def data_numbers(path: Path) -> list[list[str]]:
    return [line.split() for line in path.read_text().splitlines()
            if line.strip() and not line.startswith("#")]


@pytest.fixture(scope="module")
def water_dir() -> Path:
    if not (WATER / "reference").is_dir():
        pytest.skip("../shared/potentials/n2p2-H2O_RPBE-D3 is absent (reference data lives outside "
                    "the repository)")
    return WATER


@pytest.fixture(scope="module")
def water(water_dir):
    return read_potential(water_dir)


def load_ref(water_dir: Path, name: str) -> dict:
    return dict(np.load(water_dir / "reference" / f"{name}.npz"))


# --------------------------------------------------------------------------- n2p2 reference
@pytest.mark.parametrize("name", ["deepmd_f0", "deepmd_f1", pytest.param("h2o1080", marks=pytest.mark.slow)])
def test_water_matches_n2p2_energies_forces_and_symmetry_functions(water, water_dir, name):
    ref = load_ref(water_dir, name)
    assert water.metadata["n2p2"]["units"] == "bohr_hartree"  # from input.nn's comments
    # Positions in n2p2's Bohr through the model's own Bohr, results back in Ha and Bohr:
    # the unit constants cancel, as in scripts/n2p2_check.py.
    out = predict(water, reference_atoms(ref, BOHR))
    n = len(ref["elements"])
    assert abs(out["energy"][0] / HARTREE - ref["energy_ha"]) / n < 1e-8  # Ha/atom
    atomic = ref["atomic_energy_nn_ha"] + ref["mean_energy_ha"]
    assert np.abs(out["atomic"] / HARTREE - atomic).max() < 1e-8
    assert np.abs(out["forces"] * BOHR / HARTREE - ref["forces_ha_bohr"]).max() < 1e-7  # Ha/Bohr
    order = n2p2_feature_order(water)
    scaled = water.descriptor.scale(torch.as_tensor(out["G"]), out["species"]).numpy()
    for el in ("H", "O"):
        idx = ref[f"atom_index_{el}"]
        np.testing.assert_allclose(out["G"][idx][:, order[el]], ref[f"G_raw_{el}"], rtol=0, atol=1e-10)
        np.testing.assert_allclose(scaled[idx][:, order[el]], ref[f"G_scaled_{el}"], rtol=0, atol=1e-9)


def test_symmetry_function_order_is_n2p2s(water, water_dir):
    """mlpot column order[el][j] is n2p2's j-th symmetry function (n2p2's sorted order)."""
    table = np.load(water_dir / "reference" / "symmetry_functions.npz")
    order = n2p2_feature_order(water)
    for el in ("H", "O"):
        feats = water.descriptor.features[el]
        assert len(order[el]) == len(table[f"sf_settings_{el}"])
        for j, line in enumerate(table[f"sf_settings_{el}"]):
            fields = line.split()
            f = feats[order[el][j]]
            t = f.term
            if fields[2] == "2":
                nb, (eta, rs, rc) = fields[3:4], map(float, fields[4:7])
            else:
                nb, (eta, lam, zeta, rc, rs) = fields[3:5], map(float, fields[5:10])
                assert (t.lam, t.zeta, t.kind) == (lam, zeta, "G4")
            assert sorted(f.neighbours) == sorted(nb)
            np.testing.assert_allclose([t.eta * BOHR**2, t.r_s / BOHR, t.cutoff / BOHR], [eta, rs, rc],
                                       rtol=1e-14, atol=1e-14)
        # scaling statistics are carried along in the same order
        stats = water.descriptor.scaler
        e = water.elements.index(el)
        got = torch.stack([stats.train_min[e], stats.train_max[e], stats.train_mean[e],
                           stats.train_std[e]], 1)[: len(feats)].numpy()[order[el]]
        np.testing.assert_array_equal(got, table[f"scaling_{el}"])


@pytest.mark.parametrize("units, energy_key, forces_key, rtol", [
    (CODATA2018_UNITS, "energy_ev_codata2018", "forces_ev_ang_codata2018", 1e-13),
    (N2P2_EXAMPLE_UNITS, "energy_ev", "forces_ev_ang", 1e-13),
])
def test_water_in_ev_with_explicit_unit_factors(water_dir, units, energy_key, forces_key, rtol):
    """With the factors the reference used, eV/Å predictions match its eV/Å columns."""
    ref = load_ref(water_dir, "deepmd_f0")
    model = read_potential(water_dir, units=units)
    out = predict(model, Atoms(symbols=list(ref["elements"]), positions=ref["positions_bohr"] * units[0],
                               cell=ref["lattice_bohr"] * units[0], pbc=True))
    assert out["energy"][0] == pytest.approx(float(ref[energy_key]), rel=rtol)
    np.testing.assert_allclose(out["forces"], ref[forces_key], rtol=0, atol=1e-7 * units[1] / units[0])


def test_water_export_reimport_is_exact_and_files_equal_the_originals(water, water_dir, tmp_path):
    write_potential(water, tmp_path)  # the model's own units: Bohr/Ha
    again = read_potential(tmp_path)
    atoms = water_box(seed=1)
    a, b = predict(water, atoms), predict(again, atoms)
    for key in ("energy", "forces", "atomic", "G"):
        np.testing.assert_array_equal(a[key], b[key])
    for name in ("scaling.data", "weights.001.data", "weights.008.data"):
        orig, new = data_numbers(water_dir / name), data_numbers(tmp_path / name)
        assert len(orig) == len(new)
        for x, y in zip(orig, new):
            assert [float(v) if re.match(r"^-?[\d.]", v) else v for v in x] == \
                   [float(v) if re.match(r"^-?[\d.]", v) else v for v in y]

    def settings(path):
        sfs, other = [], {}
        for line in path.read_text().splitlines():
            tok = line.split("#")[0].split()
            if tok and tok[0] == "symfunction_short":
                nums = [float(v) for v in tok[3:] if v not in ("H", "O")]
                nb = sorted(v for v in tok[3:] if v in ("H", "O"))
                if tok[2] == "3" and len(nums) == 4:
                    nums.append(0.0)  # optional r_s
                sfs.append((tok[1], tok[2], tuple(nb), tuple(nums)))
            elif tok and tok[0] in ("mean_energy", "conv_energy", "conv_length", "cutoff_type",
                                     "global_nodes_short", "global_activation_short"):
                other[tok[0]] = tok[1:]
        return sorted(sfs), other

    (sf_a, kw_a), (sf_b, kw_b) = settings(water_dir / "input.nn"), settings(tmp_path / "input.nn")
    assert sf_a == sf_b
    for key in ("mean_energy", "conv_energy", "conv_length"):
        assert float(kw_a[key][0]) == float(kw_b[key][0])
    assert kw_a["global_activation_short"] == kw_b["global_activation_short"]


def test_export_in_ev_angstrom_is_consistent_with_bohr_hartree(water, tmp_path):
    """The same model written in Å/eV: η, r_s, r_c and energies converted, weights and
    scaling identical, and it reads back (units from the comments) to the same predictions."""
    write_potential(water, tmp_path / "ha", units="bohr_hartree")
    write_potential(water, tmp_path / "ev", units="angstrom_ev")
    ev = read_potential(tmp_path / "ev")
    assert ev.metadata["n2p2"]["units"] == "angstrom_ev"
    for name in ("scaling.data", "weights.001.data", "weights.008.data"):
        assert data_numbers(tmp_path / "ha" / name) == data_numbers(tmp_path / "ev" / name)

    def sf_numbers(path):
        return [[float(v) for v in line.split()[3:] if v not in ("H", "O")]
                for line in path.read_text().splitlines() if line.startswith("symfunction_short")]

    ha, evn = np.array(sf_numbers(tmp_path / "ha" / "input.nn")[:16]), np.array(sf_numbers(tmp_path / "ev" / "input.nn")[:16])
    np.testing.assert_allclose(evn[:, 0], ha[:, 0] / BOHR**2, rtol=1e-14)  # η
    np.testing.assert_allclose(evn[:, 1:], ha[:, 1:] * BOHR, rtol=1e-14)  # r_s, r_c
    atoms = water_box(seed=2)
    a, b = predict(water, atoms), predict(ev, atoms)
    assert b["energy"][0] == pytest.approx(a["energy"][0], rel=1e-13)
    np.testing.assert_allclose(b["forces"], a["forces"], rtol=0, atol=1e-10)


# --------------------------------------------------------------------------- random models
SPEC = {
    "elements": ["O", "H"], "cutoff": 4.0, "cutoff_function": "poly2", "cutoff_alpha": 0.1,
    "radial": [{"grid": {"count": 3, "mode": "shift", "r_lower": 0.8}},
               {"eta": 1.3, "r_s": 0.5, "centre": "H", "neighbour": "O", "cutoff": 3.3}],
    "angular": [{"kind": "G4", "eta": 0.1, "zetas": [1, 2.5], "lambdas": [-1, 1], "r_s": 0.3},
                {"kind": "G5", "eta": 0.3, "zeta": 4, "lambda": 1, "centre": "O"}],
}


def small_model(config: NetworkConfig, scaling: str = "scale_center", cutoff_function: str = "poly2",
                seed: int = 0) -> Potential:
    """A randomly initialised model with scaling and reference energies fitted on 3 boxes."""
    from ase.calculators.singlepoint import SinglePointCalculator

    torch.manual_seed(seed)
    spec = SymmetryFunctionSpec.from_dict({**SPEC, "cutoff_function": cutoff_function})
    model = Potential(spec, config).double()
    structures = [water_box(seed=s) for s in range(3)]
    for k, a in enumerate(structures):
        a.calc = SinglePointCalculator(a, energy=-10.0 * len(a) + k,
                                       forces=np.random.default_rng(k).normal(size=(len(a), 3)))
    model.fit_to_data([collate(structures, cutoff=model.cutoff)], scaling=scaling)
    return model.eval()


def assert_same_model(a: Potential, b: Potential) -> None:
    """Equal elements, features (in order), parameters and scaling, bitwise; predictions to
    rounding: the imported spec lists one restricted term per feature where the original
    may have shared terms, so the descriptor sums its columns in another order (1e-15)."""
    assert a.elements == b.elements
    for el in a.elements:
        fa, fb = a.descriptor.features[el], b.descriptor.features[el]
        key = lambda f: (f.neighbours, type(f.term).__name__, f.term.eta, f.term.r_s, f.term.cutoff,
                         getattr(f.term, "kind", None), getattr(f.term, "zeta", None), getattr(f.term, "lam", None))
        assert [key(f) for f in fa] == [key(f) for f in fb]
    sa, sb = a.state_dict(), b.state_dict()
    assert sa.keys() == sb.keys()
    for k in sa:
        assert torch.equal(sa[k], sb[k]), k
    assert (a.spec.cutoff_function, a.spec.cutoff_alpha) == (b.spec.cutoff_function, b.spec.cutoff_alpha)
    atoms = water_box(seed=7)
    pa, pb = predict(a, atoms), predict(b, atoms)
    np.testing.assert_allclose(pb["energy"], pa["energy"], rtol=1e-14, atol=0)
    np.testing.assert_allclose(pb["forces"], pa["forces"], rtol=0, atol=1e-12)


@pytest.mark.parametrize("config, scaling, cutoff_function", [
    (NetworkConfig(hidden=(7, 5), activation="tanh"), "scale_center", "poly2"),
    (NetworkConfig(hidden=(6, 4, 3), layer_activations=("softplus", "sigmoid", "gaussian"),
                   output_activation="cos"), "scale", "cos"),
    (NetworkConfig(hidden=(5,), activation="identity"), "scale_sigma", "tanh"),
    (NetworkConfig(hidden=(4, 4), activation="tanh"), "standard", "exp"),
    (NetworkConfig(hidden=(4, 4), activation="cos"), "center", "tanhu"),
    (NetworkConfig(hidden=(4,), activation="softplus"), "none", "poly4"),
], ids=["tanh-scale_center", "mixed-scale", "identity-sigma", "standard", "center", "none"])
def test_random_model_round_trip_is_exact(tmp_path, config, scaling, cutoff_function):
    model = small_model(config, scaling, cutoff_function)
    write_potential(model, tmp_path / "a")
    again = read_potential(tmp_path / "a")
    assert_same_model(model, again)
    assert again.config.hidden_activations == config.hidden_activations
    assert again.config.output_activation == config.output_activation
    # export → import → export writes the same files
    write_potential(again, tmp_path / "b")
    for name in ("input.nn", "scaling.data", "weights.001.data", "weights.008.data"):
        assert (tmp_path / "a" / name).read_text() == (tmp_path / "b" / name).read_text()


def test_round_trip_in_bohr_hartree_is_exact(tmp_path):
    model = small_model(NetworkConfig(hidden=(6, 6), activation="tanh"))
    write_potential(model, tmp_path, units="bohr_hartree")
    assert "# Length unit     : Bohr" in (tmp_path / "input.nn").read_text()
    assert_same_model(model, read_potential(tmp_path))


def test_float32_and_unscaled_models_export(tmp_path):
    model = small_model(NetworkConfig(hidden=(5, 4), activation="tanh")).float()
    write_potential(model, tmp_path / "f32")
    again = read_potential(tmp_path / "f32")  # float64
    atoms = water_box(seed=5)
    a, b = predict(model, atoms), predict(again, atoms)
    assert b["energy"][0] == pytest.approx(float(a["energy"][0]), rel=1e-6)
    np.testing.assert_allclose(b["forces"], a["forces"], rtol=0, atol=1e-3)
    torch.manual_seed(1)
    raw = Potential(SymmetryFunctionSpec.from_dict(SPEC),
                    NetworkConfig(hidden=(3,), activation="tanh")).double().eval()
    with pytest.warns(UserWarning, match="no descriptor scaling"):
        write_potential(raw, tmp_path / "raw")
    again = read_potential(tmp_path / "raw")
    assert again.descriptor.scaler.mode == "none"
    a, b = predict(raw, atoms), predict(again, atoms)
    np.testing.assert_allclose(b["energy"], a["energy"], rtol=1e-14)


@pytest.mark.parametrize("config, match", [
    (NetworkConfig(depth=2, width=4, block="residual"), "residual"),
    (NetworkConfig(depth=2, width=4, block="residual", survival=0.8), "stochastic depth"),
    (NetworkConfig(depth=2, width=4, activation="silu"), "silu"),
    (NetworkConfig(depth=2, width=4, activation="shifted_softplus"), "shifted_softplus"),
])
def test_export_refuses_what_n2p2_cannot_represent(tmp_path, config, match):
    torch.manual_seed(0)
    model = Potential(SymmetryFunctionSpec.from_dict(SPEC), config).double()
    with pytest.raises(N2P2Error, match=match):
        write_potential(model, tmp_path)


def test_cli_import_and_export(water_dir, tmp_path, capsys):
    assert main(["import-n2p2", str(water_dir), str(tmp_path / "w.pt")]) == 0
    assert "bohr_hartree" in capsys.readouterr().out
    assert main(["export-n2p2", str(tmp_path / "w.pt"), str(tmp_path / "out")]) == 0
    model, again = mlpot.load(tmp_path / "w.pt"), read_potential(tmp_path / "out")
    atoms = water_box(seed=4)
    np.testing.assert_array_equal(predict(model, atoms)["forces"], predict(again, atoms)["forces"])
    assert main(["import-n2p2", str(tmp_path / "missing"), str(tmp_path / "x.pt")]) == 2
    assert "input.nn" in capsys.readouterr().err


# --------------------------------------------------------------------------- bad input
@pytest.fixture()
def folder(tmp_path) -> Path:
    """A valid small potential folder (Å/eV), to be corrupted by each test."""
    write_potential(small_model(NetworkConfig(hidden=(4, 3), activation="tanh")), tmp_path / "pot")
    return tmp_path / "pot"


def edit(path: Path, old: str, new: str, count: int = 1) -> None:
    text = path.read_text()
    assert old in text, old
    path.write_text(text.replace(old, new, count))


def line_of(path: Path, start: str) -> int:
    return next(i for i, line in enumerate(path.read_text().splitlines(), 1) if line.startswith(start))


@pytest.mark.parametrize("name", ["input.nn", "scaling.data", "weights.008.data"])
def test_missing_file_is_named(folder, name):
    (folder / name).unlink()
    with pytest.raises(FileNotFoundError, match=re.escape(name)):
        read_potential(folder)


def test_weights_file_with_a_missing_entry(folder):
    path = folder / "weights.001.data"
    lines = path.read_text().splitlines()
    path.write_text("\n".join(lines[:-1]) + "\n")
    with pytest.raises(N2P2Error, match=r"weights\.001\.data: .*connections.*needs"):
        read_potential(folder)


def test_weights_file_with_a_corrupt_number(folder):
    path = folder / "weights.008.data"
    lines = path.read_text().splitlines()
    k = next(i for i, line in enumerate(lines) if not line.startswith("#")) + 5
    lines[k] = "  1.2.3E+00" + lines[k][24:]
    path.write_text("\n".join(lines) + "\n")
    with pytest.raises(N2P2Error, match=rf"weights\.008\.data:{k + 1}: .*number.*'1\.2\.3E\+00'"):
        read_potential(folder)


def test_weights_file_for_another_architecture(folder):
    """Same number of entries, wrong layer sizes: the index columns catch it."""
    path = folder / "weights.001.data"
    text = path.read_text().replace("     0     1     1     1\n", "     0     1     1     9\n", 1)
    path.write_text(text)
    with pytest.raises(N2P2Error, match=r"weights\.001\.data:\d+: weight 0:1 -> 1:9 does not exist"):
        read_potential(folder)


def test_scaling_data_corrupt_and_misnumbered(folder, tmp_path):
    path = folder / "scaling.data"
    shutil.copytree(folder, tmp_path / "copy")
    n = line_of(path, "         1          2 ")
    edit(path, "         1          2 ", "         1          7 ")
    with pytest.raises(N2P2Error, match=rf"scaling\.data:{n}: expected element 1, symmetry function 2"):
        read_potential(folder)
    path = tmp_path / "copy" / "scaling.data"
    lines = path.read_text().splitlines()
    lines[n - 1] = lines[n - 1].replace("E", "Q", 1)
    path.write_text("\n".join(lines) + "\n")
    with pytest.raises(N2P2Error, match=rf"scaling\.data:{n}: min must be a number"):
        read_potential(tmp_path / "copy")


def change_scaling_row(folder: Path, change) -> None:
    """Replace the (min, max, mean, sigma) of element 1, symmetry function 2 in
    scaling.data by ``change(min, max, mean, sigma)``."""
    path = folder / "scaling.data"
    n = line_of(path, "         1          2 ")
    lines = path.read_text().splitlines()
    e, sf, *values = lines[n - 1].split()
    lines[n - 1] = f"{e} {sf} " + " ".join(f"{v:.17e}" for v in change(*map(float, values)))
    path.write_text("\n".join(lines) + "\n")


@pytest.mark.parametrize("change, match", [
    (lambda lo, hi, mean, sigma: (lo, lo, lo, 0.0), "has zero range or sigma"),
    (lambda lo, hi, mean, sigma: (1.0, 1.0 + 1e-14, 1.0, 1e-15), r"has a range of ~0"),
    (lambda lo, hi, mean, sigma: (lo, hi, mean, -sigma), "has a negative sigma"),
], ids=["zero-range", "near-zero-range", "negative-sigma"])
def test_degenerate_scaling_data_is_refused(folder, change, match):
    """scale_center: n2p2 would divide by the range, which the importer's scaler
    (FeatureScaler.from_statistics) would leave unscaled; refused, naming the function."""
    change_scaling_row(folder, change)
    with pytest.raises(N2P2Error, match=rf"scaling\.data: element \w+, symmetry function \d+ {match}"):
        read_potential(folder)


def test_a_term_of_tiny_values_with_a_real_range_is_scaled_as_n2p2_scales_it(folder):
    """The published mlearn Ge and Li potentials have terms whose values all lie below 1e-12
    (a Gaussian's far tail) and span their whole range: n2p2 scales them by
    (s_max − s_min)/(G_max − G_min), ~1e14, and so must the import (mlpot's own training
    leaves features below ~1e-12 unscaled, FeatureScaler.from_statistics)."""
    g_min, g_max, g_mean, g_sigma = 3.2e-25, 8.6e-15, 1.4e-17, 1.7e-16  # mlearn Ge, term 20
    change_scaling_row(folder, lambda *old: (g_min, g_max, g_mean, g_sigma))
    scaler = read_potential(folder).descriptor.scaler
    (element, column), = torch.nonzero(scaler.train_max == g_max).tolist()  # the term changed above
    assert not bool(scaler.constant_mask.any())
    s_min, s_max = scaler.s_min, scaler.s_max
    # scale_center, n2p2's ST_SCALECENTER: s_min + (G − G_mean)(s_max − s_min)/(G_max − G_min).
    assert float(scaler.weight[element, column]) == pytest.approx((s_max - s_min) / (g_max - g_min), rel=1e-12)
    assert float(scaler.bias[element, column]) == pytest.approx(
        s_min - g_mean * (s_max - s_min) / (g_max - g_min), rel=1e-12)


@pytest.mark.parametrize("old, new, match", [
    ("elements O H", "elements O Xx", r"input\.nn:{line}: unknown element 'Xx'"),
    ("symfunction_short H  2 H ", "symfunction_short H  12 H ",
     r"input\.nn:{line}: symmetry function type 12 is not supported"),
    ("symfunction_short H  2 H ", "symfunction_short Na 2 H ", r"input\.nn:{line}: .*centre element 'Na'"),
    ("global_activation_short t t l", "global_activation_short t r l",
     r"input\.nn:{line}: global_activation_short: activation 'r' \(ReLU\) is not supported"),
    ("cutoff_type 6", "cutoff_type 0", r"input\.nn:{line}: cutoff_type 0 is not supported"),
    ("number_of_elements 2", "number_of_elements 2\nnnp_type 4G-HDNNP", r"input\.nn:{line}: nnp_type '4G-HDNNP'"),
    ("number_of_elements 2", "number_of_elements 2\nnormalize_nodes", r"input\.nn:{line}: keyword 'normalize_nodes'"),
    ("number_of_elements 2", "number_of_elements 2\nelement_nodes_short H 5 5",
     r"input\.nn:{line}: keyword 'element_nodes_short'"),
    ("number_of_elements 2", "number_of_elements 2\nglobal_nodes_short 4 3",
     r"input\.nn:\d+: keyword 'global_nodes_short' given more than once \(first at line {line}\)"),
    ("conv_energy ", "conv_energy x", r"input\.nn:{line}: conv_energy must be a number"),
])
def test_bad_input_nn_names_keyword_and_line(folder, old, new, match):
    path = folder / "input.nn"
    edit(path, old, new)
    first = new.splitlines()[-1]
    with pytest.raises(N2P2Error, match=match.format(line=line_of(path, first))):
        read_potential(folder)


def test_units_must_be_known(folder):
    edit(folder / "input.nn", "# Length unit     : Angstrom\n", "")
    with pytest.raises(N2P2Error, match="pass units="):
        read_potential(folder)
    assert read_potential(folder, units="angstrom_ev").elements == ("O", "H")


def test_training_keywords_are_ignored_and_unknown_ones_warned(folder):
    edit(folder / "input.nn", "number_of_elements 2", "number_of_elements 2\nepochs 10\nkalman_q0 0.01")
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        read_potential(folder)
    edit(folder / "input.nn", "epochs 10", "frobnicate 3")
    with pytest.warns(UserWarning, match=r"'frobnicate' \(line \d+\)"):
        read_potential(folder)
