"""scripts/make_teacher_water.py: teacher-labelled water trajectories and the trajectory-split
data-size ladder (labels, strides, disjoint splits, resumption, determinism).

Needs ../shared (the n2p2 RPBE-D3 teacher and the DeePMD water frames); skipped without it.
One tiny generation (3 trajectories × 3 frames, 192 atoms) is shared by the tests.
"""

import importlib.util
import json
from pathlib import Path

import ase.io
import numpy as np
import pytest
import torch

ROOT = Path(__file__).resolve().parents[2]
# 3 trajectories in batches of 2 ({0, 1} and {2}); the last one is held out.
TINY = ["-K", "3", "--test", "1", "--sizes", "1", "2", "--frames", "3", "--stride", "3",
        "--equilibrate", "2", "--batch", "2"]
STRIDE, EQUILIBRATE, FRAMES = 3, 2, 3


def _script():
    spec = importlib.util.spec_from_file_location("make_teacher_water", ROOT / "scripts" / "make_teacher_water.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _main(argv):
    """The script's exit code (run in this process with one thread; threads restored after)."""
    threads = torch.get_num_threads()
    try:
        return _script().main(argv)
    finally:
        torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def teacher_folder(shared_datasets):
    folder = shared_datasets.parent / "potentials" / "n2p2-H2O_RPBE-D3"
    if not (folder / "input.nn").is_file():
        pytest.skip(f"{folder} is absent (the teacher lives outside the repository)")
    if not (shared_datasets / "deepmd-water").is_dir():
        pytest.skip(f"{shared_datasets / 'deepmd-water'} is absent")
    return folder


@pytest.fixture(scope="module")
def generated(teacher_folder, tmp_path_factory):
    """OUT of one tiny run (with one thread, so that it is deterministic and cheap)."""
    out = tmp_path_factory.mktemp("teacher-water")
    assert _main([*TINY, "--out", str(out)]) == 0
    return out


def _read(path):
    return ase.io.read(path, index=":", format="extxyz")


def test_labels_are_the_teacher_at_the_written_positions(generated, teacher_folder):
    """Frames read back with mlpot.data.read; the teacher imported afresh (not the cached
    file) and evaluated through the ASE calculator reproduces energy, forces and stress."""
    from mlpot.calculator import MLPotCalculator
    from mlpot.data import get_labels, read
    from mlpot.io.n2p2 import read_potential

    frames = read(generated / "trajectories.extxyz")
    assert len(frames) == 3 * FRAMES
    calc = MLPotCalculator(read_potential(teacher_folder), device="cpu", skin=0.0, extrapolation="ignore")
    for atoms in frames:
        labels = get_labels(atoms)
        assert labels.energy is not None and labels.forces is not None and labels.stress is not None
        atoms = atoms.copy()
        atoms.calc = calc
        e, f, s = atoms.get_potential_energy(), atoms.get_forces(), atoms.get_stress(voigt=False)
        assert abs(labels.energy - e) <= 1e-8 * abs(e)
        # forces are stored with 8 decimals (extended XYZ): 5e-9 eV/Å absolute at most
        assert np.abs(labels.forces - f).max() <= 1e-8 * np.abs(f).max()
        assert np.abs(labels.stress - s).max() <= 1e-8 * np.abs(s).max() + 1e-12
        assert np.all(np.abs(f) < 20.0), "unphysical forces: the MD blew up"


def test_frames_distinct_and_stride_apart(generated):
    frames = _read(generated / "trajectories.extxyz")
    for k in range(3):
        traj = [a for a in frames if a.info["trajectory"] == k]
        assert [a.info["step"] for a in traj] == [EQUILIBRATE + STRIDE * (j + 1) for j in range(FRAMES)]
        for a, b in zip(traj, traj[1:]):
            assert np.abs(a.positions - b.positions).max() > 1e-3
            assert a.get_potential_energy() != b.get_potential_energy()
        assert all(len(a) == 192 and a.pbc.all() for a in traj)
    # different trajectories start from different frames with different velocities
    first = [next(a for a in frames if a.info["trajectory"] == k) for k in range(3)]
    assert len({a.info["start_frame"] for a in first}) == 3
    assert len({round(a.get_potential_energy(), 6) for a in first}) == 3


def test_ladder_is_split_by_trajectory(generated):
    test_ids = {a.info["trajectory"] for a in _read(generated / "test.extxyz")}
    assert test_ids == {2}
    for n in (1, 2):
        train = _read(generated / f"train-{n}traj.extxyz")
        ids = {a.info["trajectory"] for a in train}
        assert ids == set(range(n)) and not ids & test_ids
        assert len(train) == n * FRAMES
    manifest = json.loads((generated / "manifest.json").read_text())
    assert manifest["frames"] == 3 * FRAMES
    assert manifest["frames_per_trajectory"] == {"0": FRAMES, "1": FRAMES, "2": FRAMES}
    assert manifest["test_trajectories"] == [2]
    assert len(manifest["teacher_sha256"]) == 64


def test_rerun_skips_finished_and_regenerates_identically(generated, capsys):
    """A rerun touches no finished trajectory; a deleted one is made again, byte for byte
    (deterministic given the seeds), and the assembled files do not change."""
    before = {p.name: (p.stat().st_mtime_ns, p.read_bytes()) for p in generated.glob("*.extxyz")}
    capsys.readouterr()
    assert _main([*TINY, "--out", str(generated)]) == 0
    assert "trajectories 0-2 already done" in capsys.readouterr().out
    for name in ("traj-0.extxyz", "traj-1.extxyz", "traj-2.extxyz"):
        assert (generated / name).stat().st_mtime_ns == before[name][0]

    (generated / "traj-2.extxyz").unlink()  # its batch is {2}: only it runs again
    assert _main([*TINY, "--out", str(generated)]) == 0
    printed = capsys.readouterr().out
    assert "trajectories 0-1 already done" in printed and "to run: trajectories 2" in printed
    for name, (mtime, data) in before.items():
        assert (generated / name).read_bytes() == data, name
    assert (generated / "traj-0.extxyz").stat().st_mtime_ns == before["traj-0.extxyz"][0]


def test_changed_settings_are_refused(generated, capsys):
    assert _main([*TINY, "--out", str(generated), "--seed", "1"]) == 1
    assert "seed" in capsys.readouterr().err


def test_missing_shared_exits_2(tmp_path, capsys):
    """Needs no ../shared: the missing path is named and the exit code is 2."""
    missing = tmp_path / "no-such-teacher"
    assert _main(["--teacher", str(missing), "--out", str(tmp_path / "out")]) == 2
    assert str(missing) in capsys.readouterr().err
    assert not (tmp_path / "out").exists()
