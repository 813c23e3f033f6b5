"""Optimiser, moving average and gradient clipping of a :class:`~mlpot.training.stack.ModelStack`,
one member at a time in effect, all members in each operation.

Each member keeps what a lone run has: its own learning rate (its schedule), weight decay,
Adam moments and step count, gradient clipping, EMA. Every tensor here is stacked along the
leading member axis, and per-member numbers are (M,) tensors broadcast over it; a member
without a batch in a step (its epoch is shorter) is masked out of that step entirely.

The update is torch's Adam/AdamW (``torch.optim.Adam`` single-tensor form), so a member
follows its lone run to rounding. Each member's state converts to and from the
``state_dict`` of a ``torch.optim.Adam`` over its own potential's parameters, so member
checkpoints are ordinary mlpot checkpoints (a lone run can resume one, and back).
"""

from __future__ import annotations

from typing import Sequence

import torch

__all__ = ["StackedAdam", "StackedEMA", "member_gradient_norms", "clip_member_gradients"]


def _column(values: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    """(M,) → (M, 1, ..., 1) broadcastable against ``like`` (M, ...), in its dtype."""
    return values.to(like.dtype).view((-1,) + (1,) * (like.dim() - 1))


class StackedAdam:
    """Adam (``decoupled=False``) or AdamW over stacked parameters, per-member settings.

    Args:
        params: the stacked parameters, each (M, ...).
        betas, eps: as torch's Adam (shared by the members).
        weight_decay: (M,) per member.
        decoupled: AdamW's decoupled weight decay.
    """

    def __init__(self, params: Sequence[torch.nn.Parameter], betas: tuple[float, float], eps: float,
                 weight_decay: torch.Tensor, decoupled: bool):
        self.params = list(params)
        self.betas, self.eps, self.decoupled = betas, eps, decoupled
        device = self.params[0].device
        self.weight_decay = weight_decay.to(device, torch.float64)
        self.steps = torch.zeros(len(weight_decay), dtype=torch.float64, device=device)
        self.exp_avg = [torch.zeros_like(p) for p in self.params]
        self.exp_avg_sq = [torch.zeros_like(p) for p in self.params]

    def zero_grad(self) -> None:
        for p in self.params:
            p.grad = None

    @torch.no_grad()
    def step(self, lr: torch.Tensor, active: torch.Tensor) -> None:
        """One update of the ``active`` (M,) bool members at learning rates ``lr`` (M,)."""
        beta1, beta2 = self.betas
        mask = active.to(torch.float64)
        self.steps += mask
        steps = self.steps.clamp(min=1.0)
        step_size = lr.to(torch.float64) / (1.0 - beta1 ** steps) * mask  # 0 for idle members
        bias2_sqrt = (1.0 - beta2 ** steps).sqrt()
        for p, m, v in zip(self.params, self.exp_avg, self.exp_avg_sq):
            grad = torch.zeros_like(p) if p.grad is None else p.grad
            if self.decoupled:
                p.mul_(1.0 - _column(lr.to(torch.float64) * self.weight_decay * mask, p))
            elif bool((self.weight_decay != 0).any()):
                grad = grad + _column(self.weight_decay, p) * p
            m.lerp_(grad, _column((1.0 - beta1) * mask, p))
            v.mul_(_column(torch.where(active, beta2, 1.0), p)).add_(grad * grad * _column((1.0 - beta2) * mask, p))
            denom = (v.sqrt() / _column(bias2_sqrt, p)).add_(self.eps)
            p.sub_(m / denom * _column(step_size, p))

    def keep(self, index: torch.Tensor) -> None:
        """Keep members ``index`` (see :meth:`ModelStack.keep`); call after the stack's."""
        self.weight_decay, self.steps = self.weight_decay[index], self.steps[index]
        self.exp_avg = [t.index_select(0, index).clone() for t in self.exp_avg]
        self.exp_avg_sq = [t.index_select(0, index).clone() for t in self.exp_avg_sq]

    def rebind(self, params: Sequence[torch.nn.Parameter]) -> None:
        """Point at the stack's (new) parameter tensors after :meth:`ModelStack.keep`."""
        self.params = list(params)

    def member_state(self, m: int, group: dict) -> dict:
        """Member ``m``'s state as ``torch.optim.Adam.state_dict()`` of its potential's
        parameters (``group``: that optimiser's param group, e.g. from ``build_optimizer``,
        its ``lr`` set to the member's current one)."""
        n = float(self.steps[m])
        state = {} if n == 0 else {
            i: {"step": torch.tensor(n), "exp_avg": a[m].detach().clone(), "exp_avg_sq": b[m].detach().clone()}
            for i, (a, b) in enumerate(zip(self.exp_avg, self.exp_avg_sq))}
        return {"state": state, "param_groups": [dict(group, params=list(range(len(self.params))))]}

    @torch.no_grad()
    def load_member_state(self, m: int, state_dict: dict) -> None:
        """The inverse of :meth:`member_state` (a lone run's optimizer entry also loads)."""
        state = state_dict.get("state", {})
        self.steps[m] = float(state[0]["step"]) if 0 in state else 0.0
        for i, (a, b) in enumerate(zip(self.exp_avg, self.exp_avg_sq)):
            entry = state.get(i)
            a[m].copy_(entry["exp_avg"] if entry else torch.zeros_like(a[m]))
            b[m].copy_(entry["exp_avg_sq"] if entry else torch.zeros_like(b[m]))


class StackedEMA:
    """Per-member exponential moving average of stacked parameters: θ̄ ← d·θ̄ + (1 − d)·θ with
    d = min(decay, (1 + n)/(10 + n)) per member, as :class:`~mlpot.training.optim.EMA`.

    Args:
        params: the stacked parameters by name, each (M, ...).
        decay: (M,) per member.
    """

    def __init__(self, params: dict[str, torch.Tensor], decay: torch.Tensor):
        self.decay = decay.to(torch.float64)
        self.n_updates = torch.zeros_like(self.decay)
        self.shadow = {k: p.detach().clone() for k, p in params.items()}

    @torch.no_grad()
    def update(self, params: dict[str, torch.Tensor], active: torch.Tensor) -> None:
        d = torch.minimum(self.decay, (1.0 + self.n_updates) / (10.0 + self.n_updates))
        weight = (1.0 - d) * active.to(torch.float64)
        for k, p in params.items():
            self.shadow[k].lerp_(p.detach(), _column(weight, p))
        self.n_updates += active.to(torch.float64)

    def member(self, m: int) -> dict[str, torch.Tensor]:
        """Member ``m``'s averaged weights by parameter name."""
        return {k: v[m] for k, v in self.shadow.items()}

    def member_state(self, m: int, names: dict[str, str]) -> dict:
        """Member ``m``'s :meth:`EMA.state_dict <mlpot.training.optim.EMA.state_dict>`;
        ``names`` maps shadow keys to the potential's parameter names."""
        return {"decay": float(self.decay[m]), "n_updates": int(self.n_updates[m]),
                "shadow": {names[k]: v[m].clone() for k, v in self.shadow.items()}}

    @torch.no_grad()
    def load_member_state(self, m: int, state: dict, names: dict[str, str]) -> None:
        self.decay[m], self.n_updates[m] = state["decay"], state["n_updates"]
        for k, v in self.shadow.items():
            v[m].copy_(state["shadow"][names[k]])

    def keep(self, index: torch.Tensor) -> None:
        self.decay, self.n_updates = self.decay[index], self.n_updates[index]
        self.shadow = {k: v.index_select(0, index).clone() for k, v in self.shadow.items()}


def member_gradient_norms(params: Sequence[torch.Tensor]) -> torch.Tensor:
    """(M, P) float64: the gradient norm of each member's slice of each parameter tensor."""
    columns = []
    for p in params:
        if p.grad is None:
            columns.append(torch.zeros(p.shape[0], dtype=torch.float64, device=p.device))
        else:
            columns.append(p.grad.detach().double().flatten(1).norm(dim=1))
    return torch.stack(columns, dim=1)


@torch.no_grad()
def clip_member_gradients(params: Sequence[torch.Tensor], norms: torch.Tensor, max_norm: torch.Tensor) -> None:
    """Scale each member's gradients to a total norm of at most ``max_norm`` (M,) (0: no
    clipping), as ``torch.nn.utils.clip_grad_norm_`` does per lone run; ``norms`` (M, P)
    from :func:`member_gradient_norms`."""
    if not bool((max_norm > 0).any()):
        return
    total = norms.pow(2).sum(1).sqrt()
    coef = (max_norm.to(total.dtype) / (total + 1e-6)).clamp(max=1.0)
    coef = torch.where(max_norm > 0, coef, torch.ones_like(coef))
    for p in params:
        if p.grad is not None:
            p.grad.mul_(_column(coef, p.grad))
