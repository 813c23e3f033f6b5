"""Shared pytest fixtures.

The tests mirror the package (tests/descriptors/, tests/training/, ...). Shared test data
lives in ``tests/structures_for_tests.py``; a few test modules also reuse another's setup
(``from test_models import make_model``), so every test folder is importable by module name.
"""

import sys
from pathlib import Path

import pytest
import torch

_TESTS = Path(__file__).resolve().parent
for _folder in [_TESTS, *sorted(p for p in _TESTS.iterdir() if p.is_dir() and p.name.isidentifier())]:
    if str(_folder) not in sys.path:
        sys.path.insert(0, str(_folder))


@pytest.fixture(scope="session")
def shared_datasets() -> Path:
    """The reference datasets folder ``../shared/datasets`` beside the repository."""
    path = (_TESTS.parent / ".." / "shared" / "datasets").resolve()
    if not path.is_dir():
        pytest.skip("../shared/datasets is absent (reference data lives outside the repository)")
    return path


@pytest.fixture
def one_thread():
    """Run a test with one intra-op thread: its tensors are tiny, so threads only add overhead
    (and contend on shared runners)."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)
