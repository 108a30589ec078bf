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
import math
import os
from typing import Any

import pyro
import torch

from mixvae.build import build
from mixvae.config import TrainConfig, torch_dtype
from mixvae.data import Dataset, StreamedPoints, as_dataset, evaluation_data
from mixvae.errors import ConfigError
from mixvae.evaluation.summary import summarize
from mixvae.inference.objectives import evaluate_elbo
from mixvae.inference.optim import adam
from mixvae.inference.setup import start_run
from mixvae.inference.step import RunObjective, set_learning_rate, step_schedule, warmup_beta
from mixvae.inference.tracking import epoch_clustering, make_logger, scores_heldout
from mixvae.runs.checkpoint import Position, checkpoint_payload, save_checkpoint
from mixvae.runs.files import write_json, write_text
from mixvae.runs.folder import Run
from mixvae.runs.manifest import own, run_id

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
    """A LightningModule training a run's model and guide on the ELBO, with KL warm-up.

    Each step is :class:`~mixvae.inference.step.RunObjective`'s loss (the one the
    plain loop computes: the direct ELBO or Pyro's, ``--binarize dynamic``, the
    labelled term of a semi-supervised run) on this rank's minibatch, with
    beta from :func:`~mixvae.inference.step.warmup_beta`.  A module-level
    class, so that ``ddp_spawn`` can pickle it.
    """

    def __init__(self, run: Run, data: Dataset) -> None:
        super().__init__()
        self.model, self.guide, self.config = run.model, run.guide, run.config
        self.objective = RunObjective(run, data, torch.device("cpu"))
        self.num_data = self.objective.num_data
        self.gen: torch.Generator | None = None
        self.heldout_x = data.test_x
        self.heldout_y = data.test_y

    def _generator(self) -> torch.Generator:
        # Each rank binarises and draws labelled points from its own seeded stream.
        if self.gen is None or self.gen.device != self.device:
            rank = self.trainer.global_rank if self._trainer is not None else 0
            self.gen = torch.Generator(device=self.device).manual_seed(self.config.seed + 1000 * rank)
        return self.gen

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
        steps_per_epoch = math.ceil(self.num_data / (c.batch_size * self.trainer.world_size))
        beta, temperature = step_schedule(self.global_step + 1, steps_per_epoch, c)
        self.objective.to(x.device)
        with pyro.validation_enabled(False):
            loss = self.objective(x, beta, self._generator(), temperature)
        self.log("train_loss", loss.detach() / self.num_data, on_epoch=True, on_step=False, sync_dist=True)
        return loss

    def on_train_epoch_start(self) -> None:
        set_learning_rate(self.trainer.optimizers[0], self.current_epoch, self.config)  # --lr-decay

    def on_train_epoch_end(self) -> None:
        """The epoch's numbers beside the train loss, from rank 0 (every rank holds the same
        parameters): beta, learning rate and, at the epochs of ``--eval-every``, the held-out ELBO
        and, with labels, the clustering scores."""
        if not self.trainer.is_global_zero or self.trainer.logger is None:
            return
        c = self.config
        steps_per_epoch = math.ceil(self.num_data / (c.batch_size * self.trainer.world_size))
        numbers = {
            "beta": warmup_beta(self.global_step, steps_per_epoch, c.warmup_epochs),
            "lr": self.trainer.optimizers[0].param_groups[0]["lr"],
        }
        if c.y_temperature != 1.0:
            numbers["y_temperature"] = step_schedule(self.global_step, steps_per_epoch, c)[1]
        if scores_heldout(self.current_epoch + 1, c):
            x = evaluation_data(self.heldout_x.to(self.device), c.binarize)
            numbers["heldout_elbo"] = evaluate_elbo(self.model, self.guide, x, batch_size=c.eval_batch_size)
            scores = epoch_clustering(self.model, self.guide, x, self.heldout_y, c.eval_batch_size)
            numbers.update({f"clustering/{k}": v for k, v in (scores or {}).items()})
        self.trainer.logger.log_metrics(numbers, step=self.current_epoch + 1)

    def configure_optimizers(self) -> torch.optim.Optimizer:
        return adam(self.named_parameters(), lr=self.config.lr, weight_decay=self.config.weight_decay)


