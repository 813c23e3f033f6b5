"""No code runs from a data or model file.

The source is checked for loaders that can unpickle code (every ``torch.load`` passes
``weights_only=True``, every ``np.load`` ``allow_pickle=False``, YAML is read with
``safe_load`` only, no ``pickle``), and crafted files whose unpickling would create a marker
file go through every command and API call that opens a model, checkpoint or dataset.
"""

from __future__ import annotations

import ast

import numpy as np
import pytest
import torch
import yaml

import mlpot
from mlpot.io.model_file import ModelFileError

from malformed_corpus import Marker, pickled_files
from reliability_setup import ROOT, cli, tiny_config, write_dataset, write_model

pytestmark = pytest.mark.usefixtures("one_thread")

SOURCES = sorted((ROOT / "mlpot").rglob("*.py"))


def calls(tree: ast.AST):
    """``(module, function, call)`` for each ``module.function(...)`` call in ``tree``."""
    for node in ast.walk(tree):
        if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute):
            owner = node.func.value
            name = owner.id if isinstance(owner, ast.Name) else getattr(owner, "attr", None)
            yield name, node.func.attr, node


def keyword(call: ast.Call, name: str):
    for kw in call.keywords:
        if kw.arg == name:
            return kw.value.value if isinstance(kw.value, ast.Constant) else "not a constant"
    return None


def test_the_source_uses_safe_loaders_only():
    bad = []
    for path in SOURCES:
        tree = ast.parse(path.read_text(), str(path))
        for module, function, call in calls(tree):
            where = f"{path.relative_to(ROOT)}:{call.lineno}"
            if module == "torch" and function == "load" and keyword(call, "weights_only") is not True:
                bad.append(f"{where}: torch.load without weights_only=True")
            if module == "np" and function == "load" and keyword(call, "allow_pickle") is not False:
                bad.append(f"{where}: np.load without allow_pickle=False")
            if module == "yaml" and function in ("load", "load_all", "full_load", "unsafe_load", "unsafe_load_all"):
                bad.append(f"{where}: yaml.{function} (use yaml.safe_load)")
            if module in ("pickle", "cPickle", "dill", "joblib", "marshal", "shelve") and function.startswith("load"):
                bad.append(f"{where}: {module}.{function}")
            if module == "jit" and function == "load":
                bad.append(f"{where}: torch.jit.load (runs TorchScript code)")
    assert not bad, "\n".join(bad)
    # The checks above see the loads: there are some of each kind to see.
    text = "\n".join(p.read_text() for p in SOURCES)
    assert text.count("weights_only=True") >= 3 and text.count("allow_pickle=False") >= 3


@pytest.fixture
def hostile(tmp_path):
    marker = tmp_path / "MARKER"
    files = pickled_files(tmp_path / "files", marker)
    yield tmp_path, marker, files
    assert not marker.exists(), "code from a crafted file ran"


def test_crafted_pickles_through_the_api(hostile):
    from mlpot import MLPotCalculator
    from mlpot.data import read
    from mlpot.training import load_checkpoint
    from mlpot.training.checkpoint import CheckpointError

    _, marker, files = hostile
    for path in (files["model.pt"], files["legacy.pt"], files["data.pkl"]):
        with pytest.raises(ModelFileError, match="not a readable mlpot model file"):
            mlpot.load(path)
        with pytest.raises(ModelFileError):
            MLPotCalculator(path)
        with pytest.raises(CheckpointError, match="not a readable mlpot training checkpoint"):
            load_checkpoint(path)
    with pytest.raises(ValueError, match="nothing in the file was run"):
        read(files["data.npz"])
    assert not marker.exists()


def test_crafted_pickles_through_every_command(hostile, capsys):
    tmp_path, marker, files = hostile
    good = tmp_path / "files" / "good.extxyz"
    model = files["model.pt"]
    files["old.traj"] = tmp_path / "files" / "old.traj"
    files["old.traj"].write_bytes(files["legacy.pt"].read_bytes())
    files["good.pt"] = write_model(tmp_path / "files" / "good.pt")
    commands = [
        ["info", model], ["info", files["legacy.pt"]],
        ["evaluate", model, good], ["evaluate", files["legacy.pt"], good],
        ["md", model, good, "--steps", "1", "--device", "cpu"],
        ["export", model, tmp_path / "deploy.pt"],
        ["export-n2p2", model, tmp_path / "n2p2"],
        ["describe", files["data.npz"]], ["convert", files["data.npz"], tmp_path / "out.h5"],
        # An old ASE PickleTrajectory: ASE reads .traj files as ULM only, never unpickles them.
        ["describe", files["old.traj"]], ["md", files["good.pt"], files["old.traj"], "--steps", "1"],
    ]
    for args in commands:
        rc, out, err = cli(args, capsys)
        assert rc == 2 and "\n" not in err.strip(), (args, err)
        assert any(why in err for why in ("not a readable mlpot model file", "nothing in the file was run",
                                          "not an ULM formatted file")), (args, err)
        assert "weights_only=False" not in err and "allow_pickle=True" not in err
    assert not (tmp_path / "deploy.pt").exists() and not (tmp_path / "out.h5").exists()


def test_crafted_checkpoint_split_and_cache_files_in_training(hostile, capsys):
    """The files training opens besides the dataset: last.pt on --resume, a split file, and a
    descriptor cache file (rejected, said in the log, recomputed)."""
    tmp_path, marker, files = hostile
    data = write_dataset(tmp_path, n=12)
    run = tmp_path / "run"
    run.mkdir()
    (run / "last.pt").write_bytes(files["model.pt"].read_bytes())
    config = tmp_path / "c.yaml"
    config.write_text(yaml.safe_dump(tiny_config(data, epochs=1)))
    rc, _, err = cli(["train", config, "--out", run, "--resume", "--no-progress"], capsys)
    assert rc == 2 and "last.pt: not a readable mlpot training checkpoint" in err and "\n" not in err.strip()

    np.save(tmp_path / "train.npy", np.array([Marker(marker)], dtype=object), allow_pickle=True)
    split = tiny_config(data, epochs=1)
    split["data"]["split_file"] = str(tmp_path / "train.npy")
    config.write_text(yaml.safe_dump(split))
    rc, _, err = cli(["train", config, "--out", tmp_path / "run2", "--no-progress"], capsys)
    assert rc == 2 and "train.npy" in err and "\n" not in err.strip()

    cache = tmp_path / "cache"
    cached = tiny_config(data, epochs=1, descriptor_cache_dir=str(cache))
    config.write_text(yaml.safe_dump(cached))
    assert cli(["train", config, "--out", tmp_path / "run3", "--no-progress"], capsys)[0] == 0
    for path in cache.glob("descriptors-*.pt"):  # replace the cache with a crafted file
        torch.save({"key": "x", "payload": Marker(marker)}, path)
    rc, out, _ = cli(["train", config, "--out", tmp_path / "run4", "--no-progress"], capsys)
    assert rc == 0
    assert "descriptor cache file rejected, recomputing it" in out and "nothing in the file was run" in out
