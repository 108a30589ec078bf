"""The training loop shared by :func:`~mixvae.inference.train.train`, :func:`~mixvae.inference.resume.resume`
and the restarts (:mod:`mixvae.inference.restarts`): steps, epoch ends, checkpoints, the end of training."""

from __future__ import annotations

import functools
import json
import math
import time
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pyro
import torch
from tqdm.auto import tqdm

from mixvae.build import build
from mixvae.config import TrainConfig
from mixvae.data import Dataset, evaluation_data, minibatches
from mixvae.devices import resolve_device
from mixvae.errors import DataError, RunFolderError
from mixvae.evaluation.posthoc import ensure_posthoc_gmm
from mixvae.evaluation.summary import summarize
from mixvae.figures.training import write_figures
from mixvae.inference.divergence import all_finite, check_params, diverged
from mixvae.inference.objectives import evaluate_elbo
from mixvae.inference.optim import adam
from mixvae.inference.setup import start_run
from mixvae.inference.signals import StopRequest
from mixvae.inference.step import RunObjective, set_learning_rate, step_schedule, warmup_beta
from mixvae.inference.tracking import Tracker, epoch_clustering, scores_heldout
from mixvae.runs.checkpoint import Position, checkpoint_payload, restore_rng, save_checkpoint
from mixvae.runs.checkpoint import describe_kept as _kept
from mixvae.runs.files import append_line, write_json
from mixvae.runs.folder import Run, load_into_run, restore_metrics
from mixvae.runs.manifest import run_id


def fresh_fit(
    config: TrainConfig,
    dataset: Dataset | None,
    encoder: torch.nn.Module | None = None,
    decoder: torch.nn.Module | None = None,
    *,
    progress: bool,
    figures: bool,
    after_step: Callable[[int], None] | None = None,
) -> Run:
    """Start the run of ``config`` (:func:`~mixvae.inference.setup.start_run`) and train it."""
    device = resolve_device(config.device)
    given = encoder is not None or decoder is not None
    builder = functools.partial(build, encoder=encoder, decoder=decoder) if given else build
    run, data, _ = start_run(config, dataset, device=device, builder=builder, given=given)
    assert run.lock is not None
    try:
        optimizer = optimizer_of(run)
        gen = torch.Generator(device=device).manual_seed(config.seed)
        return fit(
            run,
            data,
            optimizer,
            gen,
            Position(),
            [],
            progress=progress,
            figures=figures,
            after_step=after_step,
        )
    finally:
        run.lock.release()


def optimizer_of(run: Run) -> torch.optim.Optimizer:
    named = [*run.model.named_parameters(prefix="model"), *run.guide.named_parameters(prefix="guide")]
    return adam(named, lr=run.config.lr, weight_decay=run.config.weight_decay)


def fit(
    run: Run,
    data: Dataset,
    optimizer: torch.optim.Optimizer,
    gen: torch.Generator,
    pos: Position,
    history: list[dict[str, Any]],
    *,
    progress: bool,
    figures: bool,
    after_step: Callable[[int], None] | None = None,
    num_data: int = -1,
    checkpoint_first: bool = False,
) -> Run:
    """The loop shared by :func:`train` and :func:`resume` (``history``: the metrics so far;
    ``checkpoint_first``: write ``checkpoint.pt`` before the first step)."""
    fit = _Fit(run, data, optimizer, gen, pos, after_step, history)
    if (num_data >= 0 and num_data != fit.objective.num_data) or (
        pos.perm is not None and len(pos.perm) != fit.objective.num_data
    ):
        raise DataError(
            f"the run in {run.run_dir} was trained on {num_data if num_data >= 0 else len(pos.perm or [])} "
            f"training points, these data have {fit.objective.num_data}; resume it with the data it was "
            "trained on"
        )
    if checkpoint_first:
        fit.checkpoint()
    return fit.run_epochs(progress=progress, figures=figures)


def continue_from(
    payload: dict[str, Any],
    config: TrainConfig,
    run_dir: Path,
    data: Dataset,
    encoder: torch.nn.Module | None = None,
    decoder: torch.nn.Module | None = None,
    *,
    progress: bool,
    figures: bool,
    after_step: Callable[[int], None] | None = None,
    checkpoint_first: bool = False,
) -> Run:
    """Train the run in ``run_dir`` on from the checkpoint ``payload`` up to ``config.epochs``: its
    parameters, optimiser state, random states, position in the epoch and metrics history
    (``metrics.jsonl`` is rewritten from it), so that the run goes on bitwise as if never stopped."""
    run = load_into_run(payload, config, run_dir, encoder, decoder)
    device = resolve_device(config.device)
    run.model.to(device)
    run.guide.to(device)
    optimizer = optimizer_of(run)
    optimizer.load_state_dict(payload["optimizer"])
    gen = torch.Generator(device=device)
    restore_rng(payload["rng"], gen)
    p = payload["position"]
    perm = None if p["perm"] is None else p["perm"].to(device)
    pos = Position(int(payload["epoch"]), int(p["step"]), int(p["batch"]), perm, float(p["total"]))
    history = restore_metrics(run_dir, payload)
    return fit(
        run,
        data,
        optimizer,
        gen,
        pos,
        history,
        progress=progress,
        figures=figures,
        after_step=after_step,
        num_data=int(payload.get("num_data", -1)),
        checkpoint_first=checkpoint_first,
    )


