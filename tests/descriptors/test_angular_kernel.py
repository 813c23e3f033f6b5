"""The compiled (numba) angular kernel against the torch implementation it replaces on CPU.

The torch path is itself checked against DScribe, a plain-Python loop reference, finite
differences and n2p2 (test_descriptors.py, test_n2p2.py, which now run the compiled kernel
by default): here the two implementations must agree on values, gradients, stress,
Jacobians and second derivatives, over every built-in cutoff function and term kind.
"""

from __future__ import annotations

import dataclasses
import math

import numpy as np
import pytest
import torch

from mlpot.data import collate
from mlpot.descriptors import SymmetryFunctions, SymmetryFunctionSpec
from mlpot.descriptors import angular_kernel
from mlpot.descriptors.cutoffs import CUTOFF_FUNCTIONS, CutoffFunction
from mlpot.models import NetworkConfig, Potential
from mlpot.neighbours import edge_vectors
from structures_for_tests import ethanol, water_box
from test_descriptors import FULL, RESTRICTED

pytestmark = pytest.mark.skipif(not angular_kernel.numba_available(), reason="numba is not installed")

UNSHIFTED_G4 = {  # n2p2's usual type 3 terms, a per-element subset (the column map)
    "elements": ["H", "O"], "cutoff": 5.0, "cutoff_function": "tanhu",
    "radial": [{"eta": 0.5, "r_s": 0.0}],
    "angular": [
        {"kind": "G4", "eta": 0.05, "zetas": [1, 4], "lambdas": [-1, 1], "centre": "H", "neighbours": ["H", "O"]},
        {"kind": "G4", "eta": 0.2, "zeta": 1, "lambda": 1, "centre": "O"},
        {"kind": "G4", "eta": 0.01, "zeta": 2, "lambda": -1, "neighbours": ["O", "O"], "cutoff": 4.0},
    ],
}
MIXED = {  # shifted G4 and G5, two cutoffs, a fractional ζ: the general path
    "elements": ["H", "O"], "cutoff": 4.5, "cutoff_function": "cos",
    "radial": [{"eta": 0.5, "r_s": 0.0}],
    "angular": [{"kind": "G4", "eta": 0.3, "zetas": [1, 2.5], "lambdas": [-1, 1], "r_s": 0.8},
                {"kind": "G5", "eta": 0.1, "zeta": 4, "lambda": 1, "r_s": 1.2, "cutoff": 3.5},
                {"kind": "G5", "eta": 0.02, "zeta": 1, "lambda": -1}],
}
CONFIGS = {"full": FULL, "restricted": RESTRICTED, "unshifted-g4": UNSHIFTED_G4, "mixed": MIXED}


def pair(config: dict, dtype=torch.float64, **kwargs) -> tuple[SymmetryFunctions, SymmetryFunctions]:
    """The same descriptor with the compiled and with the torch kernel."""
    spec = SymmetryFunctionSpec.from_dict(config)
    compiled = SymmetryFunctions(spec, kernel="numba", **kwargs).to(dtype)
    reference = SymmetryFunctions(spec, kernel="torch", **kwargs).to(dtype)
    return compiled, reference


def values_and_gradient(sf: SymmetryFunctions, batch, weights: torch.Tensor):
    """Raw descriptors and ∂(Σ w·G)/∂r_pair."""
    vec = edge_vectors(batch.positions, batch.cell, batch.system_idx, batch.edge_index,
                       batch.edge_shift).requires_grad_(True)
    species = sf.species(batch.numbers)
    raw = sf.compute_from_vectors(vec, species, batch.edge_index, batch.positions.shape[0])
    (grad,) = torch.autograd.grad((weights * raw).sum(), vec)
    return raw.detach(), grad


def structures():
    return [water_box(seed=0), water_box(seed=3)[:9], ethanol()]