def train_lightning(
    config: TrainConfig,
    *,
    devices: int = 2,
    accelerator: str = "cpu",
    strategy: str = "ddp",
    dataset: Dataset | Any = None,
    max_steps: int = -1,
    progress: bool = True,
    callbacks: list[Any] | None = None,
) -> Run:
    """Train with Lightning on ``devices`` processes; write the run folder as :func:`train` does.

    The model and guide are built from ``config.seed`` in every process, so all
    ranks start from the same parameters; DDP keeps them equal.  The
    checkpoint, ``config.json`` and ``summary.json`` are written by rank 0;
    Lightning's CSV log goes to ``RUN/lightning_logs`` (``config.logger``: that logger instead).

    :param strategy: a Lightning strategy name: ``ddp`` (processes launched by
        re-running the command), ``ddp_spawn`` (from Python), ``auto``.
    :param dataset: data instead of ``config.dataset``, as for :func:`~mixvae.train` (a torch
        dataset is streamed: each process reads its shard through a ``DataLoader``).
    :param max_steps: stop after this many optimisation steps (``-1``: ``config.epochs`` epochs).
    """
    lightning = import_lightning()
    if config.out is None:
        raise ConfigError("training on several devices needs an explicit --out (every process must agree)")
    if config.restarts > 1:
        raise ConfigError("--restarts trains its starts one after another in one process; drop --devices")
    # The first process prepares and locks the folder; the workers that Lightning's ddp launcher
    # starts by re-running the command (LOCAL_RANK > 0) find it prepared.
    first = os.environ.get("LOCAL_RANK", "0") == "0" and os.environ.get("NODE_RANK", "0") == "0"
    if dataset is not None and not isinstance(dataset, Dataset):  # a torch dataset, arrays or tensors
        dataset = as_dataset(dataset, torch_dtype(config.dtype))
    run, data, origin = start_run(
        config, dataset, device=torch.device("cpu"), write=False, builder=build, claim=first
    )
    try:
        assert run.run_dir is not None
        if first:
            own(run.run_dir, "lightning_logs")  # Lightning's own files, a folder of the run
        trainer = lightning.Trainer(
            accelerator=accelerator,
            devices=devices,
            strategy=strategy,
            max_epochs=config.epochs,
            max_steps=max_steps,
            default_root_dir=str(run.run_dir),
            logger=(
                make_logger(config.logger, run.run_dir, config, register=first)
                if config.logger != "none"
                else lightning.pytorch.loggers.CSVLogger(str(run.run_dir))
            ),
            enable_checkpointing=False,
            enable_progress_bar=progress,
            enable_model_summary=False,
            callbacks=callbacks,
        )
        return _fit_lightning(run, data, origin, trainer)
    finally:
        if run.lock is not None:
            run.lock.release()


def _fit_lightning(run: Run, data: Dataset, origin: dict[str, Any] | None, trainer: Any) -> Run:
    """Fit with ``trainer``; rank 0 then writes the checkpoint, config and summary."""
    config, run_dir = run.config, run.run_dir
    assert run_dir is not None
    module = SVIModule(run, data)
    train_x = module.objective.train_x
    if isinstance(train_x, StreamedPoints):  # read by the loader's workers; Lightning shards it
        loader = train_x.loader(config.batch_size, shuffle=True)
    else:
        loader = torch.utils.data.DataLoader(
            torch.utils.data.TensorDataset(train_x), batch_size=config.batch_size, shuffle=True
        )
    with pyro.get_param_store().scope():
        trainer.fit(module, loader)
    run = Run(module.model, module.guide, config, run_dir, epoch=int(trainer.current_epoch))
    if trainer.global_rank == 0:
        write_text(run_dir / "config.json", config.to_json() + "\n")
        if origin is not None:
            write_json(run_dir / "init_from.json", origin)
        optimizer = (
            trainer.optimizers[0]
            if trainer.optimizers
            else adam(module.named_parameters(), config.lr, config.weight_decay)
        )
        pos = Position(epoch=run.epoch, step=int(trainer.global_step))
        gen = torch.Generator().manual_seed(config.seed)
        save_checkpoint(
            run_dir / "checkpoint.pt",
            checkpoint_payload(
                (run.model, run.guide),
                run.config,
                optimizer,
                data.data_shape,
                pos,
                gen,
                run_id=run_id(run_dir),
            ),
        )
        run.summary = summarize(run, data)
        run.summary["devices"] = trainer.num_devices
        run.summary["objective"] = module.objective.loss.describe()
        write_json(run_dir / "summary.json", run.summary)
    return run


__all__ = ["SVIModule", "train_lightning"]
