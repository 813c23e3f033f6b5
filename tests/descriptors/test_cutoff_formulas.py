"""Cutoff functions are written once (mlpot.descriptors.cutoffs) for torch and the compiled
kernel: each slope equals the autograd derivative of its formula, the compiled scalar form
equals the torch form, and formulas outside the shared names stay on the torch path."""

import math

import numpy as np
import pytest
import torch

from mlpot.descriptors.cutoffs import CUTOFF_FUNCTIONS, CutoffFunction, scalar_form


@pytest.mark.parametrize("name", sorted(CUTOFF_FUNCTIONS))
def test_slope_is_the_derivative_of_the_formula(name):
    entry = CUTOFF_FUNCTIONS[name]
    x = torch.linspace(0.0, 0.999, 41, dtype=torch.float64, requires_grad=True)
    (autograd,) = torch.autograd.grad(entry.value(x).sum(), x)
    assert torch.allclose(entry.slope(x.detach()), autograd, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("name", sorted(CUTOFF_FUNCTIONS))
def test_scalar_form_equals_torch_form(name):
    entry = CUTOFF_FUNCTIONS[name]
    maths = {"cos": math.cos, "sin": math.sin, "exp": math.exp, "tanh": math.tanh}
    value, slope = scalar_form(entry.value, maths), scalar_form(entry.slope, maths)
    x = np.linspace(0.0, 0.999, 41)
    torch_x = torch.as_tensor(x)
    assert np.allclose([value(v) for v in x], entry.value(torch_x).numpy(), rtol=1e-14, atol=1e-15)
    assert np.allclose([slope(v) for v in x], entry.slope(torch_x).numpy(), rtol=1e-13, atol=1e-14)


def test_compiled_kernel_covers_every_builtin_cutoff():
    from mlpot.descriptors import angular_kernel

    if not angular_kernel.numba_available():
        pytest.skip("numba is not installed")
    assert set(angular_kernel.NUMBA_CUTOFF_CODES) == set(CUTOFF_FUNCTIONS)
    assert sorted(angular_kernel.NUMBA_CUTOFF_CODES.values()) == list(range(len(CUTOFF_FUNCTIONS)))


def test_formula_using_torch_directly_has_no_scalar_form():
    entry = CutoffFunction(lambda x: torch.cos(x), True, lambda x: -torch.sin(x))
    assert scalar_form(entry.value, {}) is None
    shared = CutoffFunction(lambda x: (1.0 - x) ** 3, True, lambda x: -3.0 * (1.0 - x) ** 2)
    assert scalar_form(shared.slope, {})(0.5) == pytest.approx(-0.75)
