"""The ``optimizer:``, ``schedule:`` and ``finish:`` sections of a training config: Adam(W),
and two finishes that start from a trained model (``training.init_weights``), the extended
Kalman filter and L-BFGS; the learning-rate schedule of the first-order optimisers; and a
finish as a second stage of the same run."""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, Literal

from ..config import ConfigError

__all__ = ["FinishConfig", "KalmanConfig", "LBFGSConfig", "OptimizerConfig", "ScheduleConfig"]


def _fail(key: str, message: str) -> None:
    raise ConfigError(f"{key}: {message}")


@dataclass(frozen=True)
class KalmanConfig:
    """The Kalman filter (:class:`~mlpot.training.kalman.KalmanFilter`) of ``optimizer.name: kalman``.

    Attributes:
        p0: initial error covariance P = p0·I (prior variance of each weight).
        lambda0: initial fading-memory factor λ ≤ 1 (early updates are forgotten faster).
        nu: λ relaxes to 1 as λ ← ν λ + 1 − ν per update.
        process_noise: q added to P's diagonal per update.
        block_size: largest block of the block-diagonal P (memory grows as its square; P is
            saved in every checkpoint: 411 MB for the 27k-weight mlearn recipe network at 4096).

    The defaults are those that did not harm an Adam-trained mlearn Si model (docs/accuracy.md):
    with one scalar measurement per update, fading memory (λ < 1) divides P by λ in every
    direction but one, so P grows as Π 1/λ (e^15 for λ₀ 0.98, ν 0.9987) and the finish
    diverged; p0 = 1 made the first steps too large for a trained model.
    """

    p0: float = 0.01
    lambda0: float = 1.0
    nu: float = 0.9987
    process_noise: float = 0.0
    block_size: int = 4096

    def __post_init__(self) -> None:
        if not (math.isfinite(self.p0) and self.p0 > 0):
            _fail("optimizer.kalman.p0", f"must be > 0, got {self.p0}")
        if not 0 < self.lambda0 <= 1:
            _fail("optimizer.kalman.lambda0", f"must be in (0, 1], got {self.lambda0}")
        if not 0 <= self.nu <= 1:
            _fail("optimizer.kalman.nu", f"must be in [0, 1], got {self.nu}")
        if not (math.isfinite(self.process_noise) and self.process_noise >= 0):
            _fail("optimizer.kalman.process_noise", f"must be >= 0, got {self.process_noise}")
        if self.block_size < 1:
            _fail("optimizer.kalman.block_size", f"must be >= 1, got {self.block_size}")


@dataclass(frozen=True)
class LBFGSConfig:
    """L-BFGS (``torch.optim.LBFGS`` with a strong-Wolfe line search) of ``optimizer.name:
    lbfgs``: every epoch is one optimiser step of up to ``max_iter`` iterations on the loss of
    the whole training set (deterministic, the mean of its batch losses in a fixed order), so
    one iteration costs one or more passes over the data.

    Attributes:
        max_iter: iterations per epoch (each with its line search).
        history_size: curvature pairs kept for the inverse-Hessian estimate.
        tolerance_grad: stop an epoch's iterations when the largest gradient entry is below it.
        tolerance_change: stop when the loss or the step changes by less than it.

    ``optimizer.lr`` is the first trial step of each line search (1 is the usual choice).
    """

    max_iter: int = 20
    history_size: int = 100
    tolerance_grad: float = 1e-9
    tolerance_change: float = 1e-12

    def __post_init__(self) -> None:
        if self.max_iter < 1:
            _fail("optimizer.lbfgs.max_iter", f"must be >= 1, got {self.max_iter}")
        if self.history_size < 1:
            _fail("optimizer.lbfgs.history_size", f"must be >= 1, got {self.history_size}")
        for name in ("tolerance_grad", "tolerance_change"):
            value = getattr(self, name)
            if not (math.isfinite(value) and value >= 0):
                _fail(f"optimizer.lbfgs.{name}", f"must be >= 0, got {value}")


