"""Training: configs, losses, metrics, checkpoints and the trainer."""

from .checkpoint import CheckpointError, load_checkpoint, save_checkpoint
from .config import TrainConfig
from .loss import loss_from_metrics, loss_terms
from .metrics import METRIC_KEYS, ErrorAccumulator
from .trainer import TrainingError, evaluate_store, train

__all__ = [
    "CheckpointError",
    "ErrorAccumulator",
    "METRIC_KEYS",
    "TrainConfig",
    "TrainingError",
    "evaluate_store",
    "load_checkpoint",
    "loss_from_metrics",
    "loss_terms",
    "save_checkpoint",
    "train",
]
