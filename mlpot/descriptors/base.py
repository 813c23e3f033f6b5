"""The descriptor seam: what a descriptor gives the model, and the registry of kinds.

A descriptor maps the neighbour pairs of a batch to per-atom features, (N, F), column
layout per element. :class:`~mlpot.models.Potential`, the trainer and the calculator use
only the interface of :class:`Descriptor`; a new kind is one subclass registered with
:func:`register_descriptor` together with its typed config section (a dataclass deriving
from :class:`DescriptorConfig`)::

    @dataclass(frozen=True)
    class MyConfig(DescriptorConfig):
        kind: str = "my_kind"
        cutoff: float = 5.0

        def build(self, elements):
            return MyDescriptor(elements, self.cutoff)

    @register_descriptor("my_kind", MyConfig)
    class MyDescriptor(Descriptor):
        def compute_from_vectors(self, vec, species, edge_index, n_atoms, create_graph=False): ...
        def config_dict(self): return {"elements": list(self.elements), "cutoff": self.cutoff}

and a training config selects it with ``descriptor: {kind: my_kind, cutoff: 4.0}``.

What a kind must provide: ``elements`` and ``cutoff`` (through ``Descriptor.__init__``),
``n_features_per_element``, :meth:`Descriptor.compute_from_vectors` (differentiable in the
pair vectors: forces and stress come from autograd through them) and
:meth:`Descriptor.config_dict` (the resolved parameters, stored in model files and hashed
into cache keys). Optional: the sparse pair Jacobian (:meth:`Descriptor.jacobian`,
:meth:`Descriptor.pair_gradients`, ``supports_pair_jacobian = True``), with which training
caches the descriptors and back-propagates through the networks only; without it,
``training.descriptor_cache`` falls back to recomputing descriptors every step.
"""

from __future__ import annotations

import dataclasses
from typing import Any, ClassVar, Iterable, Sequence

import torch
from torch import nn

from ..neighbours import edge_vectors
from .jacobian import PairJacobian
from .scaling import FeatureScaler, FeatureStatistics

__all__ = ["Descriptor", "DescriptorConfig", "DESCRIPTORS", "register_descriptor", "descriptor_from_dict"]

#: kind name → descriptor class (each with ``config_class``, its typed config section).
DESCRIPTORS: dict[str, type["Descriptor"]] = {}
#: The kind a config or model file without a ``kind`` key means.
DEFAULT_KIND = "symmetry_functions"


class DescriptorConfig:
    """Base of every descriptor kind's config dataclass (the ``descriptor:`` YAML section).

    Subclasses are frozen dataclasses with a ``kind: str`` field defaulting to their
    registered name and a :meth:`build` method. :meth:`from_config_value` picks the
    dataclass from the mapping's ``kind`` (default ``symmetry_functions``), so the section
    is parsed once, strictly, by :func:`mlpot.config.from_dict`.
    """

    kind: str

    def build(self, elements: Sequence[str], structures: Sequence | None = None) -> "Descriptor":
        """The descriptor for ``elements`` (the config's own elements, if it names them,
        take precedence: see each kind). ``structures``: the training structures, passed
        only to a config whose :attr:`fits_to_data` is true (e.g. one that selects its terms)."""
        raise NotImplementedError

    @property
    def fits_to_data(self) -> bool:
        """Whether :meth:`build` needs the training structures (the trainer then passes them)."""
        return False

    @classmethod
    def from_config_value(cls, value: Any, where: str = "descriptor") -> "DescriptorConfig":
        """Parse a mapping into the config dataclass of its ``kind``."""
        from ..config import ConfigError, from_dict

        if isinstance(value, DescriptorConfig):
            return value
        if not isinstance(value, dict):
            raise ConfigError(f"{where}: expected a mapping, got {type(value).__name__}")
        kind = value.get("kind", DEFAULT_KIND)
        if kind not in DESCRIPTORS:
            raise ConfigError(f"{where}.kind: unknown descriptor kind {kind!r}; registered: {sorted(DESCRIPTORS)}")
        return from_dict(DESCRIPTORS[kind].config_class, value, where)

    def __post_init__(self) -> None:
        registered = DESCRIPTORS.get(self.kind)
        if registered is None or registered.config_class is not type(self):
            from ..config import ConfigError

            raise ConfigError(f"descriptor.kind: {self.kind!r} is not the kind of {type(self).__name__}")


def register_descriptor(name: str, config_class: type[DescriptorConfig]):
    """Class decorator: register a :class:`Descriptor` subclass as kind ``name`` with its
    config dataclass. A name that is already registered is an error."""
    if not (dataclasses.is_dataclass(config_class) and issubclass(config_class, DescriptorConfig)):
        raise TypeError(f"{config_class!r} must be a dataclass deriving from DescriptorConfig")

    def wrap(cls: type[Descriptor]) -> type[Descriptor]:
        if name in DESCRIPTORS:
            raise ValueError(f"descriptor kind {name!r} is already registered ({DESCRIPTORS[name].__name__})")
        if not issubclass(cls, Descriptor):
            raise TypeError(f"{cls.__name__} must derive from mlpot.descriptors.Descriptor")
        cls.kind, cls.config_class = name, config_class
        DESCRIPTORS[name] = cls
        return cls

    return wrap


