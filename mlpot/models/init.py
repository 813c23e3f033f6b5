"""Weight initialisation schemes as a registry (``INITS[name](weight, activation)``).

Gains follow torch's ``calculate_gain`` where torch knows the activation (tanh 5/3,
sigmoid and identity 1); for SiLU, GELU, CELU, softplus and shifted softplus (which torch
does not list) the ReLU-family gain √2 is used for He/Kaiming and 1 for Xavier/LeCun, the
usual choice for smooth ReLU-like functions; Gaussian and cos (kept for n2p2 potentials,
which are imported rather than trained from scratch) get 1 as well.
Biases start at zero in every scheme.
"""

from __future__ import annotations

import math
from typing import Callable

import torch
from torch import nn

__all__ = ["INITS", "register_init", "initialise_linear"]

InitFn = Callable[[torch.Tensor, str], None]
INITS: dict[str, InitFn] = {}

_TORCH_GAINS = {"tanh": "tanh", "linear": "linear", "identity": "linear", "sigmoid": "sigmoid"}


def register_init(name: str):
    def wrap(fn: InitFn) -> InitFn:
        INITS[name] = fn
        return fn

    return wrap


def _gain(activation: str) -> float:
    if activation in _TORCH_GAINS:
        return nn.init.calculate_gain(_TORCH_GAINS[activation])
    return 1.0


@register_init("xavier_uniform")
def _xavier_uniform(w: torch.Tensor, activation: str) -> None:
    nn.init.xavier_uniform_(w, gain=_gain(activation))


@register_init("xavier_normal")
def _xavier_normal(w: torch.Tensor, activation: str) -> None:
    nn.init.xavier_normal_(w, gain=_gain(activation))


@register_init("kaiming_uniform")
def _kaiming_uniform(w: torch.Tensor, activation: str) -> None:
    # He init: Var(w) = 2 / fan_in for ReLU-like units; tanh keeps torch's 5/3 gain.
    nonlinearity = "tanh" if activation == "tanh" else "relu"
    nn.init.kaiming_uniform_(w, nonlinearity=nonlinearity)


@register_init("kaiming_normal")
def _kaiming_normal(w: torch.Tensor, activation: str) -> None:
    nonlinearity = "tanh" if activation == "tanh" else "relu"
    nn.init.kaiming_normal_(w, nonlinearity=nonlinearity)


@register_init("lecun_normal")
def _lecun_normal(w: torch.Tensor, activation: str) -> None:
    # LeCun: Var(w) = 1 / fan_in, the variance-preserving choice for tanh-like units.
    nn.init.normal_(w, std=1.0 / math.sqrt(w.shape[1]))


@register_init("lecun_uniform")
def _lecun_uniform(w: torch.Tensor, activation: str) -> None:
    bound = math.sqrt(3.0 / w.shape[1])
    nn.init.uniform_(w, -bound, bound)


@register_init("orthogonal")
def _orthogonal(w: torch.Tensor, activation: str) -> None:
    nn.init.orthogonal_(w, gain=_gain(activation))


INITS["xavier"] = INITS["xavier_uniform"]
INITS["he"] = INITS["kaiming"] = INITS["kaiming_normal"]
INITS["lecun"] = INITS["lecun_normal"]


def initialise_linear(layer: nn.Linear, scheme: str, activation: str) -> None:
    """Initialise ``layer.weight`` with ``scheme`` for the following ``activation``; zero bias."""
    try:
        fn = INITS[scheme]
    except KeyError:
        raise ValueError(f"unknown init scheme {scheme!r}; choose one of {sorted(INITS)}") from None
    with torch.no_grad():
        fn(layer.weight, activation)
        if layer.bias is not None:
            layer.bias.zero_()
