"""Many potentials of one architecture evaluated as one model.

:class:`ModelStack` holds M member potentials that share a descriptor (the same symmetry
functions, so one descriptor cache serves all) and differ in everything that training
sets: network weights (stacked per parameter along a leading member axis, (M, ...)),
descriptor scaler, reference energies and energy scale. A batch mixes the members'
structures; :meth:`ModelStack.assign` says which member each atom belongs to, and the
atomic energies of all members come from one ``torch.func.vmap`` over the stacked weights
per element. Everything downstream of the atomic energies — forces and stress by autograd
or from the cached pair Jacobian — is :class:`~mlpot.models.Potential`'s own code.

The stack is a :class:`~mlpot.models.Potential` whose :meth:`atomic_energies` routes atoms to
their member's weights; members are read from and written back to ordinary potentials
(:meth:`load_member`, :meth:`store_member`), which is how model files and checkpoints of
each member are written in the same format as a lone run's.
"""

from __future__ import annotations

import contextlib
import copy
from typing import Iterator, Sequence

import torch
from torch import nn
from torch.func import functional_call, vmap

from ..models import Potential

__all__ = ["ModelStack"]


def _key(name: str) -> str:
    """A parameter name as a ParameterDict key (no dots)."""
    return name.replace(".", "/")


class ModelStack(Potential):
    """M potentials of one architecture as one module.

    Args:
        models: the members (fitted: scaler, reference energies and energy scale), with the
            same elements, descriptor parameters and network architecture; their weights and
            fitted values are copied in (``models[0]``'s descriptor is shared).

    Raises:
        ValueError: the members differ in elements, descriptor or architecture.
    """

    def __init__(self, models: Sequence[Potential]):
        nn.Module.__init__(self)
        if not models:
            raise ValueError("a model stack needs at least one member")
        _check_same_shape(models)
        first = models[0]
        self.config, self.descriptor = first.config, first.descriptor
        self.n_members = len(models)
        names = [n for n, _ in first.named_parameters() if n.startswith("networks.")]
        self.parameter_names = names
        members = [dict(m.named_parameters()) for m in models]
        # A list of pairs keeps this order (a dict would be sorted by key): the optimiser
        # state and the gradient-norm columns follow the potential's parameter order.
        self.stacked = nn.ParameterDict([(_key(n), nn.Parameter(torch.stack([p[n].detach() for p in members]).clone()))
                                         for n in names])
        scalers = [m.descriptor.scaler for m in models]
        if any(s is None for s in scalers):
            raise ValueError("every member needs a fitted descriptor scaler")
        self.register_buffer("scale_weight", torch.stack([s.weight for s in scalers]).clone())  # (M, E, F)
        self.register_buffer("scale_bias", torch.stack([s.bias for s in scalers]).clone())
        self.register_buffer("reference_energies", torch.stack([m.reference_energies for m in models]).clone())
        self.register_buffer("energy_scale", torch.stack([m.energy_scale for m in models]).clone())  # (M,)
        # Per element, a parameter-free copy of its network: functional_call runs it with the
        # members' weights (not submodules: moving the stack must not move these).
        self._templates = [copy.deepcopy(net).to("meta") for net in first.networks.networks]
        self._prefix = [f"networks.networks.{e}." for e in range(len(self._templates))]
        self.n_features = first.networks.n_features
        self._member: torch.Tensor | None = None

    # ------------------------------------------------------------------ Potential interface
    @property
    def elements(self) -> tuple[str, ...]:
        return self.descriptor.elements

    @property
    def dtype(self) -> torch.dtype:
        return next(iter(self.stacked.values())).dtype

    def train(self, mode: bool = True) -> "ModelStack":
        super().train(mode)
        for template in self._templates:  # stochastic depth follows the stack's mode
            template.train(mode)
        return self

    def forward(self, batch, forces: bool = True, stress: bool = False, create_graph: bool | None = None,
                descriptors: bool = False, chunk_size: int | None = None) -> dict[str, torch.Tensor]:
        """:meth:`Potential.forward` in one group of centres (member assignments are per atom
        of the whole batch)."""
        return super().forward(batch, forces, stress, create_graph, descriptors, chunk_size=None)

    @contextlib.contextmanager
    def assign(self, member: torch.Tensor) -> Iterator["ModelStack"]:
        """Inside the block, atom i of every batch belongs to member ``member[i]`` (N,), long
        indices into the stack; the atoms of each member must be contiguous and in order."""
        self._member = member
        try:
            yield self
        finally:
            self._member = None

    def atomic_energies(self, raw: torch.Tensor, species: torch.Tensor,
                        keep: torch.Tensor | None = None) -> torch.Tensor:
        """(N,) e_ref + s · NN(G̃) of each atom with its member's scaler, reference energies,
        energy scale and weights (see :meth:`assign`); raw (N, F), species (N,), ``keep``
        (N, n_blocks) each atom's stochastic-depth row (its structure's draws,
        :meth:`~mlpot.models.Potential.draw_depth_mask`; ``None`` in eval mode)."""
        member = self._member
        if member is None or member.shape[0] != raw.shape[0]:
            raise RuntimeError("ModelStack: assign() every atom to a member before evaluating")
        dtype = raw.dtype
        scaled = torch.addcmul(self.scale_bias.to(dtype)[member, species], raw,
                               self.scale_weight.to(dtype)[member, species])
        if len(self._templates) == 1:  # one element: every atom is its
            out = self._element_outputs(0, scaled, member, keep)
        else:
            out = raw.new_zeros(raw.shape[0])
            for e in range(len(self._templates)):
                idx = torch.nonzero(species == e).squeeze(1)
                if idx.numel():
                    rows = None if keep is None else keep.index_select(0, idx)
                    out = out.index_copy(0, idx, self._element_outputs(e, scaled.index_select(0, idx),
                                                                       member.index_select(0, idx), rows))
        return (self.reference_energies.to(dtype)[member, species]
                + self.energy_scale.to(dtype)[member] * out)

    def _element_outputs(self, e: int, features: torch.Tensor, member: torch.Tensor,
                         keep: torch.Tensor | None = None) -> torch.Tensor:
        """(n,) network outputs of element ``e``'s atoms (features (n, F), member (n,),
        non-decreasing, ``keep`` (n, n_blocks) or ``None``): padded to (M, n_max, F_e) and
        evaluated by one vmap over members. The stochastic-depth rows travel as an input
        (padding rows keep every block): no random numbers are drawn inside the vmap."""
        n_members = self.n_members
        counts = torch.bincount(member, minlength=n_members)
        n_max, width = int(counts.max()), self.n_features[e]
        rank = torch.arange(member.shape[0], device=member.device) - (torch.cumsum(counts, 0) - counts)[member]
        slot = member * n_max + rank  # row of each atom in the padded (M · n_max) rows
        padded = features.new_zeros(n_members * n_max, width).index_copy(0, slot, features[:, :width])
        prefix, template = self._prefix[e], self._templates[e]
        params = {n[len(prefix):]: self.stacked[_key(n)] for n in self.parameter_names if n.startswith(prefix)}
        if keep is None:
            def network(p: dict, x: torch.Tensor) -> torch.Tensor:
                return functional_call(template, p, (x,))

            outputs = vmap(network, randomness="different")(params, padded.view(n_members, n_max, width))
        else:
            n_blocks = keep.shape[1]
            rows = keep.new_ones(n_members * n_max, n_blocks).index_copy(0, slot, keep)

            def network(p: dict, x: torch.Tensor, k: torch.Tensor) -> torch.Tensor:
                return functional_call(template, p, (x, k))

            outputs = vmap(network, randomness="error")(params, padded.view(n_members, n_max, width),
                                                          rows.view(n_members, n_max, n_blocks))
        return outputs.reshape(-1).index_select(0, slot)

    # ------------------------------------------------------------------ members
    def member_parameters(self, m: int) -> dict[str, torch.Tensor]:
        """Member ``m``'s network weights as views, by the potential's parameter names."""
        return {n: self.stacked[_key(n)][m] for n in self.parameter_names}

    @torch.no_grad()
    def load_member(self, m: int, model: Potential) -> None:
        """Copy ``model``'s weights and fitted values into slot ``m``."""
        params = dict(model.named_parameters())
        for n in self.parameter_names:
            self.stacked[_key(n)][m].copy_(params[n])
        self.scale_weight[m].copy_(model.descriptor.scaler.weight)
        self.scale_bias[m].copy_(model.descriptor.scaler.bias)
        self.reference_energies[m].copy_(model.reference_energies)
        self.energy_scale[m].copy_(model.energy_scale)

    @torch.no_grad()
    def store_member(self, m: int, model: Potential, weights: dict[str, torch.Tensor] | None = None) -> Potential:
        """Write slot ``m``'s weights (or ``weights``, e.g. its moving average, by parameter
        name) into ``model``; returns it."""
        params = dict(model.named_parameters())
        source = self.member_parameters(m) if weights is None else weights
        for n in self.parameter_names:
            params[n].copy_(source[n])
        return model

    @torch.no_grad()
    def keep(self, members: Sequence[int]) -> None:
        """Keep only the slots ``members`` (in that order): a member that stopped training
        stops costing. Optimiser and EMA state must be sliced alike."""
        index = torch.as_tensor(list(members), dtype=torch.long, device=self.energy_scale.device)
        for key, p in self.stacked.items():
            self.stacked[key] = nn.Parameter(p.detach().index_select(0, index).clone())
        for name in ("scale_weight", "scale_bias", "reference_energies", "energy_scale"):
            setattr(self, name, getattr(self, name).index_select(0, index).clone())
        self.n_members = len(index)


def _check_same_shape(models: Sequence[Potential]) -> None:
    """Members must share elements, descriptor parameters and network architecture."""
    first = models[0]
    for k, m in enumerate(models[1:], start=1):
        if m.elements != first.elements:
            raise ValueError(f"member {k} has elements {list(m.elements)}, member 0 {list(first.elements)}")
        if m.descriptor.cache_key_dict() != first.descriptor.cache_key_dict():
            raise ValueError(f"member {k} has other descriptor parameters than member 0")
        if m.config != first.config:
            raise ValueError(f"member {k} has another network architecture than member 0")
