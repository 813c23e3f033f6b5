"""Symmetry functions against DScribe, a plain-Python reference and physical invariances."""

import math

import numpy as np
import pytest
import torch
from ase.neighborlist import primitive_neighbor_list

from mlpot.data import collate
from mlpot.descriptors import SymmetryFunctions, SymmetryFunctionSpec
from mlpot.testing import assert_gradient_matches_fd, random_rotation
from structures_for_tests import ethanol, nacl_crystal, sic_tiny_cell, water_box


def descriptor(config: dict) -> SymmetryFunctions:
    return SymmetryFunctions(SymmetryFunctionSpec.from_dict(config)).double()


def compute(sf: SymmetryFunctions, structures, dtype=torch.float64) -> torch.Tensor:
    return sf(collate(list(structures), labels=False, dtype=dtype))


# --------------------------------------------------------------------------- DScribe
dscribe = pytest.importorskip("dscribe.descriptors", reason="dscribe is not installed")

G2 = [[0.5, 0.0], [1.2, 1.5], [0.05, 3.0]]
G4 = [[0.1, 1, 1], [0.1, 2, -1], [0.02, 4, 1]]
G5 = [[0.05, 4, 1], [0.2, 1, -1]]


def _dscribe_reference(atoms, species, rc):
    """DScribe ACSF reordered into mlpot's layout.

    DScribe orders species by atomic number, puts an extra G1 before each element's G2
    block and orders element pairs (a, b), a <= b, by b then a; mlpot orders by a then b.
    """
    acsf = dscribe.ACSF(species=species, r_cut=rc, g2_params=G2, g4_params=G4, g5_params=G5,
                        periodic=bool(atoms.pbc.any()))
    d = acsf.create(atoms)
    n_el, n2, na = len(species), len(G2), len(G4) + len(G5)
    radial = d[:, : n_el * (n2 + 1)].reshape(len(atoms), n_el, n2 + 1)[:, :, 1:]
    angular = d[:, n_el * (n2 + 1):].reshape(len(atoms), -1, na)
    dscribe_pairs = [(a, b) for b in range(n_el) for a in range(b + 1)]
    order = [dscribe_pairs.index(p) for p in ((a, b) for a in range(n_el) for b in range(a, n_el))]
    return np.concatenate([radial.reshape(len(atoms), -1), angular[:, order].reshape(len(atoms), -1)], 1)


@pytest.mark.parametrize(
    "make,species",
    [(ethanol, ["H", "C", "O"]), (water_box, ["H", "O"]), (nacl_crystal, ["Na", "Cl"]),
     (sic_tiny_cell, ["C", "Si"])],
    ids=["ethanol", "water_triclinic", "nacl", "sic_tiny_cell"],
)
def test_matches_dscribe(make, species):
    atoms = make()
    rc = 5.5
    sf = descriptor({
        "elements": species, "cutoff": rc, "cutoff_function": "cos",
        "radial": [{"eta": e, "r_s": r} for e, r in G2],
        "angular": [{"kind": "G4", "eta": e, "zeta": z, "lambda": lam} for e, z, lam in G4]
        + [{"kind": "G5", "eta": e, "zeta": z, "lambda": lam} for e, z, lam in G5],
    })
    got = compute(sf, [atoms]).numpy()
    expected = _dscribe_reference(atoms, species, rc)
    assert got.shape == expected.shape
    np.testing.assert_allclose(got, expected, rtol=1e-6, atol=1e-10 * np.abs(expected).max())
    assert np.abs(expected).max() > 0.1  # the comparison is not vacuous


