"""Experiment tracking: ``--logger csv|tensorboard|mlflow|wandb`` through Lightning's loggers.

Lightning's loggers work on their own, outside a ``Trainer``: the plain
training loop writes through the same logger objects that ``--devices``
hands to Lightning's ``Trainer``.  Per epoch: the numbers of the epoch's
``metrics.jsonl`` record (train loss, held-out ELBO, beta, learning rate,
seconds, and the clustering scores when the data have labels and the pair a
discrete component); at the end the configuration as hyperparameters and the
figures as images (TensorBoard, Weights & Biases) or artifacts (MLflow).  The
logs live in the run folder (``RUN/logs``, ``RUN/tensorboard``,
``RUN/mlruns``, ``RUN/wandb``), listed in its manifest.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from mixvae.config import TrainConfig
from mixvae.errors import ConfigError
from mixvae.runs.manifest import own

#: ``--logger`` choices -> (the folder in the run, the package it needs)
LOGGERS = {
    "none": (None, None),
    "csv": ("logs", None),
    "tensorboard": ("tensorboard", "tensorboard"),
    "mlflow": ("mlruns", "mlflow"),
    "wandb": ("wandb", "wandb"),
}


def check_logger(kind: str) -> None:
    """Refuse ``--logger kind`` before a run starts when its package is not installed."""
    if kind not in LOGGERS:
        raise ConfigError(f"--logger must be one of {', '.join(LOGGERS)}, got {kind!r}")
    _need(LOGGERS[kind][1], kind)


def _need(package: str | None, kind: str) -> None:
    if package is None:
        return
    try:
        __import__(package)
    except ImportError:
        extra = {"tensorboard": "tensorboard", "mlflow": "mlflow-skinny", "wandb": "wandb"}[kind]
        raise ConfigError(f"--logger {kind} needs the {package} package: pip install {extra}") from None


def make_logger(kind: str, run_dir: Path, config: TrainConfig, *, register: bool = True) -> Any:
    """The Lightning logger ``--logger kind`` asks for, writing into ``run_dir`` (``None`` for none).

    :param register: list its folder in the run's manifest (the process that holds the folder).
    """
    check_logger(kind)
    folder = LOGGERS[kind][0]
    if folder is None:
        return None
    try:
        import lightning.pytorch.loggers as loggers
    except ImportError:
        raise ConfigError(
            f"--logger {kind} writes through Lightning's loggers; install them with: pip install 'mixvae[lightning]'"
        ) from None
    if register:
        own(run_dir, folder)  # --overwrite removes the logs with the run
    name = f"{config.prior}-{config.guide}"
    version = _next_version(run_dir / folder)
    if kind == "csv":
        return loggers.CSVLogger(save_dir=str(run_dir), name=folder, version=version)
    if kind == "tensorboard":
        return loggers.TensorBoardLogger(
            save_dir=str(run_dir), name=folder, version=version, default_hp_metric=False
        )
    if kind == "mlflow":
        import os

        # MLflow 3 keeps its local file store only on request; it is what a run folder can hold
        # without a database server (`mlflow ui --backend-store-uri RUN/mlruns` reads it).
        os.environ.setdefault("MLFLOW_ALLOW_FILE_STORE", "true")
        return loggers.MLFlowLogger(
            experiment_name="mixvae", run_name=name, tracking_uri=(run_dir / folder).resolve().as_uri()
        )
    return loggers.WandbLogger(project="mixvae", name=name, save_dir=str(run_dir), offline=True)


def _next_version(folder: Path) -> int:
    """Each process (a new run, every ``--resume``) logs into the next ``version_N``: nothing is
    overwritten.  Counted here: Lightning's own count goes through fsspec, whose cached listing
    misses a version written earlier in the same process."""
    found = [p.name.split("_", 1)[1] for p in folder.glob("version_*") if p.is_dir()]
    return max((int(v) for v in found if v.isdigit()), default=-1) + 1


def _numbers(record: dict[str, Any]) -> dict[str, float]:
    out: dict[str, float] = {}
    for key, value in record.items():
        if isinstance(value, bool) or key in ("epoch", "step"):
            continue
        if isinstance(value, int | float):
            out[key] = float(value)
        elif isinstance(value, dict):  # clustering scores
            out.update({f"{key}/{k}": float(v) for k, v in value.items() if isinstance(v, int | float)})
    return out


class Tracker:
    """One run's logger: ``epoch(record)`` per epoch, ``finish(config, figures)`` at the end."""

    def __init__(self, kind: str, run_dir: Path, config: TrainConfig) -> None:
        self.kind = kind
        self.logger = make_logger(kind, run_dir, config)

    def epoch(self, record: dict[str, Any]) -> None:
        if self.logger is not None:
            self.logger.log_metrics(_numbers(record), step=int(record["epoch"]))

    def finish(self, config: TrainConfig, figures: list[Path]) -> None:
        if self.logger is None:
            return
        self.logger.log_hyperparams(config.to_dict())
        for path in figures:
            if not path.is_file():
                continue
            if self.kind == "tensorboard":
                import numpy as np
                from PIL import Image

                with Image.open(path) as png:
                    image = np.asarray(png.convert("RGB"))
                self.logger.experiment.add_image(path.stem, image, dataformats="HWC")
            elif self.kind == "mlflow":
                self.logger.experiment.log_artifact(self.logger.run_id, str(path))
            elif self.kind == "wandb":
                self.logger.log_image(key=path.stem, images=[str(path)])
        self.close()

    def close(self) -> None:
        if self.logger is not None:
            self.logger.save()
            self.logger.finalize("success")


def scores_heldout(epoch: int, config: TrainConfig) -> bool:
    """Whether the end of ``epoch`` (counted from 1) scores the held-out data: every
    ``config.eval_every`` epochs, the first and the last."""
    return epoch == 1 or epoch % config.eval_every == 0 or epoch >= config.epochs


def epoch_clustering(model: Any, guide: Any, x: Any, labels: Any, batch_size: int) -> dict[str, float] | None:
    """The clustering scores of the held-out data at an epoch's end, when it has labels and the
    pair a discrete component (``None`` otherwise); the random streams of training are untouched."""
    import torch

    from mixvae.evaluation.clustering import cluster_assignments, clustering_scores
    from mixvae.inference.objectives import has_discrete_site

    if labels is None or not has_discrete_site(model, guide):
        return None
    with torch.random.fork_rng(devices=[]), torch.no_grad():
        assigned = cluster_assignments(model, guide, x, batch_size=batch_size)
    scores = clustering_scores(assigned.cpu(), labels.cpu())
    return {k: scores[k] for k in ("acc_hungarian", "acc_majority", "nmi", "ari")}
