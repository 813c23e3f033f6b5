"""The GPU path of the neighbour list (vesin's torch interface), checked on the CPU.

``device_pairs`` is what ``neighbour_pairs`` runs for a batch on a GPU; vesin's torch
interface also takes CPU tensors, so its pairs, its host synchronisations and the fall-back
to the host path are all checked here without a GPU. The ``gpu`` test runs the same
comparison on CUDA where it exists.
"""

import sys

import numpy as np
import pytest
import torch

import mlpot.neighbours.pairs as pairs_module
from device_sync import HostSyncCounter
from mlpot.data import collate
from mlpot.neighbours.pairs import _device_or_host_pairs, _host_pairs, device_pairs
from structures_for_tests import ethanol, nacl_crystal, sic_tiny_cell, slab, water_box

CUTOFF = 4.5


def _mixed_batch(device="cpu", dtype=torch.float64):
    """Open, periodic, triclinic, partly periodic and smaller-than-cutoff cells together."""
    return collate([ethanol(), water_box(seed=1), nacl_crystal(), slab(), sic_tiny_cell()], labels=False,
                   device=device, dtype=dtype)


def _offsets(batch) -> np.ndarray:
    return np.concatenate([[0], np.cumsum(batch.n_atoms.tolist())]).astype(np.int64)


def _as_set(edge_index: torch.Tensor, shifts: torch.Tensor) -> list:
    i, j = edge_index.cpu().tolist()
    return sorted(zip(i, j, map(tuple, shifts.cpu().long().tolist())))


def test_device_path_equals_host_path_on_cpu_tensors():
    batch = _mixed_batch()
    got = device_pairs(batch.positions, batch.cell, batch.pbc, _offsets(batch), CUTOFF)
    ref = _host_pairs(batch.positions, batch.cell, batch.pbc, _offsets(batch), CUTOFF)
    assert _as_set(*got) == _as_set(*ref)
    assert bool((got[0][0].diff() >= 0).all()), "pairs must be sorted by centre"


def test_device_path_reads_the_batch_once_whatever_the_structure_count():
    # One .tolist() of the per-structure periodicity, not a bool() per structure: on a GPU
    # each would wait for the device (128 replicas of batched MD: 128 synchronisations).
    batch = _mixed_batch()
    offsets = _offsets(batch)
    with HostSyncCounter() as counter:
        device_pairs(batch.positions, batch.cell, batch.pbc, offsets, CUTOFF)
    assert counter.total == 1, counter.events


def test_failing_device_kernels_fall_back_to_the_host_with_one_warning(monkeypatch):
    def broken(*args):
        raise RuntimeError("vesin was built without CUDA support")

    batch = _mixed_batch()
    monkeypatch.setattr(pairs_module, "device_pairs", broken)
    monkeypatch.setattr(pairs_module, "_FALLBACK_WARNED", False)
    with pytest.warns(UserWarning, match="building them on the host"):
        got = _device_or_host_pairs(batch.positions, batch.cell, batch.pbc, _offsets(batch), CUTOFF)
    ref = _host_pairs(batch.positions, batch.cell, batch.pbc, _offsets(batch), CUTOFF)
    assert _as_set(*got) == _as_set(*ref)
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("error")  # the second fall-back is silent
        _device_or_host_pairs(batch.positions, batch.cell, batch.pbc, _offsets(batch), CUTOFF)


def test_an_unloadable_vesin_torch_fails_the_device_path_only(monkeypatch):
    batch = _mixed_batch()
    monkeypatch.setitem(sys.modules, "vesin.torch", None)  # import raises ImportError
    with pytest.raises(RuntimeError, match="vesin-torch cannot be imported"):
        device_pairs(batch.positions, batch.cell, batch.pbc, _offsets(batch), CUTOFF)
    assert batch.with_neighbours(CUTOFF).edge_index.shape[1] > 0  # the CPU path never needs it


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="CUDA is not available")
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_cuda_pairs_equal_cpu_pairs(dtype):
    ref = _mixed_batch(dtype=dtype).with_neighbours(CUTOFF)
    got = _mixed_batch("cuda", dtype).with_neighbours(CUTOFF)
    assert got.edge_index.is_cuda and got.edge_shift.dtype == dtype
    assert _as_set(got.edge_index, got.edge_shift) == _as_set(ref.edge_index, ref.edge_shift)
    assert bool((got.edge_index[0].diff() >= 0).all())
