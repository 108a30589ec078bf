"""Ex-post density estimation: a standard VAE whose p(z) is replaced by a GMM fitted to q(z)."""

from __future__ import annotations

from mixvae.models.priors import PRIORS, StandardPrior


@PRIORS.register("posthoc-gmm")
class PosthocGMMPrior(StandardPrior):
    r"""Ex-post density estimation (Ghosh et al. 2020).

    .. math::

        z \sim \mathcal{N}(0, I_D) \ \text{(training)}, \qquad
        z \sim \sum_k \hat\pi_k \mathcal{N}(\hat\mu_k, \hat\Sigma_k) \ \text{(after training)}

    Trained exactly like ``standard``; at the end of training a full-covariance
    GMM is fitted to the aggregate posterior and saved with the run
    (``posthoc_gmm.pt``, see :mod:`mixvae.evaluation.posthoc`) for sampling and
    likelihood evaluation.  Any other run gets one on first use.
    """

    story = "z ~ N(0, I) in training; then a GMM fitted to q(z) for sampling and likelihood"
    fits_posthoc_gmm = True
