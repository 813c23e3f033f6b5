"""Run an ablation grid: one ordinary training run per grid point, then its measurements.

Layout of the output folder::

    OUT/ablation.yaml          the resolved config (base + ablation block)
    OUT/splits/foldK.json      the cross-validation splits (shared by all runs)
    OUT/cache/                 descriptors and their Jacobians (computed once, shared by all runs)
    OUT/runs/<name>/           a training run (config.yaml, metrics.csv, model.pt, …)
                    result.json   written last, atomically: the run is finished
                    error.txt     why the last attempt failed (the run is retried)
    OUT/results.csv, results.json, report.md, *.png   (see mlpot.ablation.report)

A run counts as finished when its ``result.json`` is complete; ``--resume`` skips finished
runs, continues interrupted ones from their ``last.pt`` and restarts broken ones.
"""

from __future__ import annotations

import csv
import json
import os
import resource
import sys
import time
import traceback
from concurrent.futures import as_completed
from dataclasses import replace
from pathlib import Path
from typing import Callable

import torch

from ..data import element_symbols, kfold_splits, load_split, random_split, read
from ..device import resolve_device
from ..io.files import atomic_write_text
from ..provenance import code_version
from ..training.fixed_terms import choose_terms_once
from ..workers import worker_pool
from .config import AblationSetup
from .grid import RunSpec, expand_grid

__all__ = ["run_ablation", "run_one", "train_runs", "measure_run", "load_result", "inference_time",
           "RESULT_FILE"]

RESULT_FILE = "result.json"
_RESULT_VERSION = 1


def load_result(run_dir: Path) -> dict | None:
    """The finished result of a run folder, or ``None`` (absent, partial or corrupt)."""
    path = Path(run_dir) / RESULT_FILE
    try:
        result = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    if not isinstance(result, dict) or result.get("version") != _RESULT_VERSION or "test" not in result:
        return None
    return result


def _to_train(runs: list[RunSpec], folder: Path, epochs: int) -> tuple[list[RunSpec], int]:
    """The runs of ``folder`` to train: those without a result, then the finished ones that
    ``epochs`` extends (:func:`_extendable`); and how many of them are extended."""
    finished = {r.name: load_result(folder / r.name) for r in runs}
    extend = [r for r in runs if finished[r.name] is not None and _extendable(folder / r.name, finished[r.name], epochs)]
    return [r for r in runs if finished[r.name] is None] + extend, len(extend)


def _extendable(run_dir: Path, result: dict, epochs: int) -> bool:
    """Whether a finished run (its ``result``) ran to its epoch budget (it did not stop early)
    and ``epochs``, the grid's budget now, is larger: raising ``training.epochs`` and resuming
    extends such runs from their ``last.pt``, as ``mlpot train --resume`` would."""
    if result["epochs"] >= epochs or not (run_dir / "last.pt").is_file():
        return False
    import yaml

    try:
        budget = yaml.safe_load((run_dir / "config.yaml").read_text())["training"]["epochs"]
    except (OSError, yaml.YAMLError, KeyError, TypeError):
        return False
    return result["epochs"] >= budget


