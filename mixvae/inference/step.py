"""One optimisation step's loss and the schedules (KL warm-up, y temperature, learning rate),
shared by the plain loop and Lightning."""

from __future__ import annotations

from typing import TYPE_CHECKING

import torch

from mixvae.data import Dataset
from mixvae.inference.loss import TrainingLoss
from mixvae.inference.objectives import LatentScale, make_elbo
from mixvae.inference.semisupervised import labelled_loss, labelled_split
from mixvae.runs.folder import Run

if TYPE_CHECKING:
    from mixvae.config import TrainConfig


def minibatch_information(logits: torch.Tensor) -> torch.Tensor:
    """The mutual information between the points of a minibatch and ``y`` under q(y | x):
    ``H(mean_b q(y|x_b)) - mean_b H(q(y|x_b))``, from the logits (B, K) of q(y | x).

    It is ``mean_b KL(q(y|x_b) || p(y)) - KL(mean_b q(y|x_b) || p(y))`` for any p(y):
    subtracting it from the negative ELBO puts the aggregate's KL where each point's was.
    """
    log_q = logits.log_softmax(-1)
    q = log_q.exp()
    mean_q = q.mean(0)
    marginal_entropy = -(mean_q * mean_q.clamp_min(torch.finfo(q.dtype).tiny).log()).sum()
    return marginal_entropy + (q * log_q).sum(-1).mean()


def warmup_beta(step: int, steps_per_epoch: int, warmup_epochs: float) -> float:
    """KL warm-up: beta at optimisation step ``step`` (counted from 1), rising linearly to 1
    over ``warmup_epochs`` epochs of ``steps_per_epoch`` steps (1 throughout without warm-up)."""
    warmup_steps = warmup_epochs * steps_per_epoch
    return min(1.0, step / warmup_steps) if warmup_steps else 1.0


def mean_entropy(logits: torch.Tensor) -> torch.Tensor:
    """``mean_b H(q(y|x_b))`` from the logits (B, K) of q(y | x)."""
    log_q = logits.log_softmax(-1)
    return -(log_q.exp() * log_q).sum(-1).mean()


def y_temperature(step: int, steps_per_epoch: int, start: float, epochs: float) -> float:
    """The weight T of each point's entropy H(q(y|x)) at step ``step`` (counted from 1):
    ``start`` falling linearly to 1 over ``epochs`` epochs (``--y-temperature``), the
    schedule of :func:`warmup_beta` run from ``start`` to 1."""
    return start + (1.0 - start) * warmup_beta(step, steps_per_epoch, epochs)


