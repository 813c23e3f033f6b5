"""Deployment export (mlpot.io.export, ``mlpot export``): the TorchScript module against the
Python model, element checks, its own neighbour search, and loading without mlpot."""

import json
import subprocess
import sys

import numpy as np
import pytest
import torch
from ase import Atoms
from ase.build import molecule
from ase.calculators.singlepoint import SinglePointCalculator

import mlpot
from mlpot.data import collate
from mlpot.descriptors import SymmetryFunctionSpec
from mlpot.io.export import export_model
from mlpot.models import NetworkConfig, Potential

# Three elements, a restricted radial term (per-element feature layouts) and angular terms
# with a shorter cutoff than the radial ones (the angular pair filter).
SPEC = {
    "elements": ["H", "C", "O"], "cutoff": 4.5, "cutoff_function": "poly2",
    "radial": [{"grid": {"count": 4, "mode": "shift", "r_lower": 0.8}},
               {"eta": 1.0, "centre": "H", "neighbour": "O", "cutoff": 4.0}],
    "angular": [{"kind": "G4", "eta": 0.1, "zetas": [1, 4], "lambdas": [-1, 1], "cutoff": 3.5},
                {"kind": "G5", "eta": 0.3, "zeta": 2, "lambda": 1, "cutoff": 3.5}],
}


def ethanol(seed: int) -> Atoms:
    atoms = molecule("CH3CH2OH")
    atoms.rattle(0.05, seed=seed)
    return atoms


def ethanol_crystal(seed: int = 0) -> Atoms:
    """Two ethanol molecules in a small triclinic periodic cell (H, C, O)."""
    cell = np.array([[6.0, 0.0, 0.0], [0.8, 5.6, 0.0], [0.4, -0.5, 5.9]])
    atoms = Atoms(cell=cell, pbc=True)
    for k in range(2):
        m = molecule("CH3CH2OH")
        m.rotate(70 * k + 10, "z")
        m.translate(np.array([k, k, k]) @ cell / 2)
        atoms += m
    atoms.rattle(0.05, seed=seed)
    return atoms


def tiny_cell() -> Atoms:
    """C and O in a 2.6 Å triclinic cell: the cutoff reaches several images per axis."""
    return Atoms("CO", positions=[[0.1, 0.2, 0.0], [1.3, 1.2, 1.1]], pbc=True,
                 cell=[[2.6, 0.0, 0.0], [0.5, 2.7, 0.0], [0.3, 0.4, 2.8]])


def make_model(dtype=torch.float64) -> Potential:
    torch.manual_seed(0)
    model = Potential(SymmetryFunctionSpec.from_dict(SPEC), NetworkConfig(depth=2, width=10)).double()
    structures = [ethanol(s) for s in range(3)] + [ethanol_crystal(s) for s in range(2)]
    for k, a in enumerate(structures):  # synthetic labels: only scaling and references matter
        a.calc = SinglePointCalculator(a, energy=-5.0 * len(a) + k,
                                       forces=np.random.default_rng(k).normal(size=(len(a), 3)))
    model.fit_to_data([collate(structures, cutoff=model.cutoff)])
    return model.to(dtype).eval()


@pytest.fixture(scope="module")
def model():
    return make_model()


@pytest.fixture(scope="module")
def exported(model, tmp_path_factory):
    path = tmp_path_factory.mktemp("export") / "deploy.pt"
    export_model(model, path)
    return path, torch.jit.load(str(path))


def tensors(atoms: Atoms, dtype=torch.float64):
    return (torch.tensor(atoms.positions, dtype=dtype), torch.tensor(atoms.numbers),
            torch.tensor(atoms.cell.array, dtype=dtype), torch.tensor(atoms.pbc))


def reference(model, atoms: Atoms) -> dict:
    batch = collate([atoms], cutoff=model.cutoff, dtype=model.dtype, labels=False)
    out = model(batch, forces=True, stress=bool(atoms.pbc.all()))
    return {k: v.detach() for k, v in out.items()}


