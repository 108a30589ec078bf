"""The discretized logistic likelihood (and its mixture) for 8-bit images.

As in PixelCNN++ (Salimans et al. 2017) and the IAF-VAE (Kingma et al. 2016):
each value of ``x``, one of the 256 levels ``k / 255`` of [0, 1], is the bin
of a continuous logistic variable.  On the scale ``x' = 2x - 1`` of [-1, 1],
with bin half-width ``1 / 255``,

.. math::

    P(x') = \\sigma\\Big(\\frac{x' + 1/255 - \\mu}{s}\\Big)
          - \\sigma\\Big(\\frac{x' - 1/255 - \\mu}{s}\\Big),

the two edge bins taking the tails (``x' = -1``: everything below, ``x' = 1``:
everything above), so the 256 probabilities sum to one and ``log p(x)`` is a
probability mass (bits per dimension are meaningful).  The mixture option
puts M such components on every value, with their own weights
(per sub-pixel: PixelCNN++ couples the colour channels of a pixel, this one
does not).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import TYPE_CHECKING

import pyro.distributions as dist
import torch
from pyro.distributions import constraints
from torch import nn
from torch.nn.functional import softplus

from mixvae.models.decoders import LIKELIHOODS, Decoder
from mixvae.options import option

if TYPE_CHECKING:
    from collections.abc import Sequence

    from mixvae.config import TrainConfig

#: the half-width of one of the 256 bins on the [-1, 1] scale
HALF_BIN = 1.0 / 255.0
#: the smallest log-scale (as PixelCNN++): scales below e^-7 only make the loss spiky
MIN_LOG_SCALE = -7.0


def discretized_logistic_log_prob(
    x: torch.Tensor, loc: torch.Tensor, log_scale: torch.Tensor
) -> torch.Tensor:
    """log P(x) per value for ``x`` in [0, 1] (the 256 levels), ``loc`` and ``log_scale`` on [-1, 1].

    Written as PixelCNN++'s ``discretized_logistic_loss`` (its branch for bins
    whose mass underflows uses the density at the bin centre times the width).
    """
    x = 2.0 * x - 1.0
    centred = x - loc
    inv_s = torch.exp(-log_scale)
    plus_in = inv_s * (centred + HALF_BIN)
    min_in = inv_s * (centred - HALF_BIN)
    log_cdf_plus = plus_in - softplus(plus_in)  # log sigmoid(plus_in): the lowest bin
    log_one_minus_cdf_min = -softplus(min_in)  # log (1 - sigmoid(min_in)): the highest bin
    cdf_delta = torch.sigmoid(plus_in) - torch.sigmoid(min_in)
    mid_in = inv_s * centred
    log_pdf_mid = mid_in - log_scale - 2.0 * softplus(mid_in)  # log density at the bin centre
    inner = torch.where(
        cdf_delta > 1e-5,
        torch.log(cdf_delta.clamp(min=1e-12)),
        log_pdf_mid + math.log(2.0 * HALF_BIN),
    )
    return torch.where(x < -0.999, log_cdf_plus, torch.where(x > 0.999, log_one_minus_cdf_min, inner))


class DiscretizedLogisticMixture(dist.TorchDistribution):
    """Independent discretized-logistic mixtures over the values of ``x`` in [0, 1].

    :param logits: mixture logits, shape ``batch + (M,) + values``.
    :param locs: locations on [-1, 1], the same shape.
    :param log_scales: log-scales, the same shape.
    :param event_dims: how many trailing axes of ``values`` are one event.
    """

    arg_constraints = {"logits": constraints.real, "locs": constraints.real, "log_scales": constraints.real}
    support = constraints.unit_interval
    has_rsample = False

    def __init__(
        self,
        logits: torch.Tensor,
        locs: torch.Tensor,
        log_scales: torch.Tensor,
        event_dims: int,
        validate_args: bool | None = None,
    ) -> None:
        self.logits, self.locs, self.log_scales = logits, locs, log_scales.clamp(min=MIN_LOG_SCALE)
        shape = locs.shape
        batch = shape[: len(shape) - event_dims - 1]
        self._mix_dim = len(batch)
        super().__init__(batch, shape[len(batch) + 1 :], validate_args=validate_args)

    def expand(self, batch_shape: torch.Size, _instance: object = None) -> DiscretizedLogisticMixture:
        shape = torch.Size(batch_shape) + self.locs.shape[self._mix_dim :]
        return DiscretizedLogisticMixture(
            self.logits.expand(shape),
            self.locs.expand(shape),
            self.log_scales.expand(shape),
            len(self.event_shape),
        )

    def log_prob_values(self, value: torch.Tensor) -> torch.Tensor:
        """log P per value (not summed over the event), shape ``batch + event``."""
        v = value.unsqueeze(-len(self.event_shape) - 1)  # the mixture axis
        per = discretized_logistic_log_prob(v, self.locs, self.log_scales)
        log_w = self.logits.log_softmax(-len(self.event_shape) - 1)
        return torch.logsumexp(log_w + per, -len(self.event_shape) - 1)

    def log_prob(self, value: torch.Tensor) -> torch.Tensor:
        return self.log_prob_values(value).flatten(-len(self.event_shape)).sum(-1)

    @property
    def mean(self) -> torch.Tensor:
        """E[x] in [0, 1], with each component's mean clamped to [-1, 1] (the edge bins' mass)."""
        axis = -len(self.event_shape) - 1
        w = self.logits.softmax(axis)
        return ((w * self.locs.clamp(-1.0, 1.0)).sum(axis) + 1.0) / 2.0

    @torch.no_grad()
    def sample(self, sample_shape: torch.Size = torch.Size()) -> torch.Tensor:
        axis = -len(self.event_shape) - 1
        shape = torch.Size(sample_shape) + self.locs.shape
        gumbel = -torch.log(-torch.log(torch.rand(shape, device=self.locs.device).clamp(1e-10, 1 - 1e-10)))
        pick = (self.logits + gumbel).argmax(axis, keepdim=True)
        loc = self.locs.expand(shape).gather(axis, pick).squeeze(axis)
        log_s = self.log_scales.expand(shape).gather(axis, pick).squeeze(axis)
        u = torch.rand_like(loc).clamp(1e-5, 1 - 1e-5)
        x = (loc + log_s.exp() * (torch.log(u) - torch.log1p(-u))).clamp(-1.0, 1.0)
        return torch.round((x + 1.0) / 2.0 * 255.0) / 255.0


@LIKELIHOODS.register("logistic")
class DiscretizedLogisticDecoder(Decoder):
    r"""Discretized logistic (``--logistic-components 1``) or its mixture, for 8-bit data in [0, 1].

    Every value :math:`x_p` of 256 levels is the bin of a logistic (or an
    M-component logistic mixture) with location and log-scale from the
    decoder network; ``log p(x | z)`` is a probability mass, so the
    evaluation reports bits per dimension.
    """

    support = (0.0, 1.0)
    #: log p(x | z) is a mass over the 256 levels of every value: bits per dimension apply
    discrete_levels = 256
    story = "x_p | z ~ discretized logistic (mixture) over 256 levels, 8-bit data in [0, 1]"

    @dataclass
    class Options:
        logistic_components: int = option(
            1, "components M of the discretized logistic mixture per value (1: one logistic)", minimum=1
        )

    def __init__(
        self,
        latent_dim: int,
        data_shape: int | Sequence[int],
        hidden: Sequence[int] = (512, 512),
        components: int = 1,
        *,
        net: nn.Module | None = None,
    ) -> None:
        super().__init__(latent_dim, data_shape, hidden, net=net, channels=self.channels_for(components))
        self.components = int(components)

    @staticmethod
    def channels_for(components: int) -> int:
        """2 (location, log-scale) for one logistic, 3 M (logits, locations, log-scales) for M."""
        return 2 if components == 1 else 3 * int(components)

    @classmethod
    def param_channels(cls, config: TrainConfig | None = None) -> int:
        return cls.channels_for(1 if config is None else config.logistic_components)

    @classmethod
    def from_config(cls, config: TrainConfig, data_shape: tuple[int, ...], net: nn.Module) -> Decoder:
        return cls(config.latent_dim, data_shape, components=config.logistic_components, net=net)

    def forward(self, z: torch.Tensor) -> DiscretizedLogisticMixture:
        out = self.params(z)  # (..., K, *shape)
        axis = -self.event_dims - 1
        if self.components == 1:
            loc, log_s = out.unbind(axis)
            logits = torch.zeros_like(loc).unsqueeze(axis)
            return DiscretizedLogisticMixture(
                logits, loc.unsqueeze(axis), log_s.unsqueeze(axis), self.event_dims
            )
        logits, locs, log_scales = out.chunk(3, axis)
        return DiscretizedLogisticMixture(logits, locs, log_scales, self.event_dims)

    def mean(self, z: torch.Tensor) -> torch.Tensor:
        return self(z).mean
