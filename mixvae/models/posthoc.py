"""Ex-post density estimation: a standard VAE whose p(z) is replaced by a GMM fitted to q(z)."""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass

import pyro.distributions as dist
import torch

from mixvae.models.priors import PRIORS, Prior, StandardPrior


@dataclass
class PosthocGMM:
    """A fitted Gaussian mixture over z: weights (K,), means (K, D), covariances (K, D, D)."""

    weights: torch.Tensor
    means: torch.Tensor
    covariances: torch.Tensor
    source: str = "means"

    @property
    def num_components(self) -> int:
        return int(self.weights.shape[0])

    def distribution(self) -> dist.TorchDistribution:
        """The mixture as a torch distribution with event shape (D,)."""
        comps = dist.MultivariateNormal(self.means, covariance_matrix=self.covariances)
        return dist.MixtureSameFamily(dist.Categorical(probs=self.weights), comps)

    def to(self, device: torch.device | str) -> PosthocGMM:
        """The same mixture with its tensors on ``device``."""
        return PosthocGMM(
            self.weights.to(device), self.means.to(device), self.covariances.to(device), self.source
        )

    def component_distribution(self, k: int) -> dist.TorchDistribution:
        return dist.MultivariateNormal(self.means[k], covariance_matrix=self.covariances[k])

    def sample(self, n: int, component: int | None = None) -> torch.Tensor:
        d = self.distribution() if component is None else self.component_distribution(component)
        return d.sample((n,))


@PRIORS.register("posthoc-gmm")
class PosthocGMMPrior(StandardPrior):
    r"""Ex-post density estimation (Ghosh et al. 2020).

    .. math::

        z \sim \mathcal{N}(0, I_D) \ \text{(training)}, \qquad
        z \sim \sum_k \hat\pi_k \mathcal{N}(\hat\mu_k, \hat\Sigma_k) \ \text{(after the fit)}

    Trained exactly like ``standard``; at the end of training a full-covariance
    GMM is fitted to the aggregate posterior and saved with the run
    (``posthoc_gmm.pt``, see :mod:`mixvae.evaluation.posthoc`).  From then on
    (:meth:`set_gmm`; :func:`mixvae.load_run` does it for a run that has one)
    it is this prior's declared ``z`` distribution: the Pyro model,
    ``Predictive``, :meth:`~Prior.log_prob` and :meth:`~Prior.sample_z` all use
    the GMM.  :meth:`as_trained` gives N(0, I) back for a block (evaluation
    reports both).
    """

    story = "z ~ N(0, I) in training; then a GMM fitted to q(z) for sampling and likelihood"
    fits_posthoc_gmm = True

    def __init__(self, latent_dim: int) -> None:
        super().__init__(latent_dim)
        self.gmm: PosthocGMM | None = None
        self._gmm_dist: dist.TorchDistribution | None = None
        self._as_trained = False

    def set_gmm(self, gmm: PosthocGMM | None) -> None:
        """Make ``gmm`` (a fitted :class:`PosthocGMM`, or ``None`` for
        N(0, I) again) this prior's p(z)."""
        self.gmm = None if gmm is None else gmm.to(self._zeros.device)
        self._gmm_dist = None if self.gmm is None else self.gmm.distribution()

    @property
    def fitted(self) -> bool:
        """Whether p(z) is the fitted GMM (outside :meth:`as_trained`)."""
        return self._gmm_dist is not None and not self._as_trained

    @contextmanager
    def as_trained(self) -> Iterator[Prior]:
        """A block in which p(z) is N(0, I), the prior the model was trained with."""
        self._as_trained, before = True, self._as_trained
        try:
            yield self
        finally:
            self._as_trained = before

    def z_dist(self, values: Mapping[str, torch.Tensor]) -> dist.TorchDistribution:
        if self.fitted:
            assert self._gmm_dist is not None
            return self._gmm_dist
        return super().z_dist(values)
