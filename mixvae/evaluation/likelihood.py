r"""The importance-weighted estimate of :math:`\log p(x)` and its Pareto :math:`\hat k` diagnostic.

References

* Y. Burda, R. Grosse, R. Salakhutdinov (2016). Importance weighted autoencoders. ICLR.
* A. Vehtari, D. Simpson, A. Gelman, Y. Yao, J. Gabry (2024). Pareto smoothed
  importance sampling. JMLR 25(72).
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Literal, overload

import numpy as np
import pyro
import torch

from mixvae.evaluation.aggregate import Latents
from mixvae.guides import Guide
from mixvae.inference.iwae import log_weights
from mixvae.models import VAE
from mixvae.rng import seeded

#: k-hat above which importance sampling is unreliable (Vehtari et al. 2024)
KHAT_THRESHOLD = 0.7


def import_arviz() -> Any:
    """ArviZ, imported without its FutureWarning about the coming 1.0 split (mixvae pins arviz<1)."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", category=FutureWarning, module="arviz")
        import arviz

    return arviz


@dataclass
class ImportanceResult:
    r"""Per-datapoint results of :func:`importance_sampling`, each of shape (N,) (float64).

    :ivar log_likelihood: :math:`\log \frac{1}{S}\sum_s w_s`, the IWAE estimate of :math:`\log p(x)`.
    :ivar elbo: :math:`\frac{1}{S}\sum_s \log w_s`, an S-particle ELBO with the
        *marginal* densities :math:`\log p(z)` and :math:`\log q(z \mid x)`.
    :ivar khat: Pareto :math:`\hat k` of the S weights (``None`` unless asked for).
    :ivar log_weights: all log weights, shape (N, S) (``None`` unless asked for).
    """

    log_likelihood: torch.Tensor
    elbo: torch.Tensor
    khat: torch.Tensor | None = None
    log_weights: torch.Tensor | None = None


def pareto_khat(log_weights: torch.Tensor) -> torch.Tensor:
    r"""Pareto :math:`\hat k` of each row of importance log weights, shape (N, S) -> (N,).

    ArviZ's :func:`~arviz.psislw` fits a generalised Pareto distribution to
    the largest weights of each row.  :math:`\hat k < 0.5`: the proposal is
    good; :math:`0.5 \le \hat k \le 0.7`: usable; :math:`\hat k > 0.7`: the
    estimate of :math:`\log p(x)` is unreliable.  Rows whose weights are all
    equal have no tail to fit and get :math:`\hat k = \infty`.
    """
    _, khat = import_arviz().psislw(log_weights.detach().cpu().double().numpy())
    return torch.as_tensor(np.asarray(khat), dtype=torch.float64)


@torch.no_grad()
def importance_sampling(
    model: VAE,
    guide: Guide,
    x: torch.Tensor,
    num_samples: int = 1000,
    *,
    chunk_samples: int = 100,
    batch_size: int = 100,
    seed: int = 0,
    khat: bool = False,
    keep_log_weights: bool = False,
    prior_log_prob: Callable[[Latents], torch.Tensor] | None = None,
) -> ImportanceResult:
    r"""Importance sampling of :math:`p(x)` with the guide as proposal, per datapoint.

    .. math::

        \log w_s = \log p(x \mid z_s) + \log p(z_s) - \log q(z_s \mid x),
        \qquad z_s \sim q(z \mid x), \quad s = 1..S

    :math:`z` stands for all continuous latents the guide provides (``w`` and
    ``z`` for the ``dilokthanakul`` pair, drawn independently given x);
    :math:`\log p(z)` is ``prior.log_prob`` (discrete components summed out
    exactly) and :math:`\log q(z \mid x)` the guide's exact density (the
    mixture density for the ``mixture`` and ``categorical`` guides), so
    :math:`\log \frac{1}{S}\sum_s w_s` is the IWAE lower bound of
    :math:`\log p(x)` in expectation, tightening as S grows.

    Memory is bounded by the chunk sizes, not by N or S: ``batch_size``
    datapoints at a time, ``chunk_samples`` draws at a time, so the decoder
    sees ``chunk_samples * batch_size`` latent codes per call (its output is
    ``chunk_samples * batch_size * P`` numbers) and the log-sum-exp over
    samples is accumulated chunk by chunk (float64).  With ``khat`` the S log
    weights of the current ``batch_size`` datapoints are kept (``batch_size * S``
    numbers), so :math:`\hat k` uses all S weights; only ``keep_log_weights``
    holds all N x S of them.

    Runs on a forked torch stream seeded with ``seed`` (the caller's stream is
    left untouched) and with Pyro's shape validation off (the shapes are fixed).

    :param prior_log_prob: a density of the latents to use instead of
        ``model.prior.log_prob``, e.g. a post-hoc GMM fitted to :math:`q(z)`
        (Ghosh et al. 2020): ``lambda latents: gmm.distribution().log_prob(latents["z"])``.
    """
    log_prior = model.prior.log_prob if prior_log_prob is None else prior_log_prob
    lls, elbos, khats, kept = [], [], [], []
    with seeded(seed, x.device), pyro.validation_enabled(False):
        for xb in x.split(batch_size):
            qs = guide.q_latents(xb)  # batch (B,); the encoder runs once per batch
            lse = torch.full((len(xb),), -math.inf, dtype=torch.float64, device=x.device)
            total = torch.zeros(len(xb), dtype=torch.float64, device=x.device)
            chunks = []
            for start in range(0, num_samples, chunk_samples):
                chunk = min(chunk_samples, num_samples - start)
                log_w = log_weights(
                    model, qs, xb, chunk, reparameterized=False, prior_log_prob=log_prior
                ).double()  # (C, B)
                lse = torch.logaddexp(lse, log_w.logsumexp(0))
                total += log_w.sum(0)
                if khat or keep_log_weights:
                    chunks.append(log_w)
            lls.append(lse - math.log(num_samples))
            elbos.append(total / num_samples)
            if chunks:
                weights = torch.cat(chunks).T  # (B, S)
                if khat:
                    khats.append(pareto_khat(weights))
                if keep_log_weights:
                    kept.append(weights)
    return ImportanceResult(
        log_likelihood=torch.cat(lls),
        elbo=torch.cat(elbos),
        khat=torch.cat(khats) if khat else None,
        log_weights=torch.cat(kept) if keep_log_weights else None,
    )


