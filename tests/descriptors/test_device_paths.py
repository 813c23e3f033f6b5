"""The descriptor's GPU path (torch triplet sums, G5 by harmonics), checked on the CPU for
what would stall a GPU, and on CUDA (``gpu`` tests) against the compiled CPU kernel."""

import pytest
import torch

from device_sync import HostSyncCounter
from mlpot.data import collate
from mlpot.descriptors import SymmetryFunctions, SymmetryFunctionSpec
from structures_for_tests import water_box

# G4 and G5 terms, shifted and unshifted, two cutoffs: every branch of the triplet sums.
SPEC = {
    "elements": ["H", "O"], "cutoff": 4.0, "cutoff_function": "poly2",
    "radial": [{"grid": {"count": 4, "mode": "shift", "r_lower": 0.8}}],
    "angular": [{"kind": "G4", "eta": 0.1, "zetas": [1, 4], "lambdas": [-1, 1]},
                {"kind": "G4", "eta": 0.2, "zetas": [2], "lambdas": [1], "cutoff": 3.5},
                {"kind": "G5", "eta": 0.3, "zeta": 2, "lambda": 1, "r_s": 0.7}],
}
# G5 terms that harmonics can sum (integer ζ, outer-product layout with the G4 terms).
HARMONIC_SPEC = {**SPEC, "angular": [{"kind": "G4", "eta": 0.1, "zetas": [1, 4], "lambdas": [-1, 1]},
                                     {"kind": "G5", "eta": 0.3, "zeta": 2, "lambda": 1}]}


def _descriptor(angular_method: str = "triplets", kernel: str = "torch") -> SymmetryFunctions:
    spec = HARMONIC_SPEC if angular_method == "harmonics" else SPEC
    return SymmetryFunctions(SymmetryFunctionSpec.from_dict(spec), angular_method=angular_method,
                             kernel=kernel).double()


def _values_and_gradient(sf: SymmetryFunctions, device: str, dtype: torch.dtype) -> tuple[torch.Tensor, ...]:
    """Descriptors (N, F) of two water boxes and ∂(Σ w·G)/∂R (N, 3), on the CPU in float64."""
    batch = collate([water_box(seed=0), water_box(seed=3)], labels=False, device=device,
                    dtype=dtype).with_neighbours(sf.cutoff)
    sf = sf.to(device=device, dtype=dtype)
    positions = batch.positions.clone().requires_grad_(True)
    species = sf.species(batch.numbers)
    g = sf.compute(positions, species, batch.cell, batch.system_idx, batch.edge_index, batch.edge_shift)
    weights = torch.linspace(-1.0, 1.0, g.numel(), dtype=dtype, device=device).view_as(g)
    (grad,) = torch.autograd.grad((weights * g).sum(), positions)
    return g.detach().cpu().double(), grad.cpu().double()


@pytest.mark.parametrize("angular_method", ["triplets", "harmonics"])
def test_torch_path_makes_no_tensor_from_host_data(angular_method):
    # A tensor built from a Python list is, on a GPU, a pageable copy that PyTorch waits
    # for: the triplet sums used to make four per call (their padding rows).
    sf = _descriptor(angular_method)
    batch = collate([water_box(seed=0)], labels=False).with_neighbours(sf.cutoff)
    species = sf.species(batch.numbers)
    with HostSyncCounter() as counter:
        sf.compute(batch.positions, species, batch.cell, batch.system_idx, batch.edge_index, batch.edge_shift)
    assert counter.counts["host data"] == 0, counter.events


def test_pair_lengths_are_computed_once():
    sf = _descriptor()
    batch = collate([water_box(seed=0)], labels=False).with_neighbours(sf.cutoff)
    norms = []

    class Norms(torch.overrides.TorchFunctionMode):
        def __torch_function__(self, func, types, args=(), kwargs=None):
            if func is torch.linalg.vector_norm:
                norms.append(args[0].shape)
            return func(*args, **(kwargs or {}))

    vec = batch.positions[batch.edge_index[1]] - batch.positions[batch.edge_index[0]] + batch.edge_shift @ batch.cell[0]
    with Norms():
        sf.compute_from_vectors(vec, sf.species(batch.numbers), batch.edge_index, len(batch.positions))
    assert len(norms) == 1, norms


def test_jacobian_blocks_default_to_the_device_size():
    from mlpot.descriptors.symmetry_functions import TRIPLET_BLOCK

    sf = _descriptor()
    batch = collate([water_box(seed=0)], labels=False).with_neighbours(sf.cutoff)
    args = (batch.positions, sf.species(batch.numbers), batch.cell, batch.system_idx, batch.edge_index,
            batch.edge_shift)
    g, jac = sf.jacobian(*args)  # triplet_block None: TRIPLET_BLOCK["cpu"]
    g_small, jac_small = sf.jacobian(*args, triplet_block=64)
    torch.testing.assert_close(jac.angular, jac_small.angular, rtol=1e-12, atol=1e-14)
    torch.testing.assert_close(g, g_small, rtol=0, atol=0)
    assert TRIPLET_BLOCK["cuda"] > TRIPLET_BLOCK["cpu"]


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="CUDA is not available")
@pytest.mark.parametrize("angular_method", ["triplets", "harmonics"])
def test_cuda_torch_path_equals_compiled_cpu_kernel(angular_method):
    ref_g, ref_grad = _values_and_gradient(_descriptor(angular_method, kernel="auto"), "cpu", torch.float64)
    g, grad = _values_and_gradient(_descriptor(angular_method), "cuda", torch.float64)
    torch.testing.assert_close(g, ref_g, rtol=1e-10, atol=1e-12)
    torch.testing.assert_close(grad, ref_grad, rtol=1e-10, atol=1e-11)
    g32, grad32 = _values_and_gradient(_descriptor(angular_method), "cuda", torch.float32)
    torch.testing.assert_close(g32, ref_g, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(grad32, ref_grad, rtol=1e-4, atol=1e-4)
