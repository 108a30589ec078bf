"""Start a run: the way of the Python API and the CLI into the one training loop (:mod:`mixvae.inference.loop`)."""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Callable
from typing import Any

import torch

from mixvae.config import TrainConfig, torch_dtype
from mixvae.data import Dataset, as_dataset
from mixvae.inference.loop import fresh_fit
from mixvae.inference.restarts import train_restarts
from mixvae.runs.folder import Run


def train(
    config: TrainConfig | None = None,
    *,
    dataset: Dataset | str | os.PathLike | Any = None,
    progress: bool = True,
    figures: bool = True,
    after_step: Callable[[int], None] | None = None,
    encoder: torch.nn.Module | None = None,
    decoder: torch.nn.Module | None = None,
    **overrides: Any,
) -> Run:
    """Train a model/guide pair on the ELBO of :func:`~mixvae.inference.objectives.make_elbo`.

    With ``objective="auto"`` (the default) every pair without a
    :func:`~mixvae.inference.direct.direct_problem` computes that estimator by
    :func:`~mixvae.inference.direct.direct_loss` (same draws, value and
    gradients, no Pyro tracing per step); ``objective="pyro"`` runs Pyro's ELBO
    at every step (``jit=True``: compiled), ``objective="iwae"`` the
    importance-weighted bound with ``particles`` samples
    (:class:`~mixvae.inference.loss.TrainingLoss`).

    With ``restarts`` > 1 the run trains that many starts for ``restart_epochs`` each
    and goes on with the one whose training ELBO is highest
    (:mod:`mixvae.inference.restarts`).

    Writes ``config.json``, ``metrics.jsonl`` (one line per epoch),
    ``checkpoint.pt`` (every ``checkpoint_every`` epochs and at the end),
    ``summary.json`` and PNG figures into the run folder.  SIGINT or SIGTERM
    stops after the current step with a checkpoint that :func:`resume`
    continues exactly; the returned run then has ``interrupted`` set.

    :param config: the run's settings; ``overrides`` replace single fields
        (``train(epochs=5, prior="standard")``).
    :param dataset: data to train on instead of ``config.dataset``: a :class:`Dataset`
        (its name is recorded, the data themselves are not saved), a numpy array or torch
        tensor of points (split 80/20 with a fixed seed; :func:`mixvae.data.from_arrays` for
        labels and a held-out set), a ``torch.utils.data.Dataset`` of items ``x`` or ``(x, y)``
        (read through a DataLoader, never whole; :func:`mixvae.data.stream` for workers and
        a held-out set), a registered name, or the path of an ``.npz`` / ``.npy`` file or a
        folder of images (recorded, so that evaluate and resume find it again).
    :param progress: show a tqdm progress bar with the running loss.
    :param figures: write the PNG figures.
    :param after_step: called with the number of completed steps after each step.
    :param encoder: your own encoder body, a module ``(B, *data_shape) -> (B, F)`` (given with
        ``decoder``; see :func:`mixvae.build`); the run records ``network="given"`` and
        :func:`~mixvae.load_run` / :func:`resume` need the modules again.
    :param decoder: your own decoder network, ``(B, D) -> (B, K * first, *rest)``.
    :returns: the trained :class:`Run`.
    """
    if isinstance(dataset, str | os.PathLike):  # a registered name, or an .npz / .npy file or image folder
        dataset, overrides = None, {**overrides, "dataset": str(dataset)}
    config = dataclasses.replace(config or TrainConfig(), **overrides)
    if dataset is not None and not isinstance(dataset, Dataset):  # a torch dataset, arrays or tensors
        config.validate()
        dataset = as_dataset(dataset, torch_dtype(config.dtype))
    if dataset is not None:
        config.dataset = dataset.name  # what the run was trained on, for later commands
    if config.restarts > 1:
        return train_restarts(
            config, dataset, encoder, decoder, progress=progress, figures=figures, after_step=after_step
        )
    return fresh_fit(
        config, dataset, encoder, decoder, progress=progress, figures=figures, after_step=after_step
    )