def descriptor_from_dict(data: dict[str, Any]) -> "Descriptor":
    """Rebuild a descriptor from ``{"kind": ..., **config_dict()}`` (model files); no
    ``kind`` means symmetry functions (files written before kinds existed)."""
    data = dict(data)
    kind = data.pop("kind", DEFAULT_KIND)
    if kind not in DESCRIPTORS:
        raise ValueError(f"unknown descriptor kind {kind!r}; registered: {sorted(DESCRIPTORS)} "
                         "(a plugin that registers it must be imported first)")
    return DESCRIPTORS[kind].from_config_dict(data)


class Descriptor(nn.Module):
    """Per-atom features of a flat batch, element-resolved.

    Output (N, F) with F = :attr:`max_features`; element e uses columns
    ``0 .. n_features_per_element[e] − 1`` (the rest are zero). Calling the module returns
    scaled features once a scaler is fitted (:meth:`fit_scaling`) or attached;
    :meth:`compute` always returns raw values.

    Args:
        elements: chemical symbols, in the order that indexes per-element tensors.
        cutoff: neighbour-list radius, Å (the largest distance any feature depends on).
    """

    kind: ClassVar[str] = ""
    config_class: ClassVar[type[DescriptorConfig]]
    #: Whether :meth:`jacobian` and :meth:`pair_gradients` exist (training caches them).
    supports_pair_jacobian: ClassVar[bool] = False

    def __init__(self, elements: Sequence[str], cutoff: float):
        super().__init__()
        from ase.data import atomic_numbers

        self.elements = tuple(elements)
        self.n_elements = len(self.elements)
        self.cutoff = float(cutoff)
        self.scaler: FeatureScaler | None = None
        lookup = torch.full((119,), -1, dtype=torch.long)
        for k, el in enumerate(self.elements):
            lookup[atomic_numbers[el]] = k
        self.register_buffer("species_of_number", lookup, persistent=False)

    # ------------------------------------------------------------------ what a kind defines
    @property
    def n_features_per_element(self) -> list[int]:
        """Feature count of each element, in element order."""
        raise NotImplementedError

    def compute_from_vectors(self, vec: torch.Tensor, species: torch.Tensor, edge_index: torch.Tensor,
                             n_atoms: int, create_graph: bool = False) -> torch.Tensor:
        """Raw (N, F) descriptors from the (P, 3) pair vectors r_ij = R_j − R_i (+ shift), Å,
        (N,) element indices and the (2, P) pairs sorted by centre. Differentiable in ``vec``;
        ``create_graph`` says the caller will differentiate the gradient again."""
        raise NotImplementedError

    def config_dict(self) -> dict[str, Any]:
        """The resolved parameters (without ``kind``): ``from_config_dict`` inverts it."""
        raise NotImplementedError

    @classmethod
    def from_config_dict(cls, data: dict[str, Any]) -> "Descriptor":
        """Rebuild from :meth:`config_dict` (the default parses it as the kind's config)."""
        from ..config import from_dict

        config = from_dict(cls.config_class, data, "descriptor")
        elements = getattr(config, "elements", None)
        if not elements:
            raise ValueError(f"{cls.kind} descriptor dict names no elements")
        return config.build(elements)

    # ------------------------------------------------------------------ optional: pair Jacobian
    def jacobian(self, positions: torch.Tensor, species: torch.Tensor, cell: torch.Tensor,
                 system_idx: torch.Tensor, edge_index: torch.Tensor, edge_shift: torch.Tensor,
                 ) -> tuple[torch.Tensor, PairJacobian]:
        """Raw descriptors (N, F) and their sparse derivative with respect to the pair vectors."""
        raise NotImplementedError(f"descriptor kind {self.kind!r} has no pair Jacobian "
                                  "(train with training.descriptor_cache: none)")

    def pair_gradients(self, de_dg: torch.Tensor, species: torch.Tensor, edge_index: torch.Tensor,
                       jacobian: PairJacobian) -> torch.Tensor:
        """(P, 3) ∂E/∂r_p from ∂E/∂G (N, F), eV, and the Jacobian of :meth:`jacobian`."""
        raise NotImplementedError(f"descriptor kind {self.kind!r} has no pair Jacobian")

    def jacobian_values_per_pair(self, angular: bool) -> int:
        """Numbers the pair Jacobian stores per pair (``angular``: per pair inside
        :attr:`angular_cutoff`, on top of the per-pair ones); sizes the descriptor cache."""
        return 0

    # ------------------------------------------------------------------ provided
    @property
    def max_features(self) -> int:
        return max(self.n_features_per_element)

    @property
    def angular_cutoff(self) -> float:
        """Radius of the pairs that enter triplets, Å (0: a two-body descriptor)."""
        return 0.0

    def work_item_bytes(self, dtype: torch.dtype) -> int:
        """Working memory per unit of work (a pair or a triplet) of a forward with forces,
        bytes, in ``dtype``: sizes the groups of centres of a chunked forward (see
        :func:`~mlpot.models.potential.auto_chunk_size`). The default assumes 64 numbers."""
        return 64 * dtype.itemsize

    def uses_compiled_kernel(self, device: torch.device | str) -> bool:
        """Whether the descriptor's memory stays O(pairs) on ``device`` (callers then need
        not split large structures into groups of centres)."""
        return False

    def species(self, numbers: torch.Tensor) -> torch.Tensor:
        """Map atomic numbers (N,) to element indices (N,); raise for unknown elements.

        One host synchronisation (a single reduction over both checks). A call with the
        very tensor of the previous call, unchanged since (its version counter), returns
        the previous result without a check: MD calls this every step with one batch's
        numbers, and on a GPU the check is a wait for the device."""
        if torch.jit.is_tracing():  # a trace must record the lookup, never a remembered result
            return self._checked_species(numbers)
        memo = getattr(self, "_species_memo", None)
        key = (numbers._version, self.species_of_number.device)
        if memo is not None and memo[0] is numbers and memo[1] == key and memo[2]._version == memo[3]:
            return memo[2]
        species = self._checked_species(numbers)
        self._species_memo = (numbers, key, species, species._version)
        return species

    def _checked_species(self, numbers: torch.Tensor) -> torch.Tensor:
        """:meth:`species` without the memo."""
        numbers = numbers.long()
        if numbers.numel() == 0:
            return numbers
        in_range = (numbers >= 1) & (numbers <= 118)
        species = self.species_of_number[numbers.clamp(1, 118)]
        bad = (species < 0) | ~in_range
        if bool(bad.any()):
            from ase.data import chemical_symbols

            wrong = numbers[bad].unique().tolist()
            out_of_range = [z for z in wrong if not 1 <= z <= 118]
            if out_of_range:
                raise ValueError(f"atomic numbers out of range 1..118: {out_of_range}")
            unknown = sorted({chemical_symbols[z] for z in wrong})
            raise ValueError(f"element(s) {unknown} not known to this descriptor (elements {list(self.elements)})")
        return species

    def forward(self, batch, scaled: bool = True) -> torch.Tensor:
        """Descriptors (N, F) of an :class:`~mlpot.data.AtomsBatch` (pairs are built if
        missing); ``scaled`` applies the fitted scaler, if there is one."""
        if batch.edge_index is None or batch.cutoff is None or batch.cutoff < self.cutoff:
            batch = batch.with_neighbours(self.cutoff)
        species = self.species(batch.numbers)
        raw = self.compute(batch.positions, species, batch.cell, batch.system_idx,
                           batch.edge_index, batch.edge_shift)
        return self.scale(raw, species) if scaled else raw

    def compute(self, positions: torch.Tensor, species: torch.Tensor, cell: torch.Tensor,
                system_idx: torch.Tensor, edge_index: torch.Tensor, edge_shift: torch.Tensor) -> torch.Tensor:
        """Raw descriptors (N, F) from positions (N, 3) Å, species (N,), cell (B, 3, 3) Å,
        system_idx (N,), pairs (2, P) sorted by centre and their integer image shifts (P, 3);
        differentiable in ``positions`` and ``cell``."""
        vec = edge_vectors(positions, cell, system_idx, edge_index, edge_shift)
        return self.compute_from_vectors(vec, species, edge_index, positions.shape[0])

    def scale(self, features: torch.Tensor, species: torch.Tensor) -> torch.Tensor:
        """Apply the scaler (identity when none is fitted). features (N, F), species (N,)."""
        return features if self.scaler is None else self.scaler(features, species)

    @torch.no_grad()
    def statistics(self, batches: Iterable) -> FeatureStatistics:
        """Per-element statistics of the raw descriptors over an iterable of batches."""
        stats = FeatureStatistics(self.n_elements, self.n_features_per_element)
        for batch in batches:
            stats.update(self(batch, scaled=False), self.species(batch.numbers))
        return stats

    def fit_scaling(self, batches: Iterable, mode: str = "scale_center",
                    s_min: float = 0.0, s_max: float = 1.0) -> FeatureScaler:
        """Fit and attach a per-element scaler from (training) batches; returns it."""
        stats = self.statistics(batches)
        missing = [el for el, n in zip(self.elements, stats.count.tolist()) if n == 0]
        if missing:
            raise ValueError(f"no atoms of element(s) {missing} in the data used to fit the "
                             "descriptor scaling; every element of the model must occur there")
        scaler = FeatureScaler.from_statistics(stats, mode, s_min, s_max)
        self.scaler = scaler.to(self.species_of_number.device)
        return self.scaler

    def empty_scaler(self, mode: str, s_min: float, s_max: float) -> FeatureScaler:
        """Attach and return an unfitted scaler of this descriptor's shape (to load a state
        dict into)."""
        self.scaler = FeatureScaler(self.n_elements, self.max_features, mode, s_min, s_max).to(
            self.species_of_number.device)
        return self.scaler

    def cache_key_dict(self) -> dict[str, Any]:
        """What names this descriptor's values in a cache key."""
        return {"kind": self.kind, **self.config_dict()}
