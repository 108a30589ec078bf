"""Training on several processes or GPUs through PyTorch Lightning (``pip install mixvae[lightning]``).

The pattern of Pyro's ``examples/svi_lightning.py``: the ELBO is computed in a
:class:`lightning.LightningModule` whose ``training_step`` returns
``TraceEnum_ELBO(...).differentiable_loss``; Lightning wraps it in
DistributedDataParallel, shards the data with a ``DistributedSampler``, and
each worker feeds its own minibatch into ``pyro.plate("data", N)``, so that the
plate supplies only the N / B scale.  Averaged over workers, the gradient of
W workers with batch B equals that of one process with batch W * B.  Loggers
(CSV by default), multi-GPU and multi-node training come from Lightning.
"""

from __future__ import annotations

import atexit
import json
import math
from typing import Any

import pyro
import torch

from mixvae.build import build, check_names
from mixvae.config import TrainConfig
from mixvae.data import Dataset, evaluation_data, load_dataset
from mixvae.errors import ConfigError
from mixvae.evaluation.summary import summarize
from mixvae.guides import Guide
from mixvae.inference.loss import TrainingLoss
from mixvae.inference.optim import adam
from mixvae.inference.setup import check_data
from mixvae.inference.warmstart import warm_start
from mixvae.models import VAE
from mixvae.plugins import record_plugins
from mixvae.runs.checkpoint import Position, checkpoint_payload, save_checkpoint
from mixvae.runs.folder import Run, prepare_run_dir

try:  # optional: pip install 'mixvae[lightning]'
    import lightning as _lightning

    _Base: type = _lightning.LightningModule
except ImportError:  # pragma: no cover - exercised where lightning is absent
    _lightning = None
    _Base = torch.nn.Module


def import_lightning() -> Any:
    if _lightning is None:
        raise ConfigError(
            "--devices needs PyTorch Lightning; install it with: pip install 'mixvae[lightning]'"
        )
    return _lightning


def _destroy_process_group() -> None:
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        torch.distributed.destroy_process_group()


class SVIModule(_Base):
    """A LightningModule training ``model`` and ``guide`` on the ELBO, with KL warm-up.

    A module-level class, so that ``ddp_spawn`` can pickle it.
    """

    def __init__(self, model: VAE, guide: Guide, config: TrainConfig, num_data: int) -> None:
        super().__init__()
        self.model, self.guide = model, guide
        self.config, self.num_data = config, num_data
        self.objective = TrainingLoss(
            model, guide, objective=config.objective, analytic_kl=config.kl == "analytic"
        )

    def setup(self, stage: str) -> None:
        # Lightning destroys the process group at exit only for NCCL; a gloo
        # rank (ddp_spawn on CPU) that exits with its group alive can abort in
        # gloo's thread teardown ("terminate called without an active
        # exception") after a finished fit.  atexit runs after Lightning's
        # last barrier, in the worker that owns the group.
        if torch.distributed.is_available() and torch.distributed.is_initialized():
            atexit.unregister(_destroy_process_group)  # once per process
            atexit.register(_destroy_process_group)

    def training_step(self, batch: list[torch.Tensor], batch_idx: int) -> torch.Tensor:
        (x,) = batch
        c = self.config
        steps = c.warmup_epochs * math.ceil(self.num_data / (c.batch_size * self.trainer.world_size))
        beta = min(1.0, (self.global_step + 1) / steps) if steps else 1.0
        with pyro.validation_enabled(False):
            if batch_idx == 0 and self.current_epoch == 0:  # the direct ELBO against Pyro's, once
                self.objective.verify(x, self.num_data, beta=beta)
            loss = self.objective(x, self.num_data, beta=beta)
        self.log("train_loss", loss.detach() / self.num_data, on_epoch=True, on_step=False, sync_dist=True)
        return loss

    def configure_optimizers(self) -> torch.optim.Optimizer:
        return adam(self.parameters(), lr=self.config.lr)


def train_lightning(
    config: TrainConfig,
    *,
    devices: int = 2,
    accelerator: str = "cpu",
    strategy: str = "ddp",
    dataset: Dataset | None = None,
    max_steps: int = -1,
    progress: bool = True,
    callbacks: list[Any] | None = None,
) -> Run:
    """Train with Lightning on ``devices`` processes; write the run folder as :func:`train` does.

    The model and guide are built from ``config.seed`` in every process, so all
    ranks start from the same parameters; DDP keeps them equal.  The
    checkpoint, ``config.json`` and ``summary.json`` are written by rank 0;
    Lightning's CSV log goes to ``RUN/lightning_logs``.

    :param strategy: a Lightning strategy name: ``ddp`` (processes launched by
        re-running the command), ``ddp_spawn`` (from Python), ``auto``.
    :param max_steps: stop after this many optimisation steps (``-1``: ``config.epochs`` epochs).
    """
    lightning = import_lightning()
    config.validate()
    check_names(config)
    record_plugins(config)
    data = dataset if dataset is not None else load_dataset(config.dataset, config.data_dir, config.download)
    check_data(data, config)
    if config.binarize == "dynamic" or config.labels_per_class is not None:
        raise ConfigError(
            "--devices supports neither --binarize dynamic nor --labels-per-class yet; train in one process"
        )
    if config.out is None:
        raise ConfigError("training on several devices needs an explicit --out (every process must agree)")
    run_dir = prepare_run_dir(config)
    pyro.set_rng_seed(config.seed)
    model, guide = build(config, data.data_dim)
    # As in train(), and deterministic in the seed: every process starts from the same parameters.
    model.prior.initialise_from_data(data.train_x, torch.Generator().manual_seed(config.seed))
    origin = None
    if config.init_from is not None:
        codes_x = evaluation_data(data.train_x, config.binarize)
        origin = warm_start(model, guide, config.init_from, codes_x, config=config, seed=config.seed)
    module = SVIModule(model, guide, config, len(data.train_x))
    loader = torch.utils.data.DataLoader(
        torch.utils.data.TensorDataset(data.train_x), batch_size=config.batch_size, shuffle=True
    )
    trainer = lightning.Trainer(
        accelerator=accelerator,
        devices=devices,
        strategy=strategy,
        max_epochs=config.epochs,
        max_steps=max_steps,
        default_root_dir=str(run_dir),
        logger=lightning.pytorch.loggers.CSVLogger(str(run_dir)),
        enable_checkpointing=False,
        enable_progress_bar=progress,
        enable_model_summary=False,
        callbacks=callbacks,
    )
    with pyro.get_param_store().scope():
        trainer.fit(module, loader)
    run = Run(module.model, module.guide, config, run_dir, epoch=int(trainer.current_epoch))
    if trainer.global_rank == 0:
        (run_dir / "config.json").write_text(config.to_json() + "\n")
        if origin is not None:
            (run_dir / "init_from.json").write_text(json.dumps(origin, indent=2) + "\n")
        optimizer = trainer.optimizers[0] if trainer.optimizers else adam(module.parameters(), config.lr)
        pos = Position(epoch=run.epoch, step=int(trainer.global_step))
        gen = torch.Generator().manual_seed(config.seed)
        save_checkpoint(
            run_dir / "checkpoint.pt",
            checkpoint_payload((run.model, run.guide), run.config, optimizer, data.data_dim, pos, gen),
        )
        run.summary = summarize(run, data)
        run.summary["devices"] = devices
        run.summary["objective"] = module.objective.describe()
        (run_dir / "summary.json").write_text(json.dumps(run.summary, indent=2) + "\n")
    return run


__all__ = ["SVIModule", "train_lightning"]
