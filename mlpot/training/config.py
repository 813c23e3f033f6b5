"""The training configuration: YAML → nested frozen dataclasses, with command-line overrides.

A config file has the sections below; every key is optional except ``data.train``, and an
unknown key anywhere is an error that names it::

    data:       {train: train.extxyz, test: null, format: null, val_fraction: 0.1,
                 split_seed: 0, split_file: null, read_options: {}}
    descriptor: null            # {kind: symmetry_functions, ...} (see mlpot.descriptors);
                                # null → the default symmetry functions
    descriptor_cutoff: 5.0      # Å, cutoff of the default set (ignored with a descriptor)
    model:      {depth: 2, width: 32, activation: silu, ...}   # NetworkConfig
    scaling:    {mode: scale_center, range: [-1, 1]}
    loss:       {energy_weight: 1.0, forces_weight: 10.0, stress_weight: 0.0,
                 weight_by: null, group_weights: {},   # e.g. weight_by: group,
                                                       # group_weights: {Surface: 5.0}
                 energy_weight_start: null, forces_weight_start: null,   # anneal from these
                 stress_weight_start: null,                              # with the lr
                 huber: {},          # e.g. {forces: 0.1}: a Huber loss on that term
                 energy_size_exponent: 0.0}   # 1: each atom's energy error alike, 2: as ΔE²
    optimizer:  {name: adam, lr: 1.0e-3, weight_decay: 0.0,      # adam | adamw | kalman | lbfgs
                 kalman: {p0: 0.01, lambda0: 1.0, nu: 0.9987, process_noise: 0.0, block_size: 4096},
                 lbfgs: {max_iter: 20, history_size: 100, tolerance_grad: 1.0e-9,
                         tolerance_change: 1.0e-12}}
    schedule:   {name: none, warmup_epochs: 0, factor: 0.5, patience: 10, gamma: 0.99,
                 min_lr: 0.0}
    training:   {epochs: 100, batch_size: 16, seed: 0, device: cpu, dtype: float32,
                 early_stopping_patience: 0, ema_decay: 0.0, grad_clip: 0.0,
                 checkpoint_every: 1, descriptor_cache: memory,   # memory | hdf5 | none
                 descriptor_cache_dir: null, descriptor_cache_max_gib: 4.0, check_labels: true,
                 init_weights: null}          # a model file to start from (warm start)
    finish:     null            # a second stage from the first one's model, e.g.
                                # {epochs: 5, dtype: float64, optimizer: {name: lbfgs, lr: 1.0},
                                #  loss: {forces_weight: 10.0}}   (FinishConfig)

Overrides are ``key.path=value`` strings whose value is parsed as YAML
(``training.epochs=5``, ``model.hidden=[64,64]``, ``data.test=null``).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Collection, Literal, Sequence

import yaml

from ..config import ConfigError, from_dict, read_yaml_mapping, to_dict
from ..config import apply_overrides as _apply_overrides
from ..descriptors import Descriptor, DescriptorConfig, SymmetryFunctions, SymmetryFunctionsConfig, SymmetryFunctionSpec
from ..descriptors.scaling import SCALING_MODES
from ..models import NetworkConfig
from .optimizer_config import FinishConfig, KalmanConfig, LBFGSConfig, OptimizerConfig, ScheduleConfig

__all__ = [
    "DataConfig", "ScalingConfig", "LossConfig", "FinishConfig", "KalmanConfig", "LBFGSConfig", "OptimizerConfig", "ScheduleConfig",
    "TrainingOptions", "TrainConfig", "apply_overrides", "config_differences", "resolve_data_paths",
    "with_current_defaults",
]


def _fail(key: str, message: str) -> None:
    raise ConfigError(f"{key}: {message}")


def info_labels(structures: Sequence, key: str, option: str, source: str) -> list:
    """Each structure's ``info[key]``, in order.

    Args:
        structures: ``ase.Atoms``.
        key: the ``info`` key.
        option: the config key that names ``key`` (``data.group_by``), for the message.
        source: where the structures come from (a file name), for the message.

    Raises:
        ValueError: a structure lacks the key (the message names the first, ``source`` and
            ``key``).
    """
    labels = []
    for k, atoms in enumerate(structures):
        if key not in atoms.info:
            raise ValueError(f"{option}: structure {k} of {source} has no info[{key!r}] (it has {sorted(atoms.info)})")
        labels.append(atoms.info[key])
    return labels


@dataclass(frozen=True)
class DataConfig:
    """Where the structures come from and how they are split.

    Attributes:
        train: dataset file (any format :func:`mlpot.data.read` knows); split into train
            and validation.
        test: optional separate test set, evaluated once with the best model at the end.
        format: reader format for both files (guessed from the names when ``None``).
        val_fraction: fraction of ``train`` held out for validation (model selection).
        split_seed: seed of the random split.
        split_file: a split written by :meth:`mlpot.data.Split.save`; replaces the
            random split (its test indices, if any, are evaluated at the end).
        read_options: extra options for the reader (e.g. ``{stress_order: ...}``).
        group_by: split whole groups, not single structures: the key in each structure's
            ``info`` naming its group (e.g. ``trajectory``). Frames of one MD trajectory are
            near-copies, and a frame-by-frame split would validate (and cross-validate) on
            the training data. Applies to the random split, the folds of ``mlpot ablate``
            and ``mlpot search``.
    """

    train: str
    test: str | None = None
    format: str | None = None
    val_fraction: float = 0.1
    split_seed: int = 0
    split_file: str | None = None
    read_options: dict[str, Any] = field(default_factory=dict)
    group_by: str | None = None

    def groups(self, structures: Sequence) -> list | None:
        """Each structure's group label (``info[group_by]``), or ``None`` without ``group_by``.

        Raises:
            ValueError: a structure lacks the key (the message names the first).
        """
        if self.group_by is None:
            return None
        return info_labels(structures, self.group_by, "data.group_by", self.train)

    def __post_init__(self) -> None:
        if not self.train:
            _fail("data.train", "a dataset path is required")
        if not 0.0 <= self.val_fraction < 1.0:
            _fail("data.val_fraction", f"must be in [0, 1), got {self.val_fraction}")


@dataclass(frozen=True)
class ScalingConfig:
    """Descriptor scaling (see :mod:`mlpot.descriptors.scaling`); ``range`` is [S_min, S_max]."""

    mode: str = "scale_center"
    range: tuple[float, float] = (-1.0, 1.0)

    def __post_init__(self) -> None:
        if self.mode not in SCALING_MODES:
            _fail("scaling.mode", f"{self.mode!r} unknown; choose one of {list(SCALING_MODES)}")
        if len(self.range) != 2 or not self.range[0] < self.range[1]:
            _fail("scaling.range", f"must be [min, max] with min < max, got {list(self.range)}")


#: The weights of the loss terms (``LossConfig`` fields); ``<name>_start`` anneals each.
LOSS_TERM_WEIGHTS = ("energy_weight", "forces_weight", "stress_weight")


@dataclass(frozen=True)
class LossConfig:
    """Weights of the loss terms, and of the structures by group.

    L = w_E·⟨(ΔE/n_atoms)²⟩ [eV²] + w_F·⟨ΔF_α²⟩ [(eV/Å)², per component]
    + w_σ·⟨Δσ_αβ²⟩ [(eV/Å³)², per component]; each mean runs over labelled items only.

    Attributes:
        energy_weight, forces_weight, stress_weight: w_E, w_F, w_σ (units above: each weight
            is dimensionless, the terms are in their own squared units). With annealing,
            the final weights; the validation loss that selects the model always uses them.
        energy_weight_start, forces_weight_start, stress_weight_start: anneal that weight
            from this start value to its final one with the learning rate, as DeePMD-kit's
            ``start_pref``/``limit_pref``: in epoch e the training loss weighs the term
            w(e) = w_final + (w_start − w_final)·r(e), with r(e) = lr(e)/``optimizer.lr``
            in [0, 1] at the start of the epoch, and r = 1 during the warm-up epochs
            (:meth:`weights_at`, :meth:`~mlpot.training.optim.LRSchedule.decay_ratio`). So a
            run starts at the start weights and ends near the final ones as the learning
            rate decays (at min_lr/lr with the cosine schedule). Why (DeePMD-kit's reasoning):
            a structure's 3N force components say more about the surface than its one
            energy, so a force-dominated loss shapes it fast while the learning rate is
            high, and the energy weight grows as the rate falls to fit the energies at the
            end. ``None`` (default): the weight is constant.
            A start weight must be > 0 and its term in the loss (final weight > 0): the terms
            of the loss, and so what the model predicts each step, are the same in every
            epoch. Annealing needs a learning-rate schedule (not ``none``) and does not
            apply to the Kalman filter, which has none.
        huber: a Huber loss in place of the squared error for the terms it names, each with
            its threshold δ in that term's units (``energy``: eV/atom, ``forces``: eV/Å per
            component, ``stress``: eV/Å³ per component), e.g. ``{forces: 0.1}``. Each error
            d then costs d² for |d| ≤ δ and 2δ|d| − δ² beyond (twice the usual Huber
            function, so that it equals the squared error below δ and the term weights keep
            their meaning). Why: the tail of large errors (disordered frames, surfaces)
            then pulls on the fit linearly, not quadratically, as MACE's and NequIP's Huber
            losses do; the test MAE weighs every error alike. Terms not named stay squared.
            The training loss only: the validation loss that selects the model stays the
            mean squared error (:func:`~mlpot.training.loss.loss_from_metrics`).
        energy_size_exponent: q, how a structure's size weighs its energy error: in the
            energy mean each structure's (ΔE/n)² weighs n^q (times its group weight), so the
            term is Σ n^q·(ΔE/n)² / Σ n^q. q = 0 (default): every structure alike, the
            per-atom mean squared error (n2p2, DeePMD-kit, MACE); q = 1: every atom alike,
            Σ ΔE²/n / Σ n; q = 2: the squared error of the total energy, Σ ΔE² / Σ n²
            (SchNetPack's energy loss), leaning on the large structures; any q in [0, 2]. The
            term stays a mean of per-atom errors (eV²/atom²): energy_weight keeps its meaning,
            and with one size every q gives the same loss. Why: in data of many sizes (slabs of
            a dozen atoms, 64-atom AIMD frames) it moves the fit between small and large
            structures. Like group weights, the training loss only.
        weight_by: weight the structures by group: the key in each structure's ``info``
            naming its group (e.g. ``group`` of the mlearn data: ``AIMD-NVT``, ``Vacancy``,
            ``Elastic``, ``Surface``). Each mean above then becomes a weighted mean
            Σ w_s·err² / Σ w_s over the labelled rows, every row (an energy, an atom's force
            components, a stress) weighted by its structure's w_s (see
            :mod:`mlpot.training.loss`). The training loss only: metrics and the validation
            loss that selects the model stay unweighted.
        group_weights: w_s of each group label (labels compare as strings); groups not
            listed weigh 1.0. A weight of 0 takes a group out of the training loss. A label
            that no structure of ``data.train`` carries is an error (a typo would otherwise
            weigh nothing).
    """

    energy_weight: float = 1.0
    forces_weight: float = 10.0
    stress_weight: float = 0.0
    weight_by: str | None = None
    group_weights: dict[str, float] = field(default_factory=dict)
    energy_weight_start: float | None = None
    forces_weight_start: float | None = None
    stress_weight_start: float | None = None
    huber: dict[str, float] = field(default_factory=dict)
    energy_size_exponent: float = 0.0

    def __post_init__(self) -> None:
        for name in LOSS_TERM_WEIGHTS:
            value = getattr(self, name)
            if not (math.isfinite(value) and value >= 0):
                _fail(f"loss.{name}", f"must be a finite number >= 0, got {value}")
        if self.energy_weight == self.forces_weight == self.stress_weight == 0:
            _fail("loss", "all weights are zero; nothing would be trained")
        for name in LOSS_TERM_WEIGHTS:
            start = getattr(self, f"{name}_start")
            if start is None:
                continue
            number = isinstance(start, (int, float)) and not isinstance(start, bool)
            if not (number and math.isfinite(start) and start > 0):
                _fail(f"loss.{name}_start", f"must be a finite number > 0 (or null: a constant weight), got {start!r}")
            if getattr(self, name) == 0:
                _fail(f"loss.{name}_start", f"anneals a term that is not in the loss (loss.{name} is 0): set "
                      f"loss.{name} > 0, its final weight, or leave the start weight out")
            object.__setattr__(self, f"{name}_start", float(start))
        if self.weight_by is not None and not self.weight_by:
            _fail("loss.weight_by", "must name a key of the structures' info, got an empty string")
        if self.group_weights and self.weight_by is None:
            _fail("loss.group_weights", "needs loss.weight_by, the info key that names each structure's group")
        # Keys as strings (YAML reads a label 1 as an int) and values as floats, so that the
        # lookup by str(label) and the saved config.yaml agree.
        object.__setattr__(self, "group_weights", {str(k): _group_weight(k, v) for k, v in self.group_weights.items()})
        # That not every structure weighs zero is checked where the groups are known (the
        # training split, see structure_weights): {Surface: 0} alone is a valid way to
        # leave a group out.
        object.__setattr__(self, "huber", {str(k): self._huber_delta(k, v) for k, v in self.huber.items()})
        q = self.energy_size_exponent
        if isinstance(q, bool) or not isinstance(q, (int, float)) or not (math.isfinite(q) and 0 <= q <= 2):
            _fail("loss.energy_size_exponent", f"must be a number in [0, 2] (0: per structure, 1: per atom, "
                  f"2: as the total energy), got {q!r}")
        if q and self.energy_weight == 0:
            _fail("loss.energy_size_exponent", "shapes the energy term, which is not in the loss "
                  "(loss.energy_weight is 0)")
        object.__setattr__(self, "energy_size_exponent", float(q))

    def _huber_delta(self, term: Any, delta: Any) -> float:
        """``delta`` of ``loss.huber.<term>``, checked: a term of the loss, a number > 0."""
        terms = [name.removesuffix("_weight") for name in LOSS_TERM_WEIGHTS]
        if str(term) not in terms:
            _fail(f"loss.huber.{term}", f"is not a loss term: use {', '.join(terms)}")
        number = isinstance(delta, (int, float)) and not isinstance(delta, bool)
        if not (number and math.isfinite(delta) and delta > 0):
            _fail(f"loss.huber.{term}", f"must be a finite number > 0 in the term's units (eV/atom, eV/Å, "
                  f"eV/Å³), got {delta!r}")
        if getattr(self, f"{term}_weight") == 0:
            _fail(f"loss.huber.{term}", f"shapes a term that is not in the loss (loss.{term}_weight is 0)")
        return float(delta)

    @property
    def anneals(self) -> bool:
        """Whether a weight is annealed (a ``*_weight_start`` is set)."""
        return any(getattr(self, f"{name}_start") is not None for name in LOSS_TERM_WEIGHTS)

    def weights_at(self, lr_ratio: float) -> LossConfig:
        """The loss of an epoch whose learning rate is ``lr_ratio`` × ``optimizer.lr`` (r of
        the class docstring; clipped to [0, 1]): every weight w_final + (w_start − w_final)·r,
        as constant weights (no start weights). ``self`` itself without annealing.

        Exact at the ends: r = 1 gives the start weights, r = 0 (or a start weight equal to
        the final one) the final weights, bit for bit.
        """
        if not self.anneals:
            return self
        r = min(1.0, max(0.0, float(lr_ratio)))
        weights = {}
        for name in LOSS_TERM_WEIGHTS:
            final, start = getattr(self, name), getattr(self, f"{name}_start")
            weights[name] = final if start is None else start if r == 1.0 else final + (start - final) * r
        return replace(self, **weights, **{f"{name}_start": None for name in LOSS_TERM_WEIGHTS})

    def anneal_summary(self) -> str | None:
        """The log line of the annealed weights (``None`` without annealing)."""
        if not self.anneals:
            return None
        parts = [f"{name.removesuffix('_weight')} {getattr(self, f'{name}_start'):g} → {getattr(self, name):g}"
                 for name in LOSS_TERM_WEIGHTS if getattr(self, f"{name}_start") is not None]
        return ("loss weights anneal with the learning rate: " + ", ".join(parts)
                + " (w = final + (start − final)·lr/optimizer.lr; the validation loss uses the final weights)")

    def structure_weights(self, structures: Sequence, source: str,
                          train: Sequence[int] | None = None) -> tuple[list[float], list[str]] | None:
        """Each structure's loss weight (``group_weights`` of its ``info[weight_by]``, 1.0 if
        unlisted) and group label (as a string), or ``None`` without ``weight_by``.

        Args:
            structures: all structures of ``source`` (labels are checked against them all).
            source: the dataset's name (``data.train``), for the messages.
            train: indices of the training split, if known: refused when all of them weigh 0.

        Raises:
            ValueError: a structure lacks ``info[weight_by]`` (naming its index, ``source``
                and the key), a label of ``group_weights`` occurs in no structure (listing
                those that do), or every training structure weighs zero.
        """
        if self.weight_by is None:
            return None
        labels = [str(label) for label in info_labels(structures, self.weight_by, "loss.weight_by", source)]
        unknown = sorted(set(self.group_weights) - set(labels))
        if unknown:
            raise ValueError(f"loss.group_weights: no structure of {source} has info[{self.weight_by!r}] in "
                             f"{unknown}; the groups there are {sorted(set(labels))}")
        weights = [self.group_weights.get(label, 1.0) for label in labels]
        if train is not None and len(train) and not any(weights[k] for k in train):
            groups = sorted({labels[k] for k in train})
            raise ValueError(f"loss.group_weights: every training structure weighs zero (its groups {groups} "
                             f"of info[{self.weight_by!r}]); nothing would be trained")
        return weights, labels


def _group_weight(label, value) -> float:
    """``value`` as a weight (a finite number >= 0) of group ``label``, else ConfigError."""
    number = value
    if isinstance(value, str):  # PyYAML reads "1e-3" (no dot) as a string
        try:
            number = float(value)
        except ValueError:
            pass
    if isinstance(number, bool) or not isinstance(number, (int, float)) or not (math.isfinite(number) and number >= 0):
        _fail(f"loss.group_weights.{label}", f"must be a finite number >= 0, got {value!r}")
    return float(number)


# Options that change how a run is executed but not what it computes: a resumed run and
# an ablation grid's finished runs may differ in them (TrainingOptions field names).
# ``check_labels`` decides whether a run starts, never what it computes.
RESULT_NEUTRAL_TRAINING_OPTIONS = frozenset({"device", "checkpoint_every", "descriptor_cache",
                                             "descriptor_cache_dir", "descriptor_cache_max_gib", "check_labels"})
# Options that set how long a run trains: a resume may change them (it extends the run), and
# an ablation grid resumed with a larger budget extends its runs that ran to the old one.
TRAINING_LENGTH_OPTIONS = frozenset({"epochs", "early_stopping_patience", "early_stopping_min_delta"})


@dataclass(frozen=True)
class TrainingOptions:
    """The loop.

    Attributes:
        epochs: total number of epochs (a resumed run continues up to this number).
        batch_size: structures per optimiser step.
        seed: seeds weight initialisation, shuffling and stochastic depth.
        device: ``cpu``, ``cuda``, ``cuda:N`` or ``auto`` (CUDA when available).
        dtype: ``float32`` or ``float64`` for weights and computation.
        early_stopping_patience: stop after this many epochs without validation
            improvement (0 = off).
        early_stopping_min_delta: what counts as an improvement for early stopping: a
            validation loss below (1 − min_delta) × that of the last epoch that counted
            (relative; 0 = any decrease). With 0.01 and patience 100, a run stops once 100
            epochs have not lowered its validation loss by 1 %: a plateau, for a run whose
            loss creeps down without end. The saved model is still the epoch of lowest loss.
        ema_decay: exponential moving average of the weights, used for validation and
            the saved model (0 = off; e.g. 0.99).
        grad_clip: clip the total gradient norm to this value (0 = off).
        checkpoint_every: write ``last.pt`` every this many epochs (and at the end).
        descriptor_cache: ``memory`` computes every structure's descriptors and their
            pair Jacobian once and trains through the networks only (same losses as
            ``none`` to rounding, several times faster with forces; memory ≈ pairs ×
            features × 12 bytes in float32); ``hdf5`` does the same with the cache in an
            HDF5 file, written chunk by chunk and read one batch at a time, for datasets
            whose cache does not fit in memory (identical losses to ``memory``; the disk
            needs the size ``memory`` would take); ``none`` recomputes them every step.
        descriptor_cache_dir: where the cache is kept between runs, in a file named by a
            hash of the descriptor, the dtype and the data, so later runs on the same data
            (a resume, an ablation grid) load it instead of recomputing. With ``memory``
            the cache is saved here only when set; with ``hdf5`` the file lives here, or,
            when unset, in ``<run folder>/descriptor_cache/`` (reused by a resume; set
            this to share one file between runs).
        descriptor_cache_max_gib: largest cache kept in memory; with ``memory``, a dataset
            whose cache would be larger trains with ``none`` (and says so) instead of
            running out of memory. ``hdf5`` has no such limit (it checks the free disk space).
        check_labels: before training, refuse a training set with a non-finite label, one
            beyond physical bounds, or one far outside the rest of the set
            (:func:`mlpot.data.checks.check_labels`); ``false`` trains on such labels.
        init_weights: a model file (``model.pt``) to start from instead of fresh weights:
            its descriptor, network, scaling and reference energies are kept (nothing is
            refitted); the ``model`` section must match its network
            (:mod:`mlpot.training.warm_start`).
    """

    epochs: int = 100
    batch_size: int = 16
    seed: int = 0
    device: str = "cpu"
    dtype: Literal["float32", "float64"] = "float32"
    early_stopping_patience: int = 0
    early_stopping_min_delta: float = 0.0
    ema_decay: float = 0.0
    grad_clip: float = 0.0
    checkpoint_every: int = 1
    descriptor_cache: Literal["memory", "hdf5", "none"] = "memory"
    descriptor_cache_dir: str | None = None
    descriptor_cache_max_gib: float = 4.0
    check_labels: bool = True
    init_weights: str | None = None

    def __post_init__(self) -> None:
        if self.epochs < 1:
            _fail("training.epochs", f"must be >= 1, got {self.epochs}")
        if self.batch_size < 1:
            _fail("training.batch_size", f"must be >= 1, got {self.batch_size}")
        if not (self.device in ("cpu", "cuda", "auto") or self.device.startswith("cuda:")):
            _fail("training.device", f"must be cpu, cuda, cuda:N or auto, got {self.device!r}")
        if self.early_stopping_patience < 0:
            _fail("training.early_stopping_patience", f"must be >= 0, got {self.early_stopping_patience}")
        if not 0.0 <= self.early_stopping_min_delta < 1.0:
            _fail("training.early_stopping_min_delta",
                  f"must be in [0, 1) (a fraction of the validation loss), got {self.early_stopping_min_delta}")
        if not 0.0 <= self.ema_decay < 1.0:
            _fail("training.ema_decay", f"must be in [0, 1), got {self.ema_decay}")
        if not (math.isfinite(self.grad_clip) and self.grad_clip >= 0):
            _fail("training.grad_clip", f"must be >= 0, got {self.grad_clip}")
        if not self.descriptor_cache_max_gib > 0:
            _fail("training.descriptor_cache_max_gib", f"must be > 0, got {self.descriptor_cache_max_gib}")
        if self.checkpoint_every < 1:
            _fail("training.checkpoint_every", f"must be >= 1, got {self.checkpoint_every}")
        if self.init_weights is not None and not str(self.init_weights).strip():
            _fail("training.init_weights", "must be a model file or null, got an empty string")


@dataclass(frozen=True)
class TrainConfig:
    """A complete, resolved training configuration (see the module docstring).

    ``descriptor`` is the typed section of its ``kind`` (registered in
    :data:`mlpot.descriptors.DESCRIPTORS`; symmetry functions by default), or ``None`` for
    the default symmetry functions at ``descriptor_cutoff``.
    """

    data: DataConfig
    descriptor: DescriptorConfig | None = None
    descriptor_cutoff: float = 5.0
    model: NetworkConfig = field(default_factory=NetworkConfig)
    scaling: ScalingConfig = field(default_factory=ScalingConfig)
    loss: LossConfig = field(default_factory=LossConfig)
    optimizer: OptimizerConfig = field(default_factory=OptimizerConfig)
    schedule: ScheduleConfig = field(default_factory=ScheduleConfig)
    training: TrainingOptions = field(default_factory=TrainingOptions)
    finish: FinishConfig | None = None

    def __post_init__(self) -> None:
        if not (math.isfinite(self.descriptor_cutoff) and self.descriptor_cutoff > 0):
            _fail("descriptor_cutoff", f"must be a positive distance in Å, got {self.descriptor_cutoff}")
        if self.finish is not None:  # its stage is checked whole now, not after the first one
            self.finish_stage("the first stage's model.pt")
        finish = self.optimizer.name if self.optimizer.is_finish else None
        if finish:
            # The Kalman filter sets its own step size from P and its measurement from the
            # unclipped gradient; L-BFGS its step by line search on the unclipped loss: a
            # schedule or clipping would be silently without effect.
            if self.schedule.name != "none" or self.schedule.warmup_epochs:
                _fail("schedule", f"does not apply to optimizer.name {finish} (it sets its own step size): "
                      "use name none and warmup_epochs 0")
            if self.training.grad_clip > 0:
                _fail("training.grad_clip", f"does not apply to optimizer.name {finish}: set it to 0")
        if finish == "lbfgs" and self.training.ema_decay > 0:
            # One update per epoch: an average over updates would keep the starting weights.
            _fail("training.ema_decay", "does not apply to optimizer.name lbfgs (one update per epoch): set it to 0")
        if self.loss.huber and finish == "kalman":
            # The filter updates on the errors themselves (a squared-error measurement model).
            _fail("loss.huber", "does not apply to optimizer.name kalman: leave it out ({})")
        if self.loss.anneals and (finish or self.schedule.name == "none"):
            # The weights follow the learning rate: the finishes have no schedule, ``none``
            # keeps it constant.
            start = next(f"loss.{n}_start" for n in LOSS_TERM_WEIGHTS if getattr(self.loss, f"{n}_start") is not None)
            _fail(start, "anneals the weights with the learning rate, which " + (
                f"optimizer.name {finish} does not have: leave the start weights out (null)" if finish
                else "schedule.name none keeps constant: use schedule.name cosine, exponential or plateau"))
        if isinstance(self.descriptor, dict):  # built in code rather than parsed
            object.__setattr__(self, "descriptor", DescriptorConfig.from_config_value(self.descriptor))
        # A descriptor naming its elements is checked whole now; one without them gets the
        # elements of the training data, so only its keys were checked (by the parse).
        if getattr(self.descriptor, "elements", None):
            if self.descriptor.fits_to_data:  # the candidates now, the choice when the data are read
                self.descriptor_spec(self.descriptor.elements)
            else:
                self.build_descriptor(self.descriptor.elements)

    def build_descriptor(self, elements, structures: Sequence | None = None) -> Descriptor:
        """The descriptor for ``elements`` (the section's own elements take precedence):
        ``descriptor`` of its kind, or the default symmetry functions at ``descriptor_cutoff``.
        ``structures``: the training structures, for a descriptor fitted to them
        (``descriptor.select``; required then)."""
        if self.descriptor is None:
            return SymmetryFunctions(self.descriptor_spec(elements))
        try:
            if self.descriptor.fits_to_data:
                return self.descriptor.build(list(elements), structures)
            return self.descriptor.build(list(elements))
        except (ValueError, TypeError, KeyError) as exc:
            raise ConfigError(f"descriptor: {exc}") from None

    def descriptor_spec(self, elements) -> SymmetryFunctionSpec:
        """The symmetry functions (kind ``symmetry_functions`` only): ``descriptor`` (its
        elements default to ``elements``) or the default set at ``descriptor_cutoff``."""
        if self.descriptor is None:
            return SymmetryFunctionSpec.default(list(elements), cutoff=self.descriptor_cutoff)
        if not isinstance(self.descriptor, SymmetryFunctionsConfig):
            raise ConfigError(f"descriptor: kind {self.descriptor.kind!r} is not symmetry functions")
        try:
            return self.descriptor.spec(list(elements))
        except (ValueError, TypeError, KeyError) as exc:
            raise ConfigError(f"descriptor: {exc}") from None

    def finish_stage(self, start_model: str | Path) -> "TrainConfig":
        """The config of the ``finish`` stage (see :class:`FinishConfig`): this one with the
        finish's epochs, dtype, optimiser and loss entries, no schedule, EMA, clipping or early
        stopping, started from ``start_model`` (the first stage's model file).

        Raises:
            ConfigError: the finish's settings are not a valid training config (named, after
                ``finish:``).
        """
        if self.finish is None:
            raise ValueError("this config has no finish section")
        f = self.finish
        loss = {**to_dict(self.loss), **{f"{name}_start": None for name in LOSS_TERM_WEIGHTS}, **f.loss}
        try:
            return replace(self, finish=None, loss=from_dict(LossConfig, loss, "loss"), optimizer=f.optimizer,
                           schedule=ScheduleConfig(),
                           training=replace(self.training, epochs=f.epochs, dtype=f.dtype, ema_decay=0.0,
                                            grad_clip=0.0, early_stopping_patience=0, init_weights=str(start_model)))
        except ConfigError as exc:
            raise ConfigError(f"finish: {exc}") from None

    @classmethod
    def from_dict(cls, data: dict[str, Any] | None) -> "TrainConfig":
        """Build from a mapping; unknown keys and bad values raise :class:`ConfigError`."""
        section = (data or {}).get("data")
        if not isinstance(section, dict) or "train" not in section:
            raise ConfigError("data.train: required (the training dataset path)")
        return from_dict(cls, data)

    @classmethod
    def from_yaml(cls, path: str | Path, overrides: list[str] | tuple[str, ...] = ()) -> "TrainConfig":
        """Read a YAML config and apply ``key.path=value`` overrides.

        Relative data paths that do not exist from the working directory but do from the
        config file's folder are taken from there (so a config beside its data works from
        anywhere); the saved ``config.yaml`` holds the resolved paths.
        """
        path = Path(path)
        data = apply_overrides(read_yaml_mapping(path), overrides)
        resolve_data_paths(data, path.parent)
        return cls.from_dict(data)

    def to_dict(self) -> dict[str, Any]:
        """Plain nested dict; ``TrainConfig.from_dict(cfg.to_dict()) == cfg``."""
        return to_dict(self)

    def save(self, path: str | Path) -> None:
        """Write the resolved config as YAML."""
        Path(path).write_text(yaml.safe_dump(self.to_dict(), sort_keys=False))


def config_differences(a: dict[str, Any], b: dict[str, Any], allowed: Collection[str] = ()) -> list[str]:
    """The dotted keys (``training.epochs``) in which two config dicts (``TrainConfig.to_dict``)
    differ, except those in ``allowed`` (a key, or a whole section by its name).

    The free-form ``descriptor`` and ``data.read_options`` sections compare as one value each.
    """
    def flat(d: dict[str, Any], prefix: str = "") -> dict[str, Any]:
        out: dict[str, Any] = {}
        for k, v in d.items():
            key = f"{prefix}{k}"
            if isinstance(v, dict) and k not in ("descriptor", "read_options"):
                out.update(flat(v, key + "."))
            else:
                out[key] = v
        return out

    def is_allowed(key: str) -> bool:
        return key in allowed or key.split(".", 1)[0] in allowed

    fa, fb = flat(a), flat(b)
    return sorted(k for k in set(fa) | set(fb) if fa.get(k) != fb.get(k) and not is_allowed(k))


def with_current_defaults(saved: dict[str, Any]) -> dict[str, Any]:
    """A config dict written by an earlier mlpot (a checkpoint's, a run folder's), parsed by
    this one: keys added since then take their defaults, which is what that run trained with
    (e.g. ``model.stem``). Returned unchanged when it no longer parses (the comparison that
    follows then names the keys that differ)."""
    try:
        return TrainConfig.from_dict(saved).to_dict()
    except (ConfigError, ValueError, TypeError, KeyError):
        return saved


def resolve_data_paths(data: dict[str, Any], folder: Path) -> None:
    """In place: relative ``data.train/test/split_file`` paths that do not exist from the
    working directory but do from ``folder`` (the config file's) are taken from there."""
    section = data.get("data")
    if isinstance(section, dict):
        for key in ("train", "test", "split_file"):
            value = section.get(key)
            if isinstance(value, str) and not Path(value).is_absolute() and not Path(value).exists():
                beside = Path(folder) / value
                if beside.exists():
                    section[key] = str(beside)


def apply_overrides(data: dict[str, Any], overrides: list[str] | tuple[str, ...],
                    root: type | None = None) -> dict[str, Any]:
    """:func:`mlpot.config.apply_overrides` with the keys checked against ``root``, by
    default :class:`TrainConfig` (``training.epochs=5``)."""
    return _apply_overrides(data, overrides, TrainConfig if root is None else root)
