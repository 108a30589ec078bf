"""Semi-supervised training: some points observe the prior's discrete site (Kingma et al. 2014, M2)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch

from mixvae.config import TrainConfig
from mixvae.data import Dataset
from mixvae.errors import ConfigError
from mixvae.guides import Guide
from mixvae.inference.objectives import LatentScale
from mixvae.models import VAE
from mixvae.runs.folder import Run


@dataclass
class LabelledSplit:
    """Indices into the training set: labelled (semi-supervised) and unlabelled points."""

    labelled: torch.Tensor
    unlabelled: torch.Tensor


def labelled_split(data: Dataset, config: TrainConfig, model: VAE, guide: Guide) -> LabelledSplit:
    """The first ``labels_per_class`` points of each class (in a seeded order) keep their label.

    :raises ConfigError: when labels cannot be used: no labels in the data, no
        discrete site, or a number of components that differs from the number of classes.
    """
    everything = torch.arange(len(data.train_x))
    if config.labels_per_class is None:
        return LabelledSplit(everything[:0], everything)
    if data.train_y is None:
        raise ConfigError(f"--labels-per-class needs labels, and data set {data.name!r} has none")
    k = model.prior.num_components
    if model.prior.discrete_site is None:
        raise ConfigError(
            f"--labels-per-class needs a prior with a discrete component; prior {model.prior.name!r} has none"
        )
    if k != data.num_classes:
        raise ConfigError(
            f"--labels-per-class makes the labels the values of {model.prior.discrete_site!r}: use "
            f"--components {data.num_classes} (the number of classes), not {k}"
        )
    order = torch.randperm(len(data.train_y), generator=torch.Generator().manual_seed(config.seed))
    labels = data.train_y[order]
    chosen = []
    for c in range(k):
        members = order[labels == c]
        if len(members) < config.labels_per_class:
            raise ConfigError(
                f"class {c} has only {len(members)} training points; use --labels-per-class "
                f"{len(members)} or fewer"
            )
        chosen.append(members[: config.labels_per_class])
    labelled = torch.cat(chosen).sort().values
    mask = torch.ones(len(everything), dtype=torch.bool)
    mask[labelled] = False
    return LabelledSplit(labelled, everything[mask])


def labelled_loss(
    run: Run,
    elbo: Any,
    warmup: LatentScale,
    x: torch.Tensor,
    y: torch.Tensor,
    batch_size: int,
    gen: torch.Generator,
) -> torch.Tensor:
    """Negative ELBO of a labelled minibatch (y observed) plus the classification loss.

    The classification term of Kingma et al. (2014), ``class_weight`` times the
    cross-entropy of q(y|x) summed over the labelled set, applies when the guide
    has a classifier q(y|x) (the ``categorical`` guide).
    """
    idx = torch.randint(len(x), (batch_size,), generator=gen, device=x.device)
    xb, yb = x[idx], y[idx]
    if run.config.binarize == "dynamic":
        xb = torch.bernoulli(xb, generator=gen)
    loss = elbo.differentiable_loss(warmup(run.model), warmup(run.guide), xb, len(x), yb)
    if run.guide.discrete_site is not None and run.config.class_weight > 0:
        ce = torch.nn.functional.cross_entropy(run.guide.component_logits(xb), yb)
        loss = loss + run.config.class_weight * len(x) * ce
    return loss