# --------------------------------------------------------------------------- loop reference
def _fc_reference(name, r, rc, alpha):
    """Cutoff functions transcribed from the n2p2 documentation, scalar Python."""
    if r >= rc:
        return 0.0
    if name in ("tanhu", "tanh"):
        v = math.tanh(1.0 - r / rc) ** 3
        return v / math.tanh(1.0) ** 3 if name == "tanh" else v
    rci = alpha * rc
    if r < rci:
        return 1.0
    x = (r - rci) / (rc - rci)
    return {
        "cos": lambda: 0.5 * (math.cos(math.pi * x) + 1.0),
        "exp": lambda: math.exp(1.0 - 1.0 / (1.0 - x * x)),
        "poly1": lambda: (2 * x - 3) * x * x + 1,
        "poly2": lambda: ((15 - 6 * x) * x - 10) * x**3 + 1,
        "poly3": lambda: (x * (x * (20 * x - 70) + 84) - 35) * x**4 + 1,
        "poly4": lambda: (x * (x * ((315 - 70 * x) * x - 540) + 420) - 126) * x**5 + 1,
    }[name]()


def _loop_reference(atoms, spec: SymmetryFunctionSpec):
    """Every feature of every atom by explicit loops over neighbours and neighbour pairs."""
    from ase.data import chemical_symbols

    fc = lambda r, rc: _fc_reference(spec.cutoff_function, r, rc, spec.cutoff_alpha)  # noqa: E731
    i_list, d_list = primitive_neighbor_list("iD", atoms.pbc, atoms.cell.array, atoms.positions,
                                             spec.max_cutoff)
    symbols = [chemical_symbols[z] for z in atoms.numbers]
    j_list = primitive_neighbor_list("j", atoms.pbc, atoms.cell.array, atoms.positions, spec.max_cutoff)
    width = max(spec.n_features().values())
    out = np.zeros((len(atoms), width))
    for a in range(len(atoms)):
        nbrs = [(symbols[j], d) for i, j, d in zip(i_list, j_list, d_list) if i == a]
        for c, feat in enumerate(spec.features(symbols[a])):
            t = feat.term
            total = 0.0
            if feat.term.__class__.__name__ == "RadialTerm":
                for el, d in nbrs:
                    r = np.linalg.norm(d)
                    if el == feat.neighbours[0]:
                        total += math.exp(-t.eta * (r - t.r_s) ** 2) * fc(r, t.cutoff)
            else:
                for p in range(len(nbrs)):
                    for q in range(p + 1, len(nbrs)):
                        (ej, dj), (ek, dk) = nbrs[p], nbrs[q]
                        if sorted((ej, ek)) != sorted(feat.neighbours):
                            continue
                        rij, rik, rjk = np.linalg.norm(dj), np.linalg.norm(dk), np.linalg.norm(dk - dj)
                        cos = dj @ dk / (rij * rik)
                        g = 2 ** (1 - t.zeta) * (1 + t.lam * cos) ** t.zeta
                        g *= math.exp(-t.eta * ((rij - t.r_s) ** 2 + (rik - t.r_s) ** 2))
                        g *= fc(rij, t.cutoff) * fc(rik, t.cutoff)
                        if t.kind == "G4":
                            g *= math.exp(-t.eta * (rjk - t.r_s) ** 2) * fc(rjk, t.cutoff)
                        total += g
            out[a, c] = total
    return out


RESTRICTED = {
    # Per-element sets with their own cutoffs and shifted angular terms, as n2p2 potentials
    # define them: exercises the column map, per-term cutoffs and r_s in angular terms.
    "elements": ["H", "O"],
    "cutoff": 4.5,
    "radial": [
        {"eta": 0.3, "r_s": 0.0},
        {"eta": 2.0, "r_s": 1.0, "centre": "H", "neighbour": "O", "cutoff": 3.0},
        {"grid": {"count": 3, "mode": "shift", "r_lower": 0.9}, "centre": "O"},
    ],
    "angular": [
        {"kind": "G4", "eta": 0.2, "zeta": 2, "lambda": 1, "r_s": 0.5},
        {"kind": "G5", "eta": 0.1, "zetas": [1, 3], "lambdas": [-1, 1], "centre": "O",
         "neighbours": ["H", "H"], "cutoff": 3.5},
        {"kind": "G5", "eta": 0.05, "zeta": 1.5, "lambda": -1, "centre": "H"},
    ],
}


