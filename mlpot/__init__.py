"""mlpot: Behler–Parrinello machine-learned interatomic potentials in PyTorch.

Units everywhere in the API: eV, Å, eV/Å, eV/Å³ (ASE conventions).
"""

__version__ = "0.1.0"


def load(path, device="cpu", dtype=None):
    """Load a saved model (see :func:`mlpot.io.load_model`)."""
    from .io import load_model

    return load_model(path, device=device, dtype=dtype)


def save(model, path, metadata=None):
    """Write ``model`` (a :class:`~mlpot.models.Potential`) to one file, atomically (see
    :func:`mlpot.io.save_model`)."""
    from .io import save_model

    save_model(model, path, metadata)


def __getattr__(name):
    # The calculator pulls in ASE's calculator machinery: import it only when asked for.
    if name == "MLPotCalculator":
        from .calculator import MLPotCalculator

        return MLPotCalculator
    raise AttributeError(f"module 'mlpot' has no attribute {name!r}")


__all__ = ["MLPotCalculator", "__version__", "load", "save"]
