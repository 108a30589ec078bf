"""One optimisation step's loss and the KL warm-up schedule, shared by the plain loop and Lightning."""

from __future__ import annotations

import torch

from mixvae.data import Dataset
from mixvae.inference.loss import TrainingLoss
from mixvae.inference.objectives import LatentScale, make_elbo
from mixvae.inference.semisupervised import labelled_loss, labelled_split
from mixvae.runs.folder import Run


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
            self.labelled_elbo = make_elbo(enumerates=False, analytic_kl=analytic_kl)
        self.warmup = LatentScale()
        self._verified = False
        #: --mutual-info lambda (0: the plain ELBO; a guide with a discrete site, checked by start_run)
        self.mutual_info = config.mutual_info

    def to(self, device: torch.device) -> RunObjective:
        """Move the labelled points to ``device`` (where Lightning put the model)."""
        if self.labelled and self.labelled_x.device != device:
            self.labelled_x, self.labelled_y = self.labelled_x.to(device), self.labelled_y.to(device)
        return self

    def __call__(self, xb: torch.Tensor, beta: float, gen: torch.Generator) -> torch.Tensor:
        """The loss of the unlabelled minibatch ``xb`` (as sliced from :attr:`train_x`)."""
        if self.run.config.binarize == "dynamic":
            xb = torch.bernoulli(xb, generator=gen)
        if not self._verified:  # the direct ELBO against Pyro's, once per process
            self.loss.verify(xb, self.num_data, beta=beta)
            self._verified = True
        loss = self.loss(xb, self.num_data, beta=beta)
        if self.mutual_info:
            info = minibatch_information(self.run.guide.component_logits(xb))
            loss = loss - self.mutual_info * beta * self.num_data * info
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
