"""Shared set-up of the reliability suite: a tiny labelled Cu/Au set, a small fast training
config (radial terms only: no compiled angular kernel to build in a fresh process), a model
file, and a helper that runs the CLI in-process and collects what it printed."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import ase.io
import numpy as np
from ase import Atoms
from ase.build import bulk
from ase.calculators.emt import EMT

#: The repository root (examples/, datasets/, mlpot/).
ROOT = Path(__file__).resolve().parents[2]


def emt_cells(n: int, seed: int = 0) -> list[Atoms]:
    """Rattled 4-atom fcc Cu/Au cells labelled by EMT (energy, forces, stress)."""
    rng = np.random.default_rng(seed)
    out = []
    for _ in range(n):
        atoms = bulk("Cu", "fcc", a=3.75, cubic=True)
        atoms.numbers[rng.permutation(4)[: rng.integers(1, 4)]] = 79
        atoms.positions += rng.normal(0, 0.1, atoms.positions.shape)
        atoms.calc = EMT()
        atoms.get_stress()
        out.append(atoms)
    return out


def tiny_config(train: str | Path, **training) -> dict:
    """A config that trains in a fraction of a second per epoch (float64, fixed seed)."""
    return {
        "data": {"train": str(train), "val_fraction": 0.2},
        "descriptor": {"cutoff": 4.0, "cutoff_function": "poly2",
                       "radial": [{"grid": {"count": 4, "mode": "shift", "r_lower": 1.5}}]},
        "model": {"depth": 1, "width": 8},
        "optimizer": {"lr": 5e-3},
        "training": {"epochs": 3, "batch_size": 4, "dtype": "float64", **training},
    }


def write_dataset(folder: Path, n: int = 20, seed: int = 0) -> Path:
    path = folder / "train.extxyz"
    ase.io.write(path, emt_cells(n, seed))
    return path


def write_model(path: Path, elements=("Cu", "Au")) -> Path:
    """An untrained but complete model file (scaling fitted) of the tiny config."""
    import mlpot
    from mlpot.data import collate
    from mlpot.training import TrainConfig, build_model

    config = TrainConfig.from_dict(tiny_config("unused.extxyz"))
    model = build_model(config, list(elements)).double()
    model.fit_to_data([collate(emt_cells(8, seed=3), cutoff=model.cutoff, dtype=model.dtype)], "scale_center",
                      (-1.0, 1.0))
    mlpot.save(model, path)
    return path


def cli(args: list[str], capsys) -> tuple[int, str, str]:
    """``mlpot ARGS`` in-process: exit code, stdout, stderr."""
    from mlpot.cli import main

    capsys.readouterr()
    rc = main([str(a) for a in args])
    captured = capsys.readouterr()
    return rc, captured.out, captured.err


def files_under(folder: Path) -> set[str]:
    """Every path below ``folder``, relative to it."""
    return {str(p.relative_to(folder)) for p in folder.rglob("*")}


def subprocess_env() -> dict[str, str]:
    """Environment of an ``mlpot`` subprocess: this checkout importable, one thread."""
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([str(ROOT), env.get("PYTHONPATH", "")])
    env["OMP_NUM_THREADS"] = "1"
    return env


PYTHON = sys.executable
