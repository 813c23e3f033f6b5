"""``mlpot search``: architecture and optimiser search with Optuna, scored by cross-validation.

Each trial samples the ``search.space`` (TPE), trains the base config with those values on
every fold of a k-fold split at once (:func:`mlpot.training.many.train_many`: the folds of a
trial share one pass), and is scored by the mean over folds of the training loss (energy
+ force (+ stress), with the config's weights) of its best model on the fold's held-out
part. After every epoch the mean validation loss over the folds is reported, and the pruner
(successive halving/ASHA, Hyperband, or none) stops trials that trail the others; an
architecture over ``search.max_params`` is pruned before it trains.

A descriptor that chooses its terms from the data (``descriptor.select``) chooses them once,
on all of ``data.train`` before the folds are split (the choice reads descriptor values only,
no labels), and every trial and fold uses those terms: per-fold choices would give the folds
different descriptors and no shared cache. The choice is kept in ``OUT/descriptor.json``, and
``search.yaml`` and ``best.yaml`` list the chosen terms.

The study lives in ``OUT/study.db`` (SQLite): ``--resume`` (or re-running after a kill)
continues it. Finished trials (complete or pruned) are never repeated; a trial that was
running when its process died is tried again with the same values, continuing its folds'
checkpoints. Several worker processes (``jobs``) share the database.

Layout::

    OUT/search.yaml            the resolved config
    OUT/descriptor.json        the terms chosen by descriptor.select (only with it)
    OUT/study.db               the Optuna study (SQLite)
    OUT/splits/foldK.json      the cross-validation splits (shared by all trials)
    OUT/cache/                 the descriptor cache (computed once)
    OUT/trials/NNNN/foldK/     one training run per fold of trial NNNN
    OUT/trials.csv, best.yaml, report.md, *.png   (see mlpot.search.report)
"""

from __future__ import annotations

import os
import time
from dataclasses import replace
from pathlib import Path
from typing import Callable

import torch

from ..data import kfold_splits, read
from ..training.fixed_terms import choose_terms_once
from ..workers import worker_pool
from .config import SearchSetup, load_search

__all__ = ["run_search", "open_study", "STUDY_NAME"]

STUDY_NAME = "mlpot-search"


