r"""The aggregate posterior :math:`q(z) = \frac{1}{N}\sum_n q(z \mid x_n)` against the prior.

ELBO surgery (Hoffman & Johnson 2016), active units (Burda et al. 2016) and a
kernel two-sample test (Gretton et al. 2012) between draws of :math:`q(z)` and
of :math:`p(z)`.  Everything runs in chunks whose size is fixed by arguments,
not by the number of datapoints.

References

* M. D. Hoffman, M. J. Johnson (2016). ELBO surgery: yet another way to carve
  up the variational evidence lower bound. NIPS Workshop on Advances in
  Approximate Bayesian Inference.
* Y. Burda, R. Grosse, R. Salakhutdinov (2016). Importance weighted
  autoencoders. ICLR.
* A. Gretton, K. M. Borgwardt, M. J. Rasch, B. Schölkopf, A. Smola (2012).
  A kernel two-sample test. JMLR 13.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import NamedTuple

import pyro
import torch

from mixvae.guides import Guide
from mixvae.inference.iwae import log_q
from mixvae.models import VAE
from mixvae.rng import seeded

#: default cap on the elements of one pairwise log-density block (8M floats, 32 MB)
MAX_PAIR_ELEMENTS = 2**23


class AggregateDraws(NamedTuple):
    """Draws from the aggregate posterior and the datapoint each one came from."""

    z: torch.Tensor
    index: torch.Tensor


@torch.no_grad()
def draw_aggregate_posterior(
    guide: Guide, x: torch.Tensor, num_samples: int, *, batch_size: int = 1000, seed: int | None = 0
) -> AggregateDraws:
    r"""I.i.d. draws from the aggregate posterior, with the index of their datapoint.

    .. math::

        n \sim \mathrm{Uniform}\{1..N\}, \qquad z \sim q(z \mid x_n)

    The indices are drawn with replacement, so the draws are exactly i.i.d.
    from :math:`q(z)` (what a two-sample test assumes).

    :param seed: seed of a forked torch stream; ``None`` draws from the caller's stream.
    :returns: ``z`` of shape (num_samples, D) and ``index`` of shape (num_samples,).
    """
    with seeded(seed, x.device):
        idx = torch.randint(len(x), (num_samples,), device=x.device)
        z = torch.cat([guide.q_z(x[i]).sample() for i in idx.split(batch_size)])
    return AggregateDraws(z, idx)


def sample_aggregate_posterior(
    guide: Guide, x: torch.Tensor, num_samples: int, *, batch_size: int = 1000, seed: int | None = 0
) -> torch.Tensor:
    """Draws from the aggregate posterior, shape (num_samples, D); see :func:`draw_aggregate_posterior`."""
    return draw_aggregate_posterior(guide, x, num_samples, batch_size=batch_size, seed=seed).z


Latents = Mapping[str, torch.Tensor]


def draw_latents(qs: Mapping[str, torch.distributions.Distribution], num_samples: int | None) -> Latents:
    """One draw (``num_samples=None``) or ``num_samples`` draws of every latent in ``qs``."""
    if num_samples is None:
        return {k: q.sample() for k, q in qs.items()}
    return {k: q.sample((num_samples,)) for k, q in qs.items()}


@torch.no_grad()
def aggregate_log_prob(
    guide: Guide,
    x: torch.Tensor,
    latents: Latents | torch.Tensor,
    *,
    batch_size: int = 500,
    max_elements: int = MAX_PAIR_ELEMENTS,
) -> torch.Tensor:
    r"""The exact log-density of the full-data mixture :math:`q(\cdot)` at each latent point.

    .. math::

        \log q(z) = \operatorname{logsumexp}_{n=1}^{N} \log q(z \mid x_n) - \log N

    over all continuous latents the guide provides (``z``, and ``w`` for the
    ``dilokthanakul`` guide, jointly).  The encoder runs once per chunk of
    ``batch_size`` datapoints; within a chunk the latent points are scored in
    sub-chunks, so one block holds at most about ``max_elements`` numbers
    (``points x datapoints x components x latent dims``), and the sum over
    datapoints is a running log-sum-exp.  Memory is therefore bounded
    independently of N; time is O(M N K D) for M points.

    :param latents: points, each site of shape (M, D_site); a tensor means ``{"z": latents}``.
    :returns: shape (M,), float64.
    """
    if isinstance(latents, torch.Tensor):
        latents = {"z": latents}
    m = len(next(iter(latents.values())))
    dims = sum(v.shape[-1] for v in latents.values())
    chunk = max(1, max_elements // (batch_size * guide.num_components * dims))
    device = next(iter(latents.values())).device
    acc = torch.full((m,), -math.inf, dtype=torch.float64, device=device)
    # Shape checks on every block cost time and the shapes are fixed here.
    with pyro.validation_enabled(False):
        for xb in x.split(batch_size):
            qs = guide.q_latents(xb)  # batch (B,)
            # points (Mc, 1, D) broadcast against the batch: log q(. | x_b), (Mc, B)
            block = torch.cat(
                [
                    log_q(qs, {k: v[i : i + chunk].unsqueeze(-2) for k, v in latents.items()}).logsumexp(-1)
                    for i in range(0, m, chunk)
                ]
            )
            acc = torch.logaddexp(acc, block.double())
    return acc - math.log(len(x))


@dataclass(frozen=True)
class ElboSurgery:
    r"""The average KL term of the ELBO split into two parts (Hoffman & Johnson 2016).

    .. math::

        \underbrace{\frac{1}{N}\sum_n \mathrm{KL}(q(z \mid x_n) \,\|\, p(z))}_{\texttt{avg\_kl}}
        = \underbrace{I_q(n; z)}_{\texttt{mutual\_information}}
        + \underbrace{\mathrm{KL}(q(z) \,\|\, p(z))}_{\texttt{marginal\_kl}}

    with :math:`0 \le I_q(n; z) \le \log N` (``mutual_information_bound``).
    The ``*_se`` fields are Monte Carlo standard errors (nats).
    """

    avg_kl: float
    marginal_kl: float
    mutual_information: float
    mutual_information_bound: float
    avg_kl_se: float
    marginal_kl_se: float
    mutual_information_se: float
    num_points: int


def _mean_se(values: torch.Tensor) -> tuple[float, float]:
    se = float(values.std() / math.sqrt(len(values))) if len(values) > 1 else math.nan
    return float(values.mean()), se


@torch.no_grad()
def elbo_surgery(
    model: VAE,
    guide: Guide,
    x: torch.Tensor,
    *,
    num_points: int | None = None,
    batch_size: int = 500,
    max_elements: int = MAX_PAIR_ELEMENTS,
    seed: int = 0,
) -> ElboSurgery:
    r"""ELBO surgery on the data ``x``: average KL, marginal KL and index-code mutual information.

    One draw :math:`z_n \sim q(z \mid x_n)` per scored datapoint feeds all
    three Monte Carlo estimates (common random numbers, so
    ``avg_kl = mutual_information + marginal_kl`` holds exactly):

    .. math::

        \mathrm{avg\_kl} &\approx \overline{\log q(z_n \mid x_n) - \log p(z_n)} \\
        \mathrm{marginal\_kl} &\approx \overline{\log q(z_n) - \log p(z_n)} \\
        \mathrm{mutual\_information} &\approx \overline{\log q(z_n \mid x_n) - \log q(z_n)}

    Here :math:`z` stands for all continuous latents the guide provides
    (``w`` and ``z`` for the ``dilokthanakul`` pair), :math:`\log p(z)` is
    ``prior.log_prob`` (discrete components summed out exactly),
    :math:`q(z \mid x)` the guide's exact (mixture) density and :math:`q(z)`
    the mixture over *all* N datapoints (:func:`aggregate_log_prob`), so each
    mutual-information term is at most :math:`\log N`.

    :param num_points: score a random subset of this many datapoints (without
        replacement) instead of all N; :math:`q(z)` still mixes all N.  The
        cost is O(num_points N K D).
    :param seed: seed of a forked torch stream (the caller's is left untouched).
    """
    n = len(x)
    with seeded(seed, x.device), pyro.validation_enabled(False):
        idx = torch.arange(n, device=x.device)
        if num_points is not None and num_points < n:
            idx = torch.randperm(n, device=x.device)[:num_points]
        draws, own = [], []
        for i in idx.split(batch_size):
            qs = guide.q_latents(x[i])
            latents = draw_latents(qs, None)
            draws.append(latents)
            own.append(log_q(qs, latents))
        latents = {k: torch.cat([d[k] for d in draws]) for k in draws[0]}
        log_q_own = torch.cat(own).double()
        log_p = model.prior.log_prob(latents).double()
    log_q_agg = aggregate_log_prob(guide, x, latents, batch_size=batch_size, max_elements=max_elements)
    avg_kl, avg_kl_se = _mean_se(log_q_own - log_p)
    marginal_kl, marginal_kl_se = _mean_se(log_q_agg - log_p)
    mi, mi_se = _mean_se(log_q_own - log_q_agg)
    return ElboSurgery(
        avg_kl=avg_kl,
        marginal_kl=marginal_kl,
        mutual_information=mi,
        mutual_information_bound=math.log(n),
        avg_kl_se=avg_kl_se,
        marginal_kl_se=marginal_kl_se,
        mutual_information_se=mi_se,
        num_points=len(idx),
    )


class ActiveUnits(NamedTuple):
    """Number of active latent dimensions and the per-dimension activity."""

    count: int
    variances: torch.Tensor


@torch.no_grad()
def active_units(
    guide: Guide, x: torch.Tensor, *, threshold: float = 0.01, batch_size: int = 1000
) -> ActiveUnits:
    r"""Active units of the encoder (Burda et al. 2016).

    .. math::

        A_d = \mathrm{Cov}_x\big(\mathbb{E}_{q(z \mid x)}[z_d]\big), \qquad
        \text{dimension } d \text{ is active if } A_d > \text{threshold}

    :math:`\mathbb{E}_q[z]` is the guide distribution's ``mean`` (the
    mixture mean for mixture guides); the covariance is the unbiased sample
    variance over the rows of ``x``.
    """
    means = torch.cat([guide.q_mean(xb) for xb in x.split(batch_size)])
    variances = means.var(0)
    return ActiveUnits(int((variances > threshold).sum()), variances)


@dataclass(frozen=True)
class MMDTest:
    r"""Result of :func:`mmd_test`.

    :ivar mmd2: the unbiased estimate of :math:`\mathrm{MMD}^2` (may be
        slightly negative when the two distributions agree).
    :ivar pvalue: permutation-test p-value of "both samples come from one distribution".
    :ivar bandwidth: the RBF kernel's length scale :math:`\ell`.
    """

    mmd2: float
    pvalue: float
    bandwidth: float
    num_permutations: int


@torch.no_grad()
def mmd_test(
    a: torch.Tensor,
    b: torch.Tensor,
    *,
    num_permutations: int = 200,
    bandwidth: float | None = None,
    permutation_chunk: int = 50,
    seed: int = 0,
) -> MMDTest:
    r"""Kernel two-sample test (Gretton et al. 2012) with an RBF kernel.

    .. math::

        k(u, v) &= \exp\!\big(-\lVert u - v\rVert^2 / (2\ell^2)\big) \\
        \widehat{\mathrm{MMD}}^2_u &= \tfrac{1}{m(m-1)}\sum_{i \ne j} k(a_i, a_j)
            + \tfrac{1}{n(n-1)}\sum_{i \ne j} k(b_i, b_j)
            - \tfrac{2}{mn}\sum_{i, j} k(a_i, b_j)

    :math:`\ell` defaults to the median pairwise distance of the pooled sample
    (the median heuristic).  The p-value is
    :math:`(1 + \#\{\text{permuted} \ge \text{observed}\}) / (1 + R)` over
    :math:`R` random re-splits of the pooled sample.  The kernel matrix of the
    pooled sample is built once ((m + n)^2 float64 numbers, 32 MB for
    m = n = 1000); each re-split is a quadratic form in it, computed for
    ``permutation_chunk`` re-splits at a time by one matrix product.

    :param a: first sample, shape (m, D).
    :param b: second sample, shape (n, D).
    """
    m, n = len(a), len(b)
    if m < 2 or n < 2:
        raise ValueError(f"mmd_test needs at least 2 points per sample, got {m} and {n}")
    pooled = torch.cat([a, b]).double()
    sq = torch.cdist(pooled, pooled).square()
    if bandwidth is None:
        off = sq[torch.triu_indices(len(pooled), len(pooled), offset=1, device=sq.device).unbind()]
        bandwidth = float(off.median().sqrt())
    kernel = torch.exp(-sq / (2 * bandwidth**2))
    kernel.fill_diagonal_(0.0)  # the U-statistic leaves out i == j
    total = kernel.sum()

    def statistic(in_a: torch.Tensor) -> torch.Tensor:
        # in_a: (R, m + n) 0/1 float; 1 marks a point of the first sample.
        ka = in_a @ kernel
        aa = (ka * in_a).sum(-1)
        ab = (ka * (1 - in_a)).sum(-1)
        bb = total - aa - 2 * ab  # 1'K1 = aa + 2ab + bb
        return aa / (m * (m - 1)) + bb / (n * (n - 1)) - 2 * ab / (m * n)

    observed_split = torch.zeros(1, m + n, dtype=torch.float64, device=pooled.device)
    observed_split[0, :m] = 1.0
    observed = statistic(observed_split)[0]
    exceed = 0
    with seeded(seed, pooled.device):
        for r in range(0, num_permutations, permutation_chunk):
            rows = min(permutation_chunk, num_permutations - r)
            # the first m positions of a random permutation form the permuted "a"
            ranks = torch.rand(rows, m + n, device=pooled.device).argsort(-1).argsort(-1)
            exceed += int((statistic((ranks < m).double()) >= observed).sum())
    return MMDTest(
        mmd2=float(observed),
        pvalue=(1 + exceed) / (1 + num_permutations),
        bandwidth=bandwidth,
        num_permutations=num_permutations,
    )