@pytest.mark.parametrize("cutoff_function", ["cos", "tanhu", "tanh", "exp", "poly1", "poly2", "poly3", "poly4"])
def test_matches_loop_reference(cutoff_function):
    atoms = water_box()
    alpha = 0.0 if cutoff_function.startswith("tanh") else 0.3
    config = dict(RESTRICTED, cutoff_function=cutoff_function, cutoff_alpha=alpha)
    spec = SymmetryFunctionSpec.from_dict(config)
    sf = SymmetryFunctions(spec)
    assert not sf.full_layout  # restricted terms need the column map
    got = compute(sf, [atoms]).numpy()
    expected = _loop_reference(atoms, spec)
    np.testing.assert_allclose(got, expected, rtol=1e-10, atol=1e-12)
    # Padding columns of the element with fewer features are zero.
    n_h = spec.n_features()["H"]
    h = atoms.numbers == 1
    assert np.all(got[h, n_h:] == 0)


# --------------------------------------------------------------------------- derivatives
FULL = {
    "elements": ["H", "O"], "cutoff": 4.0, "cutoff_function": "poly2",
    "radial": [{"grid": {"count": 4, "mode": "shift", "r_lower": 0.8}}],
    "angular": [{"kind": "G4", "eta": 0.1, "zetas": [1, 4], "lambdas": [-1, 1]},
                {"kind": "G5", "eta": 0.3, "zeta": 2, "lambda": 1, "r_s": 0.7}],
}


@pytest.mark.parametrize("config", [FULL, RESTRICTED], ids=["full", "restricted"])
def test_position_and_cell_derivatives_match_finite_differences(config):
    atoms = water_box(seed=2)[:12]  # 4 waters keep the FD loop short
    batch = collate([atoms], labels=False)
    sf = descriptor(config)
    batch = batch.with_neighbours(sf.cutoff + 0.5)  # skin: FD steps must not change the list
    weights = torch.randn(len(atoms), sf.max_features, generator=torch.Generator().manual_seed(0))
    species = sf.species(batch.numbers)

    def from_positions(pos):
        g = sf.compute(pos, species, batch.cell, batch.system_idx, batch.edge_index, batch.edge_shift)
        return (weights * g).sum()

    def from_cell(cell):
        # Strain the cell with the atoms (fractional coordinates fixed).
        frac = torch.linalg.solve(batch.cell[0].T, batch.positions.T).T
        pos = frac @ cell[0]
        g = sf.compute(pos, species, cell, batch.system_idx, batch.edge_index, batch.edge_shift)
        return (weights * g).sum()

    assert_gradient_matches_fd(from_positions, batch.positions, step=1e-5, rtol=1e-7)
    assert_gradient_matches_fd(from_cell, batch.cell, step=1e-5, rtol=1e-7)


# --------------------------------------------------------------------------- invariances
@pytest.fixture(scope="module")
def full_sf():
    return descriptor(FULL)


def test_rotation_translation_invariance(full_sf):
    atoms = water_box(seed=1)
    ref = compute(full_sf, [atoms])
    moved = atoms.copy()
    rot = random_rotation(7)
    moved.positions = atoms.positions @ rot.T + [1.3, -2.1, 0.4]
    moved.cell = atoms.cell.array @ rot.T
    torch.testing.assert_close(compute(full_sf, [moved]), ref, rtol=1e-10, atol=1e-12)


def test_permutation_of_like_atoms(full_sf):
    atoms = water_box(seed=1)
    perm = np.random.default_rng(3).permutation(len(atoms))
    ref = compute(full_sf, [atoms])
    got = compute(full_sf, [atoms[perm]])
    torch.testing.assert_close(got, ref[perm], rtol=1e-10, atol=1e-12)


