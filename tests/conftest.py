"""Shared pytest fixtures."""

from pathlib import Path

import pytest


@pytest.fixture(scope="session")
def shared_datasets() -> Path:
    """The reference datasets folder ``../shared/datasets`` beside the repository."""
    path = (Path(__file__).parents[1] / ".." / "shared" / "datasets").resolve()
    if not path.is_dir():
        pytest.skip("../shared/datasets is absent (reference data lives outside the repository)")
    return path
