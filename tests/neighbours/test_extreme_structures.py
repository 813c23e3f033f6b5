"""Structures vesin's CPU cell list would crash on (SIGFPE: the process dies, no exception).

Each crashing case runs in a subprocess, so a regression fails the test instead of killing
pytest. With vesin 0.6 and r_c = 5 Å the crashes start at two open atoms 4.95e5 Å apart, a
flat open structure 1570 Å wide, or a periodic cell vector of ~5e5 Å.
"""

import subprocess
import sys
import textwrap

import numpy as np
import pytest
import torch
from ase import Atoms
from ase.neighborlist import neighbor_list

from mlpot.neighbours import structure_pairs
from mlpot.neighbours.guard import check_for_vesin, open_half_pairs
from mlpot.neighbours.pairs import device_pairs
from structures_for_tests import ethanol


def _canonical(i, j, shifts):
    return sorted(zip(np.asarray(i).tolist(), np.asarray(j).tolist(), map(tuple, np.asarray(shifts).tolist())))


def _run(code: str) -> subprocess.CompletedProcess:
    """Run ``code`` in a fresh interpreter (a SIGFPE there is a return code of -8 here)."""
    prelude = "import numpy as np\nfrom mlpot.neighbours import structure_pairs\n"
    return subprocess.run([sys.executable, "-c", prelude + textwrap.dedent(code)], capture_output=True,
                          text=True, timeout=120)


@pytest.mark.parametrize("far", ["1e6", "1e12", "1e30", "1e300"])
def test_open_atoms_far_apart_give_the_near_pairs(far):
    result = _run(f"""
        positions = np.array([[0.0, 0.0, 0.0], [{far}, 0.0, 0.0], [1.0, 0.0, 0.0], [{far}, 2.0, 0.0]])
        i, j, shifts = structure_pairs(positions, np.zeros((3, 3)), np.zeros(3, bool), 5.0)
        print(sorted(zip(i.tolist(), j.tolist())), int(np.abs(shifts).sum()))
        """)
    assert result.returncode == 0, result.stderr
    assert result.stdout.split("]")[0] + "]" == "[(0, 2), (1, 3), (2, 0), (3, 1)]"
    assert result.stdout.strip().endswith(" 0")


def test_flat_open_structure_wider_than_vesin_takes():
    """1600 Å wide and flat: vesin scales its cell counts and the one along z becomes 0."""
    result = _run("""
        rng = np.random.default_rng(0)
        positions = np.zeros((400, 3))
        positions[:, :2] = rng.uniform(0, 1600, (400, 2))
        positions[200:, :2] = positions[:200, :2] + rng.uniform(-3, 3, (200, 2))
        i, j, _ = structure_pairs(positions, np.zeros((3, 3)), np.zeros(3, bool), 5.0)
        print(len(i))
        """)
    assert result.returncode == 0, result.stderr
    assert int(result.stdout) >= 400  # at least each atom and its partner, both ways


@pytest.mark.parametrize("cell, message", [
    ("np.diag([1e6, 3.0, 3.0])", "too large for the neighbour list: extent 1e+06 x 3 x 3"),
    ("np.diag([np.nan, 3.0, 3.0])", "non-finite (NaN/inf) cell"),
    ("np.diag([np.inf, 3.0, 3.0])", "non-finite (NaN/inf) cell"),
])
def test_periodic_cells_vesin_cannot_take_raise(cell, message):
    result = _run(f"""
        try:
            structure_pairs(np.array([[0.0, 0.0, 0.0], [1.0, 0.0, 0.0]]), {cell}, np.ones(3, bool), 5.0)
        except ValueError as exc:
            print("ValueError:", exc)
        """)
    assert result.returncode == 0, result.stderr
    assert message in result.stdout
    if "large" in message:
        assert "cut-offs of 5 Å" in result.stdout


@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
def test_non_finite_positions_raise_naming_the_atom(bad):
    positions = np.array([[0.0, 0.0, 0.0], [1.0, 0.0, 0.0], [bad, 0.0, 0.0]])
    for pbc, cell in ((np.zeros(3, bool), np.zeros((3, 3))), (np.ones(3, bool), np.eye(3) * 10)):
        with pytest.raises(ValueError, match="non-finite .* position at atom 2"):
            structure_pairs(positions, cell, pbc, 5.0)


def test_degenerate_periodic_cell_raises():
    with pytest.raises(ValueError, match="linearly dependent"):
        structure_pairs(np.zeros((2, 3)) + [[0, 0, 0], [1, 0, 0]], np.zeros((3, 3)), np.ones(3, bool), 5.0)


def test_normal_molecule_unchanged_and_matches_ase():
    atoms = ethanol()
    ase_pairs = _canonical(*neighbor_list("ijS", atoms, 4.0))
    assert check_for_vesin(atoms.positions, np.zeros((3, 3)), np.zeros(3, bool), 4.0)
    assert _canonical(*structure_pairs(atoms.positions, np.zeros((3, 3)), atoms.pbc, 4.0)) == ase_pairs
    # and the sparse cell list gives the same pairs as ASE too
    i, j, shifts = open_half_pairs(atoms.positions, 4.0)
    assert _canonical(np.r_[i, j], np.r_[j, i], np.r_[shifts, shifts]) == ase_pairs


def test_sparse_cell_list_matches_ase_on_far_apart_clusters():
    rng = np.random.default_rng(3)
    positions = rng.uniform(0, 12, (150, 3))
    positions[75:] += [4e5, -2e5, 7.5]  # two clusters, each with its own pairs
    assert not check_for_vesin(positions, np.zeros((3, 3)), np.zeros(3, bool), 5.0)
    atoms = Atoms(f"H{len(positions)}", positions=positions)
    expected = _canonical(*neighbor_list("ijS", atoms, 5.0))
    assert expected
    assert _canonical(*structure_pairs(positions, np.zeros((3, 3)), np.zeros(3, bool), 5.0)) == expected
    edge_index, shifts = device_pairs(torch.from_numpy(positions), torch.zeros(1, 3, 3, dtype=torch.float64),
                                      torch.zeros(1, 3, dtype=torch.bool), np.array([0, len(positions)]), 5.0)
    assert _canonical(edge_index[0], edge_index[1], shifts) == expected
