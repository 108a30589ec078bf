"""The guide contract shared by every encoder."""

from __future__ import annotations

import math
import re
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any, ClassVar

import pyro
import pyro.distributions as dist
import torch
from pyro.nn import PyroModule
from torch import nn

from mixvae import sites as _sites
from mixvae.distributions import distribution_mean, distribution_variance
from mixvae.networks import MLPEncoder, data_shape_of
from mixvae.nn import check_batch, data_plate, unique_pyro_name
from mixvae.options import NoOptions
from mixvae.registry import Registry
from mixvae.sites import Site

if TYPE_CHECKING:
    from mixvae.config import TrainConfig

GUIDES: Registry[type[Guide]] = Registry("guide")


class Guide(PyroModule):
    """An amortised encoder providing ``"z"`` (and possibly the model's ``"y"``).

    A guide declares its sample sites once in :attr:`sites` (see
    :mod:`mixvae.sites`): each names the method ``method(h, values)`` that
    returns the site's distribution, where ``h = encode(x)`` is the encoder
    body's output and ``values`` holds the sites before it.  A site marked
    ``enumerated`` is the model's discrete site, summed out in the guide
    (the structured GMVAE guide's ``y``).  The Pyro program
    (:meth:`sample_latents`), the direct ELBO, :meth:`q_latents`,
    :meth:`log_q` and :meth:`component_logits` are read from the declaration.

    Capabilities with defaults: :meth:`q_mean` (the closed-form mean of
    q(z | x) where the distribution has one, else a sample mean) and
    :meth:`diag_components` (q(z | x) as diagonal Gaussians, for the
    VampPrior's fast density).

    The encoder body is a network part (:mod:`mixvae.networks`: ``mlp``,
    ``conv`` or a user's module), handed to :meth:`from_config`; the guide
    owns the heads that turn its features into the sites' parameters.

    :param data_shape: shape of one ``x``: ``(P,)`` (an int P is taken as it) or ``(C, H, W)``.
    :param latent_dim: dimension D of ``z``.
    """

    #: the sample sites, in the order of the variational story
    sites: ClassVar[tuple[Site, ...]] = (Site("z", "z_dist"),)
    #: the guide's own options (a dataclass of :func:`mixvae.options.option` fields)
    Options: ClassVar[type] = NoOptions
    story: ClassVar[str] = ""
    name: ClassVar[str] = ""
    #: draws for :meth:`q_mean` when q(z|x) has no closed-form mean
    mean_samples: ClassVar[int] = 256
    # derived from ``sites`` (read-only views kept for code written against mixvae 0.1)
    provides: ClassVar[tuple[str, ...]] = ("z",)
    discrete_site: ClassVar[str | None] = None

    def __init_subclass__(cls, **kwargs: object) -> None:
        super().__init_subclass__(**kwargs)
        if "sites" in vars(cls):
            _sites.check_declaration(f"guide {cls.__name__}", cls.sites)
            cls.provides = _sites.names(cls.sites)
            enumerated = _sites.enumerated_names(cls.sites)
            cls.discrete_site = enumerated[0] if enumerated else None

    def __init__(self, data_shape: int | Sequence[int], latent_dim: int) -> None:
        super().__init__(name=unique_pyro_name(self))
        self.data_shape = data_shape_of(data_shape)
        self.latent_dim = latent_dim

    @property
    def data_dim(self) -> int:
        """The number P of values of one ``x`` (the product of :attr:`data_shape`)."""
        return math.prod(self.data_shape)

    def default_body(self, hidden: Sequence[int]) -> nn.Module:
        """The MLP body with ``hidden`` layers, for a guide built by hand without a ``body``."""
        return MLPEncoder(self.data_dim, hidden)

    @classmethod
    def from_config(cls, config: TrainConfig, data_shape: tuple[int, ...], body: nn.Module) -> Guide:
        """Build the guide a training configuration asks for, around the encoder ``body``
        (``(B, *data_shape) -> (B, body.out_features)``, made by the configured network)."""
        raise NotImplementedError

    @property
    def num_components(self) -> int:
        """Number of components of q(z | x) (1 for a Gaussian)."""
        return 1

    def encode(self, x: torch.Tensor) -> Any:
        """The encoder body's output ``h`` that the site methods read (computed once per batch)."""
        raise NotImplementedError(f"guide {type(self).__name__} declares no encoder body (encode)")

    def site_dist(self, site: Site, h: Any, values: Mapping[str, torch.Tensor]) -> dist.TorchDistribution:
        """The distribution of ``site`` given the body output ``h`` and the sites before it."""
        return getattr(self, site.dist)(h, values)

    def q_z(self, x: torch.Tensor) -> dist.TorchDistribution:
        """The encoder distribution q(z | x): batch shape (B,), event shape (D,).

        The default reads the declaration of a guide without an enumerated site;
        a guide that enumerates its own ``y`` returns the marginal over ``y``.
        """
        if self.discrete_site is not None:
            raise NotImplementedError(
                f"guide {self.name!r} must give the marginal q(z|x) over its {self.discrete_site!r}"
            )
        site = next(s for s in self.sites if s.name == "z")
        return self.site_dist(site, self.encode(x), {})  # the z site alone (not w as well)

    def q_latents(self, x: torch.Tensor) -> dict[str, dist.TorchDistribution]:
        """q of every continuous site the guide provides, independent given x.

        A guide with an enumerated site gives ``{"z": q_z(x)}``, the marginal.
        """
        if self.discrete_site is not None:
            return {"z": self.q_z(x)}
        h = self.encode(x)
        return {site.name: self.site_dist(site, h, {}) for site in self.sites}

    def log_q(self, latents: Mapping[str, torch.Tensor], x: torch.Tensor) -> torch.Tensor:
        """log q of the continuous latents given x, discrete sites summed out."""
        return sum(q.log_prob(latents[k]) for k, q in self.q_latents(x).items())

    def q_mean(self, x: torch.Tensor) -> torch.Tensor:
        """E[z | x] under q: the closed form where the distribution has one, else a
        mean of :attr:`mean_samples` draws; shape (B, D)."""
        return distribution_mean(self.q_z(x), self.mean_samples)

    def q_variance(self, x: torch.Tensor) -> torch.Tensor:
        """Var[z | x] per coordinate under q (closed form, else from draws); shape (B, D)."""
        return distribution_variance(self.q_z(x), self.mean_samples)

    def diag_components(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """q(z | x) as a mixture of M diagonal Gaussians: ``(logits (B, M), locs (B, M, D), scales (B, M, D))``.

        Lets a prior built from the encoder (the VampPrior) evaluate its density
        with matrix products; guides whose q(z|x) is not of this form raise
        :class:`NotImplementedError` and the prior falls back to torch's mixture.
        """
        raise NotImplementedError(f"guide {self.name!r} is not a mixture of diagonal Gaussians")

    def component_logits(self, x: torch.Tensor) -> torch.Tensor:
        """Logits of q(y | x), shape (B, K); only for guides that provide ``y``."""
        if self.discrete_site is None:
            raise NotImplementedError(f"guide {self.name!r} does not provide a discrete site")
        site = next(s for s in self.sites if s.enumerated)
        return self.site_dist(site, self.encode(x), {}).logits

    def sample_latents(self, x: torch.Tensor, labels: torch.Tensor | None = None) -> torch.Tensor:
        """Declare the guide's sample sites (inside the data plate); return z.

        ``labels`` are the observed values of the model's discrete site; a
        guide that provides that site then conditions on them instead.
        """
        h = self.encode(x)
        values: dict[str, torch.Tensor] = {}
        for site in self.sites:
            if site.enumerated and labels is not None:
                values[site.name] = labels  # observed in the model: condition on the label
                continue
            fn = self.site_dist(site, h, values)
            infer = {"enumerate": "parallel"} if site.enumerated else {}
            values[site.name] = pyro.sample(site.name, fn, infer=infer)
        return values["z"]

    def forward(
        self, x: torch.Tensor, num_data: int | None = None, labels: torch.Tensor | None = None
    ) -> torch.Tensor:
        check_batch(x, self.data_shape)
        with data_plate(x, num_data):
            return self.sample_latents(x, labels)


def legacy_mlp_keys(state_dict: dict, prefix: str, *args: object) -> None:
    """``load_state_dict`` pre-hook: the keys of a mixvae 0.1 guide whose one MLP ``net``
    ended in its head become ``body.*`` and ``head.*`` (the same layers, the same order)."""
    pattern = re.compile(re.escape(prefix) + r"net\.(\d+)\.(.+)")
    found = {k: pattern.fullmatch(k) for k in list(state_dict)}
    found = {k: m for k, m in found.items() if m}
    if not found:
        return
    last = max(int(m.group(1)) for m in found.values())
    for key, m in found.items():
        i, rest = int(m.group(1)), m.group(2)
        new = f"{prefix}head.{rest}" if i == last else f"{prefix}body.{i}.{rest}"
        state_dict[new] = state_dict.pop(key)