def assert_matches(module, model, atoms: Atoms, tol: float) -> dict:
    out = module(*tensors(atoms, model.dtype))
    ref = reference(model, atoms)

    def close(got, want, name):
        err = float((got.double() - want.double()).abs().max()) if want.numel() else 0.0
        limit = tol * (1.0 + float(want.double().abs().max())) if want.numel() else tol
        assert err <= limit, f"{name}: max error {err:.3g} > {limit:.3g}"

    close(out["energy"], ref["energy"][0], "energy")
    close(out["atomic_energies"], ref["atomic_energies"], "atomic energies")
    close(out["forces"], ref["forces"], "forces")
    if atoms.pbc.all():
        close(out["stress"], ref["stress"][0], "stress")
    else:
        assert torch.isnan(out["stress"]).all()
    return out


@pytest.mark.parametrize("structure", ["molecule", "crystal", "tiny_cell", "slab"])
def test_export_equals_python_model(model, exported, structure, one_thread):
    atoms = {"molecule": lambda: ethanol(7), "crystal": lambda: ethanol_crystal(5), "tiny_cell": tiny_cell,
             "slab": lambda: ethanol_crystal(6)}[structure]()
    if structure == "slab":
        atoms.pbc = [True, True, False]
    # The trace example has 7 atoms (2 per element + 1): every structure here differs.
    assert len(atoms) != 7
    assert_matches(exported[1], model, atoms, 1e-10)


def test_isolated_atoms(model, exported):
    atoms = ethanol(8) + Atoms("O", positions=[[30.0, 0.0, 0.0]])
    out = assert_matches(exported[1], model, atoms, 1e-10)
    assert torch.equal(out["forces"][-1], torch.zeros(3, dtype=torch.float64))
    single = Atoms("C", positions=[[0.0, 0.0, 0.0]])  # no pair at all
    out = assert_matches(exported[1], model, single, 1e-10)
    assert torch.equal(out["forces"], torch.zeros(1, 3, dtype=torch.float64))


def test_unknown_element_is_a_clear_error(exported):
    atoms = ethanol(0)
    atoms.numbers[3] = 7  # N
    with pytest.raises(Exception, match=r"atomic number\(s\) \[7\] not known to this model \(elements H, C, O\)"):
        exported[1](*tensors(atoms))


def test_neighbour_search_and_pair_entry_point(model, exported, one_thread):
    """The built-in pair search finds vesin's pairs; forward_with_pairs takes a list from outside."""
    module = exported[1]
    for atoms in (ethanol_crystal(3), tiny_cell()):
        batch = collate([atoms], cutoff=model.cutoff)
        edge_index, shift = module.neighbour_pairs(*tensors(atoms)[:1], *tensors(atoms)[2:])
        ours = {(i, j, *s) for (i, j), s in zip(edge_index.T.tolist(), shift.round().long().tolist())}
        theirs = {(i, j, *s) for (i, j), s in zip(batch.edge_index.T.tolist(), batch.edge_shift.long().tolist())}
        assert ours == theirs
        assert bool((edge_index[0][1:] >= edge_index[0][:-1]).all())  # sorted by centre
        out = module.forward_with_pairs(*tensors(atoms), batch.edge_index, batch.edge_shift)
        ref = module(*tensors(atoms))
        for key in ("energy", "forces", "stress"):
            torch.testing.assert_close(out[key], ref[key], rtol=1e-12, atol=1e-12)
        with pytest.raises(Exception, match="sorted by centre"):  # would give wrong angular terms
            module.forward_with_pairs(*tensors(atoms), batch.edge_index.flip(1), batch.edge_shift.flip(0))


