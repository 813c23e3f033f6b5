"""Training: configs, losses, metrics, checkpoints and the trainer."""

from .metrics import METRIC_KEYS, ErrorAccumulator

__all__ = ["METRIC_KEYS", "ErrorAccumulator"]
