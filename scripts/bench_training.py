#!/usr/bin/env python
"""Training throughput: structures per second of force training, mlpot cached and uncached
against a TorchANI training loop, with peak memory.

Data: the first ``--frames`` DeePMD liquid-water frames (192 atoms each,
../shared/datasets/deepmd-water/data_0; an unlabelled ASE stand-in with random labels when
that folder is absent — throughput does not depend on the labels). Models of comparable size:
mlpot with the ANI-like descriptor of scripts/bench_descriptors.py (128 features per element)
and per-element networks 256-192-160 (GELU); TorchANI's ``simple_ani`` with the same numbers of
radial and angular shifts and its default networks. One step = energy + force loss on
``--batch`` structures, double backward, Adam update (mlpot: its trainer's fused Adam;
TorchANI: torch's default Adam).

Rows:
* ``mlpot uncached``: descriptors and their graph rebuilt every step
  (``training.descriptor_cache: none``);
* ``mlpot cached``: descriptors and pair Jacobians computed once (time reported apart),
  forces as −Jᵀ∂E/∂G (``descriptor_cache: memory``, the default);
* ``mlpot hdf5``: the same cache in an HDF5 file (``descriptor_cache: hdf5``), each step
  reading its batch from the file; the file is evicted from the OS page cache
  (``posix_fadvise``) before timing, so the reads come from the disk as they would for a
  cache larger than the RAM (``--warm`` keeps it cached); ``--compression`` picks the filter;
  the next batch is read during the current step as in the trainer (``--no-prefetch``: not);
* ``TorchANI``: AEVs recomputed every step, as its training loop does.

Each case runs in a fresh subprocess so its peak memory is its own. Ratios are against
``mlpot uncached`` measured in the same run.

Usage: python scripts/bench_training.py [--frames 40] [--batch 4] [--steps 10] [--threads 1]
       [--compression none|lzf|gzip] [--warm]
       python scripts/bench_training.py --many 8 [--steps 3] [--threads 2]   (models trained
       together vs one by one: scripts/bench_many.py)
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
os.environ.setdefault("TORCHANI_NO_WARN_EXTENSIONS", "1")
CASES = ["mlpot-uncached", "mlpot-cached", "mlpot-hdf5", "torchani"]


def frames(n: int):
    import numpy as np

    from bench_descriptors import WATER, water

    if WATER.exists():
        from mlpot.data import read

        return read(WATER)[:n], "DeePMD water"
    from ase.calculators.singlepoint import SinglePointCalculator

    rng = np.random.default_rng(0)
    out = []
    for k in range(n):
        atoms, _ = water(1)
        atoms.rattle(0.05, seed=k)
        atoms.calc = SinglePointCalculator(atoms, energy=float(rng.normal()),
                                           forces=rng.normal(size=(len(atoms), 3)))
        out.append(atoms)
    return out, "ASE water stand-in with random labels (no ../shared)"


def evict(path) -> None:
    """Drop ``path`` from the OS page cache (clean pages only; no privileges needed)."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
        os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
    finally:
        os.close(fd)