def test_unwrapped_positions_and_no_grad(model, exported):
    """Atoms outside the cell give the same result; the module works under no_grad."""
    atoms = ethanol_crystal(2)
    shifted = atoms.copy()
    shifted.positions += np.array([2, -1, 3]) @ atoms.cell.array
    shifted.positions[:3] -= atoms.cell.array[0] * 3
    ref = exported[1](*tensors(atoms))
    with torch.no_grad():
        out = exported[1](*tensors(shifted))
        assert not torch.is_grad_enabled()  # the module restores the caller's grad mode
    torch.testing.assert_close(out["energy"], ref["energy"], rtol=1e-12, atol=1e-10)
    torch.testing.assert_close(out["forces"], ref["forces"], rtol=1e-10, atol=1e-10)
    torch.testing.assert_close(out["stress"], ref["stress"], rtol=1e-10, atol=1e-12)


def test_float32_export(tmp_path):
    model = make_model(torch.float32)
    # The export traces the torch kernel; the compiled one sums in float64 and is closer to
    # the float64 model (6e-5 against 2.3e-3 eV/Å on the crystal), so compare like with like.
    model.descriptor.kernel = "torch"
    path = export_model(model, tmp_path / "f32.pt")
    module = torch.jit.load(str(path))
    for atoms in (ethanol(9), ethanol_crystal(4)):
        out = assert_matches(module, model, atoms, 1e-5)
        assert out["forces"].dtype == torch.float32


_CHILD = r"""
import json, sys
# Make mlpot (and ASE, vesin, e3nn) unimportable: an editable install would otherwise be
# found through site-packages even in isolated mode.
for name in ("mlpot", "ase", "vesin", "e3nn"):
    sys.modules[name] = None
try:
    import mlpot
except ImportError:
    pass
else:
    raise SystemExit("mlpot is importable in the child")
import torch
module = torch.jit.load(sys.argv[1])
inputs = json.loads(sys.argv[2])
out = module(torch.tensor(inputs["positions"], dtype=torch.float64), torch.tensor(inputs["numbers"]),
             torch.tensor(inputs["cell"], dtype=torch.float64), torch.tensor(inputs["pbc"]))
loaded = sorted(m for m in sys.modules if m.split(".")[0] in ("mlpot", "ase", "vesin") and sys.modules[m] is not None)
print(json.dumps({"energy": out["energy"].item(), "forces": out["forces"].tolist(),
                  "stress": out["stress"].tolist(), "loaded": loaded}))
"""


def test_loads_and_runs_without_mlpot(model, exported, tmp_path):
    path, _ = exported
    atoms = ethanol_crystal(1)
    inputs = {"positions": atoms.positions.tolist(), "numbers": atoms.numbers.tolist(),
              "cell": atoms.cell.array.tolist(), "pbc": atoms.pbc.tolist()}
    # -I: no PYTHONPATH, no user site, no script folder; run from an empty folder.
    result = subprocess.run([sys.executable, "-I", "-c", _CHILD, str(path), json.dumps(inputs)],
                            cwd=tmp_path, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    out = json.loads(result.stdout.strip().splitlines()[-1])
    assert out["loaded"] == []
    ref = reference(model, atoms)
    assert out["energy"] == pytest.approx(ref["energy"][0].item(), abs=1e-10)
    np.testing.assert_allclose(out["forces"], ref["forces"].numpy(), atol=1e-10)
    np.testing.assert_allclose(out["stress"], ref["stress"][0].numpy(), atol=1e-12)


def test_cli_export(model, tmp_path, capsys):
    from mlpot.cli import main

    mlpot.save(model, tmp_path / "model.pt")
    assert main(["export", str(tmp_path / "model.pt"), str(tmp_path / "deploy.pt"), "--dtype", "float32"]) == 0
    assert "deploy.pt" in capsys.readouterr().out
    files = {"mlpot_export.json": ""}
    module = torch.jit.load(str(tmp_path / "deploy.pt"), _extra_files=files)
    info = json.loads(files["mlpot_export.json"])
    assert info["elements"] == ["H", "C", "O"] and info["dtype"] == "float32"
    assert info["units"]["stress"] == "eV/Å³"
    out = module(*tensors(ethanol(1), torch.float32))
    assert out["energy"].dtype == torch.float32
    assert main(["export", str(tmp_path / "missing.pt"), str(tmp_path / "x.pt")]) == 2
