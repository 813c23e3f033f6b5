#!/usr/bin/env python
"""Teacher-labelled liquid water: a data-size ladder with a known truth, split by trajectory.

The teacher is the published n2p2 RPBE-D3 water potential (Morawietz et al., PNAS 113, 8368
(2016); ../shared/potentials/n2p2-H2O_RPBE-D3), imported as an mlpot model (it reproduces
n2p2 to 1e-14) and cached as OUT/teacher.pt. Starting from K different frames of the
DeePMD-kit liquid water data (64 H2O, 192 atoms, cubic 12.44 Å box; ../shared/datasets/deepmd-water),
each with its own Maxwell–Boltzmann velocities, the teacher itself runs K independent NVT
Langevin trajectories (mlpot.md.engine.BatchedMD, BAOAB, CPU, float64). After
``--equilibrate`` steps one frame is kept every ``--stride`` steps, ``--frames`` per
trajectory, and labelled with the teacher's energy, forces and stress (the teacher evaluated
again on the frame as written: positions wrapped into the cell and rounded to the 8 decimals
extended XYZ keeps, so the file's labels are exactly the teacher's at the file's positions).
Every frame carries ``info["trajectory"]`` (k), ``info["step"]`` (MD step, counted from the
start frame), ``info["start_frame"]`` (index into the DeePMD frames) and
``info["teacher_extrapolating_atoms"]`` (atoms with a symmetry function outside the
teacher's training range, n2p2's strict check).

Outputs (OUT, default runs/teacher-water: git-ignored, these data derive from ../shared and
must not be committed):

- ``traj-<k>.extxyz`` (+ ``traj-<k>.json``, its settings and timing): one file per trajectory,
  written atomically when its batch finishes; a rerun skips trajectories whose file exists;
- ``trajectories.extxyz``: all frames, trajectory by trajectory;
- the ladder. Trajectories are never split: neighbouring MD frames are nearly identical, so a
  frame-by-frame split would leak test frames into training. The last ``--test``
  trajectories form the fixed held-out ``test.extxyz``; for each n in ``--sizes``,
  ``train-<n>traj.extxyz`` holds all frames of training trajectories 0 … n−1. The ladder is
  nested (each training set contains the smaller ones) and every rung is tested on the same
  held-out trajectories, so the data-size axis changes only the amount of (independent)
  training data. A validation split, if wanted, should again be taken by trajectory;
- ``manifest.json``: settings, sha256 of the teacher (model file and n2p2 source files),
  frames per trajectory, the ladder, and wall times.

Trajectories run ``--batch`` at a time as replicas of one BatchedMD (one shared Langevin
noise stream per batch, seeded from ``--seed`` and the batch's first trajectory), so the
output is deterministic given the settings (one thread); the batch is also the unit of
resumption. On the CPU a larger batch barely speeds up this potential (≈ 230 µs/atom/step
either way), so the default keeps batches small and a lost run cheap. The settings that
determine the trajectories are stored in OUT/plan.json; a rerun with different ones into the
same OUT is refused (use another ``--out`` or ``--force``).

Usage: python scripts/make_teacher_water.py [--out runs/teacher-water] [--trajectories 16]
           [--frames 20] [--stride 40] [--equilibrate 200] [--sizes 1 2 4 6 8 12] [--test 4]
           [--batch 4] [--seed 0] [--force]
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT.parent / "shared"
TEACHER = SHARED / "potentials" / "n2p2-H2O_RPBE-D3"
STARTS = SHARED / "datasets" / "deepmd-water"
PLAN = "plan.json"
# Settings that determine the trajectories' content: a rerun must agree on all of them.
PLAN_KEYS = ("trajectories", "frames", "stride", "equilibrate", "timestep_fs", "temperature_K",
             "friction_per_fs", "seed", "batch", "skin", "teacher_source_sha256", "starts")
PROBE_STEPS = 5  # steps timed for the estimate (after one warm-up step)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """The command line, validated: sizes sorted and deduplicated, every count >= 1."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0],
                                     formatter_class=argparse.ArgumentDefaultsHelpFormatter,
                                     epilog="see the module docstring for the outputs and the ladder")
    parser.add_argument("--out", type=Path, default=ROOT / "runs" / "teacher-water", help="output folder")
    parser.add_argument("--teacher", type=Path, default=TEACHER, help="n2p2 potential folder of the teacher")
    parser.add_argument("--starts", type=Path, default=STARTS,
                        help="starting structures (DeePMD folder or any file mlpot.data.read reads)")
    parser.add_argument("--trajectories", "-K", type=int, default=16, help="independent trajectories K")
    parser.add_argument("--frames", type=int, default=20, help="frames kept per trajectory")
    parser.add_argument("--stride", type=int, default=40, help="MD steps between kept frames")
    parser.add_argument("--equilibrate", type=int, default=200, help="MD steps before the first kept frame's stride")
    parser.add_argument("--timestep", type=float, default=0.5, help="timestep, fs")
    parser.add_argument("--temperature", type=float, default=300.0, help="Langevin bath temperature, K")
    parser.add_argument("--friction", type=float, default=0.01, help="Langevin friction, 1/fs")
    parser.add_argument("--seed", type=int, default=0, help="seed of the velocities and the Langevin noise")
    parser.add_argument("--batch", type=int, default=4, help="trajectories run together as replicas (unit of resumption)")
    parser.add_argument("--skin", type=float, default=1.0, help="Verlet skin of the MD neighbour list, Å")
    parser.add_argument("--sizes", type=int, nargs="+", default=[1, 2, 4, 6, 8, 12],
                        help="training-set sizes of the ladder, in trajectories")
    parser.add_argument("--test", type=int, default=4, help="held-out trajectories (the last ones) in test.extxyz")
    parser.add_argument("--threads", type=int, default=1, help="torch intra-op threads")
    parser.add_argument("--force", action="store_true",
                        help="delete this OUT's trajectories when the settings changed, instead of refusing")
    args = parser.parse_args(argv)
    for name in ("trajectories", "frames", "stride", "batch", "threads"):
        if getattr(args, name) < 1:
            parser.error(f"--{name} must be >= 1, got {getattr(args, name)}")
    if args.equilibrate < 0 or args.test < 1:
        parser.error("--equilibrate must be >= 0 and --test >= 1")
    n_train = args.trajectories - args.test
    if n_train < 1:
        parser.error(f"--test {args.test} leaves no training trajectory of {args.trajectories}")
    if min(args.sizes) < 1 or max(args.sizes) > n_train:
        parser.error(f"--sizes must lie in 1..{n_train} (trajectories {args.trajectories} minus --test {args.test})")
    args.sizes = sorted(set(args.sizes))
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    for path, what in ((args.teacher / "input.nn", "the teacher potential"), (args.starts, "the starting structures")):
        if not path.exists():
            print(f"error: {what} not found: {path} is missing (reference data live in ../shared "
                  "beside the repository, see ../shared/datasets/README.md)", file=sys.stderr)
            return 2

    import torch

    torch.set_num_threads(args.threads)
    t_start = time.perf_counter()
    out = args.out
    out.mkdir(parents=True, exist_ok=True)
    settings = {"trajectories": args.trajectories, "frames": args.frames, "stride": args.stride,
                "equilibrate": args.equilibrate, "timestep_fs": args.timestep,
                "temperature_K": args.temperature, "friction_per_fs": args.friction, "seed": args.seed,
                "batch": args.batch, "skin": args.skin, "ensemble": "nvt (Langevin BAOAB)",
                "dtype": "float64", "device": "cpu", "threads": args.threads,
                "teacher_source": str(args.teacher.resolve()),
                "teacher_source_sha256": _source_sha256(args.teacher), "starts": str(args.starts.resolve())}
    if not _check_plan(out, settings, args.force):
        return 1
    teacher, teacher_file = _teacher(out, args.teacher)
    starts = _read_starts(args.starts)
    start_idx = [k * len(starts) // args.trajectories for k in range(args.trajectories)]

    K, steps = args.trajectories, args.equilibrate + args.frames * args.stride
    batches = [list(range(c, min(c + args.batch, K))) for c in range(0, K, args.batch)]
    todo = [b for b in batches if not all(_traj_path(out, k).is_file() for k in b)]
    n_atoms = len(starts[start_idx[0]])
    print(f"teacher: {args.teacher} -> {teacher_file} (cutoff {teacher.cutoff:.4g} Å)")
    print(f"plan: {K} trajectories × {steps} steps of {args.timestep:g} fs "
          f"({args.equilibrate} equilibration + {args.frames} frames × stride {args.stride}) at "
          f"{args.temperature:g} K, {n_atoms} atoms each, start frames {start_idx} of {len(starts)}; "
          f"{K * args.frames} frames in all; batches of {args.batch}")
    done = [k for b in batches if b not in todo for k in b]
    if done:
        print(f"trajectories {_ranges(done)} already done ({out}/traj-<k>.extxyz): skipped")
    if todo:
        print(f"to run: trajectories {_ranges([k for b in todo for k in b])} in {len(todo)} batch(es)")

    md_wall = 0.0
    if todo:
        from mlpot.progress import progress

        total = sum(len(b) for b in todo) * steps
        with progress(total=total, desc="MD (replica steps)", unit="step", leave=True) as bar:
            for i, ks in enumerate(todo):
                t0 = time.perf_counter()
                frames, timing = _run_batch(teacher, starts, start_idx, ks, args, steps, bar,
                                            estimate_for=total if i == 0 else None)
                wall = time.perf_counter() - t0
                md_wall += wall
                for k in ks:
                    info = {"trajectory": k, "start_frame": start_idx[k], "frames": len(frames[k]),
                            "batch": ks, "batch_wall_s": round(wall, 3), **timing,
                            "settings": {key: settings[key] for key in PLAN_KEYS}}
                    _write_json(out / f"traj-{k}.json", info)
                    _write_extxyz(_traj_path(out, k), frames[k])  # the completion marker: last
                bar.set_postfix(batch=f"{i + 1}/{len(todo)}")
                print(f"batch {_ranges(ks)} done in {wall:.1f} s "
                      f"({timing['us_per_atom_step']:.0f} µs/atom/step with labels)", flush=True)

    _assemble(out, args, settings, teacher_file, start_idx, md_wall, time.perf_counter() - t_start)
    return 0


# ---------------------------------------------------------------------- setup
def _source_sha256(folder: Path) -> dict[str, str]:
    """sha256 of the files the n2p2 import reads."""
    from mlpot.io.files import file_sha256

    names = ["input.nn", "scaling.data", *sorted(p.name for p in folder.glob("weights.*.data"))]
    return {name: file_sha256(folder / name) for name in names if (folder / name).is_file()}


def _check_plan(out: Path, settings: dict, force: bool) -> bool:
    """Store the trajectory-determining settings; refuse (or with ``force`` clear) a
    folder made with other ones."""
    from mlpot.io import atomic_write_text

    plan = {key: settings[key] for key in PLAN_KEYS}
    path = out / PLAN
    if path.is_file():
        old = json.loads(path.read_text())
        changed = sorted(key for key in set(plan) | set(old) if old.get(key) != plan.get(key))
        if changed:
            if not force:
                print(f"error: {out} holds trajectories made with other settings ({', '.join(changed)} "
                      f"differ from {path}); use another --out, or --force to delete them", file=sys.stderr)
                return False
            for p in [*out.glob("traj-*.extxyz"), *out.glob("traj-*.json"), out / "teacher.pt"]:
                p.unlink(missing_ok=True)
            print(f"--force: settings changed ({', '.join(changed)}); old trajectories deleted")
    atomic_write_text(path, json.dumps(plan, indent=1) + "\n")
    return True


def _teacher(out: Path, folder: Path):
    """The imported teacher (float64, CPU), cached as OUT/teacher.pt."""
    from mlpot.io import load_model, save_model
    from mlpot.io.n2p2 import read_potential

    path = out / "teacher.pt"
    if not path.is_file():
        model = read_potential(folder)
        save_model(model, path, model.metadata)
    import torch

    return load_model(path, device="cpu", dtype=torch.float64), path


def _read_starts(path: Path) -> list:
    from mlpot.data import read

    starts = list(read(path))
    if not starts or not all(a.pbc.all() for a in starts):
        raise SystemExit(f"error: {path}: need periodic starting structures, got {len(starts)} structures")
    return starts


def _traj_path(out: Path, k: int) -> Path:
    return out / f"traj-{k}.extxyz"


def _ranges(ks: list[int]) -> str:
    """``0-3, 6`` for [0, 1, 2, 3, 6]."""
    ks, parts = sorted(ks), []
    for k in ks:
        if parts and k == parts[-1][1] + 1:
            parts[-1][1] = k
        else:
            parts.append([k, k])
    return ", ".join(f"{a}" if a == b else f"{a}-{b}" for a, b in parts)


# ---------------------------------------------------------------------- MD and labels
def _run_batch(teacher, starts, start_idx, ks, args, steps, bar, estimate_for=None):
    """Run trajectories ``ks`` together; {k: labelled frames}, timing."""
    import numpy as np
    from ase import units
    from ase.md.velocitydistribution import Stationary

    from mlpot.md.engine import BatchedMD, Thermostat

    replicas = []
    for k in ks:
        atoms = starts[start_idx[k]].copy()
        atoms.calc = None
        # Maxwell–Boltzmann momenta (by hand: ASE's helpers change between versions), no drift.
        rng = np.random.default_rng([args.seed, k])
        scale = np.sqrt(atoms.get_masses() * units.kB * args.temperature)[:, None]
        atoms.set_momenta(rng.standard_normal((len(atoms), 3)) * scale)
        Stationary(atoms)
        replicas.append(atoms)
    md = BatchedMD(teacher, replicas, "nvt", args.timestep,
                   Thermostat(args.temperature, args.friction, seed=args.seed * 1_000_003 + ks[0]), skin=args.skin)
    n_atoms = sum(len(a) for a in replicas)
    frames = {k: [] for k in ks}
    t0, probe_t0, t_label = time.perf_counter(), None, 0.0
    for step in range(1, steps + 1):
        if step == 2:
            probe_t0 = time.perf_counter()
        md.step()
        bar.update(len(ks))
        if step == 1 + PROBE_STEPS and estimate_for is not None:
            per_step = (time.perf_counter() - probe_t0) / PROBE_STEPS
            est = per_step / len(ks) * estimate_for * (1 + 1.0 / args.stride)  # labels ≈ one step each
            from mlpot.progress import format_duration

            print(f"measured {per_step:.3f} s/step for {len(ks)} replicas "
                  f"({per_step / n_atoms * 1e6:.0f} µs/atom/step): estimate {format_duration(est)} "
                  f"for the {estimate_for // steps} trajectories to run", flush=True)
        if step > args.equilibrate and (step - args.equilibrate) % args.stride == 0:
            tl = time.perf_counter()
            snapshot = [_as_written(a) for a in md.to_atoms()]
            labelled = label(teacher, snapshot)
            t_label += time.perf_counter() - tl
            temps = md.temperature().tolist()
            for k, atoms, temp in zip(ks, labelled, temps):
                atoms.info.update({"trajectory": k, "step": step, "start_frame": start_idx[k],
                                   "md_temperature_K": round(temp, 3)})
                frames[k].append(atoms)
            bar.set_postfix(T=f"{np.mean(temps):.0f}K")
    wall = time.perf_counter() - t0
    timing = {"steps": steps, "neighbour_builds": md.neighbour_builds, "label_s": round(t_label, 3),
              "us_per_atom_step": wall / steps / n_atoms * 1e6}
    return frames, timing


def _as_written(atoms):
    """The structure as extended XYZ will store it: wrapped into the cell, positions rounded
    to the 8 decimals ASE writes (so labels computed here are the labels of the file's
    positions), no momenta."""
    import numpy as np
    from ase import Atoms

    atoms = Atoms(numbers=atoms.numbers, positions=atoms.positions, cell=atoms.cell, pbc=atoms.pbc)
    atoms.wrap()
    atoms.positions = np.array([[float(f"{x:16.8f}") for x in row] for row in atoms.positions])
    return atoms


def label(teacher, structures: list) -> list:
    """``structures`` with the teacher's energy, forces and stress attached (one batch)."""
    import torch

    from mlpot.data import collate, labelled_atoms

    batch = collate(structures, dtype=torch.float64, labels=False).with_neighbours(teacher.cutoff)
    with torch.enable_grad():
        out = teacher(batch, forces=True, stress=True, descriptors=True, create_graph=False)
    scaler = teacher.descriptor.scaler
    extrapolating = scaler.extrapolating(out["descriptors"], teacher.descriptor.species(batch.numbers))
    result, start = [], 0
    for b, atoms in enumerate(structures):
        n = len(atoms)
        a = labelled_atoms(atoms.numbers, atoms.positions, atoms.cell.array, atoms.pbc,
                           energy=float(out["energy"][b].detach()),
                           forces=out["forces"][start:start + n].detach().numpy(),
                           stress=out["stress"][b].detach().numpy(),
                           info={"teacher_extrapolating_atoms": int(extrapolating[start:start + n].sum())})
        result.append(a)
        start += n
    return result


# ---------------------------------------------------------------------- files
def _write_json(path: Path, data: dict) -> None:
    from mlpot.io import atomic_write_text

    atomic_write_text(path, json.dumps(data, indent=1, default=_plain) + "\n")


def _plain(value):
    """numpy scalars (as ase.io reads info values) as Python numbers for JSON."""
    if hasattr(value, "item"):
        return value.item()
    raise TypeError(f"not JSON serialisable: {type(value).__name__}")


def _write_extxyz(path: Path, frames: list) -> None:
    import ase.io

    from mlpot.io import atomic_path

    with atomic_path(path) as tmp:
        ase.io.write(tmp, frames, format="extxyz")


def _read_extxyz(path: Path) -> list:
    import ase.io

    return ase.io.read(path, index=":", format="extxyz")


def _assemble(out: Path, args, settings: dict, teacher_file: Path, start_idx: list[int], md_wall: float,
              wall: float) -> None:
    """trajectories.extxyz, the ladder and manifest.json from the per-trajectory files."""
    from mlpot.io.files import file_sha256

    K = args.trajectories
    trajs = {k: _read_extxyz(_traj_path(out, k)) for k in range(K)}
    bad = {k: len(f) for k, f in trajs.items() if len(f) != args.frames}
    if bad:
        raise SystemExit(f"error: trajectory files with a wrong frame count {bad} (expected {args.frames})")
    n_train = K - args.test
    test_ids = list(range(n_train, K))
    _write_extxyz(out / "trajectories.extxyz", [a for k in range(K) for a in trajs[k]])
    _write_extxyz(out / "test.extxyz", [a for k in test_ids for a in trajs[k]])
    ladder = {}
    for n in args.sizes:
        name = f"train-{n}traj.extxyz"
        _write_extxyz(out / name, [a for k in range(n) for a in trajs[k]])
        ladder[name] = {"trajectories": list(range(n)), "frames": n * args.frames,
                        "atoms": sum(len(a) for k in range(n) for a in trajs[k])}
    sidecars = {k: json.loads((out / f"traj-{k}.json").read_text()) for k in range(K)
                if (out / f"traj-{k}.json").is_file()}
    us = [s["us_per_atom_step"] for s in sidecars.values()]
    extrapolating = sum(a.info.get("teacher_extrapolating_atoms", 0) for f in trajs.values() for a in f)
    manifest = {
        "settings": settings, "sizes": args.sizes, "test_trajectories": test_ids,
        "teacher_file": str(teacher_file), "teacher_sha256": file_sha256(teacher_file),
        "start_frames": start_idx,
        "frames_per_trajectory": {str(k): len(f) for k, f in trajs.items()},
        "frames": sum(len(f) for f in trajs.values()),
        "atoms_per_frame": sorted({len(a) for f in trajs.values() for a in f}),
        "steps_of_kept_frames": [a.info["step"] for a in trajs[0]],
        "train": ladder, "test": {"file": "test.extxyz", "frames": len(test_ids) * args.frames},
        "teacher_extrapolating_atoms": extrapolating,
        "md_wall_s_per_batch": {str(s["batch"]): s["batch_wall_s"] for s in sidecars.values()},
        "us_per_atom_step": {"min": min(us), "max": max(us)} if us else None,
        "wall_s_this_run": round(wall, 3), "md_wall_s_this_run": round(md_wall, 3),
        "finished": time.strftime("%Y-%m-%dT%H:%M:%S"),
    }
    _write_json(out / "manifest.json", manifest)
    print(f"wrote {out}/trajectories.extxyz ({manifest['frames']} frames of {K} trajectories), "
          f"test.extxyz (trajectories {_ranges(test_ids)}), "
          + ", ".join(f"{name} ({v['frames']} frames)" for name, v in ladder.items())
          + f", manifest.json; teacher extrapolating on {extrapolating} atom-frames; "
          f"wall {wall:.1f} s")


if __name__ == "__main__":
    sys.exit(main())
