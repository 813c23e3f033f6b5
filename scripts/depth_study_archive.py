"""The depth study's durable record: ``scripts/depth_study.py archive`` and its restore.

The study runs for weeks on a 2-core machine, in sessions that may each start from a fresh
clone, where ``runs/depth-v2`` (ignored by git: descriptor caches, checkpoints, logs, every
model) is gone. What a finished run has measured must outlive that folder, or a new clone
retrains it. The archive (``docs/depth-study/archive``, committed) keeps, under the same
relative paths as ``runs/depth-v2``, only what the study's later stages and ``collect``
read back:

* per study: its recipe copy, its resolved descriptor, its learning rates (``rates.json``:
  each cell's rate and the screen's losses), the cost pass, and the sha256 of its data
  files (``data.json``, :func:`check_data`);
* per stage: the folds' splits (``collect`` counts each run's training atoms from them);
* per finished run: ``result.json`` (the runner's measurements), ``observables.json`` (the
  Si/Mo observables, computed before archiving because they need the model) and
  ``archive.json`` (its best validation loss, what the learning-rate screen compares; the
  run's ``metrics.csv`` stays behind);
* per complete cell of the full stage: the model of its representative run (the median
  validation run, :func:`depth_study_md.representative`), which the MD stage and the water
  g(r) load;
* the MD stage's per-cell results and the checkpoints of cells still running.

:func:`restore` copies the archive into the runs folder wherever a file is missing there, so
the runner sees archived runs as finished (``result.json``) and skips them; a file that
exists locally is never overwritten (it is the same or newer). Runs that were not finished
when their session ended are trained again from the start.
"""

from __future__ import annotations

import csv
import filecmp
import json
import math
import shutil
from collections.abc import Callable
from pathlib import Path

#: The sha256 of each data file a study trains and tests on (:func:`check_data`).
DATA_FILE = "data.json"
#: Files kept per study folder, per stage folder and per run folder (glob patterns).
STUDY_FILES = ("recipe.yaml", "descriptor.json", "rates.json", "cost.json", DATA_FILE)
#: Each cell's learning rate, written by the lr stage (``depth_study_rates.write_rates``).
RATES_FILE = "rates.json"
SHARED_FILES = ("recipe.yaml", "teacher-rdf.json")
STAGE_FILES = ("splits/fold*.json",)
RUN_FILES = ("result.json", "observables.json", "archive.json")
# Each MD condition's folder (depth_study_md.CONDITIONS), and its per-model parts.
MD_FILES = ("md/*.json", "md-*/*.json", "md-*/models/*.json")
RUN_SUMMARY = "archive.json"


def best_val_loss_from_metrics(run_dir: Path) -> float | None:
    """The lowest finite ``val_loss`` of ``run_dir/metrics.csv``, or ``None``."""
    path = run_dir / "metrics.csv"
    if not path.is_file():
        return None
    with open(path, newline="") as fh:
        values = [float(r["val_loss"]) for r in csv.DictReader(fh) if r.get("val_loss")]
    values = [v for v in values if math.isfinite(v)]
    return min(values) if values else None


def best_val_loss(run_dir: Path) -> float | None:
    """A run's best validation loss: from its ``metrics.csv``, else from the archive's
    summary of it (a restored run has no metrics.csv)."""
    value = best_val_loss_from_metrics(run_dir)
    if value is None and (run_dir / RUN_SUMMARY).is_file():
        value = json.loads((run_dir / RUN_SUMMARY).read_text()).get("best_val_loss")
    return value


def _copy(source: Path, target: Path) -> None:
    """Copy ``source`` to ``target`` atomically (the run and a periodic ``archive`` may copy
    at once; a stop mid-copy must not leave a partial result.json)."""
    from mlpot.io.files import atomic_path

    target.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(target) as tmp:
        shutil.copyfile(source, tmp)


def _copy_if_changed(source: Path, target: Path) -> bool:
    """Copy ``source`` to ``target`` unless they are equal; whether it copied."""
    if target.is_file() and filecmp.cmp(source, target, shallow=False):
        return False
    _copy(source, target)
    return True


def _finished_runs(stage_dir: Path) -> list[Path]:
    from mlpot.ablation.runner import load_result

    runs = stage_dir / "runs"
    return sorted(d for d in runs.iterdir() if d.is_dir() and load_result(d) is not None) if runs.is_dir() else []


