"""A decoupled extended Kalman filter that trains a network on its loss (a second-order finish).

n2p2 trains Behler–Parrinello networks with an extended Kalman filter (EKF): the weights w are
the filter's state, with an error covariance P, and every update moves them along P·H, where
H = ∂z/∂w is the gradient of a measurement z. Fed one structure at a time it is recursive least
squares for the linearised network, and it often reaches lower errors than first-order
optimisers on small networks (Singraber et al., JCTC 15, 3075 (2019); Hu et al., "RLEKF",
AAAI 2023, for deep-potential nets).

Here the measurement is the root of the batch loss, z = √L with target 0, so one backward pass
of the ordinary loss gives everything the filter needs: H = ∇L / (2√L). With L = r² for a
single residual r this is exactly the textbook update w ← w − P x r / (λ + xᵀ P x). Per update,
with fading-memory factor λ and process noise q::

    a   = 1 / (λ + Σ_b H_bᵀ P_b H_b)
    K_b = a · P_b H_b
    w_b ← w_b − K_b z
    P_b ← (P_b − K_b (P_b H_b)ᵀ) / λ + q·I
    λ   ← ν λ + 1 − ν

P is block diagonal ("decoupled", Puskorius & Feldkamp 1991): one block per parameter tensor,
tensors larger than ``block_size`` split into consecutive chunks, so memory is Σ n_b² instead
of n² (a 24k-weight network: ~0.1 G entries instead of 0.6 G). The scalar a couples the blocks.
A parameter without a gradient in a step (an element absent from the batch) is left alone,
covariance included: fading would otherwise inflate the P of an unobserved block step after
step. The learning rate of the param groups is not used: P sets the step size.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch

__all__ = ["KalmanFilter"]

#: Updates between two symmetrisations of P (a full extra pass over P: rare enough to cost
#: little, often enough that round-off asymmetry stays at the level of one update's).
_SYMMETRIZE_EVERY = 64


class KalmanFilter(torch.optim.Optimizer):
    """Decoupled EKF over ``params`` with the loss as its measurement (see the module docstring).

    Args:
        params: the parameters (or param groups) to train.
        p0: initial covariance P = p0·I of every block (the prior variance of the weights).
        lambda0: initial fading-memory factor λ (< 1 forgets early, poorly linearised updates;
            but with one scalar measurement per update it inflates P in every unobserved
            direction, see :class:`~mlpot.training.config.KalmanConfig`: 1 by default).
        nu: λ relaxes to 1 as λ ← ν λ + 1 − ν per update.
        process_noise: q added to P's diagonal after each update (0: none).
        block_size: largest block of P; a larger tensor is split into chunks of this size.

    :meth:`step` needs the gradients of the loss in ``.grad`` and a closure that returns the
    loss value L ≥ 0 (a number or a scalar tensor; it is not re-evaluated).
    """

    def __init__(self, params, p0: float = 0.01, lambda0: float = 1.0, nu: float = 0.9987,
                 process_noise: float = 0.0, block_size: int = 4096):
        if not p0 > 0:
            raise ValueError(f"KalmanFilter: p0 must be > 0, got {p0}")
        if not 0 < lambda0 <= 1:
            raise ValueError(f"KalmanFilter: lambda0 must be in (0, 1], got {lambda0}")
        if not 0 <= nu <= 1:
            raise ValueError(f"KalmanFilter: nu must be in [0, 1], got {nu}")
        if not process_noise >= 0:
            raise ValueError(f"KalmanFilter: process_noise must be >= 0, got {process_noise}")
        if block_size < 1:
            raise ValueError(f"KalmanFilter: block_size must be >= 1, got {block_size}")
        defaults = {"lr": 1.0, "p0": p0, "nu": nu, "process_noise": process_noise, "block_size": block_size}
        super().__init__(params, defaults)
        # λ and the update count are one filter's, shared by all groups: kept in the first.
        self.param_groups[0].setdefault("lambda", lambda0)
        self.param_groups[0].setdefault("updates", 0)

    def _blocks(self, p: torch.Tensor, group: dict) -> list[torch.Tensor]:
        """The covariance blocks of ``p`` (created at p0·I on first use)."""
        state = self.state[p]
        if "P" not in state:
            n, size = p.numel(), group["block_size"]
            state["P"] = [torch.eye(min(size, n - lo), dtype=p.dtype, device=p.device) * group["p0"]
                          for lo in range(0, n, size)]
        return state["P"]

    @torch.no_grad()
    def step(self, closure: Callable[[], float | torch.Tensor] | None = None) -> float:
        """One filter update from the gradients in ``.grad`` and the loss ``closure()``.

        Returns:
            The loss value. A zero loss (nothing to correct) leaves the state unchanged.

        Raises:
            ValueError: without a closure, or with a negative or non-finite loss.
        """
        if closure is None:
            raise ValueError("KalmanFilter.step needs a closure that returns the loss (the filter's measurement)")
        with torch.enable_grad():
            loss = float(closure())
        if not math.isfinite(loss) or loss < 0:
            raise ValueError(f"KalmanFilter.step: the loss must be finite and >= 0, got {loss}")
        if loss == 0.0:
            return loss
        z = math.sqrt(loss)
        observed = []  # (parameter, its group, its P blocks, the P·H chunks)
        h_p_h = []     # Hᵀ P H per block, summed once below (one host sync per update, not per block)
        for group in self.param_groups:
            for p in group["params"]:
                if p.grad is None:
                    continue
                blocks = self._blocks(p, group)
                h = (p.grad.reshape(-1) / (2.0 * z)).split(group["block_size"])
                ph = [P @ hb for P, hb in zip(blocks, h)]
                h_p_h += [hb @ phb for hb, phb in zip(h, ph)]
                observed.append((p, group, blocks, ph))
        first = self.param_groups[0]
        lam = first["lambda"]
        a = 1.0 / (lam + float(sum(x.double() for x in h_p_h)))
        symmetrize = (first["updates"] + 1) % _SYMMETRIZE_EVERY == 0
        for p, group, blocks, ph in observed:
            flat = p.view(-1) if p.is_contiguous() else None
            steps = []
            for P, phb in zip(blocks, ph):
                steps.append(phb * (a * z))  # K_b z
                # P ← (P − a·(P H)(P H)ᵀ) / λ in one in-place pass (K_b (P_b H_b)ᵀ = a (P_b H_b)(P_b H_b)ᵀ)
                P.addr_(phb, phb, beta=1.0 / lam, alpha=-a / lam)
                if group["process_noise"] > 0:
                    P.diagonal().add_(group["process_noise"])
                if symmetrize:  # round-off breaks P's symmetry slowly: restore it now and then
                    P.copy_((P + P.T) * 0.5)
            delta = torch.cat(steps)
            if flat is not None:
                flat.sub_(delta)
            else:
                p.sub_(delta.view_as(p))
        first["lambda"] = first["nu"] * lam + 1.0 - first["nu"]
        first["updates"] += 1
        return loss

    def covariance_entries(self) -> int:
        """Number of entries of P (memory: this × the dtype's bytes), once every block exists."""
        return sum(min(g["block_size"], p.numel() - lo) ** 2
                   for g in self.param_groups for p in g["params"]
                   for lo in range(0, p.numel(), g["block_size"]))
