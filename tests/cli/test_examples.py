"""The example configs stay valid against the config schema; the scripts start."""

import subprocess
import sys
from pathlib import Path

import pytest

from mlpot.training import TrainConfig

ROOT = Path(__file__).resolve().parents[2]
EXAMPLES = ROOT / "examples"


@pytest.mark.parametrize("name, elements", [
    ("ethanol", ["H", "C", "O"]), ("cuau", ["Cu", "Au"]), ("mlearn", ["Si"]), ("mlearn", ["Mo"]),
    ("mlearn", ["Ni"]),
])
def test_example_config_resolves(name, elements):
    config = TrainConfig.from_yaml(EXAMPLES / f"{name}.yaml")
    spec = config.descriptor_spec(elements)
    assert spec.elements == tuple(elements)
    assert all(n > 0 for n in spec.n_features().values())
    assert TrainConfig.from_dict(config.to_dict()) == config


@pytest.mark.parametrize("name", ["ethanol", "cuau"])
def test_shipped_example_data_exist(name):
    config = TrainConfig.from_yaml(EXAMPLES / f"{name}.yaml")
    assert (ROOT / config.data.train).is_file()


def test_mlearn_config_takes_another_element_by_overrides():
    mo = "../shared/datasets/mlearn/Mo"
    config = TrainConfig.from_yaml(EXAMPLES / "mlearn.yaml", [
        f"data.train={mo}/training.json", f"data.test={mo}/test.json",
        'data.read_options={stress_order: "xx yy zz xy zx yz"}'])
    assert config.data.train.endswith("Mo/training.json")
    assert config.data.read_options == {"stress_order": "xx yy zz xy zx yz"}
    assert config.model.block == "residual" and len(config.model.hidden_sizes) > 2


def test_bench_mlearn_skips_absent_elements(tmp_path):
    proc = subprocess.run([sys.executable, str(ROOT / "scripts" / "bench_mlearn.py"), "--elements", "Xx",
                           "--runs", str(tmp_path)], capture_output=True, text=True, cwd=ROOT)
    assert proc.returncode == 0, proc.stderr
    assert "[Xx] skipped" in proc.stdout and "nothing to report" in proc.stdout
    # --data names where the element's files are looked for.
    proc = subprocess.run([sys.executable, str(ROOT / "scripts" / "bench_mlearn.py"), "--elements", "Ge",
                           "--data", str(tmp_path / "mlearn"), "--runs", str(tmp_path)],
                          capture_output=True, text=True, cwd=ROOT)
    assert proc.returncode == 0, proc.stderr
    assert f"[Ge] skipped: {tmp_path / 'mlearn' / 'Ge' / 'training.json'}" in proc.stdout


def test_bench_mlearn_paper_nnp_row_stands_apart_from_the_seeds(tmp_path, capsys):
    """--published-nnp: a missing folder is skipped with its path named; the paper's NNP row
    is its own line of the table, never averaged into the seeds (nor counted by the levers)."""
    from scripts_for_tests import load_script

    bench = load_script("bench_mlearn")
    assert bench._paper_nnp("Si", tmp_path / "Si" / "nnp", tmp_path, tmp_path / "t.json", tmp_path / "x.json") is None
    assert f"[Si] paper NNP skipped: {tmp_path / 'Si' / 'nnp' / 'input.nn'} not found" in capsys.readouterr().out
    rows = [{"element": "Si", "seed": 0}, {"element": "Si", "seed": 1},
            {"element": "Si", "seed": "committee", "members": 2}, {"element": "Si", "seed": bench.PAPER_NNP}]
    groups = dict(bench._groups(rows, "Si"))
    assert [r["seed"] for r in groups["mlpot"]] == [0, 1]
    assert groups["paper NNP"] == [rows[3]] and groups["mean of 2"] == [rows[2]]


@pytest.mark.slow
def test_api_example_runs(tmp_path):
    proc = subprocess.run([sys.executable, str(EXAMPLES / "api_example.py"), "--out", str(tmp_path),
                           "--epochs", "2"], capture_output=True, text=True, cwd=ROOT, timeout=600)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "test: energy RMSE" in proc.stdout


def test_bench_mlearn_refuses_a_run_folder_of_another_config(tmp_path):
    """A folder left by another recipe under the same tag is not reported as this one's
    (the benchmark skips finished runs and resumes unfinished ones)."""
    from scripts_for_tests import load_script

    bench = load_script("bench_mlearn")
    overrides = ["training.epochs=1000"]
    run = tmp_path / "seed0"
    run.mkdir()
    TrainConfig.from_yaml(bench.CONFIG, [*overrides, "training.seed=0"]).save(run / "config.yaml")
    # The same config, run longer and on another device: it may stand for this one.
    bench._refuse_other_configs("Si", bench.CONFIG, lambda _: ["training.epochs=2000", "training.device=cpu"], [0],
                                [run])
    with pytest.raises(SystemExit, match=r"seed0 was trained with another config .*'loss.energy_weight'.*--force"):
        bench._refuse_other_configs("Si", bench.CONFIG, lambda _: [*overrides, "loss.energy_weight=3000"], [0], [run])
    with pytest.raises(SystemExit, match=r"'training.seed'"):
        bench._refuse_other_configs("Si", bench.CONFIG, lambda _: overrides, [1], [run])


