"""The VampPrior: a mixture of the encoder's own distributions at learned pseudo-inputs."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

import pyro.distributions as dist
import torch

from mixvae.distributions import DiagNormalMixture
from mixvae.errors import ConfigError
from mixvae.models.decoders import LIKELIHOODS
from mixvae.models.priors import PRIORS, Prior
from mixvae.networks import data_shape_of
from mixvae.nn import reshape_flat_parameters
from mixvae.options import option
from mixvae.sites import Site

if TYPE_CHECKING:
    from mixvae.config import TrainConfig


@PRIORS.register("vampprior")
class VampPrior(Prior):
    r"""The VampPrior of Tomczak & Welling (2018): the encoder at learned pseudo-inputs.

    .. math::

        z \sim \frac{1}{K} \sum_{k=1}^{K} q_\phi(z \mid u_k)

    The pseudo-inputs :math:`u_k` are learned; :math:`q_\phi` is the paired
    guide's own encoder distribution (``guide.q_z``), so with the ``mixture``
    guide every component is itself a mixture and the density is a log-sum-exp
    over both levels, with no constant dropped.

    :param encoder: the guide whose ``q_z`` defines the components; it is used,
        not owned (its parameters stay the guide's).
    :param num_pseudo_inputs: K.
    :param data_shape: shape of the pseudo-inputs, the data's: ``(P,)`` (or an int P) or ``(C, H, W)``.
    :param unit_interval: keep the pseudo-inputs in [0, 1] (sigmoid), as the
        data of a Bernoulli likelihood are.
    :param pseudo_init: ``"random"``: start from near-constant grey images
        (sigmoid(-2 + 0.1 eps) ~ 0.12; Tomczak & Welling's code starts from
        near-constant images too, N(mean, 0.01) through a hardtanh);
        ``"data"``: :meth:`initialise_from_data` replaces them by K distinct
        random training images (their ``use_training_data_init``).
    """

    sites = (Site("z", "z_dist"),)
    story = "z ~ (1/K) sum_k q(z | u_k) with K learned pseudo-inputs u_k (the guide's encoder)"

    @dataclass
    class Options:
        pseudo_inputs: int = option(500, "number K of learned pseudo-inputs", minimum=1)
        pseudo_init: str = option(
            "random",
            "initial pseudo-inputs: random (near-constant images, like Tomczak & Welling's default) "
            "| data (K distinct random training images)",
            choices=("random", "data"),
        )

    def __init__(
        self,
        encoder: torch.nn.Module,
        num_pseudo_inputs: int,
        data_shape: int | Sequence[int],
        unit_interval: bool = True,
        pseudo_init: str = "random",
    ) -> None:
        super().__init__(encoder.latent_dim)
        if pseudo_init not in ("random", "data"):
            raise ConfigError(f"pseudo_init must be 'random' or 'data', got {pseudo_init!r}")
        self.pseudo_init = pseudo_init
        # Not a submodule: the encoder's parameters belong to the guide, and
        # registering them twice would hand them to the optimiser twice.
        object.__setattr__(self, "_encoder", encoder)
        self.unit_interval = unit_interval
        self.data_shape = data_shape_of(data_shape)
        init = torch.randn(num_pseudo_inputs, *self.data_shape) * 0.1 + (-2.0 if unit_interval else 0.0)
        self.pseudo_raw = torch.nn.Parameter(init)

    @classmethod
    def from_config(
        cls, config: TrainConfig, data_shape: tuple[int, ...], guide: torch.nn.Module
    ) -> VampPrior:
        unit = LIKELIHOODS[config.likelihood].data_support() == (0.0, 1.0)
        return cls(guide, config.pseudo_inputs, data_shape, unit, config.pseudo_init)

    @torch.no_grad()
    def initialise_from_data(self, x: torch.Tensor, generator: torch.Generator) -> None:
        if self.pseudo_init != "data":
            return
        k = len(self.pseudo_raw)
        if tuple(x.shape[1:]) != self.data_shape:
            raise ConfigError(
                f"data of shape {tuple(x.shape)} cannot initialise {k} pseudo-inputs of shape {self.data_shape}"
            )
        if len(x) < k:
            raise ConfigError(
                f"--pseudo-init data needs at least {k} training points, got {len(x)}; "
                "use fewer --pseudo-inputs or --pseudo-init random"
            )
        pick = torch.randperm(len(x), generator=generator, device=generator.device)[:k]
        u = x[pick.to(x.device)].to(self.pseudo_raw)
        if self.unit_interval:
            # logit of images clipped to [0.01, 0.99]: exact 0/1 pixels would need infinite raw values
            u = torch.logit(u.clamp(0.01, 0.99))
        self.pseudo_raw.copy_(u)

    def pseudo_inputs(self) -> torch.Tensor:
        """The K pseudo-inputs, shape ``(K, *data_shape)``."""
        return torch.sigmoid(self.pseudo_raw) if self.unit_interval else self.pseudo_raw

    def _load_from_state_dict(self, state_dict: dict, prefix: str, *args: object, **kwargs: object) -> None:
        reshape_flat_parameters(self, state_dict, prefix)  # a mixvae 0.1 run's flat pseudo-inputs
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)

    def z_dist(self, values: Mapping[str, torch.Tensor]) -> dist.TorchDistribution:
        u = self.pseudo_inputs()
        try:
            logits, locs, scales = self._encoder.diag_components(u)  # (K, M), (K, M, D), (K, M, D)
        except NotImplementedError:
            uniform = dist.Categorical(logits=torch.zeros(u.shape[0], device=u.device))
            return dist.MixtureSameFamily(uniform, self._encoder.q_z(u))
        # (1/K) sum_k sum_m w_km N(locs_km, scales_km): one mixture of K * M Gaussians
        log_w = logits.log_softmax(-1) - math.log(u.shape[0])
        return DiagNormalMixture(log_w.flatten(), locs.flatten(0, 1), scales.flatten(0, 1))
