"""Warm starts: begin a run from a trained run's networks, with the prior fitted to its codes.

This is the pretraining recipe of VaDE (Jiang et al. 2017): train a plain
autoencoder (here: a ``standard x gaussian`` VAE, an ordinary mixvae run),
fit a Gaussian mixture to its encoder means on the training data, and start
the mixture-prior model from those networks and that mixture.  Without it, a
mixture prior trained from scratch settles on whatever clusters the first
epochs happen to form.
"""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import torch
from sklearn.mixture import GaussianMixture

from mixvae.errors import ConfigError
from mixvae.guides import Guide
from mixvae.models import VAE
from mixvae.models.priors import FullCovGMMPrior, GMMPrior, Prior
from mixvae.runs.folder import load_run

if TYPE_CHECKING:
    from mixvae.config import TrainConfig


@torch.no_grad()
def fit_prior_to_codes(
    prior: Prior,
    codes: torch.Tensor,
    *,
    code_variances: torch.Tensor | None = None,
    seed: int = 0,
    n_init: int = 1,
) -> GaussianMixture:
    """Set a ``gmm`` or ``gmm-full`` prior to the maximum-likelihood mixture of ``codes``.

    Fits scikit-learn's :class:`~sklearn.mixture.GaussianMixture` with the
    prior's K and covariance type (``diag`` for ``gmm``, ``full`` for
    ``gmm-full``) and copies its weights, means and scales into the prior
    (only the means and scales if the prior's weights are fixed uniform).

    :param codes: (N, D) latent codes, e.g. encoder means of the training data.
    :param code_variances: (N, D) variances of q(z|x) around those means; when
        given, each component's covariance gains the responsibility-weighted
        mean of them, so that component k matches the first two moments of
        its share of the aggregate posterior, sum_n r_nk q(z|x_n), and not only
        of the means (which have almost no spread along inactive units).
    :returns: the fitted scikit-learn mixture.
    """
    if not isinstance(prior, GMMPrior):
        raise ConfigError(
            f"prior {prior.name!r} has no Gaussian-mixture components to fit to the codes; "
            "use --prior gmm or gmm-full with --init-from"
        )
    full = isinstance(prior, FullCovGMMPrior)
    z = codes.detach().cpu().double().numpy()
    if z.ndim != 2 or z.shape[1] != prior.latent_dim:
        raise ConfigError(
            f"codes of shape {tuple(z.shape)} do not match the prior's latent dim {prior.latent_dim}"
        )
    if len(z) < prior.num_components:
        raise ConfigError(
            f"{len(z)} codes cannot be fitted with {prior.num_components} components; use more data"
        )
    if not np.isfinite(z).all():
        raise ConfigError("the encoder gave non-finite codes; the run to start from has diverged")
    gmm = GaussianMixture(
        prior.num_components,
        covariance_type="full" if full else "diag",
        random_state=seed,
        n_init=n_init,
        reg_covar=1e-5,
    ).fit(z)
    cov = gmm.covariances_.copy()
    if code_variances is not None:
        resp = gmm.predict_proba(z)  # (N, K)
        mass = resp.sum(0)[:, None] + 10 * np.finfo(resp.dtype).eps  # as scikit-learn guards empty components
        extra = resp.T @ code_variances.detach().cpu().double().numpy() / mass  # (K, D)
        if full:
            cov += extra[:, :, None] * np.eye(z.shape[1])
        else:
            cov += extra
    ref = prior.locs

    def t(a: np.ndarray) -> torch.Tensor:
        return torch.as_tensor(a, dtype=ref.dtype, device=ref.device)

    if prior.learn_weights:  # a prior with fixed uniform weights keeps them
        prior.logits = t(np.log(gmm.weights_))
    prior.locs = t(gmm.means_)
    if full:
        prior.scale_tril = t(np.linalg.cholesky(cov))
    else:
        prior.scales = t(np.sqrt(cov))
    return gmm


def _copy_state(dst: torch.nn.Module, src: torch.nn.Module, what: str, source: Path) -> None:
    want = {k: tuple(v.shape) for k, v in dst.state_dict().items()}
    have = {k: tuple(v.shape) for k, v in src.state_dict().items()}
    if want != have:
        diff = sorted(set(want.items()) ^ set(have.items()))[:4]
        raise ConfigError(
            f"the {what} of {source} does not match this run's (differing tensors: {diff}); "
            "--init-from needs a run with the same --guide, --latent-dim, --hidden and data"
        )
    dst.load_state_dict(src.state_dict())


def warm_start(
    model: VAE,
    guide: Guide,
    source_dir: str | Path,
    train_x: torch.Tensor,
    *,
    config: TrainConfig | None = None,
    seed: int = 0,
) -> dict[str, str]:
    """Copy the encoder and decoder of the run in ``source_dir``; fit a mixture prior to its codes.

    The guide and the decoder must have the same architecture as the source
    run's (typically a ``standard x gaussian`` run with the same
    ``--latent-dim`` and ``--hidden``).  A ``gmm`` / ``gmm-full`` prior is then
    set by :func:`fit_prior_to_codes` to the encoder means of ``train_x``
    (pass the data as the encoder sees them: binarised, with
    ``--binarize dynamic``); other priors keep their own initialisation and
    only the networks are copied.

    :param config: the new run's settings; when given, its data set,
        binarisation and likelihood must be the source run's.
    :returns: where the warm start came from: the source folder and the
        SHA-256 of the checkpoint that was read (``train`` saves it as
        ``init_from.json`` in the new run folder).
    """
    source_dir = Path(source_dir)
    checkpoint = source_dir / "checkpoint.pt"
    if not checkpoint.exists():
        raise ConfigError(f"--init-from {source_dir}: no checkpoint.pt there; train that run first")
    source = load_run(source_dir, device=str(train_x.device))
    if config is not None:
        for name in ("dataset", "binarize", "likelihood"):
            have, want = getattr(source.config, name), getattr(config, name)
            if have != want:
                raise ConfigError(
                    f"--init-from {source_dir}: that run has {name} {have!r}, this one {want!r}; "
                    "start from a run trained on the same data"
                )
    _copy_state(guide, source.guide, "guide", source_dir)
    _copy_state(model.decoder, source.model.decoder, "decoder", source_dir)
    if isinstance(model.prior, GMMPrior):
        means, variances = [], []
        with torch.no_grad():
            for batch in train_x.split(1000):
                q = guide.q_z(batch)
                means.append(q.mean)
                variances.append(q.variance)
        fit_prior_to_codes(model.prior, torch.cat(means), code_variances=torch.cat(variances), seed=seed)
    digest = hashlib.sha256(checkpoint.read_bytes()).hexdigest()
    return {"run": str(source_dir.resolve()), "checkpoint_sha256": digest}