@dataclass(frozen=True)
class OptimizerConfig:
    """Adam or AdamW, ``lr`` being the peak learning rate (after warm-up); or a finish that
    starts from a trained model (``training.init_weights``): ``kalman``, an extended Kalman
    filter (``kalman`` section) that sets its own step size, best with small batches; or
    ``lbfgs`` (``lbfgs`` section) on the whole training set, ``lr`` being its first trial
    step. Neither finish takes a schedule, weight decay or gradient clipping."""

    name: Literal["adam", "adamw", "kalman", "lbfgs"] = "adam"
    lr: float = 1e-3
    weight_decay: float = 0.0
    kalman: KalmanConfig = field(default_factory=KalmanConfig)
    lbfgs: LBFGSConfig = field(default_factory=LBFGSConfig)

    @property
    def is_finish(self) -> bool:
        """Whether this is a finish (Kalman or L-BFGS): no schedule, decay or clipping."""
        return self.name in ("kalman", "lbfgs")

    def __post_init__(self) -> None:
        if not (math.isfinite(self.lr) and self.lr > 0):
            _fail("optimizer.lr", f"must be > 0, got {self.lr}")
        if not (math.isfinite(self.weight_decay) and self.weight_decay >= 0):
            _fail("optimizer.weight_decay", f"must be >= 0, got {self.weight_decay}")
        if self.is_finish and self.weight_decay > 0:
            _fail("optimizer.weight_decay", f"does not apply to optimizer.name {self.name}: set it to 0")


@dataclass(frozen=True)
class ScheduleConfig:
    """Learning-rate schedule after a linear warm-up of ``warmup_epochs``.

    Attributes:
        name: ``none`` (constant), ``plateau`` (× ``factor`` after ``patience`` epochs
            without validation improvement), ``cosine`` (to ``min_lr`` at the last epoch),
            ``exponential`` (× ``gamma`` per epoch).
        warmup_epochs: epochs of linear warm-up from ~0 to ``optimizer.lr`` (per step).
        factor, patience: of ``plateau``.
        gamma: of ``exponential``.
        min_lr: floor of every schedule.
    """

    name: Literal["none", "plateau", "cosine", "exponential"] = "none"
    warmup_epochs: int = 0
    factor: float = 0.5
    patience: int = 10
    gamma: float = 0.99
    min_lr: float = 0.0

    def __post_init__(self) -> None:
        if self.warmup_epochs < 0:
            _fail("schedule.warmup_epochs", f"must be >= 0, got {self.warmup_epochs}")
        if not 0.0 < self.factor < 1.0:
            _fail("schedule.factor", f"must be in (0, 1), got {self.factor}")
        if self.patience < 0:
            _fail("schedule.patience", f"must be >= 0, got {self.patience}")
        if not 0.0 < self.gamma <= 1.0:
            _fail("schedule.gamma", f"must be in (0, 1], got {self.gamma}")
        if not (math.isfinite(self.min_lr) and self.min_lr >= 0):
            _fail("schedule.min_lr", f"must be >= 0, got {self.min_lr}")


@dataclass(frozen=True)
class FinishConfig:
    """The ``finish:`` section: a second stage of the run, trained after the first stage's
    epochs from its model (:meth:`~mlpot.training.config.TrainConfig.finish_stage` gives its
    config; :func:`~mlpot.training.train` runs both). A finish has no schedule, EMA, gradient
    clipping or early stopping: it refines the first stage's model, it does not train one.

    Attributes:
        epochs: epochs of the finish (with L-BFGS each is one optimiser step of up to
            ``optimizer.lbfgs.max_iter`` iterations on the whole training set).
        dtype: of the finish: float64, where L-BFGS's line searches do not stall at the
            rounding of the loss (measured in float32 on the mlearn Mo model: they did).
        optimizer: its ``optimizer:`` section; the default is L-BFGS with a first trial step
            of 1 (a section written here starts from the ``optimizer:`` defaults: Adam, lr 1e-3).
        loss: the ``loss:`` entries that change for the finish, e.g. ``{forces_weight: 10}``;
            the annealed start weights are dropped (a finish has no schedule to anneal with),
            so the first stage's final weights hold unless given here.
    """

    epochs: int = 5
    dtype: Literal["float32", "float64"] = "float64"
    optimizer: OptimizerConfig = field(default_factory=lambda: OptimizerConfig(name="lbfgs", lr=1.0))
    loss: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.epochs < 1:
            _fail("finish.epochs", f"must be >= 1, got {self.epochs}")