def assert_kernels_agree(compiled: SymmetryFunctions, reference: SymmetryFunctions, atoms: list, seed: int):
    """Descriptors and pair-vector gradients of random weights agree to 1e-10 (float64)."""
    batch = collate(atoms, cutoff=compiled.cutoff, labels=False, dtype=torch.float64)
    weights = torch.randn(batch.positions.shape[0], compiled.max_features, dtype=torch.float64,
                          generator=torch.Generator().manual_seed(seed))
    got, got_grad = values_and_gradient(compiled, batch, weights)
    expected, expected_grad = values_and_gradient(reference, batch, weights)
    assert float(expected.abs().max()) > 0.1 and float(expected_grad.abs().max()) > 1e-2  # not zeros
    torch.testing.assert_close(got, expected, rtol=1e-10, atol=1e-12)
    torch.testing.assert_close(got_grad, expected_grad, rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("name", CONFIGS)
def test_values_and_gradients_equal_torch(name):
    compiled, reference = pair(dict(CONFIGS[name], elements=["H", "C", "O"]))
    assert compiled.uses_compiled_kernel("cpu") and not reference.uses_compiled_kernel("cpu")
    assert_kernels_agree(compiled, reference, structures(), seed=0)


@pytest.mark.parametrize("cutoff_function", sorted(angular_kernel.NUMBA_CUTOFF_CODES))
def test_every_builtin_cutoff_function(cutoff_function):
    """Values and gradients with each cutoff function the kernel compiles (α = 0.3 where
    the function has an inner radius), including the f_c(r_jk) of the third side."""
    alpha = 0.0 if cutoff_function.startswith("tanh") else 0.3
    compiled, reference = pair(dict(MIXED, cutoff_function=cutoff_function, cutoff_alpha=alpha))
    assert_kernels_agree(compiled, reference, [water_box(seed=1)], seed=1)


def test_harmonic_g5_with_compiled_g4():
    """G5 by spherical harmonics beside G4 terms in the kernel: the columns line up."""
    compiled, reference = pair(FULL, angular_method="harmonics")
    assert compiled.g5_harmonics
    assert_kernels_agree(compiled, reference, [water_box(seed=2)], seed=2)


@pytest.mark.parametrize("name", ["full", "restricted", "mixed"])
def test_jacobian_equals_forward_mode(name):
    """The kernel's per-pair Jacobian (descriptor cache) equals the forward-mode one."""
    compiled, reference = pair(CONFIGS[name])
    batch = collate([water_box(seed=0), water_box(seed=4)[:12]], cutoff=compiled.cutoff, dtype=torch.float64)
    species = compiled.species(batch.numbers)
    args = (batch.positions, species, batch.cell, batch.system_idx, batch.edge_index, batch.edge_shift)
    raw, jac = compiled.jacobian(*args)
    raw_ref, jac_ref = reference.jacobian(*args)
    torch.testing.assert_close(raw, raw_ref, rtol=1e-10, atol=1e-12)
    assert torch.equal(jac.angular_row, jac_ref.angular_row)
    dense = compiled.dense_jacobian(jac, species, batch.edge_index)
    dense_ref = reference.dense_jacobian(jac_ref, species, batch.edge_index)
    assert float(dense_ref.abs().max()) > 1e-2
    torch.testing.assert_close(dense, dense_ref, rtol=1e-10, atol=1e-12)


def make_model(kernel: str) -> Potential:
    torch.manual_seed(0)
    model = Potential(SymmetryFunctionSpec.from_dict(MIXED), NetworkConfig(hidden=[16, 16], activation="tanh"))
    model.descriptor.kernel = kernel
    model = model.double()
    batches = [collate([water_box(seed=5)], cutoff=model.cutoff, labels=False, dtype=torch.float64)]
    model.descriptor.fit_scaling(batches)
    return model


def test_forces_and_stress_equal_torch():
    compiled, reference = make_model("numba"), make_model("torch")
    reference.load_state_dict(compiled.state_dict())
    reference.descriptor.scaler = compiled.descriptor.scaler
    batch = collate([water_box(seed=6)], cutoff=compiled.cutoff, labels=False, dtype=torch.float64)
    got = compiled.eval()(batch, forces=True, stress=True)
    expected = reference.eval()(batch, forces=True, stress=True)
    for key in ("energy", "forces", "stress"):
        torch.testing.assert_close(got[key], expected[key], rtol=1e-10, atol=1e-12)


def test_double_backward_is_exact():
    """With create_graph (training on forces without the descriptor cache), the backward
    differentiates the torch implementation: the force loss's parameter gradients and a
    Hessian-vector product equal the torch kernel's."""
    compiled, reference = make_model("numba"), make_model("torch")
    reference.load_state_dict(compiled.state_dict())
    reference.descriptor.scaler = compiled.descriptor.scaler
    batch = collate([water_box(seed=7)], cutoff=compiled.cutoff, labels=False, dtype=torch.float64)
    grads, hvps = [], []
    for model in (compiled, reference):
        model.train()
        out = model(batch, forces=True, create_graph=True)
        loss = out["forces"].pow(2).sum()
        params = list(model.networks.parameters())
        # allow_unused: the output bias does not reach the forces.
        grads.append([torch.zeros_like(p) if g is None else g for g, p in
                      zip(torch.autograd.grad(loss, params, allow_unused=True), params)])
        positions = batch.positions.detach().requires_grad_(True)
        energy = model(dataclasses.replace(batch, positions=positions), forces=False)["energy"].sum()
        (g,) = torch.autograd.grad(energy, positions, create_graph=True)
        # A random direction: a uniform one is a translation, whose Hessian product is 0.
        direction = torch.randn(g.shape, dtype=g.dtype, generator=torch.Generator().manual_seed(4))
        (hvp,) = torch.autograd.grad((g * direction).sum(), positions)
        hvps.append(hvp)
    assert max(float(g.abs().max()) for g in grads[1]) > 1e-3
    for a, b in zip(*grads):
        torch.testing.assert_close(a, b, rtol=1e-9, atol=1e-12)
    assert float(hvps[1].abs().max()) > 1e-3
    torch.testing.assert_close(hvps[0], hvps[1], rtol=1e-9, atol=1e-12)


def test_threads_split_centres_without_changing_results(monkeypatch):
    compiled, _ = pair(UNSHIFTED_G4)
    batch = collate([water_box(seed=8)], cutoff=compiled.cutoff, labels=False, dtype=torch.float64)
    weights = torch.randn(batch.positions.shape[0], compiled.max_features, dtype=torch.float64,
                          generator=torch.Generator().manual_seed(3))
    one, one_grad = values_and_gradient(compiled, batch, weights)
    monkeypatch.setattr(angular_kernel, "_MIN_TRIPLETS_PER_THREAD", 10)
    threads = torch.get_num_threads()
    torch.set_num_threads(3)
    try:
        offsets = np.array([0, *np.cumsum(np.bincount(batch.edge_index[0].numpy()))])
        assert len(angular_kernel._atom_ranges(offsets, 3)) == 3
        many, many_grad = values_and_gradient(compiled, batch, weights)
    finally:
        torch.set_num_threads(threads)
    torch.testing.assert_close(many, one, rtol=1e-13, atol=1e-14)
    torch.testing.assert_close(many_grad, one_grad, rtol=1e-13, atol=1e-14)


def test_float32_inputs_give_float32_results_close_to_float64():
    compiled32, _ = pair(FULL, dtype=torch.float32)
    compiled64, _ = pair(FULL)
    atoms = water_box(seed=9)
    g32 = compiled32(collate([atoms], labels=False, dtype=torch.float32), scaled=False)
    g64 = compiled64(collate([atoms], labels=False, dtype=torch.float64), scaled=False)
    assert g32.dtype == torch.float32
    torch.testing.assert_close(g32.double(), g64, rtol=1e-5, atol=1e-6)


def test_isolated_atoms_and_structures_without_triplets():
    """An atom with no neighbour and a dimer (pairs, no triplets) give zeros and finite
    gradients in the kernel, as in torch."""
    from ase import Atoms

    compiled, reference = pair(FULL)
    lonely = Atoms("OHH", positions=[[0, 0, 0], [0.96, 0, 0], [20.0, 0, 0]])
    dimer = Atoms("OH", positions=[[0, 0, 0], [0.97, 0, 0]])
    batch = collate([lonely, dimer], cutoff=compiled.cutoff, labels=False, dtype=torch.float64)
    weights = torch.ones(batch.positions.shape[0], compiled.max_features, dtype=torch.float64)
    got, got_grad = values_and_gradient(compiled, batch, weights)
    expected, expected_grad = values_and_gradient(reference, batch, weights)
    assert torch.isfinite(got_grad).all()
    assert torch.all(got[2] == 0)
    torch.testing.assert_close(got, expected, rtol=1e-12, atol=1e-14)
    torch.testing.assert_close(got_grad, expected_grad, rtol=1e-12, atol=1e-14)


def test_user_cutoff_function_uses_torch_and_numba_refuses(monkeypatch):
    monkeypatch.setitem(CUTOFF_FUNCTIONS, "cubic_test", CutoffFunction(lambda x: (1.0 - x) ** 3, True))
    spec = SymmetryFunctionSpec.from_dict(dict(FULL, cutoff_function="cubic_test"))
    assert not SymmetryFunctions(spec).uses_compiled_kernel("cpu")  # auto: torch
    with pytest.raises(ValueError, match="cubic_test"):
        SymmetryFunctions(spec, kernel="numba")
    with pytest.raises(ValueError, match="kernel must be"):
        SymmetryFunctions(spec, kernel="fast")


def test_vectorisable_exp_matches_libm():
    """The kernel's inlined exp and expm1 agree with libm to 2 ulp over their range."""
    # Every 7th of a log grid down to −707.9, and the edges of the polynomial's range.
    x = np.concatenate([-np.logspace(-300, np.log10(707.9), 20001)[::7], [0.0, -1e-320, -0.3465, -0.3466]])
    got = np.array([angular_kernel._exp(v) for v in x])
    np.testing.assert_allclose(got, np.exp(x), rtol=4.5e-16, atol=0)
    assert angular_kernel._exp(-709.0) == 0.0 and angular_kernel._exp(-1e5) == 0.0
    small = -np.logspace(-12, math.log10(2.0), 500)
    got_m1 = np.array([angular_kernel._expm1(v) for v in small])
    np.testing.assert_allclose(got_m1, np.expm1(small), rtol=4.5e-16, atol=0)
