"""Training: configs, losses, metrics, checkpoints and the trainer."""

from .checkpoint import CheckpointError, load_checkpoint, save_checkpoint
from .config import TrainConfig
from .gradients import LayerGradientMonitor, layer_norms
from .loss import loss_from_metrics, loss_terms
from .metrics import METRIC_KEYS, ErrorAccumulator
from .trainer import TrainingError, evaluate_store, train

__all__ = [
    "CheckpointError",
    "ErrorAccumulator",
    "LayerGradientMonitor",
    "METRIC_KEYS",
    "TrainConfig",
    "TrainingError",
    "evaluate_store",
    "layer_norms",
    "load_checkpoint",
    "loss_from_metrics",
    "loss_terms",
    "save_checkpoint",
    "train",
]
