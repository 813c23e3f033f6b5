"""mlpot search: the space and its errors, pruning, resumption without repeated trials,
and the outputs (trials.csv, best.yaml, report.md)."""

from __future__ import annotations

import csv

import ase.io
import pytest

from mlpot.config import ConfigError
from mlpot.search import load_search, run_search, write_outputs
from mlpot.search.study import open_study
from mlpot.training import TrainConfig
from test_training_run import emt_structures

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    folder = tmp_path_factory.mktemp("search-data")
    ase.io.write(folder / "train.extxyz", emt_structures(24, seed=0))
    return folder / "train.extxyz"


def search_config(train, **search) -> dict:
    return {
        "data": {"train": str(train), "val_fraction": 0.2},
        "descriptor": {"cutoff": 4.0, "cutoff_function": "poly2",
                       "radial": [{"grid": {"count": 4, "mode": "shift", "r_lower": 1.5}}],
                       "angular": [{"kind": "G5", "zetas": [1], "lambdas": [-1, 1], "eta": 0.05}]},
        "optimizer": {"lr": 5e-3},
        "training": {"epochs": 4, "batch_size": 8, "dtype": "float64", "checkpoint_every": 1},
        "search": {"trials": 4, "folds": 2, "pruner": "asha", "min_epochs": 1, "seed": 0,
                   "space": {"depth": {"int": [1, 3]}, "width": {"int": [4, 16], "log": True},
                             "block": {"choice": ["plain", "residual"]}, "lr": {"float": [1e-3, 3e-2], "log": True}},
                   **search},
    }


@pytest.mark.parametrize("space, message", [
    ({"depht": {"int": [1, 2]}}, r"search\.space\.depht: unknown"),
    ({"depth": {"int": [0, 2]}}, r"search\.space\.depth: 0 does not fit model\.depth"),
    ({"width": {"int": [4, 8], "choice": [1]}}, r"give exactly one of int, float, choice"),
    ({"lr": {"float": [0.0, 1e-3], "log": True}}, r"low > 0 for log"),
    ({"block": {"choice": []}}, r"a non-empty list"),
    ({"training.batch_sise": {"int": [1, 4]}}, r"training\.batch_sise"),
])
def test_bad_space_is_named(data, space, message):
    with pytest.raises(ConfigError, match=message):
        load_search(search_config(data, space=space))


def test_a_pruner_without_a_validation_set_is_refused(data):
    config = search_config(data)
    config["data"]["val_fraction"] = 0.0
    with pytest.raises(ConfigError, match=r"search\.pruner: 'asha' prunes on the folds' validation loss.*"
                                          r"data\.val_fraction is 0"):
        load_search(config)
    config["search"]["pruner"] = "none"  # scored on the held-out folds alone: allowed
    assert load_search(config).base.data.val_fraction == 0.0


def test_search_prunes_resumes_and_reports(data, tmp_path):
    out = tmp_path / "search"
    setup = load_search(search_config(data))
    run_search(setup, out, trials=3, log=lambda _: None)
    study = open_study(out)
    finished = {t.number: t for t in study.trials}
    assert len(finished) == 3
    # The pruner stops trials early: a pruned trial ran fewer epochs than the budget.
    pruned = [t for t in study.trials if t.state.name == "PRUNED"]
    complete = [t for t in study.trials if t.state.name == "COMPLETE"]
    assert pruned and complete and all(t.user_attrs["epochs_run"] == 4 for t in complete)
    for t in pruned:
        assert t.user_attrs["epochs_run"] < 4
        rows = list(csv.DictReader(open(out / t.user_attrs["folder"] / "fold0" / "metrics.csv")))
        assert len(rows) == t.user_attrs["epochs_run"]

    # A process killed during a trial leaves it running: the next run retries its values
    # in its folder and repeats no finished trial.
    stale = study.ask({p.name: _distribution(p) for p in setup.search.parameters()})
    stale.set_user_attr("folder", "trials/stale")
    stamps = {n: (out / t.user_attrs["folder"] / "fold0" / "metrics.csv").stat().st_mtime_ns
              for n, t in finished.items() if t.state.name == "COMPLETE"}
    with pytest.raises(ValueError, match="--resume"):
        run_search(setup, out, trials=4, log=lambda _: None)
    lines = []
    run_search(setup, out, trials=4, resume=True, log=lines.append)
    assert any(f"trial {stale.number} was interrupted" in line for line in lines)
    study = open_study(out)
    states = [t.state.name for t in study.trials]
    assert states[stale.number] == "FAIL" and states.count("COMPLETE") + states.count("PRUNED") == 4
    retry = study.trials[-1]
    assert retry.params == stale.params and retry.user_attrs["folder"] == "trials/stale"
    for n, stamp in stamps.items():  # finished trials were not trained again
        assert (out / finished[n].user_attrs["folder"] / "fold0" / "metrics.csv").stat().st_mtime_ns == stamp

    report = write_outputs(out).read_text()
    assert "# Search report" in report and "1 failed (1 of them interrupted and run again)" in report
    rows = list(csv.DictReader(open(out / "trials.csv")))
    assert len(rows) == len(study.trials) and {"depth", "width", "block", "lr", "n_params", "value"} <= set(rows[0])
    best = TrainConfig.from_yaml(out / "best.yaml")
    winner = min((t for t in study.trials if t.state.name == "COMPLETE"), key=lambda t: t.value)
    assert best.model.depth == winner.params["depth"] and best.optimizer.lr == pytest.approx(winner.params["lr"])