@overload
def log_likelihood(
    model: VAE,
    guide: Guide,
    x: torch.Tensor,
    num_samples: int = ...,
    *,
    chunk_samples: int = ...,
    batch_size: int = ...,
    seed: int = ...,
    return_log_weights: Literal[False] = ...,
) -> torch.Tensor: ...


@overload
def log_likelihood(
    model: VAE,
    guide: Guide,
    x: torch.Tensor,
    num_samples: int = ...,
    *,
    chunk_samples: int = ...,
    batch_size: int = ...,
    seed: int = ...,
    return_log_weights: Literal[True],
) -> tuple[torch.Tensor, torch.Tensor]: ...


def log_likelihood(
    model: VAE,
    guide: Guide,
    x: torch.Tensor,
    num_samples: int = 1000,
    *,
    chunk_samples: int = 100,
    batch_size: int = 100,
    seed: int = 0,
    return_log_weights: bool = False,
) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
    r"""Importance-weighted estimate of :math:`\log p(x)` (nats) for each row of ``x``, shape (N,).

    .. math::

        \log \hat p(x) = \log \frac{1}{S} \sum_{s=1}^{S}
            \frac{p(x \mid z_s)\, p(z_s)}{q(z_s \mid x)}, \qquad z_s \sim q(z \mid x)

    See :func:`importance_sampling` for the densities, seeding and the memory bound.

    :param num_samples: S (1000 or more for reported numbers).
    :param return_log_weights: also return the (N, S) log weights (e.g. for
        :func:`pareto_khat`); that array is the one part whose size grows with N x S.
    """
    res = importance_sampling(
        model,
        guide,
        x,
        num_samples,
        chunk_samples=chunk_samples,
        batch_size=batch_size,
        seed=seed,
        keep_log_weights=return_log_weights,
    )
    if return_log_weights:
        assert res.log_weights is not None
        return res.log_likelihood, res.log_weights
    return res.log_likelihood


def mass_levels(decoder: Any, x: torch.Tensor) -> int | None:
    """The L levels over which log p(x | z) is a probability mass, or ``None`` for a density:
    the likelihood's declared ``discrete_levels`` (256 for the discretized logistic, 2 for the
    Bernoulli), when every value of ``x`` lies on its grid ``k / (L - 1)`` (binarised or 8-bit data)."""
    levels = getattr(decoder, "discrete_levels", None)
    if levels is None:
        return None
    scaled = x * (levels - 1)
    return int(levels) if bool((scaled == scaled.round()).all()) else None


def bits_per_dim(log_likelihood_nats: float, data_dim: int) -> float:
    """-log2 p(x) per value: nats per datapoint / (P ln 2)."""
    return -float(log_likelihood_nats) / (data_dim * math.log(2.0))
