"""Ex-post density estimation (Ghosh et al. 2020): a GMM fitted to the aggregate posterior.

After training, a full-covariance Gaussian mixture (scikit-learn) is fitted to
the encoder means (or to samples) over the training set.  It is saved with the
run as ``posthoc_gmm.pt`` (tensors only) and serves as a sampling distribution
and as an alternative prior p(z) for likelihood evaluation: the answer to
"what should generation sample from, if q(z) is not N(0, I)?".
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np
import torch
from sklearn.mixture import GaussianMixture

from mixvae.data import Dataset
from mixvae.guides import Guide
from mixvae.models.posthoc import PosthocGMM
from mixvae.runs.folder import load_posthoc_gmm, save_posthoc_gmm

if TYPE_CHECKING:
    from mixvae.runs.folder import Run


@torch.no_grad()
def latent_codes(
    guide: Guide, x: torch.Tensor, source: str = "means", batch_size: int = 1000
) -> torch.Tensor:
    """Encoder means (``source="means"``) or one draw per datapoint (``"samples"``) of q(z|x)."""
    if source not in ("means", "samples"):
        raise ValueError(f"source must be 'means' or 'samples', got {source!r}")
    out = [(guide.q_mean(b) if source == "means" else guide.q_z(b).sample()) for b in x.split(batch_size)]
    return torch.cat(out)


def fit_posthoc_gmm(
    guide: Guide,
    x: torch.Tensor,
    num_components: int = 10,
    *,
    select_by_bic: bool = False,
    source: str = "means",
    seed: int = 0,
) -> PosthocGMM:
    """Fit a full-covariance GMM to the aggregate posterior of ``x`` under ``guide``.

    :param num_components: K, or with ``select_by_bic`` the largest K tried
        (K = 1 .. num_components, the lowest BIC wins).
    :param source: fit to encoder ``"means"`` or to ``"samples"`` of q(z|x).
    """
    z = latent_codes(guide, x, source).cpu().double().numpy()
    candidates = range(1, num_components + 1) if select_by_bic else [num_components]
    best, best_bic = None, np.inf
    for k in candidates:
        gmm = GaussianMixture(k, covariance_type="full", random_state=seed, reg_covar=1e-5).fit(z)
        bic = gmm.bic(z) if select_by_bic else 0.0
        if bic < best_bic or best is None:
            best, best_bic = gmm, bic
    assert best is not None
    device = next(guide.parameters()).device

    def t(a: np.ndarray) -> torch.Tensor:
        return torch.as_tensor(a, dtype=torch.float32, device=device)

    return PosthocGMM(t(best.weights_), t(best.means_), t(best.covariances_), source)


def ensure_posthoc_gmm(run: Run, data: Dataset, refit: bool = False) -> PosthocGMM:
    """The run's post-hoc GMM: loaded from the run folder, or fitted and saved there.

    For a prior that declares ``fits_posthoc_gmm`` it also becomes the prior's p(z).
    """
    assert run.run_dir is not None
    gmm = None if refit else load_posthoc_gmm(run.run_dir)
    if gmm is None:
        device = next(run.guide.parameters()).device
        gmm = fit_posthoc_gmm(
            run.guide,
            data.train_x.to(device),
            run.config.posthoc_components,
            select_by_bic=run.config.posthoc_bic,
            seed=run.config.seed,
        )
        save_posthoc_gmm(run.run_dir, gmm)
    if run.model.prior.fits_posthoc_gmm:  # the prior's p(z) from now on
        run.model.prior.set_gmm(gmm)
    return gmm
