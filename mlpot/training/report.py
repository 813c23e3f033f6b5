"""What a training run reports: the rows of ``metrics.csv`` and the log lines.

A row is a dict with the columns of :func:`csv_columns`: epoch, learning rate, wall time,
the training and validation losses, the error metrics of both splits
(:data:`METRIC_COLUMNS`) and the gradient norm of every parameter tensor (averaged over
the epoch's steps, before clipping). Rows are also kept in the checkpoints' history.
"""

from __future__ import annotations

import csv
from pathlib import Path
from typing import Any, Iterable

from .loop import EpochResult
from .metrics import METRIC_KEYS

__all__ = ["METRIC_COLUMNS", "MetricsLog", "grad_column", "csv_columns", "epoch_row", "error_summary",
           "epoch_summary"]

#: The error metrics reported per split (counts left out).
METRIC_COLUMNS = tuple(k for k in METRIC_KEYS if k not in ("n_structures", "n_atoms"))


def grad_column(name: str, elements: list[str]) -> str:
    """``networks.networks.0.blocks.0.linear.weight`` → ``grad_norm/Cu.blocks.0.linear.weight``."""
    prefix = "networks.networks."
    if name.startswith(prefix):
        index, _, rest = name[len(prefix):].partition(".")
        name = f"{elements[int(index)]}.{rest}"
    return f"grad_norm/{name}"


def csv_columns(grad_names: Iterable[str]) -> list[str]:
    """The ``metrics.csv`` header, with the gradient-norm columns ``grad_names`` last."""
    return (["epoch", "lr", "wall_s", "train_loss", "val_loss"]
            + [f"{s}_{k}" for s in ("train", "val") for k in METRIC_COLUMNS]
            + ["grad_norm/total"] + list(grad_names))


def epoch_row(epoch: int, wall_s: float, trained: EpochResult, val_loss: float | None, val_metrics: dict,
              grad_names: list[str]) -> dict[str, Any]:
    """The metrics row of 1-based ``epoch`` (``val_loss`` ``None`` without a validation set)."""
    return {"epoch": epoch, "lr": trained.lr, "wall_s": wall_s,
            "train_loss": trained.loss, "val_loss": val_loss,
            **{f"train_{k}": trained.metrics[k] for k in METRIC_COLUMNS},
            **{f"val_{k}": val_metrics[k] for k in METRIC_COLUMNS},
            "grad_norm/total": float(trained.grad_norms.pow(2).sum().sqrt()),
            **dict(zip(grad_names, trained.grad_norms.tolist()))}


class MetricsLog:
    """The ``metrics.csv`` of one run: its columns, the rows of its epochs.

    Args:
        path: the file.
        grad_names: the gradient-norm columns, one per parameter tensor in the order of
            :attr:`EpochResult.grad_norms` (:func:`grad_column`).
        write: whether this process writes the file (rank 0 alone does); :meth:`row` works
            everywhere.
    """

    def __init__(self, path: Path, grad_names: list[str], write: bool = True):
        self.path, self.grad_names, self.write = Path(path), list(grad_names), write
        self.columns = csv_columns(self.grad_names)

    def restart(self, rows: list[dict]) -> None:
        """Write the file afresh with ``rows`` (a resumed run's rows, or none)."""
        if self.write:
            _write_csv(self.path, self.columns, rows)

    def row(self, epoch: int, wall_s: float, trained: EpochResult, val_loss: float | None,
            val_metrics: dict) -> dict[str, Any]:
        """The row of 1-based ``epoch`` (:func:`epoch_row`)."""
        return epoch_row(epoch, wall_s, trained, val_loss, val_metrics, self.grad_names)

    def append(self, row: dict[str, Any]) -> None:
        """Add ``row`` to the file."""
        if self.write:
            _append_csv(self.path, self.columns, row)


def _fmt(value) -> str:
    if value is None:
        return ""
    if isinstance(value, float):
        return repr(value)  # round-trips: a resumed run's rows compare equal
    return str(value)


def _write_csv(path: Path, columns: list[str], rows: list[dict]) -> None:
    with open(path, "w", newline="") as fh:
        writer = csv.writer(fh)
        writer.writerow(columns)
        for row in rows:
            writer.writerow([_fmt(row.get(c)) for c in columns])


def _append_csv(path: Path, columns: list[str], row: dict) -> None:
    with open(path, "a", newline="") as fh:
        csv.writer(fh).writerow([_fmt(row.get(c)) for c in columns])


def error_summary(m: dict, prefix: str = "") -> str:
    """``E … meV/atom, F … meV/Å, σ … GPa`` of the metrics in ``m`` (keys ``prefix`` + name)."""
    def g(k):
        return m.get(prefix + k)

    parts = []
    if g("energy_rmse_mev_per_atom") is not None:
        parts.append(f"E {g('energy_rmse_mev_per_atom'):.2f} meV/atom")
    if g("force_rmse_mev_per_a") is not None:
        parts.append(f"F {g('force_rmse_mev_per_a'):.1f} meV/Å")
    if g("stress_rmse_gpa") is not None:
        parts.append(f"σ {g('stress_rmse_gpa'):.3f} GPa")
    return ", ".join(parts) or "no labels"


def epoch_summary(row: dict, epochs: int, improved: bool) -> str:
    """The log line of an epoch's row (``*`` marks a new best validation loss; without a
    validation set, a new best training loss, and the line shows the training errors)."""
    val = row["val_loss"]
    width = len(str(epochs))
    errors = (f"val RMSE {error_summary(row, 'val_')}" if val is not None
              else f"train RMSE {error_summary(row, 'train_')} (no validation set)")
    return (f"epoch {row['epoch']:>{width}}/{epochs}  lr {row['lr']:.2e}  loss train {row['train_loss']:.4e}"
            + (f" val {val:.4e}" if val is not None else "")
            + f"  | {errors}  | {row['wall_s']:.1f} s" + ("  *" if improved else ""))
