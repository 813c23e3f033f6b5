"""The atomic network: hidden blocks of free depth and width, then a (linear) readout."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import torch
from torch import nn
from torch.utils.checkpoint import checkpoint

from .blocks import ACTIVATIONS, BLOCKS, PlainBlock, activation
from .depth import survival_probabilities
from .init import INITS, initialise_linear

__all__ = ["NetworkConfig", "AtomicMLP", "block_classes", "block_survival", "network_parameters"]


@dataclass(frozen=True)
class NetworkConfig:
    """Architecture of every per-element network.

    Attributes:
        hidden: explicit hidden widths, e.g. ``[64, 64, 64]``; overrides depth/width.
        depth: number of hidden layers (used when ``hidden`` is not given).
        width: width of each hidden layer (used when ``hidden`` is not given).
        activation: one of :data:`~mlpot.models.blocks.ACTIVATIONS`, for every hidden layer.
            SiLU by default: an unbounded activation fits solids better than tanh (mlearn Si
            6.3 → 3.9 meV/atom, Mo 4.0 → 3.7, docs/accuracy.md; the depth study's
            recommendation, docs/depth-study.md; JCP 159, 094105 (2023) for plain MLPs).
            Model files store their activation, so older tanh models load unchanged.
        layer_activations: one activation per hidden layer, overriding ``activation``
            (n2p2 allows a different one per layer).
        output_activation: applied to the readout; ``identity`` (the default, and the usual
            choice) adds no module, so such models keep their parameter names.
        block: a name registered with :func:`~mlpot.models.blocks.register_block`: ``plain``
            or ``residual`` built in (see :data:`~mlpot.models.blocks.BLOCKS`).
        init: weight initialisation scheme (see :data:`~mlpot.models.init.INITS`).
        zero_init_residual: start each residual branch at zero (block = identity).
        stem: (YAML ``model.stem``; ``block: residual`` only) make the first hidden layer a
            plain layer σ(W x + b), d_in → the first hidden width, and every later layer a
            residual block. With equal hidden widths no block then needs a projection (the
            skip is the identity everywhere); without a stem (the default, as in model files
            written before this option) the first residual block carries a bias-free
            projection d_in → width, a quarter to half of a narrow network's weights.
            Stochastic depth applies to the residual blocks only (the stem always runs).
        survival: stochastic depth, survival probability of the last residual block,
            decaying linearly from 1 (1 = off; residual blocks only).
        checkpointing: recompute block activations in backward to save memory.
    """

    hidden: tuple[int, ...] | None = None
    depth: int = 2
    width: int = 32
    activation: str = "silu"
    layer_activations: tuple[str, ...] | None = None
    output_activation: str = "identity"
    block: str = "plain"
    init: str = "xavier_uniform"
    zero_init_residual: bool = False
    stem: bool = False
    survival: float = 1.0
    checkpointing: bool = False

    def __post_init__(self) -> None:
        if self.hidden is not None:
            if len(self.hidden) == 0 or any(int(w) < 1 for w in self.hidden):
                raise ValueError(f"model.hidden must be a non-empty list of positive widths, got {self.hidden}")
            object.__setattr__(self, "hidden", tuple(int(w) for w in self.hidden))
        elif self.depth < 1 or self.width < 1:
            raise ValueError(f"model.depth and model.width must be >= 1, got {self.depth}, {self.width}")
        if self.activation not in ACTIVATIONS:
            raise ValueError(f"model.activation {self.activation!r} unknown; choose one of {sorted(ACTIVATIONS)}")
        if self.layer_activations is not None:
            object.__setattr__(self, "layer_activations", tuple(str(a) for a in self.layer_activations))
            if len(self.layer_activations) != len(self.hidden_sizes):
                raise ValueError(f"model.layer_activations has {len(self.layer_activations)} entries for "
                                 f"{len(self.hidden_sizes)} hidden layers")
            for a in self.layer_activations:
                if a not in ACTIVATIONS:
                    raise ValueError(f"model.layer_activations: {a!r} unknown; choose from {sorted(ACTIVATIONS)}")
        if self.output_activation not in ACTIVATIONS:
            raise ValueError(f"model.output_activation {self.output_activation!r} unknown; "
                             f"choose one of {sorted(ACTIVATIONS)}")
        if self.block not in BLOCKS:
            raise ValueError(f"model.block {self.block!r} unknown; choose one of {sorted(BLOCKS)}")
        if self.init not in INITS:
            raise ValueError(f"model.init {self.init!r} unknown; choose one of {sorted(INITS)}")
        if not 0.0 < self.survival <= 1.0:
            raise ValueError(f"model.survival must be in (0, 1], got {self.survival}")
        if self.survival < 1.0 and self.block != "residual":
            raise ValueError("model.survival < 1 (stochastic depth) needs block: residual")
        if self.stem and self.block != "residual":
            raise ValueError(f"model.stem (a plain first layer before residual blocks) needs block: residual, "
                             f"got block: {self.block}")
        if self.stem and len(set(self.hidden_sizes)) > 1:
            raise ValueError(f"model.stem needs equal hidden widths (identity skips, no projections), "
                             f"got hidden: {list(self.hidden_sizes)}")

    @property
    def hidden_sizes(self) -> tuple[int, ...]:
        return self.hidden if self.hidden is not None else (self.width,) * self.depth

    @property
    def hidden_activations(self) -> tuple[str, ...]:
        """The activation of each hidden layer."""
        if self.layer_activations is not None:
            return self.layer_activations
        return (self.activation,) * len(self.hidden_sizes)


def block_classes(config: NetworkConfig) -> list[type[nn.Module]]:
    """The block class of each hidden layer: ``config.block``'s, except a plain first layer
    with ``config.stem``."""
    n_blocks = len(config.hidden_sizes)
    block = BLOCKS[config.block]
    return [PlainBlock if config.stem and k == 0 else block for k in range(n_blocks)]


def block_survival(config: NetworkConfig) -> tuple[float, ...]:
    """Stochastic-depth survival probability of each hidden layer: linear decay over the
    residual blocks (:func:`~mlpot.models.depth.survival_probabilities`), 1 for a stem."""
    n_blocks = len(config.hidden_sizes)
    if config.stem:
        return (1.0, *survival_probabilities(n_blocks - 1, config.survival))
    return tuple(survival_probabilities(n_blocks, config.survival))


def network_parameters(d_in: int, config: NetworkConfig) -> int:
    """Trainable parameters of one element's network with ``d_in`` descriptors, without
    building it (blocks' ``n_parameters`` plus the readout)."""
    sizes = (int(d_in), *config.hidden_sizes)
    blocks = sum(cls.n_parameters(a, b) for cls, a, b in zip(block_classes(config), sizes[:-1], sizes[1:]))
    return blocks + sizes[-1] + 1


class AtomicMLP(nn.Module):
    """Descriptor (n, d_in) → atomic energy contribution (n,).

    Args:
        d_in: descriptor length of this element.
        config: the architecture.
    """

    def __init__(self, d_in: int, config: NetworkConfig):
        super().__init__()
        sizes: Sequence[int] = (d_in, *config.hidden_sizes)
        #: Stochastic-depth survival probability of each block (1: never dropped).
        self.survival = block_survival(config)
        acts = config.hidden_activations
        # Through the registry only, with the constructor arguments every block class takes
        # (the contract in register_block's docstring).
        self.blocks = nn.ModuleList(
            cls(sizes[k], sizes[k + 1], act=acts[k], init=config.init,
                zero_init=config.zero_init_residual, survival=self.survival[k])
            for k, cls in enumerate(block_classes(config))
        )
        self.readout = nn.Linear(sizes[-1], 1)
        out_act = config.output_activation
        initialise_linear(self.readout, config.init, "linear" if out_act == "identity" else out_act)
        # Only a non-identity output activation becomes a module (it has no parameters, so
        # state dicts are the same either way).
        self.output_act = None if out_act == "identity" else activation(out_act)
        self.checkpointing = config.checkpointing

    def linear_layers(self) -> list[nn.Linear]:
        """The affine layers of a plain network, in evaluation order: y = σ_out(A_{L+1}
        σ_L(… σ_1(A_1 x) …)), A_k x = W_k x + b_k, σ_k the hidden activations.

        One per hidden block (its ``linear``; weight (d_k, d_{k−1}), bias (d_k,), with
        d_0 = ``d_in`` and d_k the k-th hidden width) and then the readout (weight (1, d_L),
        bias (1,)): the layout of a plain MLP in other codes (n2p2's weights files, see
        :mod:`mlpot.io.n2p2`). The layers are this network's own modules, so copying into
        their parameters (under ``torch.no_grad()``) sets the network's weights.

        Raises:
            ValueError: a hidden block is not plain: skip connections and projections are
                not a chain of affine layers and activations.
        """
        for k, block in enumerate(self.blocks):
            if type(block) is not PlainBlock:
                raise ValueError(f"hidden block {k} is a {type(block).__name__}, not a plain block: "
                                 "the network is not a chain of affine layers")
        return [block.linear for block in self.blocks] + [self.readout]

    def forward(self, x: torch.Tensor, keep: torch.Tensor | None = None) -> torch.Tensor:
        """Descriptors x (n, d_in) → outputs (n,), in units of the energy scale.

        Args:
            x: scaled descriptors, one row per atom.
            keep: (n, n_blocks) 0/1, stochastic depth in training mode: column k is the
                draw for block k of each row's structure (rows of one structure equal;
                :meth:`~mlpot.models.Potential.draw_depth_mask`); ``None``: blocks draw
                for themselves (all rows as one sample). Ignored in eval mode.
        """
        for k, block in enumerate(self.blocks):
            args = (x,)
            if keep is not None and getattr(block, "takes_keep", False):
                args = (x, keep[:, k:k + 1])
            if self.checkpointing and self.training and torch.is_grad_enabled():
                # Non-reentrant checkpointing: the reentrant form breaks the double backward
                # of force training.
                x = checkpoint(block, *args, use_reentrant=False)
            else:
                x = block(*args)
        x = self.readout(x)
        if self.output_act is not None:
            x = self.output_act(x)
        return x.squeeze(-1)
