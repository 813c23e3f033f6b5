"""Shared pytest fixtures."""

from pathlib import Path

import pytest
import torch


@pytest.fixture(scope="session")
def shared_datasets() -> Path:
    """The reference datasets folder ``../shared/datasets`` beside the repository."""
    path = (Path(__file__).parents[1] / ".." / "shared" / "datasets").resolve()
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