def tiny_cu_config(tmp_path, seed: int, training: dict, **sections):
    """A config of a one-layer net on 8 rattled EMT Cu cells (written to ``tmp_path``)."""
    import ase.io
    import numpy as np
    import yaml
    from ase.build import bulk
    from ase.calculators.emt import EMT

    rng = np.random.default_rng(seed)
    cells = []
    for _ in range(8):
        atoms = bulk("Cu", "fcc", a=3.6, cubic=True)
        atoms.positions += rng.normal(0, 0.05, atoms.positions.shape)
        atoms.calc = EMT()
        atoms.get_forces()
        cells.append(atoms)
    ase.io.write(tmp_path / "cu.extxyz", cells)
    config = tmp_path / "tiny.yaml"
    config.write_text(yaml.safe_dump({
        "data": {"train": str(tmp_path / "cu.extxyz"), "val_fraction": 0.0},
        "descriptor": {"cutoff": 4.0, "radial": [{"grid": {"count": 4, "mode": "shift", "r_lower": 1.5}}],
                       "angular": []},
        "model": {"depth": 1, "width": 4},
        "training": {"batch_size": 4, "dtype": "float64", **training}, **sections}))
    return config


def test_bench_mlearn_finish_starts_each_seed_from_its_own_model(tmp_path):
    """--finish-of TAG: seed k starts from TAG's seed k (training.init_weights), trains alone,
    and a second call finds it finished; another start model is refused as another config."""
    import yaml

    from scripts_for_tests import load_script

    bench = load_script("bench_mlearn")
    config = tiny_cu_config(tmp_path, seed=0, training={"epochs": 1})
    base = bench._train_seeds("Cu", tmp_path / "mlearn-Cu-base", config, [], [0, 1], 1, False)
    finish = ["optimizer.name=lbfgs", "optimizer.lr=1", "optimizer.lbfgs.max_iter=2"]
    dirs = bench._train_seeds("Cu", tmp_path / "mlearn-Cu-lbfgs", config, finish, [0, 1], 1, False,
                              start_from=tmp_path / "mlearn-Cu-base")
    for seed, run in enumerate(dirs):
        saved = yaml.safe_load((run / "config.yaml").read_text())
        assert saved["training"]["init_weights"] == str(base[seed] / "model.pt")
        assert saved["optimizer"]["name"] == "lbfgs" and (run / bench.DONE).is_file()
    assert bench._train_seeds("Cu", tmp_path / "mlearn-Cu-lbfgs", config, finish, [0], 1, False,
                              start_from=tmp_path / "mlearn-Cu-base") == dirs[:1]
    with pytest.raises(SystemExit, match=r"'training.init_weights'"):
        bench._train_seeds("Cu", tmp_path / "mlearn-Cu-lbfgs", config, finish, [0], 1, False,
                           start_from=tmp_path / "elsewhere")


def test_bench_mlearn_trains_a_config_with_a_finish_stage(tmp_path):
    """A recipe with a finish: section: the seeds' first stages train together, each seed's
    finish alone into <run>/finish, and the history counts the finish's epochs and time."""
    from scripts_for_tests import load_script

    bench = load_script("bench_mlearn")
    config = tiny_cu_config(tmp_path, seed=1, training={"epochs": 2},
                            finish={"epochs": 1, "optimizer": {"name": "lbfgs", "lr": 1.0, "lbfgs": {"max_iter": 2}}})
    dirs = bench._train_seeds("Cu", tmp_path / "mlearn-Cu", config, [], [0, 1], 2, False)
    for run in dirs:
        assert (run / "finish" / "start.pt").is_file() and (run / bench.DONE).is_file()
        history = bench._history(run)
        assert history["epochs"] == 2 and history["finish_epochs"] == 1
        first = sum(float(r["wall_s"]) for r in csv_rows(run / "metrics.csv"))
        assert history["train_wall_s"] > first


def csv_rows(path):
    import csv

    with open(path, newline="") as fh:
        return list(csv.DictReader(fh))


def test_accuracy_levers_tells_a_lever_finished_on_an_earlier_recipe(tmp_path):
    from scripts_for_tests import load_script

    levers = load_script("accuracy_levers")
    args = type("Args", (), {"elements": ["Si"], "seeds": [0], "epochs": 1000})()
    run = levers.run_folder(tmp_path, "Si", "wd1e-1-e1000") / "seed0"
    run.mkdir(parents=True)
    overrides = levers.run_overrides("Si", 1000, levers.LEVERS["wd1e-1"])
    TrainConfig.from_yaml(levers.CONFIG, [*overrides, "training.seed=0"]).save(run / "config.yaml")
    assert levers._earlier_recipe(tmp_path, "wd1e-1", "wd1e-1-e1000", args) == []
    # The same lever, trained when the recipe weighed the energies 100:
    TrainConfig.from_yaml(levers.CONFIG, [*overrides, "training.seed=0", "loss.energy_weight=100"]).save(
        run / "config.yaml")
    assert levers._earlier_recipe(tmp_path, "wd1e-1", "wd1e-1-e1000", args) == ["loss.energy_weight"]


