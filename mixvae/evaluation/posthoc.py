"""Ex-post density estimation (Ghosh et al. 2020): a GMM fitted to the aggregate posterior.

After training, a full-covariance Gaussian mixture (scikit-learn) is fitted to
the encoder means (or to samples) over the training set.  It is saved with the
run as ``posthoc_gmm.pt`` (tensors only) and serves as a sampling distribution
and as an alternative prior p(z) for likelihood evaluation: the answer to
"what should generation sample from, if q(z) is not N(0, I)?".
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import pyro.distributions as dist
import torch
from sklearn.mixture import GaussianMixture

from mixvae.data import Dataset
from mixvae.guides import Guide
from mixvae.runs.checkpoint import load_checkpoint, save_checkpoint

if TYPE_CHECKING:
    from mixvae.runs.folder import Run

FILENAME = "posthoc_gmm.pt"


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

    def component_distribution(self, k: int) -> dist.TorchDistribution:
        return dist.MultivariateNormal(self.means[k], covariance_matrix=self.covariances[k])

    def sample(self, n: int, component: int | None = None) -> torch.Tensor:
        d = self.distribution() if component is None else self.component_distribution(component)
        return d.sample((n,))

    def save(self, run_dir: str | Path) -> None:
        save_checkpoint(
            Path(run_dir) / FILENAME,
            {
                "config": "{}",
                "weights": self.weights,
                "means": self.means,
                "covariances": self.covariances,
                "source": self.source,
            },
        )

    @classmethod
    def load(cls, run_dir: str | Path) -> PosthocGMM | None:
        """The GMM saved with a run, or ``None`` when the run has none."""
        path = Path(run_dir) / FILENAME
        if not path.exists():
            return None
        p = load_checkpoint(path)
        return cls(p["weights"], p["means"], p["covariances"], p["source"])


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
    """The run's post-hoc GMM: loaded from the run folder, or fitted and saved there."""
    assert run.run_dir is not None
    gmm = None if refit else PosthocGMM.load(run.run_dir)
    if gmm is None:
        device = next(run.guide.parameters()).device
        gmm = fit_posthoc_gmm(
            run.guide,
            data.train_x.to(device),
            run.config.posthoc_components,
            select_by_bic=run.config.posthoc_bic,
            seed=run.config.seed,
        )
        gmm.save(run.run_dir)
    return gmm
