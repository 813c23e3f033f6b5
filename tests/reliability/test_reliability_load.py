"""The ASE calculator under load: memory stays flat over many calls on a 1,000-atom cell, and
calculators in two threads give the results one gives alone.

The memory test makes 250 force calls after 25 warm-up calls (CI time); set
``MLPOT_RELIABILITY_CALLS=1000`` for the full 1,000 the issue asks for."""

from __future__ import annotations

import gc
import os
import threading

import numpy as np
import pytest
from ase.build import bulk

from mlpot import MLPotCalculator

from reliability_setup import write_model

pytestmark = pytest.mark.usefixtures("one_thread")

CALLS = int(os.environ.get("MLPOT_RELIABILITY_CALLS", "250"))


@pytest.fixture(scope="module")
def model_file(tmp_path_factory):
    return write_model(tmp_path_factory.mktemp("model") / "model.pt")


def rss_mib() -> float:
    """Resident memory of this process now (Linux /proc), MiB."""
    with open("/proc/self/statm") as fh:
        return int(fh.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20


@pytest.mark.skipif(not os.path.exists("/proc/self/statm"), reason="needs Linux /proc for the resident size")
def test_memory_stays_flat_over_many_calls(model_file):
    atoms = bulk("Cu", "fcc", a=3.6, cubic=True).repeat((6, 6, 7))  # 1008 atoms
    atoms.numbers[::3] = 79
    atoms.calc = MLPotCalculator(model_file, device="cpu", extrapolation="ignore")
    base = atoms.positions.copy()
    rng = np.random.default_rng(0)

    def call():
        # New positions every call: the calculator computes (and may rebuild its neighbour list).
        atoms.positions = base + rng.normal(0, 0.05, base.shape)
        return atoms.get_forces()

    for _ in range(25):  # allocator pools and caches reach their working size
        call()
    gc.collect()
    before = rss_mib()
    for _ in range(CALLS):
        forces = call()
    gc.collect()
    growth = rss_mib() - before
    assert np.isfinite(forces).all()
    # A per-call leak of the autograd graph (~1 MiB here) or of the pair list (~0.1 MiB)
    # would add tens of MiB; allocator noise stays within a few.
    assert growth < 10.0, f"resident memory grew by {growth:.1f} MiB over {CALLS} calls"


def test_two_threads_with_their_own_calculators_agree_with_one(model_file):
    rng = np.random.default_rng(1)
    cells = []
    for k in range(6):
        atoms = bulk("Cu", "fcc", a=3.6, cubic=True).repeat((2, 2, 2))
        atoms.numbers[rng.permutation(len(atoms))[: 8 + k]] = 79
        atoms.positions += rng.normal(0, 0.1, atoms.positions.shape)
        cells.append(atoms)

    def compute(calc, structures):
        out = []
        for atoms in structures:
            atoms = atoms.copy()
            atoms.calc = calc
            out.append((atoms.get_potential_energy(), atoms.get_forces(), atoms.get_stress()))
        return out

    alone = compute(MLPotCalculator(model_file, device="cpu", extrapolation="ignore"), cells)
    results, errors = {}, []
    start = threading.Barrier(2)

    def worker(name, order):
        try:
            calc = MLPotCalculator(model_file, device="cpu", extrapolation="ignore")
            start.wait()
            results[name] = [compute(calc, [cells[i] for i in order]) for _ in range(3)]
        except Exception as exc:  # surfaced below: an exception in a thread is otherwise lost
            errors.append(exc)

    orders = {"forward": list(range(6)), "backward": list(range(5, -1, -1))}
    threads = [threading.Thread(target=worker, args=item) for item in orders.items()]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=120)
    assert not errors, errors
    for name, order in orders.items():
        for rounds in results[name]:
            for i, (energy, forces, stress) in zip(order, rounds):
                assert energy == alone[i][0]
                assert np.array_equal(forces, alone[i][1]) and np.array_equal(stress, alone[i][2])
