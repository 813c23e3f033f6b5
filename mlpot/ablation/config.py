"""The ablation block of a training config: which depths, widths and variants to train.

An ablation config is an ordinary training config (:class:`~mlpot.training.TrainConfig`)
with one more section::

    ablation:
      depths: [1, 2, 3, 4, 6, 8]     # hidden layers
      widths: [32, matched]          # a number, or "matched": width chosen per depth so the
                                     # potential has as many weights as match_reference
      match_reference: {depth: 2, width: 32}
      match_tolerance: 0.02          # relative distance allowed from the matched count (networks
                                     # with a stem step coarsely at small widths and large depths)
      variants: [plain, residual, residual_sd]   # see VARIANTS (also residual_stem, residual_sd_stem)
      inits: null                    # null: the base model's init only
      activations: null              # null: the base model's activation only
      survival: 0.8                  # residual_sd: survival probability of the last block
      folds: 3                       # k-fold cross-validation over data.train (1: no CV)
      seeds: [0]                     # weight-initialisation / shuffling seeds
      test_fraction: 0.2             # folds = 1 without data.test: held-out fraction
      md: {...}                      # MD stability runs, see MDStabilityConfig
      inference_repeats: 5           # timing repeats for inference µs/atom
      vectorize: true                # train the folds and seeds of a grid point together
                                     # (mlpot.training.many); false: one by one

Every grid point is an ordinary training run of the base config with ``model`` changed.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, ClassVar, Literal

from ..config import ConfigError, from_dict
from ..models.blocks import ACTIVATIONS
from ..models.init import INITS
from ..training.config import TrainConfig, apply_overrides
from ..training.extended_config import ExtendedConfig, read_extended

__all__ = ["VARIANTS", "variant", "MDStabilityConfig", "AblationConfig", "AblationSetup", "load_ablation"]

#: name → function(base model section dict, ablation config) → model section changes.
VARIANTS: dict[str, Callable[[dict, "AblationConfig"], dict]] = {}


def variant(name: str):
    """Register a depth variant: a function returning the ``model`` keys it sets."""
    def register(fn):
        VARIANTS[name] = fn
        return fn
    return register


@variant("plain")
def _plain(model: dict, ablation: "AblationConfig") -> dict:
    """Plain feed-forward blocks, x → act(Wx + b): the Behler–Parrinello network (a base
    model's ``stem`` does not apply)."""
    return {"block": "plain", "survival": 1.0, "stem": False}


@variant("residual")
def _residual(model: dict, ablation: "AblationConfig") -> dict:
    """Residual blocks, x → x + act(Wx + b) (projection where widths change, unless the base
    model has ``stem: true``: a plain first layer, then identity skips only)."""
    return {"block": "residual", "survival": 1.0}


@variant("residual_sd")
def _residual_stochastic_depth(model: dict, ablation: "AblationConfig") -> dict:
    """Residual blocks with stochastic depth: branch k survives with probability decaying
    linearly from 1 to ``ablation.survival`` (identity at evaluation)."""
    return {"block": "residual", "survival": ablation.survival}


@variant("residual_stem")
def _residual_stem(model: dict, ablation: "AblationConfig") -> dict:
    """A plain first layer (descriptors → width), then residual blocks with identity skips:
    no projection weights, so depth and parameter count compare fairly with ``plain``."""
    return {"block": "residual", "survival": 1.0, "stem": True}


@variant("residual_sd_stem")
def _residual_sd_stem(model: dict, ablation: "AblationConfig") -> dict:
    """``residual_stem`` with stochastic depth on its residual blocks (the stem always runs)."""
    return {"block": "residual", "survival": ablation.survival, "stem": True}


@dataclass(frozen=True)
class MDStabilityConfig:
    """Short MD runs from held-out structures with each trained model.

    Attributes:
        structures: number of held-out start structures (replicas run together).
        steps: MD steps per replica (0 = no MD).
        timestep_fs: fs.
        temperature_K: initial Maxwell–Boltzmann temperature (and the NVT target).
        ensemble: ``nve`` (energy drift is meaningful) or ``nvt`` (Langevin).
        check_every: steps between stability checks and energy samples.
        min_distance: a replica fails when two atoms come closer than this fraction of
            the shortest distance in its start structure.
        max_temperature_factor: … or when its temperature exceeds this multiple of
            ``temperature_K`` (atoms flying apart, or energy pumped in).
        seed: velocity seed.
    """

    structures: int = 4
    steps: int = 2000
    timestep_fs: float = 0.5
    temperature_K: float = 300.0
    ensemble: Literal["nve", "nvt"] = "nve"
    check_every: int = 20
    min_distance: float = 0.5
    max_temperature_factor: float = 5.0
    seed: int = 0

    def __post_init__(self) -> None:
        if self.structures < 1 or self.steps < 0 or self.check_every < 1:
            raise ConfigError("ablation.md: structures and check_every must be >= 1, steps >= 0")
        if not (self.timestep_fs > 0 and self.temperature_K > 0):
            raise ConfigError("ablation.md: timestep_fs and temperature_K must be positive")
        if not 0 < self.min_distance < 1:
            raise ConfigError(f"ablation.md.min_distance must be in (0, 1), got {self.min_distance}")
        if self.max_temperature_factor <= 1:
            raise ConfigError("ablation.md.max_temperature_factor must be > 1")


@dataclass(frozen=True)
class AblationConfig:
    """The grid (see the module docstring)."""

    depths: tuple[int, ...] = (1, 2, 3, 4, 6, 8)
    widths: tuple[int | str, ...] = (32,)
    match_reference: dict[str, int] = field(default_factory=lambda: {"depth": 2, "width": 32})
    match_tolerance: float = 0.02
    variants: tuple[str, ...] = ("plain", "residual")
    inits: tuple[str, ...] | None = None
    activations: tuple[str, ...] | None = None
    survival: float = 0.8
    folds: int = 3
    seeds: tuple[int, ...] = (0,)
    test_fraction: float = 0.2
    md: MDStabilityConfig = field(default_factory=MDStabilityConfig)
    inference_repeats: int = 5
    vectorize: bool = True

    def __post_init__(self) -> None:
        def check(ok: bool, key: str, message: str) -> None:
            if not ok:
                raise ConfigError(f"ablation.{key}: {message}")

        check(len(self.depths) > 0 and all(d >= 1 for d in self.depths), "depths",
              f"need one or more depths >= 1, got {list(self.depths)}")
        check(len(set(self.depths)) == len(self.depths), "depths", f"repeated depth in {list(self.depths)}")
        check(len(self.widths) > 0, "widths", "need at least one width")
        for w in self.widths:
            check(w == "matched" or (isinstance(w, int) and w >= 1), "widths",
                  f"each width is a positive integer or 'matched', got {w!r}")
        check(set(self.match_reference) <= {"depth", "width"}
              and all(int(v) >= 1 for v in self.match_reference.values()), "match_reference",
              f"expected {{depth: D, width: W}} with positive integers, got {self.match_reference}")
        check(0 < self.match_tolerance < 1, "match_tolerance", f"must be in (0, 1), got {self.match_tolerance}")
        check(len(self.variants) > 0, "variants", "need at least one variant")
        for v in self.variants:
            check(v in VARIANTS, "variants", f"unknown variant {v!r}; choose from {sorted(VARIANTS)}")
        for i in self.inits or ():
            check(i in INITS, "inits", f"unknown init {i!r}; choose from {sorted(INITS)}")
        for a in self.activations or ():
            check(a in ACTIVATIONS, "activations", f"unknown activation {a!r}; choose from {sorted(ACTIVATIONS)}")
        check(0 < self.survival <= 1, "survival", f"must be in (0, 1], got {self.survival}")
        check(self.folds >= 1, "folds", f"must be >= 1, got {self.folds}")
        check(len(self.seeds) > 0, "seeds", "need at least one seed")
        check(0 <= self.test_fraction < 1, "test_fraction", f"must be in [0, 1), got {self.test_fraction}")
        check(self.inference_repeats >= 1, "inference_repeats", "must be >= 1")


@dataclass(frozen=True)
class AblationSetup(ExtendedConfig):
    """A base training config and the grid to run over it."""

    SECTION: ClassVar[str] = "ablation"
    base: TrainConfig
    ablation: AblationConfig


@dataclass(frozen=True)
class _Root:
    """Lets override messages name the full key (``ablation.depths``)."""

    ablation: AblationConfig


def load_ablation(source: str | Path | dict, overrides: list[str] | tuple[str, ...] = ()) -> AblationSetup:
    """Read an ablation config (a YAML path or a mapping) and apply ``key=value`` overrides
    (``ablation.depths=[1,2]``, ``training.epochs=20``).

    Raises:
        ConfigError: for a missing ``ablation`` section, unknown keys or bad values.
    """
    base, ablation, ours = read_extended(source, "ablation", overrides)
    ablation = apply_overrides({"ablation": ablation}, ours, root=_Root)["ablation"]
    setup = AblationSetup(base, from_dict(AblationConfig, ablation, "ablation"))
    if setup.ablation.folds == 1 and not setup.base.data.test and setup.ablation.test_fraction == 0:
        raise ConfigError("ablation: with folds: 1 the runs need a test set: give data.test or "
                          "ablation.test_fraction > 0")
    return setup
