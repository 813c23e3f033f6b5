"""The Kalman-filter optimiser: one step against hand-written formulas, recursive least squares
against the closed-form Bayesian solution, the decoupled blocks, and its state round trip."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from mlpot.training.kalman import KalmanFilter


def _linear_step(w: torch.nn.Parameter, x: torch.Tensor, y: torch.Tensor, kf: KalmanFilter) -> float:
    """One filter update of the linear model w·x on the mean squared error of (x, y)."""
    kf.zero_grad()
    loss = ((x @ w - y) ** 2).mean()
    loss.backward()
    return kf.step(lambda: loss.detach())


def test_one_update_equals_the_hand_computed_step():
    # y = w·x, one sample, P0 = 2 I, λ = 0.9: w1 = w0 - P0 x r / (λ + xᵀP0x),
    # P1 = (P0 - P0 x xᵀ P0 / (λ + xᵀP0x)) / λ, written out by hand below.
    w0, x, y, p0, lam = np.array([0.5, -1.0]), np.array([2.0, 3.0]), 1.0, 2.0, 0.9
    r = w0 @ x - y                       # 1 - 3 - 1 = -3
    xpx = p0 * (x @ x)                   # 2 * 13 = 26
    w1 = w0 - p0 * x * r / (lam + xpx)   # w0 + 6 x / 26.9
    P1 = (p0 * np.eye(2) - p0 ** 2 * np.outer(x, x) / (lam + xpx)) / lam

    w = torch.nn.Parameter(torch.tensor(w0))
    kf = KalmanFilter([w], p0=p0, lambda0=lam, nu=0.5)
    loss = _linear_step(w, torch.tensor(x[None]), torch.tensor([y]), kf)
    assert loss == pytest.approx(9.0)
    np.testing.assert_allclose(w.detach().numpy(), w1, rtol=1e-14)
    np.testing.assert_allclose(kf.state[w]["P"][0].numpy(), P1, rtol=1e-13, atol=1e-15)
    assert kf.param_groups[0]["lambda"] == pytest.approx(0.5 * lam + 0.5)  # λ ← νλ + 1 − ν
    assert kf.param_groups[0]["updates"] == 1


def test_recursive_least_squares_reaches_the_bayesian_solution():
    # With λ = 1 and no process noise, one sample per update is recursive least squares: after
    # all samples, w = (XᵀX + I/p0)⁻¹ Xᵀy exactly (prior w0 = 0, covariance p0·I).
    rng = np.random.default_rng(0)
    X, p0 = rng.normal(size=(40, 5)), 3.0
    y = X @ rng.normal(size=5) + 0.1 * rng.normal(size=40)
    expected = np.linalg.solve(X.T @ X + np.eye(5) / p0, X.T @ y)
    w = torch.nn.Parameter(torch.zeros(5, dtype=torch.float64))
    kf = KalmanFilter([w], p0=p0, lambda0=1.0, nu=1.0)
    for xi, yi in zip(torch.tensor(X), torch.tensor(y)):
        _linear_step(w, xi[None], yi[None], kf)
    np.testing.assert_allclose(w.detach().numpy(), expected, rtol=1e-10)
    # and P is the posterior covariance (XᵀX + I/p0)⁻¹
    np.testing.assert_allclose(kf.state[w]["P"][0].numpy(), np.linalg.inv(X.T @ X + np.eye(5) / p0),
                               rtol=1e-9, atol=1e-14)


def test_decoupled_blocks_share_one_gain_denominator():
    # Two parameters (a 3-vector split into blocks of 2 and 1, and a scalar): each block moves
    # by its own P_b H_b, all scaled by a = 1 / (λ + Σ_b H_bᵀ P_b H_b), by hand below.
    a_w, b_w = np.array([0.3, -0.2, 0.1]), np.array([0.7])
    x, y, lam, p0 = np.array([1.0, 2.0, -1.0]), 0.4, 0.95, 0.5
    r = a_w @ x + 2.0 * b_w[0] - y
    h_a, h_b = np.sign(r) * x, np.sign(r) * np.array([2.0])  # H = ∇(r²) / (2|r|)
    a = 1.0 / (lam + p0 * (h_a @ h_a + h_b @ h_b))            # P = p0 I in every block
    expected_a = a_w - a * p0 * h_a * abs(r)
    expected_b = b_w - a * p0 * h_b * abs(r)
    A = torch.nn.Parameter(torch.tensor(a_w))
    B = torch.nn.Parameter(torch.tensor(b_w))
    kf = KalmanFilter([A, B], p0=p0, lambda0=lam, block_size=2)
    loss = (A @ torch.tensor(x) + 2.0 * B[0] - y) ** 2
    loss.backward()
    kf.step(lambda: loss.detach())
    np.testing.assert_allclose(A.detach().numpy(), expected_a, rtol=1e-14)
    np.testing.assert_allclose(B.detach().numpy(), expected_b, rtol=1e-14)
    assert [tuple(P.shape) for P in kf.state[A]["P"]] == [(2, 2), (1, 1)]
    assert kf.covariance_entries() == 4 + 1 + 1
    # block 2 of A (element 3) has its own P: the off-block covariance is never formed
    k3 = a * p0 * h_a[2]
    np.testing.assert_allclose(kf.state[A]["P"][1].numpy(), [[(p0 - k3 * p0 * h_a[2]) / lam]], rtol=1e-13)


def test_a_parameter_without_gradient_keeps_its_weights_and_covariance():
    used = torch.nn.Parameter(torch.tensor([1.0, 2.0], dtype=torch.float64))
    unused = torch.nn.Parameter(torch.tensor([5.0], dtype=torch.float64))
    kf = KalmanFilter([used, unused], lambda0=0.9)
    for _ in range(3):
        _linear_step(used, torch.tensor([[1.0, -1.0]], dtype=torch.float64), torch.tensor([0.5], dtype=torch.float64), kf)
    assert unused.item() == 5.0
    assert "P" not in kf.state[unused]


def test_zero_loss_changes_nothing_and_bad_input_is_refused():
    w = torch.nn.Parameter(torch.tensor([1.0], dtype=torch.float64))
    kf = KalmanFilter([w])
    loss = _linear_step(w, torch.tensor([[2.0]], dtype=torch.float64), torch.tensor([2.0], dtype=torch.float64), kf)
    assert loss == 0.0 and w.item() == 1.0 and kf.param_groups[0]["updates"] == 0
    with pytest.raises(ValueError, match="closure"):
        kf.step()
    with pytest.raises(ValueError, match="finite"):
        kf.step(lambda: float("nan"))
    for bad in ({"p0": 0.0}, {"lambda0": 1.5}, {"nu": -0.1}, {"process_noise": -1.0}, {"block_size": 0}):
        with pytest.raises(ValueError, match=next(iter(bad))):
            KalmanFilter([w], **bad)


def test_state_dict_round_trip_continues_identically():
    torch.manual_seed(0)
    X, y = torch.randn(12, 4, dtype=torch.float64), torch.randn(12, dtype=torch.float64)

    def run(n_before: int, restart: bool) -> torch.Tensor:
        w = torch.nn.Parameter(torch.zeros(4, dtype=torch.float64))
        kf = KalmanFilter([w], lambda0=0.97, process_noise=1e-4, block_size=3)
        for i in range(n_before):
            _linear_step(w, X[i:i + 1], y[i:i + 1], kf)
        if restart:
            saved, weights = kf.state_dict(), w.detach().clone()
            w = torch.nn.Parameter(weights)
            kf = KalmanFilter([w], lambda0=0.5, block_size=3)  # λ0 is overwritten by the state
            kf.load_state_dict(saved)
        for i in range(n_before, len(X)):
            _linear_step(w, X[i:i + 1], y[i:i + 1], kf)
        return w.detach()

    torch.testing.assert_close(run(5, restart=True), run(5, restart=False), rtol=0, atol=0)


def test_trains_a_small_network_to_a_lower_loss_than_its_start():
    torch.manual_seed(1)
    x = torch.linspace(-2, 2, 64, dtype=torch.float64)[:, None]
    y = torch.sin(2 * x)
    net = torch.nn.Sequential(torch.nn.Linear(1, 16), torch.nn.Tanh(), torch.nn.Linear(16, 1)).double()
    kf = KalmanFilter(net.parameters(), p0=1.0, lambda0=0.98, nu=0.99)
    with torch.no_grad():
        start = float(((net(x) - y) ** 2).mean())
    for _ in range(20):
        for i in torch.randperm(64):
            kf.zero_grad()
            loss = ((net(x[i:i + 1]) - y[i:i + 1]) ** 2).mean()
            loss.backward()
            kf.step(loss.detach)
    with torch.no_grad():
        end = float(((net(x) - y) ** 2).mean())
    assert end < 0.05 * start, (start, end)