def _mlpot_case(case: str, structures: list, compression: str) -> tuple:
    """mlpot's model, batch store and training step for ``case``; ``extra`` collects the
    case's cache figures (and, for the HDF5 file, the time its reads take)."""
    import tempfile

    import torch

    from bench_md import mlpot_model
    from mlpot.training.config import OptimizerConfig
    from mlpot.training.data import BatchStore
    from mlpot.training.optim import build_optimizer

    model = mlpot_model("cpu", torch.float32).train()
    store = BatchStore(structures, cutoff=model.cutoff, dtype=torch.float32)
    extra, folder = {}, None
    if case == "mlpot-cached":
        t = time.perf_counter()
        nbytes = store.cache_descriptors(model.descriptor, dtype=torch.float32)
        extra = {"cache_s": time.perf_counter() - t, "cache_mib": nbytes / 2**20}
    elif case == "mlpot-hdf5":
        folder = tempfile.TemporaryDirectory(prefix="bench-h5-")
        t = time.perf_counter()
        nbytes, _ = store.open_or_build_descriptor_file(
            model.descriptor, folder.name, dtype=torch.float32,
            compression=None if compression == "none" else compression, log=None)
        extra = {"cache_s": time.perf_counter() - t, "file_mib": nbytes / 2**20, "compression": compression,
                 "read_s": 0.0}
        read = store.descriptor_file.read

        def timed_read(idx):  # the step's file reads, timed apart
            t0 = time.perf_counter()
            out = read(idx)
            extra["read_s"] += time.perf_counter() - t0
            return out

        store.descriptor_file.read = timed_read
    # mlpot's trainer's optimiser (fused Adam where the parameters allow it).
    optimizer = build_optimizer(model.parameters(), OptimizerConfig(name="adam", lr=1e-4, weight_decay=0.0))

    def step(idx, cached):
        b, raw, jac = cached
        b = b.to(None, torch.float32)
        if raw is None:
            out = model(b, forces=True, create_graph=True)
        else:
            out = model.forward_from_descriptors(b, raw, jac, forces=True, create_graph=True)
        loss = ((out["energy"] - b.targets.energy) / b.n_atoms).pow(2).mean() + \
            (out["forces"] - b.targets.forces).pow(2).mean()
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()

    return store, step, extra, folder


def _torchani_step(structures: list):
    """TorchANI's training step on the same frames (energies and forces, the same loss)."""
    import numpy as np
    import torch
    import torchani

    # "all_pairs": TorchANI's batched neighbour list (its cell list takes one structure)
    model = torchani.models.simple_ani(symbols=("H", "O"), lot="wb97x-631gd", repulsion=False,
                                       cutoff_fn="cosine", neighborlist="all_pairs",
                                       radial_shifts=16, angular_shifts=4, sections=8).float()
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-4)
    species = torch.as_tensor(np.stack([a.numbers for a in structures]))
    coords_all = torch.as_tensor(np.stack([a.positions for a in structures]), dtype=torch.float32)
    cell = torch.as_tensor(structures[0].cell.array, dtype=torch.float32)
    pbc = torch.tensor([True, True, True])
    energy = torch.as_tensor([a.get_potential_energy() for a in structures], dtype=torch.float32)
    forces = torch.as_tensor(np.stack([a.get_forces() for a in structures]), dtype=torch.float32)
    assert all(np.allclose(a.cell.array, structures[0].cell.array) for a in structures), "cells differ"

    def step(idx, _):
        coords = coords_all[idx].clone().requires_grad_(True)
        # all frames share one cubic box (checked above), so the batch shares the cell
        e = model((species[idx], coords), cell=cell, pbc=pbc).energies
        (f,) = torch.autograd.grad(-e.sum(), coords, create_graph=True)
        loss = ((e - energy[idx]) / coords.shape[1]).pow(2).mean() + (f - forces[idx]).pow(2).mean()
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()

    return step


