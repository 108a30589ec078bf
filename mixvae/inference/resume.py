"""Continue a run from its checkpoint: the same loop as :func:`~mixvae.inference.train.train`."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

from mixvae.config import torch_dtype
from mixvae.data import Dataset, as_dataset
from mixvae.devices import resolve_device
from mixvae.errors import CheckpointError, ConfigError, DataError
from mixvae.inference.loop import continue_from
from mixvae.inference.restarts import RESTARTS, resume_restarts
from mixvae.inference.setup import check_data
from mixvae.plugins import record_plugins
from mixvae.runs.checkpoint import load_checkpoint
from mixvae.runs.files import clean_temporaries, write_text
from mixvae.runs.folder import (
    Run,
    check_belongs,
    config_from_payload,
    payload_data_shape,
    run_dataset,
    stored_config,
)
from mixvae.runs.lock import RunLock
from mixvae.runs.manifest import adopt_legacy, is_legacy_run


def resume(
    run_dir: str | Path,
    *,
    epochs: int | None = None,
    dataset: Dataset | Any = None,
    device: str | None = None,
    data_dir: str | None = None,
    download: bool | None = None,
    lr: float | None = None,
    clip_grad: float | None = None,
    checkpoint_every: int | None = None,
    checkpoint_minutes: float | None = None,
    eval_every: int | None = None,
    logger: str | None = None,
    progress: bool = True,
    figures: bool = True,
    after_step: Callable[[int], None] | None = None,
    encoder: torch.nn.Module | None = None,
    decoder: torch.nn.Module | None = None,
) -> Run:
    """Continue a run from its ``checkpoint.pt`` up to ``epochs`` epochs in total.

    ``device``, ``data_dir`` and ``download`` may differ from the stored
    configuration (where the run computes and where its data files are, e.g.
    after moving them, or for a run trained on a :class:`Dataset` passed in
    Python, whose configuration names no folder); so may ``lr`` and
    ``clip_grad`` (to continue a run that diverged from its last good
    checkpoint), how often it checkpoints and how often it scores the held-out data
    (``eval_every``, which leaves training untouched); everything else is the stored
    run's.  A resumed run downloads nothing unless ``download=True`` is given.

    The configuration, the optimiser state, every random state and the
    position inside the epoch come from the checkpoint, so an interrupted and
    resumed run ends with bitwise the same parameters and metrics (on CPU) as
    one trained straight through (with the same ``lr`` and ``clip_grad``).
    The checkpoint must be the folder's own (its run id) and pass its
    checksum; ``metrics.jsonl`` is rewritten from the history it carries.
    A run trained with your own modules (``network="given"``) needs fresh
    ``encoder`` and ``decoder`` modules of the same architecture again.
    """
    run_dir = Path(run_dir)
    # a run stopped during its restarts, before the choice: no checkpoint of its own yet
    in_restarts = (run_dir / RESTARTS).is_dir() and (run_dir / "config.json").is_file()
    if not (run_dir / "checkpoint.pt").is_file() and not in_restarts:
        raise CheckpointError(f"no checkpoint at {run_dir / 'checkpoint.pt'}; train a run there first")
    lock = RunLock(run_dir, "train --resume").acquire()
    try:
        clean_temporaries(run_dir)
        payload = None
        if (run_dir / "checkpoint.pt").is_file():
            payload = load_checkpoint(run_dir / "checkpoint.pt")
            if is_legacy_run(run_dir):  # a mixvae 0.1 run folder: it gets its manifest now
                adopt_legacy(run_dir)
            check_belongs(payload, run_dir)
            config = config_from_payload(payload, run_dir)
        else:
            config = stored_config((run_dir / "config.json").read_text(), run_dir)
        changes = dict(
            epochs=epochs,
            device=device,
            data_dir=data_dir,
            lr=lr,
            clip_grad=clip_grad,
            checkpoint_every=checkpoint_every,
            checkpoint_minutes=checkpoint_minutes,
            eval_every=eval_every,
            logger=logger,
        )
        for name, value in changes.items():
            if value is not None:
                setattr(config, name, value)
        # A stored run never reaches out by itself: only a download asked for now.
        config.download = bool(download)
        config.out, config.overwrite = str(run_dir), False
        config.validate()
        record_plugins(config)
        done = 0 if payload is None else int(payload["epoch"])
        if config.epochs < done:
            raise ConfigError(f"{run_dir} has already trained {done} epochs; ask for --epochs {done} or more")
        resolve_device(config.device)  # a device this machine lacks is refused before the data load
        data = (
            as_dataset(dataset, torch_dtype(config.dtype))
            if dataset is not None
            else run_dataset(config, run_dir, config.download)
        )
        if payload is None:
            return resume_restarts(
                run_dir,
                check_data(data, config),
                config,
                progress=progress,
                figures=figures,
                after_step=after_step,
            )
        trained_on = payload_data_shape(payload, config)
        if data.data_shape != trained_on:
            raise DataError(
                f"the data have shape {data.data_shape} per point but the run in {run_dir} was trained on "
                f"{trained_on}; resume it with the data set it was trained on"
            )
        data = check_data(data, config)
        write_text(run_dir / "config.json", config.to_json() + "\n")
        return continue_from(
            payload,
            config,
            run_dir,
            data,
            encoder,
            decoder,
            progress=progress,
            figures=figures,
            after_step=after_step,
        )
    finally:
        lock.release()
