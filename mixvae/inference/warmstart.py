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
from typing import TYPE_CHECKING, Any

import torch
from sklearn.mixture import GaussianMixture

from mixvae.errors import ConfigError
from mixvae.guides import Guide
from mixvae.models import VAE, Prior
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
    """Fit a prior that declares ``fits_codes`` to encoder ``codes`` (see :meth:`Prior.fit_to_codes
    <mixvae.models.GMMPrior.fit_to_codes>`); the others refuse with a one-line error."""
    if not prior.fits_codes:
        raise ConfigError(
            f"prior {prior.name!r} has no Gaussian-mixture components to fit to the codes; "
            "use --prior gmm or gmm-full with --init-from"
        )
    return prior.fit_to_codes(codes, code_variances=code_variances, seed=seed, n_init=n_init)


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
        SHA-256 of the checkpoint that was read and, with ``config.init_fits`` > 1, every
        fit's GMM seed and training ELBO (:func:`choose_fit`); ``train`` saves it as
        ``init_from.json`` in the new run folder.
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
    digest = hashlib.sha256(checkpoint.read_bytes()).hexdigest()
    origin: dict[str, Any] = {"run": str(source_dir.resolve()), "checkpoint_sha256": digest}
    if model.prior.fits_codes:
        means, variances = [], []
        with torch.no_grad():
            for batch in train_x.split(1000):
                means.append(guide.q_mean(batch))
                variances.append(guide.q_variance(batch))
        codes, code_variances = torch.cat(means), torch.cat(variances)
        fits = 1 if config is None else config.init_fits
        if fits == 1:
            fit_prior_to_codes(model.prior, codes, code_variances=code_variances, seed=seed)
        else:
            origin["fits"] = choose_fit(model, guide, codes, code_variances, train_x, fits, seed)
    return origin


def choose_fit(
    model: VAE,
    guide: Guide,
    codes: torch.Tensor,
    code_variances: torch.Tensor,
    train_x: torch.Tensor,
    fits: int,
    seed: int,
) -> list[dict[str, Any]]:
    """Fit the prior ``fits`` times (GMM seeds ``seed``, ``seed + 1``, ...) and keep the fit under
    which the model's ELBO of ``train_x`` is highest: the model's own objective (with fixed
    uniform weights it prefers balanced clusters), where the GMM's likelihood of the codes does
    not predict which fit clusters best.  No labels are used.

    :returns: each fit's seed and training ELBO, the chosen one marked.
    """
    from mixvae.inference.objectives import evaluate_elbo

    scores, states = [], []
    for r in range(fits):
        fit_prior_to_codes(model.prior, codes, code_variances=code_variances, seed=seed + r)
        scores.append(evaluate_elbo(model, guide, train_x, seed=seed))
        states.append({k: v.clone() for k, v in model.prior.state_dict().items()})
    best = max(range(fits), key=scores.__getitem__)
    model.prior.load_state_dict(states[best])
    return [{"gmm_seed": seed + r, "training_elbo": e, "chosen": r == best} for r, e in enumerate(scores)]
