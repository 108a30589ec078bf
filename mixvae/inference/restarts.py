"""Restarts: train several starts of a run for a few epochs, go on with the best by the ELBO.

A mixture prior trained from scratch settles on whichever clusters its first
epochs form, and its seeds differ by tens of points of accuracy (Dilokthanakul
et al.'s model with K = 10 on MNIST: 52% to 92% at 100 epochs).  With
``--restarts R --restart-epochs E`` a run trains R starts for E epochs each (the
run's seed and R - 1 seeds drawn from it, :func:`restart_seed`), scores each by
its ELBO of the training data (the model's own objective: no labels and no
held-out data are used), and trains the best on to ``--epochs``.  The run is
then bitwise the one that start would have been, trained straight through
(its metrics history too); ``restarts.json`` records every start's seed and
score.

The starts are run folders of their own, ``RUN/restarts/0``, ``RUN/restarts/1``,
...; a run stopped during its restarts goes on with them, finished starts
kept, from ``mixvae train --resume RUN`` (:func:`~mixvae.inference.resume.resume`).
"""

from __future__ import annotations

import dataclasses
import json
import math
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch

from mixvae.build import check_names
from mixvae.config import TrainConfig
from mixvae.data import Dataset
from mixvae.errors import ConfigError
from mixvae.inference.loop import continue_from, fresh_fit
from mixvae.inference.setup import load_data
from mixvae.plugins import record_plugins
from mixvae.runs.checkpoint import load_checkpoint
from mixvae.runs.files import write_json, write_text
from mixvae.runs.folder import Run, check_belongs, config_from_payload, load_into_run, prepare_run_dir
from mixvae.runs.lock import RunLock
from mixvae.runs.manifest import own

#: the folder of the starts inside the run folder
RESTARTS = "restarts"
#: every start's seed and score, and the one chosen
RECORD = "restarts.json"


def restart_seed(seed: int, start: int) -> int:
    """The seed of start ``start`` of a run with seed ``seed``: ``seed`` itself for start 0 (one
    start is the plain run), then numpy ``SeedSequence([seed, start])`` draws, so that the
    starts of seeds 0, 1, ... are all different (``seed + start`` would share them)."""
    if start == 0:
        return seed
    return int(np.random.SeedSequence([seed, start]).generate_state(1)[0])


def train_restarts(
    config: TrainConfig,
    dataset: Dataset | None,
    encoder: torch.nn.Module | None = None,
    decoder: torch.nn.Module | None = None,
    *,
    progress: bool,
    figures: bool,
    after_step: Callable[[int], None] | None = None,
) -> Run:
    """A new run with ``config.restarts`` starts (:mod:`mixvae.inference.restarts`)."""
    if encoder is not None or decoder is not None:
        raise ConfigError(
            "--restarts builds fresh networks for every start, and your encoder and decoder are one set "
            "of modules; train once per seed instead, or register the network (mixvae.register_network)"
        )
    config.validate()
    check_names(config)
    record_plugins(config)
    data = load_data(config, dataset)
    run_dir, lock = prepare_run_dir(config, "train")
    try:
        write_text(run_dir / "config.json", config.to_json() + "\n")
        own(run_dir, RESTARTS)  # --overwrite removes the starts with the run
        return starts_then_best(
            run_dir, config, data, progress=progress, figures=figures, after_step=after_step
        )
    finally:
        lock.release()


def resume_restarts(
    run_dir: Path,
    data: Dataset,
    config: TrainConfig,
    *,
    progress: bool,
    figures: bool,
    after_step: Callable[[int], None] | None = None,
) -> Run:
    """Go on with the restarts of the run in ``run_dir`` (stopped before the choice; its
    ``config`` and ``data`` as :func:`~mixvae.inference.resume.resume` found them)."""
    lock = RunLock(run_dir, "train --resume").acquire()
    try:
        write_text(run_dir / "config.json", config.to_json() + "\n")
        return starts_then_best(
            run_dir, config, data, progress=progress, figures=figures, after_step=after_step
        )
    finally:
        lock.release()


def starts_then_best(
    run_dir: Path,
    config: TrainConfig,
    data: Dataset,
    *,
    progress: bool,
    figures: bool,
    after_step: Callable[[int], None] | None = None,
) -> Run:
    """Train (or finish, or read) every start, choose the best by its training ELBO and train it
    on in ``run_dir``.  Returns early, with ``interrupted`` set, when a signal stopped a start."""
    starts = []
    for start in range(config.restarts):
        run = _start(run_dir / RESTARTS / str(start), config, start, data, progress, after_step)
        if run.interrupted:
            return Run(run.model, run.guide, config, run_dir, epoch=run.epoch, interrupted=run.interrupted)
        assert run.summary is not None
        elbo = float(run.summary["train_elbo"])  # summarize()'s, computed once at the end of the start
        if not math.isfinite(elbo):
            elbo = -math.inf  # a start whose ELBO is not finite is never the one chosen
        starts.append(
            {"start": start, "seed": run.config.seed, "folder": f"{RESTARTS}/{start}", "training_elbo": elbo}
        )
    best = max(range(len(starts)), key=lambda r: starts[r]["training_elbo"])
    for r, s in enumerate(starts):
        s["chosen"] = r == best
    write_json(
        run_dir / RECORD,
        {
            "criterion": "ELBO of the training data (nats per point; no labels, no held-out data)",
            "restart_epochs": config.restart_epochs,
            "starts": starts,
        },
    )
    chosen = run_dir / RESTARTS / str(best)
    if (chosen / "init_from.json").is_file():  # the chosen start's warm start is the run's
        write_text(run_dir / "init_from.json", (chosen / "init_from.json").read_text())
    payload = load_checkpoint(chosen / "checkpoint.pt")
    return continue_from(
        payload,
        config,
        run_dir,
        data,
        progress=progress,
        figures=figures,
        after_step=after_step,
        checkpoint_first=True,
    )


def _start(
    folder: Path,
    config: TrainConfig,
    start: int,
    data: Dataset,
    progress: bool,
    after_step: Callable[[int], None] | None,
) -> Run:
    """Start ``start`` trained for ``config.restart_epochs`` epochs in ``folder``: read when it is
    done, continued from its checkpoint, or trained (again, when it stopped before its first one)."""
    checkpoint = folder / "checkpoint.pt"
    if checkpoint.is_file():
        payload = load_checkpoint(checkpoint)
        check_belongs(payload, folder)
        stored = config_from_payload(payload, folder)
        if int(payload["epoch"]) >= config.restart_epochs and (folder / "summary.json").is_file():
            summary = json.loads((folder / "summary.json").read_text())
            return dataclasses.replace(load_into_run(payload, stored, folder), summary=summary)
        # what may change on --resume changes for the run's starts too (a start's epochs are its own)
        for name in ("device", "data_dir", "lr", "clip_grad", "checkpoint_every", "checkpoint_minutes"):
            setattr(stored, name, getattr(config, name))
        stored.eval_every, stored.epochs = config.eval_every, config.restart_epochs
        with RunLock(folder, "train --resume"):
            write_text(folder / "config.json", stored.to_json() + "\n")
            return continue_from(
                payload, stored, folder, data, progress=progress, figures=False, after_step=after_step
            )
    own_config: dict[str, Any] = dict(
        seed=restart_seed(config.seed, start),
        epochs=config.restart_epochs,
        restarts=1,
        out=str(folder),
        overwrite=folder.exists(),  # a start that stopped before its first checkpoint begins again
        logger="none",
    )
    return fresh_fit(
        dataclasses.replace(config, **own_config),
        data,
        progress=progress,
        figures=False,
        after_step=after_step,
    )