def test_rewrapping_and_supercell(full_sf):
    atoms = water_box(seed=1)
    ref = compute(full_sf, [atoms])
    shifted = atoms.copy()
    shifted.positions += np.array([2, -1, 3]) @ atoms.cell.array  # whole lattice vectors
    torch.testing.assert_close(compute(full_sf, [shifted]), ref, rtol=1e-10, atol=1e-12)
    wrapped = atoms.copy()
    wrapped.wrap()
    torch.testing.assert_close(compute(full_sf, [wrapped]), ref, rtol=1e-10, atol=1e-12)
    supercell = atoms.repeat((2, 1, 2))
    torch.testing.assert_close(compute(full_sf, [supercell]), ref.repeat(4, 1), rtol=1e-10, atol=1e-12)


def test_batch_equals_single_structures(full_sf):
    structures = [water_box(seed=s) for s in range(3)]
    batched = compute(full_sf, structures)
    single = torch.cat([compute(full_sf, [a]) for a in structures])
    torch.testing.assert_close(batched, single, rtol=1e-12, atol=1e-14)


# --------------------------------------------------------------------------- cutoff behaviour
@pytest.mark.parametrize("name", ["cos", "tanhu", "tanh", "exp", "poly1", "poly2", "poly3", "poly4"])
def test_descriptor_value_and_slope_continuous_at_cutoff(name):
    """A dimer crossing r_c: value and force go to zero continuously."""
    rc = 3.0
    sf = descriptor({"elements": ["O"], "cutoff": rc, "cutoff_function": name,
                     "cutoff_alpha": 0.0, "radial": [{"eta": 0.4, "r_s": 1.0}]})
    from ase import Atoms

    def value_and_slope(r):
        pos = torch.tensor([[0.0, 0.0, 0.0], [r, 0.0, 0.0]], dtype=torch.float64, requires_grad=True)
        batch = collate([Atoms("O2", positions=pos.detach().numpy())], labels=False)
        batch = batch.with_neighbours(rc + 1.0)
        g = sf.compute(pos, sf.species(batch.numbers), batch.cell, batch.system_idx,
                       batch.edge_index, batch.edge_shift)[0, 0]
        (d,) = torch.autograd.grad(g, pos)
        return g.item(), d[1, 0].item()

    for eps in (1e-3, 1e-5):
        v_in, s_in = value_and_slope(rc - eps)
        v_out, s_out = value_and_slope(rc + eps)
        assert v_out == 0.0 and s_out == 0.0
        assert abs(v_in) < 50 * eps**2 and abs(s_in) < 50 * eps, (v_in, s_in)
    v_far, s_far = value_and_slope(rc + 2.0)
    assert v_far == 0.0 and s_far == 0.0


def test_atom_without_neighbours_gives_zeros_and_finite_gradient(full_sf):
    atoms = water_box(seed=1)
    atoms.pbc = False
    atoms.cell = [0, 0, 0]
    atoms.positions[0] = [40.0, 40.0, 40.0]
    batch = collate([atoms], labels=False).with_neighbours(full_sf.cutoff)
    pos = batch.positions.clone().requires_grad_(True)
    g = full_sf.compute(pos, full_sf.species(batch.numbers), batch.cell, batch.system_idx,
                        batch.edge_index, batch.edge_shift)
    assert torch.all(g[0] == 0)
    (grad,) = torch.autograd.grad(g.sum(), pos)
    assert torch.isfinite(grad).all() and torch.all(grad[0] == 0)


@pytest.mark.parametrize("positions", [[[0, 0, 0], [0.96, 0, 0]], [[0, 0, 0], [30, 0, 0]]],
                         ids=["dimer-no-triplets", "no-pairs"])
