"""Depth ablations: train a grid of network depths and variants, measure, and report."""

from .config import VARIANTS, AblationConfig, AblationSetup, MDStabilityConfig, load_ablation, variant
from .grid import MATCH_TOLERANCE, RunSpec, count_parameters, expand_grid, matched_hidden
from .runner import RESULT_FILE, inference_time, load_result, run_ablation, run_one
from .stability import md_stability, min_distance

__all__ = [
    "AblationConfig", "AblationSetup", "MATCH_TOLERANCE", "MDStabilityConfig", "RESULT_FILE",
    "RunSpec", "VARIANTS", "count_parameters", "expand_grid", "inference_time", "load_ablation",
    "load_result", "matched_hidden", "md_stability", "min_distance", "run_ablation", "run_one",
    "variant",
]