def learning_rate(epoch: int, config: TrainConfig) -> float:
    """Adam's step size in epoch ``epoch`` (counted from 0): ``--lr`` times ``--lr-decay`` for
    every ``--lr-decay-epochs`` epochs finished, never below ``--lr-min`` and never above ``--lr``
    (VaDE's schedule with ``--lr 0.002 --lr-decay 0.9 --lr-min 0.0002``:
    ``max(0.002 * 0.9 ** (epoch // 10), 0.0002)``; a run resumed with a lower ``--lr`` takes that
    rate). A function of the epoch alone, so a resumed run takes the same steps."""
    floor = min(config.lr_min, config.lr)
    return max(config.lr * config.lr_decay ** (epoch // config.lr_decay_epochs), floor)


def set_learning_rate(optimizer: torch.optim.Optimizer, epoch: int, config: TrainConfig) -> None:
    """Give every parameter group of ``optimizer`` the :func:`learning_rate` of ``epoch``; called at
    the start of each epoch by the plain loop and by the Lightning module."""
    for group in optimizer.param_groups:
        group["lr"] = learning_rate(epoch, config)


def step_schedule(step: int, steps_per_epoch: int, config: TrainConfig) -> tuple[float, float]:
    """``(beta, T)`` of optimisation step ``step``: KL warm-up and the y temperature."""
    return (
        warmup_beta(step, steps_per_epoch, config.warmup_epochs),
        y_temperature(step, steps_per_epoch, config.y_temperature, config.y_temperature_epochs),
    )


class RunObjective:
    """The loss of one optimisation step of a run.

    The negative ELBO of an unlabelled minibatch scaled to the data set
    (:class:`~mixvae.inference.loss.TrainingLoss`: the direct ELBO or Pyro's),
    binarised afresh with ``--binarize dynamic``, plus, in a semi-supervised
    run, the labelled term of :func:`~mixvae.inference.semisupervised.labelled_loss`
    on a labelled minibatch drawn from ``gen``.  The first call checks the
    direct ELBO against Pyro's (:meth:`TrainingLoss.verify`).

    :param run: the run (its model, guide and configuration).
    :param data: the training data; its labelled points are set aside here.
    :param device: where the tensors live.
    """

    def __init__(self, run: Run, data: Dataset, device: torch.device) -> None:
        config = run.config
        self.run = run
        split = labelled_split(data, config, run.model, run.guide)
        #: the unlabelled training points, (N, *data_shape), on ``device`` (streamed: read as needed)
        self.train_x = (
            data.train_x[split.unlabelled].to(device) if not data.streamed else data.train_x.to(device)
        )
        self.num_data = len(self.train_x)
        analytic_kl = config.kl == "analytic"
        self.loss = TrainingLoss(
            run.model,
            run.guide,
            objective=config.objective,
            analytic_kl=analytic_kl,
            particles=config.particles,
            jit=config.jit,
        )
        self.labelled = split.labelled.numel() > 0
        if self.labelled:
            self.labelled_x = data.train_x[split.labelled].to(device)
            self.labelled_y = data.train_y[split.labelled].to(device)
            self.labelled_bs = min(config.batch_size, len(self.labelled_x))
            # Labelled points observe the discrete site: nothing is enumerated for them.
            m = 1 if config.objective == "iwae" else config.particles  # the ELBO's draws per point
            self.labelled_elbo = make_elbo(
                m, vectorize_particles=m > 1, enumerates=False, analytic_kl=analytic_kl
            )
        self.warmup = LatentScale()
        self._verified = False
        #: --mutual-info lambda (0: the plain ELBO; a guide with a discrete site, checked by start_run)
        self.mutual_info = config.mutual_info

    def to(self, device: torch.device) -> RunObjective:
        """Move the labelled points to ``device`` (where Lightning put the model)."""
        if self.labelled and self.labelled_x.device != device:
            self.labelled_x, self.labelled_y = self.labelled_x.to(device), self.labelled_y.to(device)
        return self

    def __call__(
        self, xb: torch.Tensor, beta: float, gen: torch.Generator, temperature: float = 1.0
    ) -> torch.Tensor:
        """The loss of the unlabelled minibatch ``xb`` (as sliced from :attr:`train_x`), with KL
        warm-up ``beta`` and y temperature ``temperature`` (see :func:`step_schedule`)."""
        if self.run.config.binarize == "dynamic":
            xb = torch.bernoulli(xb, generator=gen)
        if not self._verified:  # the direct ELBO against Pyro's, once per process
            self.loss.verify(xb, self.num_data, beta=beta)
            self._verified = True
        loss = self.loss(xb, self.num_data, beta=beta)
        if self.mutual_info or temperature != 1.0:
            logits = self.run.guide.component_logits(xb)
            if self.mutual_info:
                info = minibatch_information(logits)
                loss = loss - self.mutual_info * beta * self.num_data * info
            if temperature != 1.0:  # the ELBO weighs each H(q(y|x)) by beta; annealing by beta * T
                loss = loss - (temperature - 1.0) * beta * self.num_data * mean_entropy(logits)
        if self.labelled:
            self.warmup.beta = beta
            loss = loss + labelled_loss(
                self.run,
                self.labelled_elbo,
                self.warmup,
                self.labelled_x,
                self.labelled_y,
                self.labelled_bs,
                gen,
            )
        return loss