def run_ablation(setup: AblationSetup, out: str | Path, jobs: int = 1, resume: bool = False,
                 log: Callable[[str], None] = print, only: list[str] | None = None,
                 isolate: bool = True, threads: int | None = None) -> list[dict]:
    """Train and measure every run of the grid; returns the results of all finished runs.

    Args:
        setup: base config and grid.
        out: output folder (created).
        jobs: runs trained at once (each in its own process, with cpu_count/jobs threads).
        resume: continue in a folder that holds an earlier (possibly interrupted) grid.
        log: receives progress lines.
        only: run names to run (default: all).
        threads: torch threads per run (default: CPU cores / ``jobs``).
        isolate: with ``jobs`` = 1, still train each group of runs in a fresh process (its
            process peak memory is then its own); ``False`` trains in this process (tests,
            debugging).

    Raises:
        ValueError: ``out`` holds a grid and ``resume`` is false, or its config differs.
    """
    out = Path(out)
    saved = out / "ablation.yaml"
    if saved.exists() and not resume:
        raise ValueError(f"{out} already holds an ablation (ablation.yaml): continue it with --resume "
                         "(finished runs are kept), or choose another --out folder"
                         + (f"; its report is {out / 'report.md'}" if (out / "report.md").is_file() else ""))
    # A descriptor.select config: its terms chosen once for every run (in descriptor.json).
    setup = replace(setup, base=choose_terms_once(setup.base, out / "descriptor.json", saved.exists(), log,
                                                  "ablation"))
    if saved.exists():
        import yaml

        before = yaml.safe_load(saved.read_text())
        if _grid_identity(before) != _grid_identity(setup.to_dict()):
            raise ValueError(f"cannot resume {out}: its ablation.yaml differs from this config in more "
                             "than the grid's extent (depths, widths, variants, seeds, MD and timing "
                             "may change; data, descriptor, loss, optimiser and folds may not)")
    out.mkdir(parents=True, exist_ok=True)
    setup.save(saved)

    structures = read(setup.base.data.train, format=setup.base.data.format, **setup.base.data.read_options)
    split_files = _write_splits(setup, structures, out / "splits")
    elements, n_features = _descriptor_shape(setup, structures, split_files[0])
    runs = expand_grid(setup, n_features)
    if only:
        unknown = sorted(set(only) - {r.name for r in runs})
        if unknown:
            raise ValueError(f"no run(s) {unknown} in this grid")
        runs = [r for r in runs if r.name in only]
    todo, extended = _to_train(runs, out / "runs", setup.base.training.epochs)
    log(f"ablation: {len(runs)} runs ({len(runs) - len(todo)} finished, {len(todo)} to run"
        + (f", of which {extended} extended to {setup.base.training.epochs} epochs" if extended else "")
        + f") of {elements}; {jobs} at a time")
    if todo and setup.base.training.descriptor_cache in ("memory", "hdf5"):
        _prepare_cache(setup, structures, elements, out / "cache", log)
    threads = threads or max(1, (os.cpu_count() or 1) // jobs)
    failed = []
    start = time.perf_counter()
    groups = _groups(todo, setup.ablation.vectorize)
    if todo:
        log(f"training {len(groups)} configuration(s) of {len(todo)} run(s); an ETA follows each finished one")
    if not isolate and jobs == 1:
        outcomes = ((run, outcome) for group in groups
                    for run, outcome in zip(group, _worker(setup.to_dict(), group, str(out), split_files, None)))
    else:  # a fresh process per group (max_tasks_per_child=1): each group's process peak is its own
        outcomes = _in_processes(setup, groups, out, split_files, threads, jobs)
    group_size = {run.name: len(group) for group in groups for run in group}
    seen_groups: set[str] = set()
    done = 0  # runs of the groups that have finished (the runs of a group finish together)
    for k, (run, (ok, message)) in enumerate(outcomes, 1):
        key = run.group if setup.ablation.vectorize else run.name
        if key not in seen_groups:
            seen_groups.add(key)
            done += group_size[run.name]
        _report(log, (k, done, len(todo)), run, ok, message, out, start)
        if not ok:
            failed.append(run.name)
    if failed:
        log(f"{len(failed)} run(s) failed (see runs/<name>/error.txt; --resume retries them): {failed}")
    return [r for r in (load_result(out / "runs" / run.name) for run in runs) if r is not None]


def _groups(runs: list[RunSpec], vectorize: bool) -> list[list[RunSpec]]:
    """Runs trained together: the folds and seeds of one grid point (``vectorize``), else one
    run each."""
    if not vectorize:
        return [[run] for run in runs]
    groups: dict[str, list[RunSpec]] = {}
    for run in runs:
        groups.setdefault(run.group, []).append(run)
    return list(groups.values())


def _in_processes(setup, groups, out, split_files, threads, jobs):
    """Yield ``(run, (ok, message))`` as groups finish, ``jobs`` worker processes at a time."""
    with worker_pool(jobs, max_tasks_per_child=1) as pool:
        futures = {pool.submit(_worker, setup.to_dict(), group, str(out), split_files, threads): group
                   for group in groups}
        for future in as_completed(futures):
            group = futures[future]
            try:
                outcomes = future.result()
            except Exception as exc:  # the worker process died
                outcomes = [(False, f"worker died: {exc}")] * len(group)
            yield from zip(group, outcomes)


def _report(log, count: tuple[int, int, int], run, ok, message, out, start) -> None:
    """One line per finished run: its test errors, the time so far and the ETA.

    ``count`` is (this run's number, runs of finished groups, runs to do): the ETA comes
    from the mean time per run of the finished groups (whose runs trained together, or side
    by side with ``--jobs``), so it does not jump as a group's runs are reported one by one."""
    from ..progress import eta_text, format_duration

    k, done, total = count
    elapsed = time.perf_counter() - start
    timing = f"(elapsed {format_duration(elapsed)}, {eta_text(done, total, elapsed)})"
    if ok:
        r = load_result(out / "runs" / run.name)
        t = r["test"] or {}
        log(f"[{k}/{total}] {run.name}: test E RMSE {_fmt(t.get('energy_rmse_mev_per_atom'), 2)} meV/atom, "
            f"F RMSE {_fmt(t.get('force_rmse_mev_per_a'))} meV/Å, {r['train_wall_s']:.0f} s  {timing}")
    else:
        log(f"[{k}/{total}] {run.name}: FAILED: {message}  {timing}")


def _fmt(value, digits: int = 1) -> str:
    return "–" if value is None else f"{value:.{digits}f}"


def _worker(setup_dict: dict, group: list[RunSpec], out: str, split_files: list[str],
            threads: int | None) -> list[tuple[bool, str]]:
    """Train ``group`` (together when it has several runs) and measure each run; per run,
    ``(ok, message)``; a failure is written to the run's ``error.txt``."""
    from .config import load_ablation

    if threads is not None:
        torch.set_num_threads(threads)
    setup = load_ablation(setup_dict)
    dirs = [Path(out) / "runs" / run.name for run in group]
    for run_dir in dirs:
        run_dir.mkdir(parents=True, exist_ok=True)
    try:
        summaries = train_runs(setup, group, dirs, [split_files[run.fold] for run in group])
    except Exception as exc:
        for run_dir in dirs:
            atomic_write_text(run_dir / "error.txt", traceback.format_exc())
        return [(False, f"{type(exc).__name__}: {exc}")] * len(group)
    outcomes = []
    for run, run_dir, summary in zip(group, dirs, summaries):
        try:
            if summary.get("error"):
                raise RuntimeError(summary["error"])
            result = measure_run(setup, run, run_dir, split_files[run.fold], summary)
        except Exception as exc:
            atomic_write_text(run_dir / "error.txt", traceback.format_exc())
            outcomes.append((False, f"{type(exc).__name__}: {exc}"))
            continue
        (run_dir / "error.txt").unlink(missing_ok=True)
        outcomes.append((True, json.dumps(result["test"])))
    return outcomes


def train_runs(setup: AblationSetup, runs: list[RunSpec], dirs: list[Path], split_files: list[str]) -> list[dict]:
    """Train ``runs`` into ``dirs`` (resuming each from its ``last.pt`` when there is one):
    one run alone, several together (:func:`mlpot.training.many.train_many`); each run's
    log goes to its ``train.log``. Returns each run's training summary."""
    from ..training import train
    from ..training.many import train_many

    cache_dir = str(Path(dirs[0]).parent.parent / "cache")
    configs = [run.train_config(setup, split, cache_dir=cache_dir) for run, split in zip(runs, split_files)]
    files = [open(d / "train.log", "a") for d in dirs]
    try:
        def log(line: str) -> None:
            k, _, text = line.partition("] ") if len(runs) > 1 and line.startswith("[") else ("", "", line)
            targets = [files[int(k[1:])]] if k[1:].isdigit() else files
            for fh in targets:
                fh.write(text + "\n")
                fh.flush()

        resume = [_resumable(config, d, fh) for config, d, fh in zip(configs, dirs, files)]
        if len(runs) == 1:
            return [train(configs[0], dirs[0], resume=resume[0], overwrite=True, progress=False, log=log)]
        return train_many(configs, dirs, resume=resume, overwrite=True, progress=False, log=log)
    finally:
        for fh in files:
            fh.close()


def _resumable(config, run_dir: Path, log_file) -> bool:
    """Whether ``run_dir`` holds a checkpoint this run can continue; says why not in the
    run's log when there is one it cannot (the run then trains again from the start)."""
    from ..training import CheckpointError, load_checkpoint
    from ..training.trainer import _check_resumable

    path = run_dir / "last.pt"
    if not path.is_file():
        return False
    try:
        _check_resumable(load_checkpoint(path)["config"], config.to_dict(), path)
    except (CheckpointError, ValueError) as exc:
        log_file.write(f"cannot resume ({exc}); training this run again from the start\n")
        return False
    return True


def run_one(setup: AblationSetup, run: RunSpec, run_dir: Path, split_file: str) -> dict:
    """Train one grid point (resuming its ``last.pt`` when there is one) and measure it.

    Returns:
        the result dict also written to ``run_dir/result.json``.
    """
    run_dir = Path(run_dir)
    summary = train_runs(setup, [run], [run_dir], [split_file])[0]
    return measure_run(setup, run, run_dir, split_file, summary)


def measure_run(setup: AblationSetup, run: RunSpec, run_dir: Path, split_file: str, summary: dict) -> dict:
    """The measurements of a trained run (test errors, outlier structures, gradients,
    inference time, MD stability, memory), written last to ``run_dir/result.json`` and
    returned.

    Memory: ``train_step_peak_mib`` and ``train_step_peak_checkpointed_mib`` are this run's
    own (one training step of its network, :mod:`~mlpot.ablation.memory`);
    ``process_peak_rss_mib`` is the peak resident set of the process, shared by the runs
    trained together in it."""
    from ..io import load_model

    config = run.train_config(setup, split_file)
    device = resolve_device(config.training.device, "training.device")
    model = load_model(run_dir / "model.pt", device=device, dtype=getattr(torch, config.training.dtype))
    structures = read(setup.base.data.train, format=setup.base.data.format, **setup.base.data.read_options)
    split = load_split(split_file)
    external = None
    if setup.base.data.test:
        external = read(setup.base.data.test, format=setup.base.data.format, **setup.base.data.read_options)
    # Held-out structures for timing and MD: the fold's test part, else the external test set.
    test = [structures[i] for i in split.test] or list(external or [])
    history = _read_csv(run_dir / "metrics.csv")
    result = {
        "version": _RESULT_VERSION, **run.factors(),
        "n_parameters_model": model.n_parameters(),
        "epochs": summary["epochs"], "best_epoch": summary["best_epoch"],
        "train_wall_s": sum(float(r["wall_s"]) for r in history),
        "test": summary["test"], "val": summary["val"],
        "external_test": None,
        **gradient_flow(model, run_dir, history),
        "threads": torch.get_num_threads(), "device": str(device),
        # Runs of one grid point trained together share a process: its peak resident set and
        # each run's share of the epochs' wall time (metrics.csv) are what they report.
        "trained_together": summary.get("members", 1),
        "code": code_version(),  # a run trained again at another commit need not repeat these errors
    }
    result["external_test"], result["outliers"], result["extrapolation"] = _test_errors(
        model, structures, split, external, config.training.batch_size)
    result["inference_us_per_atom"] = inference_time(model, test, setup.ablation.inference_repeats)
    md_cfg = setup.ablation.md
    if md_cfg.steps and test:
        from .stability import md_stability

        picks = [test[int(k)] for k in torch.linspace(0, len(test) - 1, min(md_cfg.structures, len(test))).round().long()]
        result["md"] = md_stability(model, picks, md_cfg)
    else:
        result["md"] = None
    from .memory import training_step_memory

    batch = [structures[int(k)] for k in split.train[: config.training.batch_size]]
    result.update(training_step_memory(model, batch, config, device))
    result["process_peak_rss_mib"] = _process_peak_rss_mib(device)
    atomic_write_text(run_dir / RESULT_FILE, json.dumps(result, indent=1) + "\n")
    return result


def _test_errors(model, structures, split, external, batch_size: int) -> tuple[dict | None, dict, dict]:
    """The external test set's metrics (with folds, data.test is an extra, external check;
    ``None`` without one), and for the fold's test part and the external test set: the
    outlier structures (:func:`~mlpot.ablation.stats.outlier_structures`) and the force error
    beyond the training range and inside it (:func:`~mlpot.ablation.stats.range_split`; under
    ``"test"`` that of the run's own test set, which without folds is data.test)."""
    from ..evaluation import evaluate
    from .stats import outlier_structures, range_split, structure_errors

    metrics, outliers, extrapolation = None, {}, {}
    parts = [("test", [structures[i] for i in split.test], list(split.test))] if split.test else []
    if external is not None:
        parts.append(("external_test", external, list(range(len(external)))))
    for part, test, indices in parts:
        part_metrics, pred = evaluate(model, test, batch_size=batch_size)
        outliers[part] = outlier_structures(structure_errors(pred), indices)
        # Without folds data.test is the run's own test set (summary["test"]), not an extra:
        # its split by the training range is the run's "test" one.
        own = part == "test" or not split.test
        extrapolation["test" if own else "external_test"] = range_split(pred, indices)
        if not own:
            metrics = part_metrics
    return metrics, outliers, extrapolation


def inference_time(model, structures, repeats: int = 5, max_atoms: int = 2000) -> float | None:
    """Median µs per atom of energy + forces for a batch of ``structures`` (neighbour pairs
    built beforehand, as in MD between rebuilds; :func:`~mlpot.ablation.timing.inference_step`);
    up to ``max_atoms`` atoms are used."""
    from ..device import synchronize
    from .timing import inference_step

    picked, n = [], 0
    for atoms in structures:
        if n and n + len(atoms) > max_atoms:
            break
        picked.append(atoms)
        n += len(atoms)
    if not picked:
        return None
    device = next(model.parameters()).device
    infer = inference_step(model, picked, device)
    times = []
    for k in range(repeats + 1):  # the first call warms up
        synchronize(device)
        t = time.perf_counter()
        infer()
        if k:
            times.append(time.perf_counter() - t)
    times.sort()
    return times[len(times) // 2] / n * 1e6


def _process_peak_rss_mib(device) -> float:
    """Peak memory of this process, MiB: the CUDA allocator's peak on a GPU, else the peak
    resident set (everything the process held: interpreter, data, cache, all runs trained
    in it)."""
    if torch.device(device).type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2**20
    # Linux: VmHWM, the high-water mark of this process's own memory since it started. Not
    # ru_maxrss: a worker started by fork + exec reports at least its parent's peak there.
    try:
        with open("/proc/self/status") as fh:
            for line in fh:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) / 2**10  # kB
    except (OSError, ValueError, IndexError):
        pass
    # ru_maxrss: KiB on Linux, bytes on macOS.
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return rss / 2**20 if sys.platform == "darwin" else rss / 2**10


def _read_csv(path: Path) -> list[dict]:
    with open(path, newline="") as fh:
        return list(csv.DictReader(fh))


def gradient_flow(model, run_dir: Path, history: list[dict]) -> dict:
    """The gradient-flow entries of a run's result: per-layer gradient norms at
    initialisation (``grad_init.json``), in the first and last epochs (``metrics.csv``), the
    weights per layer (``layer_parameters``) and, from both, the RMS gradient per weight of
    each (``grad_init_rms`` …): the norm grows with a layer's size, the RMS does not, so
    only the RMS compares layers of different sizes. ``metrics.csv`` keeps its columns (old
    runs resume against them); the RMS is derived here."""
    from ..training.gradients import layer_norms
    from .stats import layer_sizes, rms_per_weight

    sizes = layer_sizes({n: p.numel() for n, p in model.named_parameters() if p.requires_grad})
    out = {"grad_init": _grad_init(run_dir),
           "grad_first_epoch": layer_norms(_grad_columns(history[0])) if history else None,
           "grad_last_epoch": layer_norms(_grad_columns(history[-1])) if history else None,
           "layer_parameters": sizes}
    for key in ("grad_init", "grad_first_epoch", "grad_last_epoch"):
        out[f"{key}_rms"] = rms_per_weight(out[key], sizes)
    return out


def _grad_columns(row: dict) -> dict[str, float]:
    return {k[len("grad_norm/"):]: float(v) for k, v in row.items()
            if k.startswith("grad_norm/") and k != "grad_norm/total" and v not in ("", None)}


def _grad_init(run_dir: Path) -> dict | None:
    try:
        return json.loads((run_dir / "grad_init.json").read_text())["layers"]
    except (OSError, ValueError, KeyError):
        return None


def _write_splits(setup: AblationSetup, structures, folder: Path) -> list[str]:
    """The folds' splits (written once; reused on resume so every run sees the same data);
    whole groups with ``data.group_by``."""
    ab, data = setup.ablation, setup.base.data
    n, groups = len(structures), data.groups(structures)
    folder.mkdir(parents=True, exist_ok=True)
    if ab.folds >= 2:
        splits = kfold_splits(n, ab.folds, seed=data.split_seed, val_fraction=data.val_fraction, groups=groups)
    else:
        test_fraction = 0.0 if data.test else ab.test_fraction
        splits = [random_split(n, data.val_fraction, test_fraction, seed=data.split_seed, groups=groups)]
    paths = []
    for k, split in enumerate(splits):
        path = folder / f"fold{k}.json"
        if path.exists():
            existing = load_split(path)
            if existing != split:
                raise ValueError(f"{path} differs from the split this config makes; the data or "
                                 "data.split_seed changed since the grid started")
        else:
            split.save(path)
        paths.append(str(path))
    return paths


def _descriptor_shape(setup: AblationSetup, structures, split_file: str) -> tuple[list[str], list[int]]:
    """Elements of the training data and the descriptor length of each."""
    split = load_split(split_file)
    elements = element_symbols(structures[k] for k in split.train)
    return elements, setup.base.build_descriptor(elements).n_features_per_element


def _prepare_cache(setup: AblationSetup, structures, elements, folder: Path, log) -> None:
    """Compute the shared descriptor cache once, before parallel runs would each start it."""
    from ..training.data import BatchStore

    start = time.perf_counter()
    descriptor = setup.base.build_descriptor(elements)
    if not descriptor.supports_pair_jacobian:
        return  # nothing to cache: the runs recompute descriptors every step
    store = BatchStore(structures, cutoff=descriptor.cutoff)
    dtype = getattr(torch, setup.base.training.dtype)
    folder = Path(setup.base.training.descriptor_cache_dir or folder)
    if setup.base.training.descriptor_cache == "hdf5":  # the runs open this file, a batch at a time
        nbytes, loaded = store.open_or_build_descriptor_file(descriptor, folder, dtype=dtype, log=log)
        store.clear_descriptor_cache()
    else:
        if store.descriptor_cache_gib(descriptor, dtype) > setup.base.training.descriptor_cache_max_gib:
            return  # each run says so and trains without the cache
        nbytes, loaded = store.load_or_cache_descriptors(descriptor, folder, dtype=dtype)
    log(f"descriptor cache: {nbytes / 2**20:.0f} MiB, {'found' if loaded else 'computed'} in {folder} "
        f"({time.perf_counter() - start:.0f} s)")


def _grid_identity(config: dict) -> dict:
    """The parts of a config that finished runs depend on."""
    from ..training.config import RESULT_NEUTRAL_TRAINING_OPTIONS, TRAINING_LENGTH_OPTIONS, with_current_defaults

    config = json.loads(json.dumps(config))
    ablation = config.pop("ablation", {}) or {}
    # Keys added to mlpot since the grid started take their defaults (what it ran with).
    config = json.loads(json.dumps(with_current_defaults(config)))
    # Settings that do not change a run's result may differ, and the training length may
    # change, as a resume allows: runs that ran to a smaller budget are extended.
    for key in RESULT_NEUTRAL_TRAINING_OPTIONS | TRAINING_LENGTH_OPTIONS:
        config.get("training", {}).pop(key, None)
    return {"base": config, "folds": ablation.get("folds"), "match_reference": ablation.get("match_reference"),
            "match_tolerance": ablation.get("match_tolerance", 0.02), "survival": ablation.get("survival")}
