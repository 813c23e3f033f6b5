"""Data layer: readers for common formats, an HDF5 store, splits and the flat batch."""

from .batch import AtomsBatch, Targets, collate
from .h5 import H5Dataset
from .readers import FORMATS, detect_format, read, register_reader, unregister_reader, write
from .splits import Split, kfold_splits, load_split, random_split
from .structures import DataError, Labels, element_symbols, get_labels, labelled_atoms, validate_structure

__all__ = [
    "AtomsBatch",
    "DataError",
    "FORMATS",
    "H5Dataset",
    "Labels",
    "Split",
    "Targets",
    "collate",
    "detect_format",
    "element_symbols",
    "get_labels",
    "kfold_splits",
    "labelled_atoms",
    "load_split",
    "random_split",
    "read",
    "register_reader",
    "unregister_reader",
    "validate_structure",
    "write",
]