def archive_study(runs_dir: Path, archive_dir: Path, study: str, models: list[Path]) -> int:
    """Copy one study's durable files from ``runs_dir/study`` into ``archive_dir/study``;
    ``models`` are the run folders whose ``model.pt`` is kept. Returns the files written."""
    from mlpot.io.files import atomic_write_text

    source, target = runs_dir / study, archive_dir / study
    written = 0
    for name in SHARED_FILES:
        if (runs_dir / name).is_file():
            written += _copy_if_changed(runs_dir / name, archive_dir / name)
    patterns = list(STUDY_FILES) + list(MD_FILES)
    for stage in sorted(p for p in source.glob("*") if p.is_dir() and (p / "runs").is_dir()):
        patterns += [f"{stage.name}/{pattern}" for pattern in STAGE_FILES]
        for run_dir in _finished_runs(stage):
            summary = run_dir / RUN_SUMMARY
            loss = best_val_loss_from_metrics(run_dir)
            if loss is not None and not summary.is_file():
                atomic_write_text(summary, json.dumps({"best_val_loss": loss}) + "\n")
            patterns += [f"{stage.name}/runs/{run_dir.name}/{name}" for name in RUN_FILES]
    for pattern in patterns:
        for path in sorted(source.glob(pattern)):
            if path.is_file():
                written += _copy_if_changed(path, target / path.relative_to(source))
    for run_dir in models:
        written += _copy_if_changed(run_dir / "model.pt", target / run_dir.relative_to(source) / "model.pt")
    # A cell that finished since its checkpoint was archived: the checkpoint is stale.
    for stale in sorted(p for folder in MD_FILES for p in target.glob(folder.replace("*.json", "*.checkpoint.json"))):
        if _finished_cell(stale).is_file():
            stale.unlink()
            written += 1
    return written


def _finished_cell(checkpoint: Path) -> Path:
    """The result file of the MD cell whose checkpoint is ``checkpoint``."""
    return checkpoint.with_name(checkpoint.name.replace(".checkpoint.json", ".json"))


def archive_studies(runs_dir: Path, archive_dir: Path, studies: list[tuple[str, dict, str]], runs_per_cell: int,
                    observables: Callable[[Path, dict, Path], object]) -> int:
    """Archive the ``studies`` ((name, data, budget) triples) of ``runs_dir``; returns the files
    written. The Si/Mo ``observables(run_dir, data, runs_dir)`` of every finished full-stage
    run are computed first (they need its model, which stays behind), and the model of the
    representative run of each cell with ``runs_per_cell`` finished runs is kept."""
    import depth_study_md

    written = 0
    for name, data, _ in studies:
        cells = depth_study_md.cell_runs(runs_dir / name)
        if data.get("format") == "mlearn":
            for _, run_dir in (run for runs in cells.values() for run in runs):
                if (run_dir / "model.pt").is_file():
                    observables(run_dir, data, runs_dir)
        models = [depth_study_md.representative(runs)[1] for runs in cells.values() if len(runs) >= runs_per_cell]
        written += archive_study(runs_dir, archive_dir, name, [m for m in models if (m / "model.pt").is_file()])
    return written


def restore(archive_dir: Path, runs_dir: Path) -> int:
    """Copy every archived file that ``runs_dir`` lacks into it; returns how many. Files
    present in ``runs_dir`` are left as they are."""
    if not archive_dir.is_dir():
        return 0
    copied = 0
    for path in sorted(archive_dir.rglob("*")):
        target = runs_dir / path.relative_to(archive_dir)
        if path.name.endswith(".checkpoint.json") and (_finished_cell(path).is_file()
                                                       or _finished_cell(target).is_file()):
            continue  # the cell finished after this checkpoint
        if path.is_file() and not target.exists():
            _copy(path, target)
            copied += 1
    return copied


def _study_of(entry: dict, key: str) -> str:
    """The study (e.g. ``si-2.5k``) that a results.json entry under ``key`` belongs to."""
    if key == "cost":
        return str(entry.get("study"))
    return f"{entry.get('dataset')}-{entry.get('budget')}"


def _of_study(entry: dict, key: str, study: str) -> bool:
    """Whether a results.json entry under ``key`` belongs to ``study`` (e.g. ``si-2.5k``)."""
    return _study_of(entry, key) == study


def _unit(entry: dict, key: str) -> tuple:
    """What a results.json entry under ``key`` is kept by: a cost pass per study, everything
    else per cell (data set, budget, variant, depth)."""
    if key == "cost":
        return (entry.get("study"),)
    cell = tuple(entry.get(k) for k in ("dataset", "budget", "variant", "depth"))
    return cell + (entry.get("temperature_k"),) if key == "md_stability" else cell


def _of_a_condition(entry: dict) -> bool:
    """Whether an MD row was run as one of its data set's conditions now are (temperature,
    length, one model or every model): a row of a changed protocol is not carried over."""
    import depth_study_md

    return any(math.isclose(entry.get("temperature_k") or 0, c.temperature_K)
               and math.isclose(entry.get("ps_per_replica") or 0, c.ps)
               and (entry.get("replicas_per_model") or 0) == c.per_model
               for c in depth_study_md.conditions(entry.get("dataset") or ""))


