"""`mlpot md`: the ASE path for NVE, NVT and NPT, with logs, trajectories and restart."""

import numpy as np
import pytest
from ase.io import read, write
from structures_for_tests import water_box
from test_models import make_model

import mlpot
from mlpot.cli import main
from mlpot.models import NetworkConfig


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    d = tmp_path_factory.mktemp("md")
    model = make_model(NetworkConfig(depth=2, width=8, activation="silu"))
    with __import__("torch").no_grad():  # tame the random model: small forces
        model.energy_scale.mul_(0.01)
    mlpot.save(model, d / "model.pt")
    write(d / "start.xyz", water_box(seed=0)[:12])
    return d


@pytest.mark.parametrize("ensemble", ["nve", "nvt", "npt"])
def test_md_runs_and_writes_trajectory_and_log(files, ensemble, capsys):
    traj, log = files / f"{ensemble}.traj", files / f"{ensemble}.log"
    rc = main(["md", str(files / "model.pt"), str(files / "start.xyz"), "--ensemble", ensemble,
               "--steps", "20", "--interval", "5", "--timestep", "0.25", "--temperature", "300",
               "--device", "cpu", "--traj", str(traj), "--log", str(log)])
    assert rc == 0
    frames = read(traj, ":")
    assert len(frames) == 5  # the start + every 5 steps
    assert np.isfinite(frames[-1].positions).all()
    lines = log.read_text().splitlines()
    assert len(lines) == 1 + 5 and "Epot" in lines[0]  # header + steps 0, 5, ..., 20
    if ensemble == "npt":
        assert np.abs(frames[-1].cell.array - frames[0].cell.array).max() > 1e-8  # the barostat acts
    assert "done: 20 steps" in capsys.readouterr().out


def test_restart_continues_from_the_last_frame(files):
    traj = files / "restart.traj"
    args = ["md", str(files / "model.pt"), str(files / "start.xyz"), "--ensemble", "nve",
            "--interval", "5", "--timestep", "0.25", "--device", "cpu", "--traj", str(traj)]
    assert main(args + ["--steps", "10"]) == 0
    assert len(read(traj, ":")) == 3
    assert main(args + ["--steps", "20", "--restart"]) == 0
    assert len(read(traj, ":")) == 5
    straight = files / "straight.traj"
    assert main(args[:-1] + [str(straight), "--steps", "20"]) == 0
    np.testing.assert_allclose(read(traj).positions, read(straight).positions, atol=1e-10)


def test_bad_input_is_reported(files, capsys):
    assert main(["md", str(files / "model.pt"), str(files / "missing.xyz")]) == 2
    assert main(["md", str(files / "model.pt"), str(files / "start.xyz"), "--restart"]) == 2
    assert "--restart needs --traj" in capsys.readouterr().err


def test_extrapolation_is_one_plain_warning_and_a_summary(files, capsys):
    """A start far outside the training range: one warning line in the command's own format
    (no source line of ASE or runpy) and a count at the end, however many steps extrapolate."""
    squeezed = water_box(seed=0)[:12]
    squeezed.positions *= 0.8
    write(files / "squeezed.xyz", squeezed)
    assert main(["md", str(files / "model.pt"), str(files / "squeezed.xyz"), "--steps", "6",
                 "--timestep", "0.1", "--device", "cpu"]) == 0
    captured = capsys.readouterr()
    warned = [line for line in captured.err.splitlines() if "warning" in line.lower()]
    assert len(warned) == 1 and warned[0].startswith("mlpot md: warning: ")
    assert "beyond the training range" in warned[0]
    assert "extrapolation: 7 of 7 structures" in captured.out
