"""Generation from a trained run: from the prior, the aggregate posterior, or the post-hoc GMM."""

from __future__ import annotations

import torch

from mixvae.data import Dataset
from mixvae.errors import ConfigError
from mixvae.evaluation.aggregate import sample_aggregate_posterior
from mixvae.evaluation.clustering import cluster_assignments
from mixvae.evaluation.posthoc import ensure_posthoc_gmm
from mixvae.runs.folder import Run

SOURCES = ("prior", "aggregate", "posthoc-gmm")


def _check_component(component: int, k: int, what: str) -> None:
    if k == 0:
        raise ConfigError(f"{what} has no mixture components; drop --component")
    if not 0 <= component < k:
        raise ConfigError(f"--component must lie in 0..{k - 1} for {what}, got {component}")


@torch.no_grad()
def sample_latents(
    run: Run, n: int, source: str = "prior", component: int | None = None, data: Dataset | None = None
) -> torch.Tensor:
    """``n`` latent codes, shape (n, D), drawn from one of :data:`SOURCES`.

    * ``prior``: p(z), or p(z | component) for a mixture prior.
    * ``aggregate``: q(z) = mean_x q(z|x): z ~ q(z|x) for random training x
      (with ``component``: only x the model assigns to that cluster).
    * ``posthoc-gmm``: the GMM fitted to q(z) after training (fitted and saved on first use).
    """
    if n < 1:
        raise ConfigError(f"--n must be a positive integer, got {n}")
    if source not in SOURCES:
        raise ConfigError(f"unknown source {source!r}; choose one of: {', '.join(SOURCES)}")
    prior = run.model.prior
    if source == "prior":
        if component is not None:
            _check_component(component, prior.num_components, f"prior {prior.name!r}")
        with prior.as_trained():  # posthoc-gmm: N(0, I); its GMM is the source below
            return prior.sample_z(n, component)
    if data is None:
        raise ConfigError(f"sampling from {source!r} needs the training data")
    device = next(run.guide.parameters()).device
    if source == "posthoc-gmm":
        gmm = ensure_posthoc_gmm(run, data)
        if component is not None:
            _check_component(component, gmm.num_components, "the post-hoc GMM")
        return gmm.sample(n, component)
    x = data.train_x.to(device)
    if component is not None:
        k = prior.num_components if run.guide.discrete_site is None else run.guide.num_components
        _check_component(component, k, f"the {prior.name}/{run.guide.name} pair")
        x = x[cluster_assignments(run.model, run.guide, x) == component]
        if len(x) == 0:
            raise EmptyComponentError(f"no training point is assigned to component {component}; pick another")
    return sample_aggregate_posterior(run.guide, x, n, seed=None)


class EmptyComponentError(ConfigError):
    """No training point belongs to the asked-for component of the aggregate posterior."""


@torch.no_grad()
def sample_images(
    run: Run, n: int, source: str = "prior", component: int | str | None = None, data: Dataset | None = None
) -> torch.Tensor:
    """Decoder means of sampled codes: shape ``(rows, cols, *data_shape)``.

    ``component="all"`` gives one row of ``n`` samples per component (the
    classic GMVAE figure); otherwise one batch of ``n`` laid out near-square.
    """
    decode = run.model.decoder.mean
    if component == "all":
        k = run.model.prior.num_components
        if source == "posthoc-gmm":
            assert data is not None
            k = ensure_posthoc_gmm(run, data).num_components
        if k == 0:
            raise ConfigError(f"prior {run.model.prior.name!r} has no mixture components; drop --component")
        rows = []
        for j in range(k):
            try:
                rows.append(decode(sample_latents(run, n, source, j, data)))
            except EmptyComponentError:  # an unused cluster: a blank row keeps rows = components
                shape = run.model.decoder.data_shape
                rows.append(torch.zeros(n, *shape, device=rows[0].device if rows else None))
        return torch.stack(rows)
    images = decode(sample_latents(run, n, source, component, data))
    cols = int(torch.ceil(torch.tensor(n**0.5)))
    rows = -(-n // cols)
    pad = images.new_zeros(rows * cols - n, *images.shape[1:])
    return torch.cat([images, pad]).reshape(rows, cols, *images.shape[1:])