def run_case(case: str, n_frames: int, batch: int, steps: int, compression: str = "none",
             warm: bool = False, prefetch: bool = True) -> dict:
    """Median training throughput (structures/s) of ``case`` and the growth of peak RSS (MiB)."""
    import torch

    structures, source = frames(n_frames)
    rss0 = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    if case.startswith("mlpot"):
        store, step, extra, folder = _mlpot_case(case, structures, compression)
    else:
        step, extra = _torchani_step(structures), {}
    order = torch.randperm(len(structures), generator=torch.Generator().manual_seed(0))
    load = store.cached_batch if case.startswith("mlpot") else (lambda idx: None)
    step(order[:batch], load(order[:batch]))  # warm-up
    if case == "mlpot-hdf5":
        extra["read_s"] = 0.0
        if not warm:
            evict(store.descriptor_file.path)
    index_lists = [order[(k * batch) % len(order):][:batch] for k in range(steps)]
    # As the trainer does: with a cache file, the next batch is read while a step trains.
    batches = (store.iter_cached_batches(index_lists, prefetch=None if prefetch else False)
               if case.startswith("mlpot") else iter([None] * steps))
    times = []
    for idx in index_lists:
        t = time.perf_counter()
        step(idx, next(batches))  # the batch's read (or the wait for its prefetch) is timed
        times.append(time.perf_counter() - t)
    times.sort()
    rss1 = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    if case == "mlpot-hdf5":
        extra["read_ms_per_batch"] = 1e3 * extra.pop("read_s") / steps
        store.clear_descriptor_cache()
        folder.cleanup()
    return {"structures_per_s": batch / times[len(times) // 2], "peak_mib": (rss1 - rss0) / 1024,
            "source": source, **extra}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--frames", type=int, default=40)
    parser.add_argument("--batch", type=int, default=4)
    parser.add_argument("--steps", type=int, default=10)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--cases", nargs="*", default=CASES)
    parser.add_argument("--compression", choices=["none", "lzf", "gzip"], default="none",
                        help="HDF5 filter of the mlpot-hdf5 case")
    parser.add_argument("--warm", action="store_true", help="mlpot-hdf5: leave the file in the page cache")
    parser.add_argument("--no-prefetch", action="store_true", help="mlpot-hdf5: read each batch when needed")
    parser.add_argument("--many", type=int, default=0, metavar="N",
                        help="instead: N seeds of examples/mlearn.yaml trained together vs one by one "
                             "(scripts/bench_many.py; --steps is its number of epochs)")
    parser.add_argument("--worker", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.many:
        import bench_many

        return bench_many.run(args.many, args.steps, args.threads)
    if args.worker:
        import torch

        torch.set_num_threads(args.threads)
        print(json.dumps(run_case(args.worker, args.frames, args.batch, args.steps, args.compression,
                                  args.warm, not args.no_prefetch)))
        return 0
    results = {}
    for case in args.cases:
        if case == "torchani":
            import importlib.util

            if importlib.util.find_spec("torchani") is None:
                print("torchani not installed: its row is skipped (pip install -e '.[bench]')")
                continue
        proc = subprocess.run([sys.executable, __file__, "--worker", case, "--frames", str(args.frames),
                               "--batch", str(args.batch), "--steps", str(args.steps),
                               "--threads", str(args.threads), "--compression", args.compression]
                              + ["--warm"] * args.warm + ["--no-prefetch"] * args.no_prefetch,
                              capture_output=True, text=True)
        if proc.returncode != 0:
            print(f"{case} failed:\n{proc.stderr[-2000:]}")
            continue
        results[case] = json.loads(proc.stdout.strip().splitlines()[-1])
    if not results:
        return 1
    source = next(iter(results.values()))["source"]
    print(f"# force training, CPU, {args.threads} thread(s), float32, batch {args.batch} × 192 atoms, "
          f"median of {args.steps} steps; {source}, {args.frames} frames")
    print(f"{'case':<16}{'structures/s':>14}{'peak MiB':>10}  ratio vs mlpot uncached")
    ref = results.get("mlpot-uncached", {}).get("structures_per_s")
    for case, r in results.items():
        ratio = f"{r['structures_per_s'] / ref:.2f}×" if ref else ""
        print(f"{case:<16}{r['structures_per_s']:>14.2f}{r['peak_mib']:>10.0f}  {ratio}")
    if "mlpot-cached" in results:
        r = results["mlpot-cached"]
        print(f"(cache: {r['cache_mib']:.0f} MiB, built once in {r['cache_s']:.1f} s)")
    if "mlpot-hdf5" in results:
        r = results["mlpot-hdf5"]
        print(f"(hdf5 file: {r['file_mib']:.0f} MiB, compression {r['compression']}, built in "
              f"{r['cache_s']:.1f} s; reads {r['read_ms_per_batch']:.1f} ms per batch, "
              f"{'page cache warm' if args.warm else 'evicted from the page cache before timing'}, "
              f"{'no prefetch' if args.no_prefetch else 'next batch prefetched'})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
