"""Architecture and optimiser search (``mlpot search``): Optuna trials scored by k-fold
cross-validation, the folds of each trial trained together."""

from .config import ParameterSpace, SearchConfig, SearchSetup, load_search
from .report import write_outputs
from .study import run_search

__all__ = ["ParameterSpace", "SearchConfig", "SearchSetup", "load_search", "run_search", "write_outputs"]
