"""The structured GMVAE guide q(y | x) q(z | x, y)."""

from __future__ import annotations

import copy
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import pyro
import pyro.distributions as dist
import torch
from torch import nn

from mixvae.distributions import diag_normal_mixture
from mixvae.guides.base import GUIDES, Guide
from mixvae.nn import positive
from mixvae.options import components_option, option
from mixvae.sites import Site

if TYPE_CHECKING:
    from mixvae.config import TrainConfig


@GUIDES.register("categorical")
class CategoricalGuide(Guide):
    r"""The structured GMVAE guide (Rui Shu's GMVAE; Kingma et al. 2014, M2).

    .. math::

        y \mid x &\sim \mathrm{Categorical}(\pi(x)) \\
        z \mid x, y &\sim \mathcal{N}(\mu(x, y), \mathrm{diag}\,\sigma(x, y)^2)

    It provides the model's discrete site ``y``, enumerated in the guide
    (``infer={"enumerate": "parallel"}``), so the expectation over ``y`` is
    exact and the decoder runs once per component.  It pairs only with priors
    that have that site (refused otherwise: a ``y`` that existed only in the
    guide would inflate the bound).

    The encoder body is shared: ``h = f(x)``; ``pi(x) = softmax(W h)``;
    ``(mu, sigma)(x, y) = g(A h + E[y])`` with a learned embedding ``E`` of y,
    which broadcasts over an enumerated ``y`` without copying ``h``.  With
    ``y_network="separate"`` (``--y-network separate``, the layout of Rui Shu's
    GMVAE) q(y | x) reads a second body of its own, ``pi(x) = softmax(W f'(x))``,
    so that the gradients of q(z | x, y) do not shape the cluster assignments.

    :param data_shape: shape of one ``x``: ``(P,)`` (or an int P) or ``(C, H, W)``.
    :param latent_dim: dimension D of ``z``.
    :param num_components: number K of values of ``y`` (must equal the prior's).
    :param hidden: hidden layer sizes of the default MLP body.
    :param body: the shared encoder body (see :mod:`mixvae.networks`); default an MLP.
    :param y_body: q(y | x)'s own body (``None``: q(y | x) reads ``body``).
    """

    sites = (Site("y", "y_dist", enumerated=True), Site("z", "z_dist"))

    @dataclass
    class Options:
        components: int = components_option()
        y_network: str = option(
            "shared",
            "q(y|x) of the categorical guide: shared (its head on the encoder body of q(z|x,y)) | "
            "separate (its own body, a freshly initialised copy of the network, as in Rui Shu's GMVAE)",
            choices=("shared", "separate"),
            exclusive=True,
        )

    story = "y ~ q(y|x), z | x,y ~ N(mu(x,y), diag sigma(x,y)^2); provides the model's y"

    def __init__(
        self,
        data_shape: int | Sequence[int],
        latent_dim: int,
        num_components: int,
        hidden: Sequence[int] = (512, 512),
        *,
        body: nn.Module | None = None,
        y_body: nn.Module | None = None,
    ) -> None:
        super().__init__(data_shape, latent_dim)
        self.body = self.default_body(hidden) if body is None else body
        width = self.body.out_features
        self.y_body = y_body
        self.y_head = nn.Linear(width if y_body is None else y_body.out_features, num_components)
        self.h_proj = nn.Linear(width, width)
        self.y_embed = nn.Embedding(num_components, width)
        self.z_head = nn.Linear(width, 2 * latent_dim)
        pyro.nn.module.to_pyro_module_(self)

    @classmethod
    def from_config(
        cls, config: TrainConfig, data_shape: tuple[int, ...], body: nn.Module
    ) -> CategoricalGuide:
        y_body = fresh_copy(body) if config.y_network == "separate" else None
        return cls(data_shape, config.latent_dim, config.components, body=body, y_body=y_body)

    @property
    def num_components(self) -> int:
        return self.y_head.out_features

    def encode(self, x: torch.Tensor) -> Any:
        """``h = f(x)`` (B, H); with a separate body of q(y | x), the pair ``(h, f'(x))``."""
        return self.body(x) if self.y_body is None else (self.body(x), self.y_body(x))

    def _split(self, h: Any) -> tuple[torch.Tensor, torch.Tensor]:
        """The features of q(z | x, y) and of q(y | x)."""
        return (h, h) if self.y_body is None else h

    def _z_params(self, h: torch.Tensor, y_emb: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        loc, raw = self.z_head(torch.relu(self.h_proj(h) + y_emb)).chunk(2, dim=-1)
        return loc, positive(raw)

    def y_dist(self, h: torch.Tensor, values: Mapping[str, torch.Tensor]) -> dist.TorchDistribution:
        return dist.Categorical(logits=self.y_head(self._split(h)[1]))

    def z_dist(self, h: torch.Tensor, values: Mapping[str, torch.Tensor]) -> dist.TorchDistribution:
        # y of shape (K, 1) when enumerated gives (K, B, D); y of shape (B,) gives (B, D)
        loc, scale = self._z_params(self._split(h)[0], self.y_embed(values["y"]))
        return dist.Normal(loc, scale).to_event(1)

    def q_z(self, x: torch.Tensor) -> dist.TorchDistribution:
        """The marginal sum_y q(y|x) q(z|x,y), a K-component mixture."""
        h, g = self._split(self.encode(x))
        emb = self.y_embed.weight  # (K, H)
        loc, scale = self._z_params(h.unsqueeze(-2), emb)  # (B, K, D)
        return diag_normal_mixture(loc, scale, self.y_head(g))


def fresh_copy(body: nn.Module) -> nn.Module:
    """A copy of the network ``body`` with every layer initialised afresh (``reset_parameters``):
    the same architecture, its own weights (a user's layer without ``reset_parameters``
    starts as a copy of the original)."""
    twin = copy.deepcopy(body)
    for module in twin.modules():
        reset = getattr(module, "reset_parameters", None)
        if callable(reset):
            reset()
    return twin
