"""Model files (and, later, n2p2 potentials)."""

from .files import atomic_path, atomic_torch_save, atomic_write_text
from .model_file import FORMAT_VERSION, ModelFileError, load_model, save_model

__all__ = ["FORMAT_VERSION", "atomic_path", "atomic_torch_save", "atomic_write_text", "ModelFileError", "load_model", "save_model"]
