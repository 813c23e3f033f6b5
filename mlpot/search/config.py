"""The ``search:`` section of a training config: what ``mlpot search`` tries, and how.

A search config is an ordinary training config (:class:`~mlpot.training.TrainConfig`) with
one more section::

    search:
      trials: 40                 # finished trials (complete or pruned) to reach
      folds: 3                   # k-fold cross-validation of every trial
      max_params: 20000          # optional: architectures with more weights are not trained
      pruner: asha               # asha | hyperband | none (a pruner needs data.val_fraction > 0)
      min_epochs: 5              # epochs every trial runs before it can be pruned
      seed: 0                    # the sampler's seed
      baseline: true             # the base config's own values are tried first: the score to beat
      space:
        depth: {int: [1, 16]}
        width: {int: [8, 128], log: true}
        block: {choice: [plain, residual]}
        activation: {choice: [tanh, silu, celu]}
        lr: {float: [1.0e-4, 3.0e-3], log: true}

A ``space`` key names a config entry: ``model`` keys (``depth``, ``width``, ``block``,
``activation``, ``init``, ``survival``, ...) and ``optimizer`` keys (``lr``,
``weight_decay``) by their own name, anything else by its full path
(``training.batch_size``, ``schedule.name``, ``loss.forces_weight``). Unknown names, ranges
that do not fit the entry and empty choices are config errors that name the key.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar, Literal

import yaml

from ..config import ConfigError, from_dict
from ..models import NetworkConfig
from ..training.config import OptimizerConfig, TrainConfig
from ..training.extended_config import ExtendedConfig, read_extended

__all__ = ["ParameterSpace", "SearchConfig", "SearchSetup", "load_search"]

_MODEL_KEYS = {f for f in NetworkConfig.__dataclass_fields__}
_OPTIMIZER_KEYS = {f for f in OptimizerConfig.__dataclass_fields__}


@dataclass(frozen=True)
class ParameterSpace:
    """One searched entry: ``int: [lo, hi]``, ``float: [lo, hi]`` (each with ``log``) or
    ``choice: [...]``, and the full config path it sets."""

    name: str
    path: str
    kind: Literal["int", "float", "choice"]
    low: float | None = None
    high: float | None = None
    log: bool = False
    choices: tuple[Any, ...] = ()

    @classmethod
    def parse(cls, name: str, spec: Any) -> ParameterSpace:
        where = f"search.space.{name}"
        if not isinstance(spec, dict):
            raise ConfigError(f"{where}: expected {{int: [lo, hi]}}, {{float: [lo, hi]}} or {{choice: [...]}}")
        kinds = [k for k in ("int", "float", "choice") if k in spec]
        unknown = sorted(set(spec) - {"int", "float", "choice", "log"})
        if len(kinds) != 1 or unknown:
            raise ConfigError(f"{where}: give exactly one of int, float, choice (and log); got {sorted(spec)}")
        kind, value, log = kinds[0], spec[kinds[0]], spec.get("log", False)
        path = _path_of(name)
        if kind == "choice":
            if not isinstance(value, list) or not value or log:
                raise ConfigError(f"{where}.choice: a non-empty list (and no log), got {value!r}")
            return cls(name, path, "choice", choices=tuple(value))
        if not (isinstance(value, list) and len(value) == 2 and all(isinstance(v, (int, float)) for v in value)):
            raise ConfigError(f"{where}.{kind}: expected [low, high], got {value!r}")
        low, high = value
        if kind == "int" and not all(isinstance(v, int) and not isinstance(v, bool) for v in value):
            raise ConfigError(f"{where}.int: bounds must be integers, got {value!r}")
        if not low <= high or (log and low <= 0) or not all(math.isfinite(v) for v in value):
            raise ConfigError(f"{where}.{kind}: need low <= high{' and low > 0 for log' if log else ''}, "
                              f"got {value!r}")
        return cls(name, path, kind, low, high, bool(log))

    def sample(self, trial) -> Any:
        """The value an Optuna ``trial`` suggests."""
        if self.kind == "int":
            return trial.suggest_int(self.name, int(self.low), int(self.high), log=self.log)
        if self.kind == "float":
            return trial.suggest_float(self.name, float(self.low), float(self.high), log=self.log)
        return trial.suggest_categorical(self.name, list(self.choices))

    def contains(self, value: Any) -> bool:
        """Whether ``value`` is one the entry can take (a choice, or within [low, high])."""
        if self.kind == "choice":
            return value in self.choices
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            return False
        if self.kind == "int" and value != int(value):
            return False
        return self.low <= value <= self.high

    def extremes(self) -> list[Any]:
        """Values that check the entry accepts the whole range."""
        return list(self.choices) if self.kind == "choice" else [self.low, self.high]


def _path_of(name: str) -> str:
    if "." in name:
        return name
    if name in _MODEL_KEYS:
        return f"model.{name}"
    if name in _OPTIMIZER_KEYS:
        return f"optimizer.{name}"
    raise ConfigError(f"search.space.{name}: unknown; model keys {sorted(_MODEL_KEYS)} and optimizer keys "
                      f"{sorted(_OPTIMIZER_KEYS)} go by name, other entries by their full path "
                      f"(training.batch_size)")


@dataclass(frozen=True)
class SearchConfig:
    """How ``mlpot search`` runs (see the module docstring)."""

    trials: int = 40
    folds: int = 3
    max_params: int | None = None
    pruner: Literal["asha", "hyperband", "none"] = "asha"
    min_epochs: int = 5
    seed: int = 0
    inference_repeats: int = 3
    baseline: bool = True
    space: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.trials < 1:
            raise ConfigError(f"search.trials: must be >= 1, got {self.trials}")
        if self.folds < 2:
            raise ConfigError(f"search.folds: cross-validation needs >= 2 folds, got {self.folds}")
        if self.max_params is not None and self.max_params < 1:
            raise ConfigError(f"search.max_params: must be >= 1, got {self.max_params}")
        if self.min_epochs < 1 or self.inference_repeats < 1:
            raise ConfigError("search.min_epochs and search.inference_repeats must be >= 1")
        if not self.space:
            raise ConfigError("search.space: name at least one entry to search")

    def parameters(self) -> list[ParameterSpace]:
        return [ParameterSpace.parse(name, spec) for name, spec in self.space.items()]


@dataclass(frozen=True)
class SearchSetup(ExtendedConfig):
    """A base training config and the search over it."""

    SECTION: ClassVar[str] = "search"
    base: TrainConfig
    search: SearchConfig

    def base_values(self) -> dict[str, Any] | None:
        """The searched entries' values in the base config (by space name), or ``None`` when
        one of them is unset or outside its range (the base is then not a point of the space)."""
        data = self.base.to_dict()
        parameters = self.search.parameters()
        if data["model"].get("hidden") and {"model.depth", "model.width"} & {p.path for p in parameters}:
            return None  # explicit widths: the base's depth and width do not describe its network
        values = {}
        for p in parameters:
            value = _get(data, p.path)
            if value is None or not p.contains(value):
                return None
            values[p.name] = int(value) if p.kind == "int" else value
        return values

    def trial_config(self, values: dict[str, Any], overrides: dict[str, Any] | None = None) -> TrainConfig:
        """The base config with the searched ``values`` (by space name) and ``overrides`` (by
        full path) set."""
        data = self.base.to_dict()
        paths = {p.name: p.path for p in self.search.parameters()}
        for name, value in values.items():
            _set(data, paths[name], value)
        for path, value in (overrides or {}).items():
            _set(data, path, value)
        if "model.depth" in {paths[n] for n in values} or "model.width" in {paths[n] for n in values}:
            data["model"]["hidden"] = None  # explicit widths would override depth/width
        return TrainConfig.from_dict(data)


def _get(data: dict, path: str) -> Any:
    """``data[a][b][c]`` for ``path`` ``a.b.c``, or ``None`` where a section is missing."""
    node: Any = data
    for part in path.split("."):
        node = node.get(part) if isinstance(node, dict) else None
    return node


def _set(data: dict, path: str, value: Any) -> None:
    """``data[a][b][c] = value`` for ``path`` ``a.b.c``, creating the sections on the way."""
    *parents, key = path.split(".")
    node = data
    for part in parents:
        if not isinstance(node.get(part), dict):
            node[part] = {}
        node = node[part]
    node[key] = value


def load_search(source: str | Path | dict, overrides: list[str] | tuple[str, ...] = ()) -> SearchSetup:
    """Read a search config (a YAML path or a mapping), apply ``key=value`` overrides
    (``search.trials=10``, ``training.epochs=20``) and check that every searched entry
    accepts both ends of its range.

    Raises:
        ConfigError: for a missing ``search`` section, unknown keys or bad values.
    """
    base, search, ours = read_extended(source, "search", overrides)
    for item in ours:
        key, sep, text = item.partition("=")
        if not sep:
            raise ConfigError(f"override {item!r}: expected key.path=value")
        _set(search, key.split(".", 1)[1], yaml.safe_load(text))
    setup = SearchSetup(base, from_dict(SearchConfig, search, "search"))
    if setup.search.pruner != "none" and base.data.val_fraction == 0:
        # The pruner compares trials by each fold's validation loss per epoch: without a
        # validation set it would never be told one, and silently prune nothing.
        raise ConfigError(f"search.pruner: {setup.search.pruner!r} prunes on the folds' validation loss, but "
                          "data.val_fraction is 0 (no validation set): set data.val_fraction (e.g. 0.1) or "
                          "search.pruner: none")
    for parameter in setup.search.parameters():
        for value in parameter.extremes():
            try:
                setup.trial_config({parameter.name: value})
            except (ConfigError, ValueError, TypeError) as exc:
                raise ConfigError(f"search.space.{parameter.name}: {value!r} does not fit {parameter.path} ({exc})") \
                    from None
    return setup
