"""Training: one loop for every model, losses, schedules, checkpoints, DDP glue."""

from attnkit.training.checkpoint import CheckpointError, load_checkpoint, save_checkpoint
from attnkit.training.losses import masked_cross_entropy, mean_token_loss
from attnkit.training.manager import CheckpointManager, average_checkpoints, save_averaged
from attnkit.training.schedules import make_scheduler, paper_peak_lr

__all__ = [
    "CheckpointError",
    "CheckpointManager",
    "average_checkpoints",
    "load_checkpoint",
    "make_scheduler",
    "masked_cross_entropy",
    "mean_token_loss",
    "paper_peak_lr",
    "save_averaged",
    "save_checkpoint",
]