def open_study(out: Path, setup: SearchSetup | None = None, create: bool = False):
    """The Optuna study of ``out`` (SQLite ``out/study.db``); ``create`` makes it if absent."""
    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    storage = optuna.storages.RDBStorage(f"sqlite:///{out / 'study.db'}",
                                         engine_kwargs={"connect_args": {"timeout": 60}})
    if not create:
        return optuna.load_study(study_name=STUDY_NAME, storage=storage)
    search = setup.search
    sampler = optuna.samplers.TPESampler(seed=search.seed, n_startup_trials=min(10, max(2, search.trials // 4)))
    return optuna.create_study(study_name=STUDY_NAME, storage=storage, direction="minimize", sampler=sampler,
                               pruner=_pruner(setup), load_if_exists=True)


def _pruner(setup: SearchSetup):
    import optuna

    search, epochs = setup.search, setup.base.training.epochs
    if search.pruner == "asha":
        return optuna.pruners.SuccessiveHalvingPruner(min_resource=search.min_epochs, reduction_factor=3)
    if search.pruner == "hyperband":
        return optuna.pruners.HyperbandPruner(min_resource=search.min_epochs, max_resource=epochs, reduction_factor=3)
    return optuna.pruners.NopPruner()


def run_search(setup: SearchSetup, out: str | Path, trials: int | None = None, jobs: int = 1,
               resume: bool = False, log: Callable[[str], None] = print, threads: int | None = None) -> None:
    """Run (or continue) the search until ``trials`` (default ``search.trials``) trials have
    finished (complete or pruned), in ``jobs`` worker processes (``jobs`` = 1: this one).

    Raises:
        ValueError: ``out`` holds a study and ``resume`` is false, or its config differs.
    """
    out = Path(out)
    target = trials or setup.search.trials
    resuming = (out / "study.db").exists()
    if resuming and not resume:
        raise ValueError(f"{out} already holds a search (study.db): continue it with --resume (finished "
                         "trials are kept; --trials N raises the target), or choose another --out folder"
                         + (f"; its best config is {out / 'best.yaml'}" if (out / "best.yaml").is_file() else ""))
    out.mkdir(parents=True, exist_ok=True)
    setup = replace(setup, base=choose_terms_once(setup.base, out / "descriptor.json", resuming, log, "search"))
    if resuming:
        _check_same_search(out, setup)
    setup.save(out / "search.yaml")
    _write_splits(setup, out)
    study = open_study(out, setup, create=True)
    _retry_interrupted(study, log)
    if setup.search.baseline:
        _enqueue_baseline(study, setup, log)
    done = _finished(study)
    log(f"search: {done} of {target} trials finished; {jobs} worker(s)")
    if done >= target:
        return
    threads = threads or max(1, (os.cpu_count() or 1) // jobs)
    if jobs == 1:
        _worker(str(out), target, threads, 0, log)
        return
    with worker_pool(jobs) as pool:
        futures = [pool.submit(_worker, str(out), target, threads, k, None) for k in range(jobs)]
        for future in futures:
            future.result()


def _check_same_search(out: Path, setup: SearchSetup) -> None:
    """A resumed search keeps its data, descriptor, loss and folds (trials and space may grow)."""
    import yaml

    before = yaml.safe_load((out / "search.yaml").read_text())
    now = setup.to_dict()
    for key in ("data", "descriptor", "descriptor_cutoff", "scaling", "loss"):
        if before.get(key) != now.get(key):
            raise ValueError(f"cannot resume {out}: its search.yaml differs in '{key}'")
    if before.get("search", {}).get("folds") != setup.search.folds:
        raise ValueError(f"cannot resume {out}: its search used {before['search']['folds']} folds")


def _write_splits(setup: SearchSetup, out: Path) -> None:
    folder = out / "splits"
    if folder.is_dir() and len(list(folder.glob("fold*.json"))) == setup.search.folds:
        return  # a resumed search keeps its folds
    data = setup.base.data
    structures = read(data.train, format=data.format, **data.read_options)
    folder.mkdir(parents=True, exist_ok=True)
    for k, split in enumerate(kfold_splits(len(structures), setup.search.folds, seed=data.split_seed,
                                           val_fraction=data.val_fraction, groups=data.groups(structures))):
        split.save(folder / f"fold{k}.json")


def _finished(study) -> int:
    from optuna.trial import TrialState

    return len(study.get_trials(deepcopy=False, states=(TrialState.COMPLETE, TrialState.PRUNED)))


def _retry_interrupted(study, log: Callable[[str], None]) -> None:
    """Trials left running by a dead process: marked failed, and queued again with the same
    values and folder (their folds continue from their checkpoints)."""
    from optuna.trial import TrialState

    for trial in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
        study.tell(trial.number, state=TrialState.FAIL)
        folder = trial.user_attrs.get("folder") or f"trials/{trial.number:04d}"
        kept = {k: v for k, v in trial.user_attrs.items() if k == "baseline"}
        study.enqueue_trial(trial.params, user_attrs={**kept, "folder": folder, "retries": trial.number},
                            skip_if_exists=False)
        log(f"trial {trial.number} was interrupted: queued again with the same values ({folder})")


def _enqueue_baseline(study, setup: SearchSetup, log: Callable[[str], None]) -> None:
    """Queue the base config's own values as a trial (once per study, marked ``baseline``), so
    that the report says what the search gained over the config it started from. A search
    that already ran trials gets it as its next trial."""
    if any(t.user_attrs.get("baseline") for t in study.get_trials(deepcopy=False)):
        return
    values = setup.base_values()
    if values is None:
        log("search: the base config's values are not all in search.space: no baseline trial")
        return
    study.enqueue_trial(values, user_attrs={"baseline": True}, skip_if_exists=False)
    log(f"search: the base config's values {values} queued as the baseline trial")


def _worker(out: str, target: int, threads: int, index: int, log: Callable[[str], None] | None) -> None:
    """Run trials until the study has ``target`` finished ones (one worker process)."""
    import optuna

    torch.set_num_threads(threads)
    out_path = Path(out)
    setup = load_search(out_path / "search.yaml")
    study = open_study(out_path)
    study.sampler = optuna.samplers.TPESampler(seed=setup.search.seed + 1000 * index,
                                               n_startup_trials=min(10, max(2, setup.search.trials // 4)))
    study.pruner = _pruner(setup)
    objective = _Objective(setup, out_path, log or (lambda _: None))
    failures = 0
    while _finished(study) < target:
        study.optimize(objective, n_trials=1, catch=(Exception,))
        last = study.get_trials(deepcopy=False)[-1]
        failures = failures + 1 if last.state == optuna.trial.TrialState.FAIL else 0
        if failures >= 3:  # a systematic error (data, config): every further trial would fail too
            raise RuntimeError(f"{failures} trials in a row failed; the last: {last.user_attrs.get('reason')}")


class _Objective:
    """One trial: sample, train the folds together, score on the held-out parts."""

    def __init__(self, setup: SearchSetup, out: Path, log: Callable[[str], None]):
        self.setup, self.out, self.log = setup, out, log
        self.parameters = setup.search.parameters()
        self.n_features = None
        self._data: list | None = None

    def __call__(self, trial) -> float:
        import optuna

        try:
            return self._run(trial)
        except optuna.TrialPruned:
            raise
        except Exception as exc:
            trial.set_user_attr("reason", f"{type(exc).__name__}: {exc}")
            self.log(f"trial {trial.number} failed: {type(exc).__name__}: {exc}")
            raise

    def _run(self, trial) -> float:
        import optuna

        values = {p.name: p.sample(trial) for p in self.parameters}
        folder = trial.user_attrs.get("folder") or f"trials/{trial.number:04d}"
        trial.set_user_attr("folder", folder)
        configs = [self.setup.trial_config(values, {"data.split_file": str(self.out / "splits" / f"fold{k}.json"),
                                                    "data.test": None,
                                                    "training.descriptor_cache_dir": str(self.out / "cache")})
                   for k in range(self.setup.search.folds)]
        n_params = self._n_params(configs[0])
        trial.set_user_attr("n_params", n_params)
        limit = self.setup.search.max_params
        if limit is not None and n_params > limit:
            trial.set_user_attr("reason", f"{n_params} parameters > max_params {limit}")
            trial.set_user_attr("epochs_run", 0)
            raise optuna.TrialPruned()
        start = time.perf_counter()
        results = self._train(trial, configs, self.out / folder)
        weights = configs[0].loss
        from ..training import loss_from_metrics

        fold_values = [loss_from_metrics(r["test"], weights) for r in results]
        trial.set_user_attr("fold_values", fold_values)
        trial.set_user_attr("train_wall_s", time.perf_counter() - start)
        trial.set_user_attr("inference_us_per_atom", self._inference(self.out / folder / "fold0"))
        value = sum(fold_values) / len(fold_values)
        self.log(f"trial {trial.number}: {values} → {value:.4e} ({n_params} parameters)")
        return value

    def _structures(self) -> list:
        """The training data, read once per worker (every trial's parameter count and timing
        need it)."""
        if self._data is None:
            data = self.setup.base.data
            self._data = read(data.train, format=data.format, **data.read_options)
        return self._data

    def _n_params(self, config) -> int:
        from ..ablation.grid import count_parameters
        from ..data import element_symbols, load_split

        if self.n_features is None:
            structures = self._structures()
            split = load_split(self.out / "splits" / "fold0.json")
            elements = element_symbols(structures[k] for k in split.train)
            self.n_features = config.build_descriptor(elements).n_features_per_element
        return count_parameters(self.n_features, config.model)

    def _train(self, trial, configs, folder: Path) -> list[dict]:
        """The folds trained together, reporting the mean validation loss per epoch."""
        import optuna

        from ..training.many import train_many

        dirs = [folder / f"fold{k}" for k in range(len(configs))]

        def on_epoch(epoch: int, rows: list[dict | None]) -> None:
            losses = [r["val_loss"] for r in rows if r is not None and r.get("val_loss") is not None]
            trial.set_user_attr("epochs_run", epoch)
            if losses:
                trial.report(sum(losses) / len(losses), epoch)
            if trial.should_prune():
                raise optuna.TrialPruned()

        log_path = folder / "train.log"
        folder.mkdir(parents=True, exist_ok=True)
        with open(log_path, "a") as fh:
            def log(line: str) -> None:
                fh.write(line + "\n")
                fh.flush()

            resume = [(d / "last.pt").is_file() for d in dirs]
            return train_many(configs, dirs, resume=resume, overwrite=True, progress=False, log=log,
                              on_epoch=on_epoch)

    def _inference(self, run_dir: Path) -> float | None:
        """µs per atom of energy + forces of fold 0's model on its held-out structures."""
        from ..ablation.runner import inference_time
        from ..data import load_split
        from ..io import load_model

        model = load_model(run_dir / "model.pt")
        structures = self._structures()
        split = load_split(self.out / "splits" / "fold0.json")
        return inference_time(model, [structures[i] for i in split.test], self.setup.search.inference_repeats)