def _distribution(parameter):
    from optuna.distributions import CategoricalDistribution, FloatDistribution, IntDistribution

    if parameter.kind == "int":
        return IntDistribution(int(parameter.low), int(parameter.high), log=parameter.log)
    if parameter.kind == "float":
        return FloatDistribution(parameter.low, parameter.high, log=parameter.log)
    return CategoricalDistribution(list(parameter.choices))


def test_search_chooses_the_terms_once_for_every_trial_and_fold(data, tmp_path):
    """descriptor.select chooses on all of data.train, once: the trials' configs list those
    terms, a resumed search keeps them, and another select config cannot resume it."""
    import json

    config = search_config(data, trials=2, pruner="none")
    config["descriptor"]["select"] = {"count": 4, "method": "cur"}
    out = tmp_path / "search"
    lines = []
    run_search(load_search(config), out, log=lines.append)
    assert any("descriptor.select chose its terms once, on all 24 structures" in line for line in lines)
    record = json.loads((out / "descriptor.json").read_text())
    chosen = record["spec"]
    for centre in ("Au", "Cu"):  # count is per element
        assert sum(term["centre"] == centre for term in chosen["radial"] + chosen["angular"]) == 4
    # The same choice as a training run on all the data makes (independently built here).
    structures = ase.io.read(data, ":")
    expected = TrainConfig.from_dict({k: v for k, v in config.items() if k != "search"}).build_descriptor(
        ["Cu", "Au"], structures).spec.to_dict()  # sorted by atomic number, as training orders them
    assert chosen == expected
    for trial in open_study(out).trials:
        for fold in (0, 1):
            run = TrainConfig.from_yaml(out / trial.user_attrs["folder"] / f"fold{fold}" / "config.yaml")
            assert run.build_descriptor(["Cu", "Au"]).spec.to_dict() == chosen
    write_outputs(out)
    assert TrainConfig.from_yaml(out / "best.yaml").build_descriptor(["Cu", "Au"]).spec.to_dict() == chosen
    # Resumed with the same config: the kept choice, no new one.
    lines.clear()
    run_search(load_search(config), out, trials=3, resume=True, log=lines.append)
    assert not any("chose its terms" in line for line in lines) and len(open_study(out).trials) == 3
    # Another select config cannot continue this study.
    config["descriptor"]["select"] = {"count": 3, "method": "cur"}
    with pytest.raises(ValueError, match="chosen by another descriptor config"):
        run_search(load_search(config), out, trials=4, resume=True, log=lambda _: None)


def test_the_base_configs_values_are_the_first_trial_once(data, tmp_path):
    """search.baseline: the base config's own values (here depth 2, width 8, plain, lr 5e-3)
    are trial 0, marked in trials.csv and report.md; a resumed search does not queue them
    again, and a base outside the space (or baseline: false) gives no baseline trial."""
    config = search_config(data, trials=2, pruner="none")
    config["model"] = {"depth": 2, "width": 8, "block": "plain"}
    out = tmp_path / "search"
    lines = []
    run_search(load_search(config), out, log=lines.append)
    first = open_study(out).trials[0]
    assert first.params == {"depth": 2, "width": 8, "block": "plain", "lr": 5e-3}
    assert first.user_attrs["baseline"] is True and first.state.name == "COMPLETE"
    assert not open_study(out).trials[1].user_attrs.get("baseline")
    assert any("queued as the baseline trial" in line for line in lines)
    trained = TrainConfig.from_yaml(out / first.user_attrs["folder"] / "fold0" / "config.yaml")
    assert (trained.model.depth, trained.model.width, trained.optimizer.lr) == (2, 8, 5e-3)
    report = write_outputs(out).read_text()
    assert f"(trial 0, the baseline): cross-validated loss **{first.value:.4g}**" in report
    rows = list(csv.DictReader(open(out / "trials.csv")))
    assert [r["baseline"] for r in rows] == ["True", ""]
    lines.clear()
    run_search(load_search(config), out, trials=3, resume=True, log=lines.append)
    assert sum(bool(t.user_attrs.get("baseline")) for t in open_study(out).trials) == 1
    assert not any("baseline" in line for line in lines)
    # Width 32 lies outside [4, 16]: the base is not a point of the space.
    config["model"]["width"] = 32
    lines.clear()
    run_search(load_search(config), tmp_path / "outside", trials=1, log=lines.append)
    assert "no baseline trial" in " ".join(lines)
    assert not open_study(tmp_path / "outside").trials[0].user_attrs.get("baseline")
    config["model"]["width"] = 8
    config["search"]["baseline"] = False
    run_search(load_search(config), tmp_path / "off", trials=1, log=lambda _: None)
    assert not open_study(tmp_path / "off").trials[0].user_attrs.get("baseline")


def test_base_values_need_every_searched_entry_in_range(data):
    setup = load_search({**search_config(data), "model": {"depth": 3, "width": 16, "block": "residual"}})
    assert setup.base_values() == {"depth": 3, "width": 16, "block": "residual", "lr": 5e-3}
    explicit = load_search({**search_config(data), "model": {"hidden": [8, 8], "block": "plain"}})
    assert explicit.base_values() is None  # explicit widths are not a (depth, width) point
    low_rate = load_search({**search_config(data), "model": {"depth": 3, "width": 16}, "optimizer": {"lr": 1e-4}})
    assert low_rate.base_values() is None
