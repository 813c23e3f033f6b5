"""An interrupted run resumes to the same weights, and bad labels or a diverging loss stop a
run with one clear line and loadable files.

Crash safety is tested on real processes killed with SIGKILL: one at a random moment of its
training (almost always mid-epoch), one by itself halfway through writing ``last.pt``. Each
is then resumed to the end and compared with an uninterrupted run, bit for bit (float64, CPU,
one thread, fixed seed).
"""

from __future__ import annotations

import random
import signal
import subprocess
import time

import ase.io
import pytest
import torch
import yaml

import mlpot
from mlpot.training import TrainConfig, load_checkpoint, train

from reliability_setup import PYTHON, cli, files_under, subprocess_env, tiny_config, write_dataset

pytestmark = pytest.mark.usefixtures("one_thread")

#: Trains in a subprocess through the CLI; ``die-in-save`` SIGKILLs the process after half of
#: the second ``last.pt`` has reached the disk (the temporary file atomic_path renames).
TRAINER = r"""
import io, os, signal, sys
import torch
torch.set_num_threads(1)
mode, config, out, epochs = sys.argv[1:5]
if mode == "die-in-save":
    real, saves = torch.save, []
    def save(obj, f, *args, **kwargs):
        if os.path.basename(str(f)).startswith(".last.pt.tmp"):
            saves.append(f)
            if len(saves) == 2:
                buffer = io.BytesIO()
                real(obj, buffer, *args, **kwargs)
                with open(f, "wb") as fh:
                    fh.write(buffer.getvalue()[: len(buffer.getvalue()) // 2])
                os.kill(os.getpid(), signal.SIGKILL)
        return real(obj, f, *args, **kwargs)
    torch.save = save
from mlpot.cli import main
sys.exit(main(["train", config, "--out", out, "--no-progress", "--set", f"training.epochs={epochs}"]))
"""


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    folder = tmp_path_factory.mktemp("data")
    path = write_dataset(folder, n=20)
    config = folder / "tiny.yaml"
    config.write_text(yaml.safe_dump(tiny_config(path, epochs=4)))
    return folder, path, config


def reference(config_path, epochs: int, out) -> dict:
    """The final ``last.pt`` of an uninterrupted in-process run of ``epochs`` epochs."""
    config = TrainConfig.from_yaml(config_path, [f"training.epochs={epochs}"])
    train(config, out, progress=False, log=lambda s: None)
    return load_checkpoint(out / "last.pt")


def resume(config_path, epochs: int, out) -> dict:
    config = TrainConfig.from_yaml(config_path, [f"training.epochs={epochs}"])
    train(config, out, resume=True, progress=False, log=lambda s: None)
    return load_checkpoint(out / "last.pt")


def assert_same_weights(a: dict, b: dict) -> None:
    assert a["epoch"] == b["epoch"]
    assert a["model"].keys() == b["model"].keys()
    for key in a["model"]:
        assert torch.equal(a["model"][key], b["model"][key]), key
    assert a["best_val_loss"] == b["best_val_loss"]


def assert_loadable(out) -> int:
    """Every checkpoint and model the killed run left loads; returns last.pt's epoch."""
    for name in ("best.pt", "model.pt"):
        if (out / name).exists():
            (load_checkpoint if name == "best.pt" else mlpot.load)(out / name)
    return load_checkpoint(out / "last.pt")["epoch"]


def start(mode: str, config, out, epochs: int) -> subprocess.Popen:
    return subprocess.Popen([PYTHON, "-c", TRAINER, mode, str(config), str(out), str(epochs)],
                            env=subprocess_env(), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)


def test_sigkill_mid_training_and_mid_checkpoint_write_then_resume_is_bit_exact(data, tmp_path):
    _, _, config = data
    # Both victims run at once (the machine has two cores); the random one trains "forever".
    at_random, in_save = tmp_path / "random", tmp_path / "in-save"
    victim = start("train", config, at_random, 500)
    dying = start("die-in-save", config, in_save, 4)
    try:
        deadline = time.monotonic() + 120
        while not (at_random / "last.pt").exists():
            assert victim.poll() is None, victim.stderr.read()
            assert time.monotonic() < deadline, "no checkpoint within 120 s"
            time.sleep(0.02)
        time.sleep(random.uniform(0.0, 0.5))
        victim.send_signal(signal.SIGKILL)
        assert victim.wait(timeout=60) == -signal.SIGKILL
        assert dying.wait(timeout=120) == -signal.SIGKILL, dying.stderr.read()
    finally:
        for proc in (victim, dying):
            if proc.poll() is None:
                proc.kill()
                proc.wait()

    # Killed halfway through the second last.pt: the first is intact, the half file is a
    # hidden temporary that nothing reads.
    assert assert_loadable(in_save) == 1
    assert any(name.startswith(".last.pt.tmp") for name in files_under(in_save))
    four = reference(config, 4, tmp_path / "ref4")
    assert_same_weights(resume(config, 4, in_save), four)

    done = assert_loadable(at_random)
    epochs = max(done + 2, 4)  # at least two epochs after the kill; usually the same 4
    expected = four if epochs == 4 else reference(config, epochs, tmp_path / "ref")
    assert_same_weights(resume(config, epochs, at_random), expected)


def test_bad_labels_are_refused_before_training(data, tmp_path, capsys):
    _, path, _ = data
    structures = ase.io.read(path, index=":")
    for label, value, message in (("energy", float("nan"), "structure 3: energy is nan"),
                                  ("energy", 1e30, r"structure 3: energy per atom (total 1e+30 eV)")):
        structures[3].calc.results[label] = value
        bad = tmp_path / f"bad-{value}.extxyz"
        ase.io.write(bad, structures)
        config = tmp_path / f"bad-{value}.yaml"
        config.write_text(yaml.safe_dump(tiny_config(bad)))
        rc, out, err = cli(["train", config, "--out", tmp_path / "run", "--no-progress"], capsys)
        assert rc == 2 and out == ""
        assert err.startswith(f"mlpot train: error: {bad}, ") and message in err and err.count("\n") == 1
        assert not (tmp_path / "run").exists()


def test_nan_loss_stops_with_one_line_and_loadable_files(data, tmp_path, capsys, monkeypatch):
    import mlpot.training.trainer as trainer

    _, _, config = data
    real, calls = trainer.loss_terms, {"n": 0}

    def poisoned(pred, batch, weights):
        calls["n"] += 1
        terms = real(pred, batch, weights)
        if calls["n"] == 1 + 4 + 2:  # grad_init.json, 4 steps of epoch 1, then step 2 of epoch 2
            terms["total"] = terms["total"] * float("nan")
        return terms

    monkeypatch.setattr(trainer, "loss_terms", poisoned)
    out = tmp_path / "run"
    rc, _, err = cli(["train", config, "--out", out, "--no-progress"], capsys)
    assert rc == 1 and err.count("\n") == 1
    assert err.startswith("mlpot train: training stopped: non-finite training loss (nan) at epoch 2, step 2")
    assert f"last.pt, best.pt and model.pt in {out} hold the last epochs that completed" in err
    assert load_checkpoint(out / "last.pt")["epoch"] == 1
    assert mlpot.load(out / "model.pt").metadata["epoch"] == 1
