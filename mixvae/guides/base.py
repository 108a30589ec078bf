"""The guide contract shared by every encoder."""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING

import pyro
import pyro.distributions as dist
import torch
from pyro.nn import PyroModule

from mixvae.nn import data_plate, unique_pyro_name
from mixvae.registry import Registry

if TYPE_CHECKING:
    from mixvae.config import TrainConfig

GUIDES: Registry[type[Guide]] = Registry("guide")


class Guide(PyroModule):
    """An amortised encoder providing ``"z"`` (and possibly the model's ``"y"``).

    Subclasses implement :meth:`q_z` and :meth:`sample_latents`; calling the
    guide runs it as a Pyro guide inside the ``"data"`` plate.

    :param data_dim: dimension P of ``x``.
    :param latent_dim: dimension D of ``z``.
    """

    #: the model's latent sites this guide provides
    provides: tuple[str, ...] = ("z",)
    #: the discrete site among them, or ``None``
    discrete_site: str | None = None
    story: str = ""
    name: str = ""

    def __init__(self, data_dim: int, latent_dim: int) -> None:
        super().__init__(name=unique_pyro_name(self))
        self.data_dim = data_dim
        self.latent_dim = latent_dim

    @classmethod
    def from_config(cls, config: TrainConfig, data_dim: int) -> Guide:
        """Build the guide a training configuration asks for."""
        raise NotImplementedError

    @property
    def num_components(self) -> int:
        """Number of components of q(z | x) (1 for a Gaussian)."""
        return 1

    def q_z(self, x: torch.Tensor) -> dist.TorchDistribution:
        """The encoder distribution q(z | x): batch shape (B,), event shape (D,)."""
        raise NotImplementedError

    def diag_components(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """q(z | x) as a mixture of M diagonal Gaussians: ``(logits (B, M), locs (B, M, D), scales (B, M, D))``.

        Lets a prior built from the encoder (the VampPrior) evaluate its density
        with matrix products; guides whose q(z|x) is not of this form raise
        :class:`NotImplementedError` and the prior falls back to torch's mixture.
        """
        raise NotImplementedError(f"guide {self.name!r} is not a mixture of diagonal Gaussians")

    def q_latents(self, x: torch.Tensor) -> dict[str, dist.TorchDistribution]:
        """q of every continuous site the guide provides, independent given x (``{"z": q_z(x)}``)."""
        return {"z": self.q_z(x)}

    def log_q(self, latents: Mapping[str, torch.Tensor], x: torch.Tensor) -> torch.Tensor:
        """log q of the continuous latents given x, discrete sites summed out."""
        return sum(q.log_prob(latents[k]) for k, q in self.q_latents(x).items())

    def component_logits(self, x: torch.Tensor) -> torch.Tensor:
        """Logits of q(y | x), shape (B, K); only for guides that provide ``y``."""
        raise NotImplementedError(f"guide {self.name!r} does not provide a discrete site")

    def enumerated_q(self, x: torch.Tensor) -> tuple[torch.Tensor, dist.TorchDistribution]:
        """For every value of the guide's ``y`` at once: ``log q(y | x)`` of shape (K, B) and
        ``q(z | x, y)`` with batch shape (K, B), as the guide's sites give them when Pyro
        enumerates ``y``; only for guides that provide ``y``.  Optional: it lets the trainer
        compute the ELBO without Pyro's tracing (:func:`~mixvae.inference.objectives.direct_loss`).
        """
        raise NotImplementedError(f"guide {self.name!r} does not enumerate a discrete site itself")

    def sample_latents(self, x: torch.Tensor, labels: torch.Tensor | None = None) -> torch.Tensor:
        """Declare the guide's sample sites (inside the data plate); return z.

        ``labels`` are the observed values of the model's discrete site; a
        guide that provides that site then conditions on them instead.
        """
        return pyro.sample("z", self.q_z(x))

    def forward(
        self, x: torch.Tensor, num_data: int | None = None, labels: torch.Tensor | None = None
    ) -> torch.Tensor:
        with data_plate(x, num_data):
            return self.sample_latents(x, labels)
