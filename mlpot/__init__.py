"""mlpot: Behler–Parrinello machine-learned interatomic potentials in PyTorch.

Units everywhere in the API: eV, Å, eV/Å, eV/Å³ (ASE conventions).
"""

__version__ = "0.1.0"


def load(path, device="cpu", dtype=None):
    """Load a saved model (see :func:`mlpot.io.load_model`)."""
    from .io import load_model

    return load_model(path, device=device, dtype=dtype)


__all__ = ["__version__", "load"]
