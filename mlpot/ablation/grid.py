"""Expand an ablation config into runs; choose widths that match a parameter budget."""

from __future__ import annotations

import itertools
from dataclasses import asdict, dataclass, replace
from typing import Sequence

from ..config import ConfigError
from ..models import NetworkConfig
from ..models.mlp import network_parameters
from ..training.config import TrainConfig
from .config import VARIANTS, AblationConfig, AblationSetup

__all__ = ["RunSpec", "count_parameters", "matched_hidden", "expand_grid", "MATCH_TOLERANCE"]

#: Parameter-matched networks are within this relative distance of the target count.
MATCH_TOLERANCE = 0.02


@dataclass(frozen=True)
class RunSpec:
    """One grid point: a training run of the base config with this network.

    Attributes:
        name: run folder name, unique within the grid and stable across resumes.
        depth: hidden layers.  hidden: the hidden widths actually used.
        width_mode: ``"fixed"`` or ``"matched"`` (width chosen to meet the parameter budget).
        variant: a key of :data:`~mlpot.ablation.config.VARIANTS`.
        init, activation: network initialisation and activation.
        fold, seed: cross-validation fold and training seed.
        n_parameters: trainable parameters of all element networks together.
    """

    name: str
    depth: int
    hidden: tuple[int, ...]
    width_mode: str
    variant: str
    init: str
    activation: str
    fold: int
    seed: int
    n_parameters: int

    @property
    def width(self) -> int:
        return self.hidden[0]

    @property
    def group(self) -> str:
        """The name without fold and seed: runs that are repeats of one configuration."""
        return self.name.rsplit("_f", 1)[0]

    def factors(self) -> dict:
        return {k: v for k, v in asdict(self).items() if k != "hidden"} | {
            "width": self.width, "hidden": list(self.hidden), "group": self.group}

    def network(self, base: NetworkConfig, ablation: AblationConfig) -> NetworkConfig:
        model = {**asdict(base), "hidden": self.hidden, "depth": self.depth, "width": self.width,
                 "init": self.init, "activation": self.activation}
        model.update(VARIANTS[self.variant](model, ablation))
        return NetworkConfig(**model)

    def train_config(self, setup: AblationSetup, split_file: str, cache_dir: str | None = None) -> TrainConfig:
        """The base config with this run's network, seed and split (and, unless the base
        config names one, ``cache_dir`` for the descriptor cache all runs share)."""
        data = setup.base.to_dict()
        model = self.network(setup.base.model, setup.ablation)
        data["model"] = {**asdict(model), "hidden": list(model.hidden)}
        data["training"] = {**data["training"], "seed": self.seed}
        if cache_dir and not data["training"].get("descriptor_cache_dir"):
            data["training"]["descriptor_cache_dir"] = cache_dir
        # With folds the held-out fold is the test set (data.test is evaluated apart);
        # without, data.test (if any) is.
        test = data["data"]["test"] if setup.ablation.folds == 1 else None
        data["data"] = {**data["data"], "split_file": split_file, "test": test}
        return TrainConfig.from_dict(data)


def count_parameters(n_features: Sequence[int], config: NetworkConfig) -> int:
    """Trainable parameters of the per-element networks (from the block sizes: nothing is
    built, so parameter matching can try thousands of shapes; a plain stem counts as a plain
    layer, :func:`~mlpot.models.mlp.network_parameters`)."""
    return sum(network_parameters(int(d_in), config) for d_in in n_features)


def matched_hidden(n_features: Sequence[int], depth: int, target: int, base: NetworkConfig,
                   tolerance: float = MATCH_TOLERANCE) -> tuple[tuple[int, ...], int]:
    """Hidden widths of a ``depth``-layer network with as close to ``target`` parameters as
    possible: the largest uniform width w not above the budget, then the last hidden layer's
    width tuned (a fine knob: one unit there costs only ~w + 2 weights per element). A
    network with a stem (``base.stem``) keeps equal widths (no projections): w or w + 1,
    whichever is closer, a coarser knob (one unit costs ~2(depth − 1) w weights per element).

    Returns:
        ``(hidden, n_parameters)``.

    Raises:
        ConfigError: when no widths come within ``tolerance`` of ``target`` (a budget too
            small for this depth).
    """
    def count(hidden) -> int:
        return count_parameters(n_features, replace(base, hidden=tuple(hidden), depth=len(hidden)))

    lo, hi = 1, 1
    while count([hi] * depth) <= target:  # bracket the uniform width
        lo, hi = hi, hi * 2
    while hi - lo > 1:
        mid = (lo + hi) // 2
        lo, hi = (mid, hi) if count([mid] * depth) <= target else (lo, mid)
    w = lo
    best = None
    if depth == 1 or base.stem:
        candidates = [[lo] * depth, [hi] * depth]
    else:
        candidates = [[w] * (depth - 1) + [last] for last in range(1, 4 * w + 2)]
    for hidden in candidates:
        n = count(hidden)
        if best is None or abs(n - target) < abs(best[1] - target):
            best = (tuple(hidden), n)
    if abs(best[1] - target) > tolerance * target:
        raise ConfigError(f"ablation: no {depth}-layer network has {target} parameters to within "
                          f"{tolerance:.0%} (closest: hidden={list(best[0])}, {best[1]} parameters); "
                          "raise ablation.match_reference")
    return best


def expand_grid(setup: AblationSetup, n_features: Sequence[int]) -> list[RunSpec]:
    """Every run of the grid, in a stable order (depth fastest within a configuration).

    Args:
        setup: base config and ablation block.
        n_features: descriptor length of each element of the data (sets parameter counts).
    """
    ab, base = setup.ablation, setup.base.model
    inits = ab.inits or (base.init,)
    activations = ab.activations or (base.activation,)
    ref = ab.match_reference
    target = None
    if "matched" in ab.widths:
        ref_net = replace(base, hidden=(int(ref.get("width", 32)),) * int(ref.get("depth", 2)),
                          block="plain", survival=1.0, stem=False)
        target = count_parameters(n_features, ref_net)
    runs = []
    for variant, width, init, act, seed, fold, depth in itertools.product(
            ab.variants, ab.widths, inits, activations, ab.seeds, range(ab.folds), ab.depths):
        net = replace(base, init=init, activation=act, **VARIANTS[variant]({}, ab), hidden=None)
        if width == "matched":
            hidden, n = matched_hidden(n_features, depth, target, net, ab.match_tolerance)
        else:
            hidden = (int(width),) * depth
            n = count_parameters(n_features, replace(net, hidden=hidden, depth=depth))
        label = "matched" if width == "matched" else f"w{width}"
        name = f"d{depth:02d}_{variant}_{label}_{init}_{act}_f{fold}_s{seed}"
        runs.append(RunSpec(name=name, depth=depth, hidden=hidden,
                            width_mode="matched" if width == "matched" else "fixed",
                            variant=variant, init=init, activation=act, fold=fold, seed=seed,
                            n_parameters=n))
    return runs
