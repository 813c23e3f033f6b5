"""Gradient norms per network layer: the depth study's view of vanishing and exploding gradients.

A "layer" is one hidden block (``layer 1`` … ``layer D``) or the ``readout``, pooled over the
per-element networks: its norm is sqrt(Σ ‖∂L/∂θ‖²) over every weight and bias of that layer
in every element's network.
"""

from __future__ import annotations

import math
import re
from typing import Mapping

import torch
from torch import nn

__all__ = ["layer_of", "layer_norms", "LayerGradientMonitor"]

_BLOCK = re.compile(r"(?:^|\.)blocks\.(\d+)\.")
_READOUT = re.compile(r"(?:^|\.)readout\.")


def layer_of(name: str) -> str | None:
    """The layer a parameter belongs to: ``"layer 3"`` for ``…blocks.2.…``, ``"readout"``;
    ``None`` for parameters outside the networks."""
    match = _BLOCK.search(name)
    if match:
        return f"layer {int(match.group(1)) + 1}"
    if _READOUT.search(name):
        return "readout"
    return None


def _order(layer: str) -> float:
    return math.inf if layer == "readout" else int(layer.split()[1])


def layer_norms(parameter_norms: Mapping[str, float]) -> dict[str, float]:
    """Pool per-parameter gradient norms into per-layer norms, ordered from input to readout.

    Args:
        parameter_norms: parameter name → ‖∂L/∂θ‖ (names as ``named_parameters`` or the
            ``grad_norm/<element>.<name>`` columns of ``metrics.csv``).

    Returns:
        layer → sqrt(Σ norm²) over its parameters.
    """
    sums: dict[str, float] = {}
    for name, norm in parameter_norms.items():
        layer = layer_of(name)
        if layer is not None and norm is not None and math.isfinite(float(norm)):
            sums[layer] = sums.get(layer, 0.0) + float(norm) ** 2
    return {k: math.sqrt(sums[k]) for k in sorted(sums, key=_order)}


class LayerGradientMonitor:
    """Records the gradient norm of every layer each time a backward pass fills ``.grad``.

    Hooks (``register_post_accumulate_grad_hook``) read each parameter's gradient as it is
    accumulated, so the norms are those of the backward pass just run, whatever the loss
    (double backward of force training included). Use as a context manager or call
    :meth:`remove`.

    Args:
        model: any module whose per-element networks have ``blocks.<k>`` and ``readout``.
    """

    def __init__(self, model: nn.Module):
        self._squares: dict[str, float] = {}
        self._handles = []
        for name, param in model.named_parameters():
            if param.requires_grad and layer_of(name) is not None:
                self._handles.append(param.register_post_accumulate_grad_hook(self._hook(name)))

    def _hook(self, name: str):
        def record(param: torch.Tensor) -> None:
            self._squares[name] = float(param.grad.detach().double().square().sum())
        return record

    def norms(self) -> dict[str, float]:
        """Layer → gradient norm of the last backward pass (then forgets it)."""
        out = layer_norms({k: math.sqrt(v) for k, v in self._squares.items()})
        self._squares = {}
        return out

    def remove(self) -> None:
        for handle in self._handles:
            handle.remove()
        self._handles = []

    def __enter__(self) -> "LayerGradientMonitor":
        return self

    def __exit__(self, *exc) -> None:
        self.remove()
