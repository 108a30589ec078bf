"""The model: a prior over the latent sites plus a decoder for ``x``."""

from __future__ import annotations

from typing import TYPE_CHECKING

import pyro
import torch
from pyro.nn import PyroModule

from mixvae.models.decoders import Decoder
from mixvae.models.priors import Prior
from mixvae.nn import check_batch, data_plate, unique_pyro_name

if TYPE_CHECKING:
    from mixvae.config import TrainConfig


class VAE(PyroModule):
    r"""A variational-autoencoder model: ``prior`` then ``decoder``.

    .. math::

        z &\sim p(z) \quad \text{(with a component } y \text{ for mixture priors)} \\
        x \mid z &\sim p_\theta(x \mid z)

    Calling the model runs it as a Pyro model; all its local sites live in one
    ``pyro.plate("data", num_data)`` (``max_plate_nesting=1``).  Called without
    data it is the generative model: ``x`` is drawn from the decoder, so
    ``pyro.infer.Predictive(model, num_samples=S)(batch_size=B)`` gives S x B
    draws of every site from the prior (``Predictive(poutine.uncondition(model),
    guide=guide, num_samples=S)(x)`` the posterior predictive).

    :param prior: a :class:`~mixvae.models.priors.Prior`.
    :param decoder: a :class:`~mixvae.models.decoders.Decoder`.
    """

    def __init__(self, prior: Prior, decoder: Decoder) -> None:
        super().__init__(name=unique_pyro_name(self))
        self.prior = prior
        self.decoder = decoder
        #: the configuration :func:`mixvae.build` made the model from (``None`` when built by hand)
        self.config: TrainConfig | None = None

    @property
    def latent_dim(self) -> int:
        return self.prior.latent_dim

    def forward(
        self,
        x: torch.Tensor | None = None,
        num_data: int | None = None,
        labels: torch.Tensor | None = None,
        *,
        batch_size: int | None = None,
    ) -> torch.Tensor:
        """Score ``x`` (shape ``(B, *data_shape)``); ``num_data`` scales the minibatch to the data set.

        ``labels`` (shape (B,)) observe the prior's discrete site instead of
        enumerating it (semi-supervised training).  With ``x=None`` the model
        draws ``batch_size`` points (default: one per label, else 1) from
        p(z) p(x | z) and scores nothing.
        """
        if x is None and batch_size is None and labels is not None:
            batch_size = len(labels)
        if x is not None:
            check_batch(x, self.decoder.data_shape)
        with data_plate(x, num_data, batch_size):
            z = self.prior(labels)
            pyro.sample("x", self.decoder(z), obs=x)
        return z

    @torch.no_grad()
    def sample(self, n: int, component: int | None = None) -> torch.Tensor:
        """Decoder means E[x | z] for ``n`` draws of z from the prior (or one component)."""
        return self.decoder.mean(self.prior.sample_z(n, component))