def test_accuracy_levers_finds_a_kept_result_when_its_runs_are_gone(tmp_path, monkeypatch, capsys):
    """A fresh clone has no runs/accuracy: a lever whose result file was kept (committed)
    counts as done and is in the summary; a result in the runs folder comes first."""
    import json

    from scripts_for_tests import load_script

    levers = load_script("accuracy_levers")
    monkeypatch.setattr(levers, "KEPT", tmp_path / "kept")
    args = type("Args", (), {"elements": ["Si"], "seeds": [0], "epochs": 1000})()
    runs = tmp_path / "runs"
    assert not levers._done(runs, "w32-e1000", args)
    row = {"element": "Si", "seed": 0, "epochs": 1000, "energy_mae_mev_per_atom": 3.0, "force_mae_mev_per_a": 80.0,
           "stress_rmse_gpa": 0.6, "B_ideal_0.0025": 88.0, "B_ideal_0.02": 85.0,
           "elastic_dft": {k: 100.0 for k in ("C11", "C12", "C44", "B")},
           "elastic_model": {k: 101.0 for k in ("C11", "C12", "C44", "B")}}
    (tmp_path / "kept").mkdir()
    levers.result_file(tmp_path / "kept", "w32-e1000").write_text(json.dumps({"seeds": [0], "results": [row]}))
    assert levers._done(runs, "w32-e1000", args)
    levers._summary(runs, ["w32"], ["Si"])
    assert "w32-e1000" in capsys.readouterr().out
    runs.mkdir()
    levers.result_file(runs, "w32-e1000").write_text(json.dumps({"seeds": [1], "results": [row]}))
    assert not levers._done(runs, "w32-e1000", args)  # the runs folder's own file decides


def test_bench_mlearn_keeps_the_rows_of_elements_it_does_not_rerun(tmp_path):
    """--elements Mo after --elements Si under one tag adds Mo's rows; Si's stay."""
    import json

    from scripts_for_tests import load_script

    bench = load_script("bench_mlearn")
    path = tmp_path / "bench_mlearn-x.json"
    si = [{"element": "Si", "seed": s} for s in (0, 1, 2)] + [{"element": "Si", "seed": "committee"}]
    path.write_text(json.dumps({"seeds": [0, 1, 2], "results": si + [{"element": "Mo", "seed": 0}]}))
    assert bench._rows_of_other_elements(path, {"Mo"}, [2, 1, 0]) == si
    assert bench._rows_of_other_elements(path, {"Mo"}, [0]) == []  # other seeds: not one table
    assert bench._rows_of_other_elements(tmp_path / "absent.json", {"Mo"}, [0]) == []


def test_accuracy_levers_pairs_a_lever_with_the_recipe_seed_by_seed(tmp_path, monkeypatch, capsys):
    """--summary --paired BASE: each seed's difference from BASE at the same budget, and
    whether every seed moved the same way."""
    import json

    from scripts_for_tests import load_script

    levers = load_script("accuracy_levers")
    monkeypatch.setattr(levers, "KEPT", tmp_path / "kept")
    runs = tmp_path / "runs"
    runs.mkdir()

    def row(seed, energy, force):
        return {"element": "Si", "seed": seed, "epochs": 1000, "energy_mae_mev_per_atom": energy,
                "energy_rmse_mev_per_atom": 2 * energy, "force_mae_mev_per_a": force, "force_rmse_mev_per_a": 1.5 * force,
                "stress_rmse_gpa": 0.6, "B_ideal_0.0025": 88.0, "B_ideal_0.02": 85.0,
                "elastic_dft": {k: 100.0 for k in ("C11", "C12", "C44", "B")},
                "elastic_model": {k: 101.0 for k in ("C11", "C12", "C44", "B")}}

    base = [row(0, 3.0, 80.0), row(1, 3.5, 78.0), row(2, 3.2, 79.0)]
    lever = [row(0, 3.1, 77.0), row(1, 3.3, 76.5), row(2, 3.2, 75.0), {"element": "Si", "seed": "committee"}]
    levers.result_file(runs, "pool172-cur96-e1000").write_text(json.dumps({"seeds": [0, 1, 2], "results": base}))
    levers.result_file(runs, "forces3-e1000").write_text(json.dumps({"seeds": [0, 1, 2], "results": lever}))
    levers._summary(runs, ["forces3"], ["Si"], paired="pool172-cur96")
    out = capsys.readouterr().out
    assert "vs pool172-cur96, seeds [0, 1, 2]: ΔE MAE +0.10 -0.20 +0.00 meV/atom;" in out
    assert "ΔF MAE -3.00 -1.50 -4.00 meV/Å (every seed lower)" in out
    assert "ΔF RMSE -4.50 -2.25 -6.00 (every seed lower)" in out
    assert "ΔE RMSE +0.20 -0.40 +0.00;" in out  # mixed: no verdict