class _Fit:
    """The state of one training loop: its steps, epoch ends, checkpoints and end of training."""

    def __init__(
        self,
        run: Run,
        data: Dataset,
        optimizer: torch.optim.Optimizer,
        gen: torch.Generator,
        pos: Position,
        after_step: Callable[[int], None] | None,
        history: list[dict[str, Any]],
    ) -> None:
        assert run.run_dir is not None
        self.run, self.data, self.optimizer, self.gen, self.pos = run, data, optimizer, gen, pos
        self.after_step, self.history = after_step, history
        self.run_id = run_id(run.run_dir)
        self.tracker = Tracker(run.config.logger, run.run_dir, run.config)
        self.last_checkpoint = time.monotonic()
        self.config = run.config
        self.device = next(run.model.parameters()).device
        self.objective = RunObjective(run, data, self.device)
        self.heldout_x = evaluation_data(data.test_x.to(self.device), self.config.binarize)
        self.params = [*run.model.parameters(), *run.guide.parameters()]
        self.steps_per_epoch = math.ceil(self.objective.num_data / self.config.batch_size)
        self.ckpt = run.run_dir / "checkpoint.pt"

    def _where(self, batch: int) -> str:
        return f"epoch {self.pos.epoch + 1}, step {batch}"

    def _check(self, xb: torch.Tensor, cause: BaseException | None = None) -> None:
        check_params(
            self.run, self.params, xb, self.objective.num_data, self._where(self.pos.batch), self.ckpt, cause
        )

    def checkpoint(self) -> None:
        payload = checkpoint_payload(
            (self.run.model, self.run.guide),
            self.config,
            self.optimizer,
            self.data.data_shape,
            self.pos,
            self.gen,
            run_id=self.run_id,
            metrics=self.history,
            num_data=self.objective.num_data,
        )
        try:
            save_checkpoint(self.ckpt, payload)
        except OSError as e:
            raise RunFolderError(
                f"cannot write {self.ckpt} ({e.strerror or e}); {_kept(self.ckpt)}; free space (or fix "
                f"the permissions) and continue with: mixvae train --resume {self.run.run_dir}"
            ) from None
        self.last_checkpoint = time.monotonic()

    def checkpoint_due(self) -> bool:
        """Whether ``--checkpoint-minutes`` have passed since the last checkpoint."""
        return time.monotonic() - self.last_checkpoint >= 60 * self.config.checkpoint_minutes

    def run_epochs(self, *, progress: bool, figures: bool) -> Run:
        config, pos, run = self.config, self.pos, self.run
        start = time.perf_counter()
        # Denormal floats in Adam's moments slow CPU training by 40-60% on MNIST.
        torch.set_flush_denormal(True)
        self.bar = tqdm(
            total=config.epochs * self.steps_per_epoch,
            initial=pos.step,
            disable=not progress,
            unit="step",
            mininterval=0.5,
        )
        try:
            with pyro.get_param_store().scope(), warnings.catch_warnings():
                # A non-finite loss raises TrainingDiverged below; Pyro's own warning is noise.
                warnings.filterwarnings("ignore", message="Encountered NaN", category=UserWarning)
                with StopRequest() as stop:
                    while pos.epoch < config.epochs:
                        if not self.epoch(stop):
                            return run
                self.bar.close()
                # Ctrl-C from here on is a KeyboardInterrupt: the last checkpoint is written and
                # every file below is written atomically, so nothing is left half-written.
                self.finish(start, figures)
        finally:
            self.bar.close()
            torch.set_flush_denormal(False)
        return run

    def epoch(self, stop: StopRequest) -> bool:
        """Finish the current epoch; False when a signal stopped the loop (checkpoint written)."""
        pos, n, bs = self.pos, self.objective.num_data, self.config.batch_size
        t0 = time.perf_counter()
        set_learning_rate(self.optimizer, pos.epoch, self.config)  # --lr-decay (--lr on resume)
        if pos.batch == 0:
            pos.perm, pos.total = torch.randperm(n, generator=self.gen, device=self.device), 0.0
        # (a run resumed after the last step of an epoch takes no step before the checks below)
        xb = None
        for xb in minibatches(self.objective.train_x, pos.perm, bs, pos.batch):
            self.step(xb)
            if stop.signal:
                self._check(xb)
                self.checkpoint()
                self.run.epoch, self.run.interrupted = pos.epoch, stop.signal
                return False
            if self.checkpoint_due() and pos.batch < self.steps_per_epoch:  # a long epoch
                self._check(xb)
                self.checkpoint()
        train_seconds = time.perf_counter() - t0  # the optimisation steps alone
        self._check(self.objective.train_x[:bs] if xb is None else xb)
        pos.epoch, pos.batch = pos.epoch + 1, 0
        self.run.epoch = pos.epoch
        self.record_epoch(t0, train_seconds)
        # A signal that arrived during the epoch-end evaluation also gets a
        # checkpoint, so that no finished epoch is lost.
        if (
            pos.epoch == 1
            or pos.epoch % self.config.checkpoint_every == 0
            or pos.epoch == self.config.epochs
            or self.checkpoint_due()
            or stop.signal
        ):
            self.checkpoint()
        if stop.signal:
            self.run.interrupted = stop.signal
            return False
        return True

    def step(self, xb: torch.Tensor) -> None:
        """One optimisation step on the minibatch ``xb``; divergence stops before the update."""
        pos, config, n = self.pos, self.config, self.objective.num_data
        beta, temperature = step_schedule(pos.step + 1, self.steps_per_epoch, config)
        # Validate the first step only (distribution arguments; with Pyro's ELBO
        # also model/guide mismatches): it costs about 5% per step after that.
        try:
            with pyro.validation_enabled(pos.step == 0):
                loss = self.objective(xb, beta, self.gen, temperature)
        except (RuntimeError, ValueError) as e:
            # A NaN update can make a distribution refuse its parameters
            # (e.g. sampling a Categorical with NaN weights): name the cause.
            if pos.step > 0:
                self._check(xb, cause=e)
            raise
        self.optimizer.zero_grad(set_to_none=True)
        finite = bool(torch.isfinite(loss))
        if finite:
            loss.backward()
            if config.clip_grad is not None:
                norm = torch.nn.utils.clip_grad_norm_(self.params, config.clip_grad)
                finite = bool(torch.isfinite(norm))
        # Without clipping the gradients are not scanned at every step (that
        # cost ~15% of a step): a non-finite gradient makes the parameters
        # non-finite, which the next loss, or the check before each
        # checkpoint, reports.  The checkpoint on disk stays the last good one.
        if not finite:
            where, what = self._where(pos.batch + 1), f"the loss became {float(loss.detach())}"
            if torch.isfinite(loss):
                what = "the gradient norm became non-finite"
            elif pos.batch > 0 and not all_finite(self.params):
                # the previous update, not this batch, broke the parameters
                where, what = self._where(pos.batch), "the parameters became non-finite"
            raise diverged(self.run, xb, n, where, self.ckpt, what)
        self.optimizer.step()
        pos.step += 1
        pos.batch += 1
        pos.total += float(loss.detach()) / n
        self.bar.update()
        if pos.batch % 10 == 1:
            self.bar.set_postfix_str(f"epoch {pos.epoch + 1} loss {pos.total / pos.batch:.2f}", refresh=False)
        if self.after_step is not None:
            self.after_step(pos.step)

    def record_epoch(self, t0: float, train_seconds: float) -> None:
        """Append the finished epoch's line to ``metrics.jsonl``."""
        pos, config, run = self.pos, self.config, self.run
        record = {
            "epoch": pos.epoch,
            "step": pos.step,
            "beta": warmup_beta(pos.step, self.steps_per_epoch, config.warmup_epochs),  # the last step's
            "train_loss": pos.total / self.steps_per_epoch,
            "lr": self.optimizer.param_groups[0]["lr"],
            "train_seconds": train_seconds,
        }
        if config.y_temperature != 1.0:  # the last step's
            record["y_temperature"] = step_schedule(pos.step, self.steps_per_epoch, config)[1]
        if scores_heldout(pos.epoch, config):  # --eval-every
            record["heldout_elbo"] = evaluate_elbo(
                run.model, run.guide, self.heldout_x, batch_size=config.eval_batch_size
            )
            scores = epoch_clustering(
                run.model, run.guide, self.heldout_x, self.data.test_y, config.eval_batch_size
            )
            if scores is not None:
                record["clustering"] = scores
        record["seconds"] = time.perf_counter() - t0
        assert run.run_dir is not None
        path = run.run_dir / "metrics.jsonl"
        try:
            append_line(path, json.dumps(record))
        except OSError as e:
            raise RunFolderError(
                f"cannot append to {path} ({e.strerror or e}); {_kept(self.ckpt)}; free space and "
                f"continue with: mixvae train --resume {run.run_dir}"
            ) from None
        self.history.append(record)
        self.tracker.epoch(record)

    def finish(self, start: float, figures: bool) -> None:
        """The end of training: the post-hoc GMM, ``summary.json`` and the figures."""
        run, data = self.run, self.data
        assert run.run_dir is not None
        if run.model.prior.fits_posthoc_gmm:  # from now on the model's p(z)
            ensure_posthoc_gmm(run, data, refit=True)
        with run.model.prior.as_trained():  # the summary and figures of the prior as trained
            run.summary = summarize(run, data, seconds=time.perf_counter() - start)
            run.summary["objective"] = self.objective.loss.describe()
            write_json(run.run_dir / "summary.json", run.summary)
            if figures:
                write_figures(run, data, self.history)
        self.tracker.finish(self.config, sorted(run.run_dir.glob("*.png")) if figures else [])
