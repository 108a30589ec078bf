"""Quality of decoded samples by where their latent codes come from.

A fixed classifier, fitted once on the training images, scores decoded
samples: a source whose samples look like data gets confident predictions
(high mean max-probability) spread over all classes (a predicted-class
histogram with entropy near log C).  This is the idea behind the Inception
score (Salimans et al. 2016), with a small classifier of the data set itself.

The latent sources are those of :mod:`mixvae.evaluation.sampling`
(``prior``, ``aggregate``, ``posthoc-gmm``); a source added there is scored
here without any change.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from scipy.stats import entropy

from mixvae.data import Dataset
from mixvae.evaluation.sampling import SOURCES, sample_latents
from mixvae.rng import seeded
from mixvae.runs.folder import Run

#: the most training images the sample-quality classifier is fitted to
SAMPLE_CLASSIFIER_POINTS = 10000


def labelled_training_points(
    data: Dataset, max_points: int = SAMPLE_CLASSIFIER_POINTS, seed: int = 0
) -> tuple[torch.Tensor, torch.Tensor] | None:
    """The labelled training images the classifier is fitted to, or ``None`` without labels.

    In memory: all of them (:func:`fit_sample_classifier` draws its subset).  Streamed: the
    same seeded subset of at most ``max_points``, read with their labels.
    """
    if not data.streamed:
        return None if data.train_y is None else (data.train_x, data.train_y)
    if data.test_y is None:  # the items carry no labels
        return None
    n = len(data.train_x)
    keep = (
        np.random.default_rng(seed).choice(n, max_points, replace=False) if n > max_points else np.arange(n)
    )
    return data.train_x.labelled(torch.as_tensor(keep))


def fit_sample_classifier(
    x: torch.Tensor, y: torch.Tensor, *, max_train: int = SAMPLE_CLASSIFIER_POINTS, seed: int = 0
) -> Any:
    """A multinomial logistic regression on (at most ``max_train``) training images.

    Fitted once per evaluation and seeded (the subset is drawn with
    ``numpy.random.default_rng(seed)``; lbfgs itself is deterministic).  On
    10,000 MNIST images it takes about 5 s on 2 cores and reaches 91% held-out
    accuracy: enough to tell a digit from a blur, which is all the scores need.

    :returns: a fitted scikit-learn classifier with ``predict_proba``.
    """
    from sklearn.linear_model import LogisticRegression

    xs, ys = x.flatten(1).cpu().numpy(), y.cpu().numpy()  # images as vectors of pixels
    if len(xs) > max_train:
        keep = np.random.default_rng(seed).choice(len(xs), max_train, replace=False)
        xs, ys = xs[keep], ys[keep]
    # C = 0.1: mild L2 regularisation, converges in ~100 lbfgs steps on MNIST.
    return LogisticRegression(C=0.1, max_iter=500).fit(xs, ys)


@dataclass
class SourceQuality:
    r"""Classifier scores of one set of images.

    :ivar mean_max_prob: :math:`\frac{1}{n}\sum_i \max_c p(c \mid x_i)`.
    :ivar class_entropy: entropy (nats) of the histogram of predicted classes
        :math:`h_c = \frac{1}{n}\#\{i: \arg\max p(\cdot \mid x_i) = c\}`; at most
        ``class_entropy_max`` = :math:`\log C`, reached when every class is
        predicted equally often.
    :ivar class_histogram: :math:`h`, one entry per class.
    :ivar images: the scored images (n, P); not serialised.
    """

    mean_max_prob: float
    class_entropy: float
    class_entropy_max: float
    class_histogram: list[float]
    num_samples: int
    images: torch.Tensor | None = field(default=None, repr=False)

    def to_dict(self) -> dict[str, Any]:
        return {
            "mean_max_prob": self.mean_max_prob,
            "class_entropy": self.class_entropy,
            "class_entropy_max": self.class_entropy_max,
            "class_histogram": self.class_histogram,
            "num_samples": self.num_samples,
        }


def score_images(classifier: Any, images: torch.Tensor) -> SourceQuality:
    """Score ``images`` (n, P) or (n, C, H, W) with ``classifier.predict_proba``."""
    probs = classifier.predict_proba(images.detach().flatten(1).cpu().numpy())
    num_classes = probs.shape[1]
    hist = np.bincount(probs.argmax(1), minlength=num_classes) / len(probs)
    return SourceQuality(
        mean_max_prob=float(probs.max(1).mean()),
        class_entropy=float(entropy(hist)),
        class_entropy_max=float(np.log(num_classes)),
        class_histogram=hist.tolist(),
        num_samples=len(probs),
        images=images.detach().cpu(),
    )


@torch.no_grad()
def sample_quality(
    run: Run,
    data: Dataset,
    classifier: Any,
    *,
    sources: Sequence[str] = SOURCES,
    num_samples: int = 1000,
    batch_size: int = 1000,
    seed: int = 0,
) -> dict[str, SourceQuality]:
    r"""Decode ``num_samples`` latent codes from each source and score the images.

    Codes come from :func:`mixvae.evaluation.sampling.sample_latents` (the
    ``posthoc-gmm`` source fits and saves the run's post-hoc GMM on first use);
    images are decoder means :math:`\mathbb{E}[x \mid z]`.  Each source runs
    on its own forked torch stream seeded with ``seed``, so its draws do not
    depend on which other sources are evaluated, and the caller's stream is
    left untouched.

    :param data: the run's data; the ``aggregate`` and ``posthoc-gmm`` sources use its training part.
    :param sources: names from :data:`mixvae.evaluation.sampling.SOURCES`.
    """
    device = next(run.model.parameters()).device
    out: dict[str, SourceQuality] = {}
    for name in sources:
        with seeded(seed, device):
            z = sample_latents(run, num_samples, name, data=data)
        images = torch.cat([run.model.decoder.mean(zb) for zb in z.split(batch_size)])
        out[name] = score_images(classifier, images)
    return out


def score_run_samples(
    run: Run,
    data: Dataset,
    raw_x: torch.Tensor,
    labels: torch.Tensor | None,
    split: str,
    classifier: Any,
    num_draws: int,
    draw_seed: int,
    result: dict[str, Any],
    fit_seed: int = 0,
) -> dict[str, SourceQuality]:
    """Sample quality by latent source into ``result`` (``evaluate_run``'s part; needs training
    labels): the classifier (fitted with ``fit_seed`` unless given), its accuracy on ``raw_x``,
    the scores of ``num_draws`` decoded samples per source (drawn with ``draw_seed``) and of
    real images.  Returns the scores by source (empty without labels)."""
    if classifier is None:
        fit = labelled_training_points(data, SAMPLE_CLASSIFIER_POINTS, fit_seed)
        if fit is None:
            return {}
        classifier = fit_sample_classifier(*fit, seed=fit_seed)
    if labels is not None:
        accuracy = float(classifier.score(raw_x.flatten(1).cpu().numpy(), labels.numpy()))
        result["classifier"] = {"kind": type(classifier).__name__, f"{split}_accuracy": accuracy}
    quality = sample_quality(run, data, classifier, num_samples=num_draws, seed=draw_seed)
    quality["data"] = score_images(classifier, raw_x[:num_draws])
    result["sample_quality"] = {name: q.to_dict() for name, q in quality.items()}
    return quality