def carry_over(previous_file: Path, document: dict, names: list[str]) -> list[str]:
    """Keep, in the results.json ``document`` being written, the previous file's entries of
    the studies ``names`` whose cells have nothing on disk: si-2.5k was trained before this
    archive existed, and its runs folder was lost with a session's clone. Each of runs,
    observables and md_stability is kept per cell, and the cost pass per study, only where
    ``document`` has no entry of that cell (or study): a cell retrained since replaces its
    old entries whole; an MD row is kept per cell and temperature, and only if it was run as
    a condition of today's (:func:`_of_a_condition`). The entries of every study not in ``names`` (not collected this time)
    are kept whole: collecting one study never drops another's. Returns what was kept, as
    lines for the log."""
    previous = json.loads(previous_file.read_text()) if previous_file.is_file() else {}
    lines = []
    others: dict[str, int] = {}
    for key in ("runs", "observables", "md_stability", "cost"):
        for entry in previous.get(key, []):
            if _study_of(entry, key) not in names:
                document[key].append(entry)
                others[_study_of(entry, key)] = others.get(_study_of(entry, key), 0) + 1
    lines += [f"[{study}] not collected this time: its {n} entries kept from {previous_file.name}"
              for study, n in sorted(others.items())]
    for name in names:
        kept = {}
        for key in ("runs", "observables", "md_stability", "cost"):
            present = {_unit(e, key) for e in document[key] if _of_study(e, key, name)}
            kept[key] = [e for e in previous.get(key, []) if _of_study(e, key, name) and _unit(e, key) not in present
                         and (key != "md_stability" or _of_a_condition(e))]
            document[key].extend(kept[key])
        counts = ", ".join(f"{len(v)} {k}" for k, v in kept.items() if v)
        if counts:
            lines.append(f"[{name}] kept from {previous_file.name}, not found on disk: {counts}")
    for line in lines:
        print(line, flush=True)
    return lines


def check_data(study_dir: Path, data: dict) -> None:
    """Refuse to go on with a study whose data files changed since it started.

    A study's runs span sessions, and its data need not be committed: the teacher's water
    is regenerated in each fresh clone (``scripts/make_teacher_water.py``, deterministic
    given its settings) and mlearn lives in ../shared. Runs trained on other data would be
    mixed into a cell silently, so the first call records the sha256 of each file
    (``train``, ``test``) in ``study_dir/data.json`` (archived with the study), and every
    later call compares: a difference raises ``SystemExit`` naming the file."""
    from mlpot.io.files import atomic_write_text, file_sha256

    now = {role: {"path": str(data[role]), "sha256": file_sha256(data[role])}
           for role in ("train", "test") if data.get(role)}
    saved = study_dir / DATA_FILE
    if not saved.is_file():
        study_dir.mkdir(parents=True, exist_ok=True)
        atomic_write_text(saved, json.dumps(now, indent=1) + "\n")
        return
    recorded = json.loads(saved.read_text())
    for role in sorted(set(recorded) | set(now)):
        before, after = recorded.get(role, {}).get("sha256"), now.get(role, {}).get("sha256")
        if before != after:
            path = now.get(role, recorded.get(role, {})).get("path")
            raise SystemExit(f"{study_dir.name}: its {role} data changed since the study started ({path}: "
                             f"sha256 {after} now, {before} recorded in {saved}). Its runs would mix two data "
                             "sets: restore the original file (for the teacher's water, regenerate it with the "
                             "settings in its plan.json), or start the study again in another --runs folder.")


def read_rates(study_dir: Path) -> dict[tuple[str, int], float]:
    """Each cell's chosen learning rate ((variant, depth) → lr) from ``study_dir/rates.json``;
    empty when the study has none (a study screened before the file existed, or not yet)."""
    path = study_dir / RATES_FILE
    if not path.is_file():
        return {}
    cells = json.loads(path.read_text())["cells"]
    return {(c["variant"], c["depth"]): c["lr"] for c in cells if c.get("lr") is not None}


def at_chosen_rate(rates: dict[tuple[str, int], float], key: tuple[str, int], lr: float) -> bool:
    """Whether a run of cell ``key`` trained at ``lr`` is at the cell's chosen rate (or the
    cell has no recorded choice): a run at another rate was superseded when its cell's
    screen was extended, and later stages leave it out."""
    return key not in rates or math.isclose(rates[key], lr, rel_tol=1e-9)


def recorded_rates(results_file: Path, study: str) -> dict[tuple[str, int], float]:
    """The learning rate of each cell of ``study`` as results.json records it ((variant,
    depth) → lr): the choice of a screen whose runs are no longer on disk."""
    if not results_file.is_file():
        return {}
    rows = json.loads(results_file.read_text()).get("runs", [])
    return {(r["variant"], r["depth"]): r["lr"] for r in rows if _of_study(r, "runs", study)}
