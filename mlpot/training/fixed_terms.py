"""A data-fitted descriptor (``descriptor.select``) fixed once for a grid of runs.

A search or an ablation trains many runs on folds of one data set. A descriptor that chooses
its terms on each run's training split would give every fold its own descriptor, and the runs
could share no descriptor cache. :func:`choose_terms_once` therefore chooses the terms once,
on all of ``data.train`` (the choice reads descriptor values only, no labels, so no held-out
label reaches it), and the grid trains on those terms. The choice is kept in a file of the
grid's folder together with the config that made it, so a resumed grid reuses it and a grid
resumed with another ``select`` config is refused.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Callable

from ..data import element_symbols, read
from ..io.files import atomic_write_text
from .config import TrainConfig, with_current_defaults

__all__ = ["choose_terms_once"]


def choose_terms_once(config: TrainConfig, saved: Path, resuming: bool, log: Callable[[str], None],
                      where: str) -> TrainConfig:
    """``config`` with a ``descriptor.select`` replaced by the terms it chooses on all of
    ``data.train``; ``config`` itself for a descriptor that lists its terms.

    Args:
        config: the grid's base config.
        saved: the JSON file that keeps the choice (``{"chosen_by": <descriptor config>,
            "spec": <the chosen terms>}``); read when it holds a choice by the same config.
        resuming: whether the grid in that folder is being continued (a choice by another
            descriptor config is then an error, not replaced).
        log: receives one line when the terms are chosen.
        where: the command, for the messages (``search``, ``ablation``).

    Raises:
        ValueError: ``resuming`` and ``saved`` holds a choice by another descriptor config.
    """
    if not getattr(config.descriptor, "fits_to_data", False):
        return config
    source = config.to_dict()["descriptor"]
    record = json.loads(saved.read_text()) if saved.is_file() else None
    if record is not None and _as_read_today(config, record.get("chosen_by")) != source:
        if resuming:
            raise ValueError(f"cannot resume {saved.parent}: its terms ({saved.name}) were chosen by another "
                             f"descriptor config; continue the {where} with that one, or choose another folder")
        record = None
    if record is None:
        data = config.data
        structures = read(data.train, format=data.format, **data.read_options)
        started = time.perf_counter()
        descriptor = config.build_descriptor(element_symbols(structures), structures)
        record = {"chosen_by": source, "spec": descriptor.spec.to_dict()}
        saved.parent.mkdir(parents=True, exist_ok=True)
        atomic_write_text(saved, json.dumps(record, indent=1) + "\n")
        log(f"{where}: descriptor.select chose its terms once, on all {len(structures)} structures of "
            f"{data.train} ({time.perf_counter() - started:.0f} s; {saved})")
    return TrainConfig.from_dict({**config.to_dict(), "descriptor": record["spec"]})


def _as_read_today(config: TrainConfig, chosen_by: object) -> object:
    """The saved descriptor config as this version of mlpot reads it
    (:func:`~mlpot.training.config.with_current_defaults`), so that a field added since the
    choice was made does not make the same config look like another one."""
    if not isinstance(chosen_by, dict):
        return chosen_by
    return with_current_defaults({**config.to_dict(), "descriptor": chosen_by})["descriptor"]
