"""The run folder: config, checkpoint, metrics, and :func:`load_run` to read a run back."""

from mixvae.runs.checkpoint import Position, checkpoint_payload, load_checkpoint, save_checkpoint
from mixvae.runs.folder import (
    RUN_ARTIFACTS,
    Run,
    load_model,
    load_run,
    prepare_run_dir,
    read_metrics,
    save_model,
)

__all__ = [
    "RUN_ARTIFACTS",
    "Position",
    "Run",
    "checkpoint_payload",
    "load_checkpoint",
    "load_model",
    "load_run",
    "prepare_run_dir",
    "read_metrics",
    "save_checkpoint",
    "save_model",
]