def test_structures_without_triplets(full_sf, positions):
    """A dimer has pairs but no triplets; far-apart atoms have neither: zeros, not errors."""
    from ase import Atoms

    atoms = Atoms("OH", positions=positions)
    batch = collate([atoms], labels=False).with_neighbours(full_sf.cutoff)
    pos = batch.positions.clone().requires_grad_(True)
    species = full_sf.species(batch.numbers)
    g = full_sf.compute(pos, species, batch.cell, batch.system_idx, batch.edge_index, batch.edge_shift)
    assert g.shape == (2, full_sf.max_features) and torch.isfinite(g).all()
    n_radial = full_sf.n_elements * full_sf.n_radial
    assert torch.all(g[:, n_radial:] == 0)  # angular block
    raw, jac = full_sf.jacobian(pos.detach(), species, batch.cell, batch.system_idx, batch.edge_index,
                                batch.edge_shift)
    torch.testing.assert_close(raw, g.detach())
    dense = full_sf.dense_jacobian(jac, species, batch.edge_index)
    assert dense.shape == (batch.edge_index.shape[1], full_sf.max_features, 3)
    assert jac.angular.shape[0] == (1 if positions[1][0] < 5 else 0) * 2  # pairs in the angular cutoff

def test_jacobian_in_triplet_blocks_equals_one_block(full_sf):
    """Differentiating the triplets a block at a time (bounded memory) changes nothing."""
    full_sf.kernel = "torch"  # the forward-mode path (the compiled one has no triplet_block)
    batch = collate([water_box(0), water_box(2)], cutoff=full_sf.cutoff)
    species = full_sf.species(batch.numbers)
    args = (batch.positions, species, batch.cell, batch.system_idx, batch.edge_index, batch.edge_shift)
    raw, whole = full_sf.jacobian(*args, triplet_block=10**9)
    raw_blocks, blocks = full_sf.jacobian(*args, triplet_block=1000)
    per_centre = torch.bincount(batch.edge_index[0][whole.angular_pairs()])
    assert int((per_centre * (per_centre - 1) // 2).sum()) > 3000  # triplets: several blocks
    torch.testing.assert_close(raw_blocks, raw, rtol=0, atol=0)
    torch.testing.assert_close(blocks.radial, whole.radial, rtol=0, atol=0)
    torch.testing.assert_close(blocks.direction, whole.direction, rtol=0, atol=0)
    torch.testing.assert_close(blocks.angular, whole.angular, rtol=1e-12, atol=1e-14)
    assert torch.equal(blocks.angular_row, whole.angular_row)


def test_selected_jacobian_knows_its_angular_pairs(full_sf):
    """select() hands on the angular pairs it found (no nonzero() later on a GPU); they are
    the pairs whose angular row is set, in order, also after to()."""
    from mlpot.descriptors import PairJacobian

    batch = collate([water_box(0)], cutoff=full_sf.cutoff + 2.0)  # a skin: some pairs outside
    _, jac = full_sf.jacobian(batch.positions, full_sf.species(batch.numbers), batch.cell, batch.system_idx,
                              batch.edge_index, batch.edge_shift)
    pairs = torch.randperm(jac.n_pairs, generator=torch.Generator().manual_seed(0))[:200]
    picked = jac.select(pairs).to(dtype=torch.float32)
    fresh = PairJacobian(picked.radial, picked.angular, picked.angular_row, picked.direction)  # recomputes them
    assert 0 < picked.angular_pairs().shape[0] < 200
    assert torch.equal(picked.angular_pairs(), fresh.angular_pairs())
    assert torch.equal(picked.angular_pairs(), torch.nonzero(jac.angular_row[pairs] >= 0).squeeze(1))



# --------------------------------------------------------------------------- dtypes, devices
def test_float32_agrees_with_float64(full_sf):
    atoms = water_box(seed=1)
    ref = compute(full_sf, [atoms])
    got = compute(full_sf.float(), [atoms], dtype=torch.float32)
    assert got.dtype == torch.float32
    torch.testing.assert_close(got.double(), ref, rtol=1e-5, atol=1e-5)


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="CUDA is not available")
def test_cuda_matches_cpu():
    sf = descriptor(FULL)
    structures = [water_box(seed=s) for s in range(2)]
    ref = compute(sf, structures)
    batch = collate(structures, labels=False, device="cuda")
    got = sf.to("cuda")(batch)
    assert got.is_cuda
    torch.testing.assert_close(got.cpu(), ref, rtol=1e-10, atol=1e-12)


# --------------------------------------------------------------------------- bad input
def test_unknown_element_is_named(full_sf):
    with pytest.raises(ValueError, match=r"\['Cl', 'Na'\] not known to this descriptor"):
        compute(full_sf, [nacl_crystal()[:2] + water_box()[:3]])


@pytest.mark.parametrize(
    "change,message",
    [
        ({"cutoff": 0.0}, "cutoff must be a positive"),
        ({"cutoff": -2.0}, "cutoff must be a positive"),
        ({"elements": ["H", "Xx"]}, "unknown element 'Xx'"),
        ({"cutoff_function": "gauss"}, "unknown cutoff_function 'gauss'"),
        ({"cutoff_alpha": 1.0}, "cutoff_alpha"),
        ({"radial": [{"eta": 0.1, "width": 2}]}, r"unknown config key\(s\): descriptor[.]radial\[0\][.]width"),
        ({"radial": [{"eta": -1.0}]}, "eta must be"),
        ({"angular": [{"kind": "G3", "eta": 0.1, "zeta": 1}]}, "kind must be one of"),
        ({"angular": [{"kind": "G4", "eta": 0.1, "zeta": 0.5, "lambda": 1}]}, "zeta must be >= 1"),
        ({"angular": [{"kind": "G4", "eta": 0.1, "zeta": 1, "lambda": 0.5}]}, "lambda must be"),
        ({"radial": [{"eta": 0.1, "neighbour": "C"}]}, "element 'C' is not in elements"),
        ({"colour": "red"}, r"unknown config key\(s\): descriptor[.]colour"),
    ],
)
def test_bad_config_is_rejected_with_a_clear_message(change, message):
    with pytest.raises(ValueError, match=message):
        SymmetryFunctionSpec.from_dict(dict(FULL, **change))


# --------------------------------------------------------------------------- grids, round trip
def test_radial_grids_follow_n2p2_rules():
    from mlpot.descriptors import radial_grid

    shift = radial_grid(5, cutoff=6.0, mode="shift", r_lower=1.0, r_upper=5.0)
    assert [r for _, r in shift] == pytest.approx([1.0, 2.0, 3.0, 4.0, 5.0])
    assert all(e == pytest.approx(0.5) for e, _ in shift)  # 1/(2 Δr²), Δr = 1
    center = radial_grid(3, cutoff=6.0, mode="center", r_lower=1.0, r_upper=3.0)
    assert [e for e, _ in center] == pytest.approx([0.5, 0.125, 1 / 18])
    assert all(r == 0.0 for _, r in center)
    imb = radial_grid(3, cutoff=8.0, mode="center", rule="imbalzano2018")
    assert [e for e, _ in imb] == pytest.approx([(1 / 8) ** 2, (2**0.5 / 8) ** 2, (2 / 8) ** 2])
    imb_shift = radial_grid(2, cutoff=8.0, mode="shift", rule="imbalzano2018")
    # r_s on r_c / 2^(m/2): 8/sqrt2, 8/2 → ascending [4, 5.657]; η from neighbour spacing.
    assert [r for _, r in imb_shift] == pytest.approx([4.0, 8 / 2**0.5])
    assert [e for e, _ in imb_shift] == pytest.approx([1 / (8 / 2**0.5 - 4) ** 2, 1 / (8 - 8 / 2**0.5) ** 2])
    with pytest.raises(ValueError, match="r_lower"):
        radial_grid(4, cutoff=6.0, mode="center", r_lower=0.0)


def test_spec_round_trips_through_dict():
    spec = SymmetryFunctionSpec.from_dict(RESTRICTED)
    again = SymmetryFunctionSpec.from_dict(spec.to_dict())
    assert again == spec
    assert spec.n_features() == {"H": len(spec.features("H")), "O": len(spec.features("O"))}


# --------------------------------------------------------------------------- G5 by harmonics
G5_WIDE = {
    "elements": ["H", "O"], "cutoff": 4.0, "cutoff_function": "poly2",
    "radial": [{"grid": {"count": 3, "mode": "shift", "r_lower": 0.8}}],
    "angular": [{"kind": "G5", "zetas": [1, 2, 3, 4, 12], "lambdas": [-1, 1],
                 "grid": {"count": 3, "mode": "center", "r_lower": 1.0, "r_upper": 3.0}}],
}


@pytest.mark.parametrize("config", [G5_WIDE, FULL], ids=["g5", "g4+g5"])
def test_g5_by_spherical_harmonics_equals_triplets(config):
    """The addition-theorem G5 (no triplets) equals the triplet sum to 1e-10, with forces."""
    spec = SymmetryFunctionSpec.from_dict(config)
    triplets = SymmetryFunctions(spec).double()
    harmonics = SymmetryFunctions(spec, angular_method="harmonics").double()
    assert harmonics.g5_harmonics and not triplets.g5_harmonics
    batch = collate([water_box(0), water_box(3)], cutoff=triplets.cutoff, dtype=torch.float64)
    species = triplets.species(batch.numbers)
    grads = []
    for sf in (triplets, harmonics):
        pos = batch.positions.clone().requires_grad_(True)
        g = sf.compute(pos, species, batch.cell, batch.system_idx, batch.edge_index, batch.edge_shift)
        weights = torch.linspace(0.5, 1.5, g.shape[1], dtype=torch.float64)
        (grad,) = torch.autograd.grad((g * weights).sum(), pos)
        grads.append((g.detach(), grad))
    assert float(grads[0][0].abs().max()) > 1.0
    torch.testing.assert_close(grads[1][0], grads[0][0], rtol=1e-10, atol=1e-10)
    torch.testing.assert_close(grads[1][1], grads[0][1], rtol=1e-10, atol=1e-10)


def test_g5_harmonics_falls_back_or_refuses():
    fractional = {**G5_WIDE, "angular": [{"kind": "G5", "zeta": 1.5, "lambda": 1, "eta": 0.1}]}
    sf = SymmetryFunctions(SymmetryFunctionSpec.from_dict(fractional), angular_method="auto")
    assert not sf.g5_harmonics  # non-integer ζ: triplets
    with pytest.raises(ValueError, match="integer ζ"):
        SymmetryFunctions(SymmetryFunctionSpec.from_dict(fractional), angular_method="harmonics")
    with pytest.raises(ValueError, match="angular_method"):
        SymmetryFunctions(SymmetryFunctionSpec.from_dict(G5_WIDE), angular_method="fast")


def test_shifted_g4_float32_matches_float64():
    """G4 with r_s > 0 and a large η (the case where an expanded exponent would cancel)."""
    spec = SymmetryFunctionSpec.from_dict({
        "elements": ["H", "O"], "cutoff": 4.5,
        "angular": [{"kind": "G4", "eta": 16.0, "r_s": 1.5, "zetas": [1, 4], "lambdas": [-1, 1]}]})
    sf = SymmetryFunctions(spec)
    atoms = water_box(seed=3)
    ref = compute(sf.double(), [atoms])
    got = compute(sf.float(), [atoms], dtype=torch.float32).double()
    # Relative error of the non-negligible values: ~5e-6 with one Gaussian per side, 2.5e-5
    # with the expanded exponent −η q₂ + 2η r_s q₁ − 3η r_s² (its cancellation).
    big = ref.abs() > 1e-3 * ref.abs().max()
    assert int(big.sum()) > 50
    assert float(((got - ref).abs()[big] / ref.abs()[big]).max()) < 1e-5
