"""Group sizes of the chunked forward on each device, its host synchronisations (counted on
the CPU), and (``gpu`` tests) the potential on CUDA against the CPU."""

import numpy as np
import pytest
import torch

from device_sync import HostSyncCounter
from mlpot.data import collate
from mlpot.descriptors import SymmetryFunctions, SymmetryFunctionSpec
from mlpot.models import NetworkConfig
from mlpot.models.potential import CPU_CHUNK, GPU_CHUNK_RANGE, auto_chunk_size
from mlpot.neighbours import edge_vectors
from structures_for_tests import water_box
from test_models import make_model


def test_auto_chunk_size_is_the_cpu_size_on_the_cpu_and_follows_free_memory_on_a_gpu():
    assert auto_chunk_size("cpu", 312) == CPU_CHUNK
    lo, hi = GPU_CHUNK_RANGE
    # CUDA is not asked when the free memory is given (so this runs without a GPU).
    assert auto_chunk_size("cuda", 312, free_bytes=10 * 2**30) == int(0.2 * 10 * 2**30 // 312)
    assert auto_chunk_size("cuda", 312, free_bytes=2**20) == lo
    assert auto_chunk_size("cuda:0", 312, free_bytes=2**50) == hi
    assert auto_chunk_size("cuda", 624, free_bytes=10 * 2**30) < auto_chunk_size("cuda", 312, free_bytes=10 * 2**30)


def test_work_item_bytes_counts_shapes_and_power_columns():
    # n2p2's water potential: 5 G4 shapes, ζ ∈ {1, 4} with λ = ±1 (4 power columns).
    spec = SymmetryFunctionSpec.from_dict({
        "elements": ["H", "O"], "cutoff": 6.0,
        "radial": [{"grid": {"count": 4, "mode": "shift", "r_lower": 0.8}}],
        "angular": [{"kind": "G4", "grid": {"count": 5, "mode": "center", "r_lower": 1.0, "r_upper": 5.0},
                     "zetas": [1, 4], "lambdas": [-1, 1]}]})
    sf = SymmetryFunctions(spec)
    assert sf.work_item_bytes(torch.float32) == (24 + 6 * (5 + 4)) * 4
    assert sf.work_item_bytes(torch.float64) == 2 * sf.work_item_bytes(torch.float32)


def test_group_bounds_agree_with_a_direct_count():
    model = make_model()
    model.descriptor.kernel = "torch"
    structures = [water_box(seed=4), water_box(seed=5)[:10]]
    structures[1].pbc = False
    batch = collate(structures, cutoff=model.cutoff, labels=False)
    vec = edge_vectors(batch.positions, batch.cell, batch.system_idx, batch.edge_index, batch.edge_shift)
    starts, first_pairs = model._chunk_groups(batch, 300, vec)
    assert starts[0] == 0 and starts[-1] == len(batch.positions) and len(starts) > 4
    assert all(a < b for a, b in zip(starts, starts[1:]))
    centre = batch.edge_index[0].numpy()
    assert first_pairs == [int(np.searchsorted(centre, a)) for a in starts]


def test_chunked_forward_reads_the_device_a_bounded_number_of_times():
    model = make_model()
    model.descriptor.kernel = "torch"
    batch = collate([water_box(seed=4)], cutoff=model.cutoff, labels=False)
    vec = edge_vectors(batch.positions, batch.cell, batch.system_idx, batch.edge_index, batch.edge_shift)
    n_groups = len(model._chunk_starts(batch, 300, vec)) - 1
    model(batch, chunk_size=300)
    with HostSyncCounter() as counter:
        model(batch, chunk_size=300)
    assert counter.counts["host data"] == 0, counter.events
    # Set-up: 2 (group bounds) + 1 (species check). Per group 8 on the CPU, 7 on a GPU (the
    # radial pre-filter's nonzero is CPU only): the angular pairs, the triplets, their padded
    # layout (2 counts and a boolean mask read and written, descriptors/segments.py) and the
    # element counts of the networks.
    assert counter.total <= 3 + 8 * n_groups, counter.events


def test_repeated_calls_on_one_batch_skip_the_species_check_and_element_counts():
    # MD evaluates one batch's atoms every step: the element check and the per-element
    # counts (two host synchronisations on a GPU) are read once.
    model = make_model()
    model.descriptor.kernel = "torch"
    batch = collate([water_box(seed=4)], cutoff=model.cutoff, labels=False)
    first = model(batch)
    with HostSyncCounter() as counter:
        again = model(batch)
    torch.testing.assert_close(again["forces"], first["forces"], rtol=0, atol=0)
    assert "tolist" not in counter.events  # the element counts
    other = collate([water_box(seed=4)], cutoff=model.cutoff, labels=False)
    with HostSyncCounter() as fresh:
        model(other)
    assert fresh.total == counter.total + 2, (fresh.events, counter.events)


def test_species_memo_follows_in_place_changes_of_the_numbers():
    model = make_model()
    numbers = torch.tensor([1, 8, 1])
    assert model.descriptor.species(numbers).tolist() == [0, 1, 0]
    numbers[1] = 1  # same tensor, new version: looked up again
    assert model.descriptor.species(numbers).tolist() == [0, 0, 0]
    numbers[0] = 29
    with pytest.raises(ValueError, match=r"\['Cu'\] not known"):
        model.descriptor.species(numbers)
    order, counts = model.networks._routing(torch.tensor([1, 0, 1]))
    assert order.tolist() == [1, 0, 2] and counts == [1, 2]


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="CUDA is not available")
@pytest.mark.parametrize("chunk_size", [None, 300, "auto"])
def test_cuda_potential_equals_cpu(chunk_size):
    model = make_model(NetworkConfig(depth=2, width=16, block="residual"))
    structures = [water_box(seed=4), water_box(seed=5)]
    ref = model(collate(structures, labels=False), stress=True)
    gpu_model = make_model(NetworkConfig(depth=2, width=16, block="residual")).to("cuda")
    got = gpu_model(collate(structures, labels=False, device="cuda"), stress=True, chunk_size=chunk_size)
    n_atoms = torch.tensor([len(s) for s in structures], dtype=torch.float64)
    assert float(((got["energy"].cpu() - ref["energy"]) / n_atoms).abs().max()) < 1e-10
    torch.testing.assert_close(got["forces"].cpu(), ref["forces"], rtol=1e-9, atol=1e-10)
    torch.testing.assert_close(got["stress"].cpu(), ref["stress"], rtol=1e-9, atol=1e-12)
    got32 = gpu_model.float()(collate(structures, labels=False, device="cuda", dtype=torch.float32),
                              chunk_size=chunk_size)
    torch.testing.assert_close(got32["forces"].cpu().double(), ref["forces"], rtol=1e-4, atol=1e-4)
