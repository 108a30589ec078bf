"""Network bodies: the swappable networks inside every encoder and decoder.

A **network** part (registered in :data:`NETWORKS`, chosen by ``--network``)
makes two modules for data of shape ``S`` (``(P,)`` for vectors,
``(C, H, W)`` for images):

- an **encoder body** ``(B, *S) -> (B, F)``, whose ``out_features`` F the
  guide's own heads (means, scales, mixture weights, q(y|x)) read;
- a **decoder network** ``(..., D) -> (..., K, *S)``: the K parameters per
  data value that the likelihood declares (:meth:`Decoder.param_channels`),
  for any leading batch shape of ``z`` (particles, enumerated components);
  ``(..., *S)`` when K = 1 (one logit or mean per value).

``mlp`` flattens the data; ``conv`` keeps the image shape (strided
convolutions down, transposed convolutions up, optional residual blocks).
A user's own :class:`torch.nn.Module` is wrapped by :func:`given_encoder` /
:func:`given_decoder` (``mixvae.build(config, shape, encoder=..., decoder=...)``),
and a plugin registers a network as it registers a prior.
"""

from __future__ import annotations

import copy
import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, ClassVar

import torch
from pyro.nn.module import to_pyro_module_
from torch import nn

from mixvae.errors import ConfigError
from mixvae.options import NoOptions, option
from mixvae.registry import Registry

if TYPE_CHECKING:
    from mixvae.config import TrainConfig

NETWORKS: Registry[type[Network]] = Registry("network")

#: ``--network`` value of a run whose encoder and decoder modules the user passed from Python
GIVEN = "given"
#: ``--network`` value that picks ``conv`` for images (C, H, W) and ``mlp`` for vectors
AUTO = "auto"


def data_shape_of(shape: int | Sequence[int]) -> tuple[int, ...]:
    """A data shape as a tuple: ``784 -> (784,)``, ``(1, 28, 28)`` unchanged."""
    if isinstance(shape, int) and not isinstance(shape, bool):
        return (int(shape),)
    try:
        out = tuple(int(s) for s in shape)
    except TypeError:
        raise ConfigError(f"a data shape is an int or a tuple of ints, got {shape!r}") from None
    if not out or any(s < 1 for s in out):
        raise ConfigError(f"a data shape needs positive sizes, got {shape!r}")
    return out


def resolve(name: str, data_shape: Sequence[int]) -> str:
    """The network ``--network NAME`` means for data of ``data_shape`` (``auto``: conv for images)."""
    if name != AUTO:
        return name
    return "conv" if len(data_shape) == 3 else "mlp"


def param_shape(channels: int, data_shape: tuple[int, ...]) -> tuple[int, ...]:
    """The shape of a decoder network's output per point: ``(channels, *data_shape)``, or
    ``data_shape`` itself for one parameter per value."""
    return tuple(data_shape) if channels == 1 else (channels, *data_shape)


class Network:
    """A network part: the encoder body and the decoder network for one data shape.

    Subclasses set :attr:`story`, may declare ``Options`` (a dataclass of
    :func:`mixvae.options.option` fields, read from the configuration), and
    implement :meth:`encoder` and :meth:`decoder`.
    """

    story: ClassVar[str] = ""
    name: ClassVar[str] = ""
    Options: ClassVar[type] = NoOptions

    @classmethod
    def problem(cls, data_shape: tuple[int, ...]) -> str | None:
        """Why this network cannot take data of ``data_shape``, or ``None``."""
        return None

    @classmethod
    def encoder(cls, config: TrainConfig, data_shape: tuple[int, ...]) -> nn.Module:
        """The encoder body ``(B, *data_shape) -> (B, F)``, with an ``out_features`` attribute."""
        raise NotImplementedError

    @classmethod
    def decoder(cls, config: TrainConfig, data_shape: tuple[int, ...], channels: int) -> nn.Module:
        """The decoder network ``(..., D) -> (..., channels, *data_shape)``; ``(..., *data_shape)``
        for ``channels = 1``."""
        raise NotImplementedError


def _pyro(module: nn.Module) -> nn.Module:
    to_pyro_module_(module)  # its weights become Pyro parameters, seen by pyro.optim and torch.optim
    return module


class MLPEncoder(nn.Sequential):
    """Flatten, then ``Linear -> ReLU`` per hidden width (no layer at all for ``hidden=()``)."""

    def __init__(self, in_features: int, hidden: Sequence[int]) -> None:
        layers: list[nn.Module] = []
        width = in_features
        for h in hidden:
            layers += [nn.Linear(width, h), nn.ReLU()]
            width = h
        super().__init__(*layers)
        self.out_features = width

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return super().forward(x.flatten(1))


class MLPDecoder(nn.Sequential):
    """``Linear -> ReLU`` per hidden width, a last ``Linear`` to ``channels * P``, reshaped to
    ``(..., channels, *data_shape)``."""

    def __init__(self, latent_dim: int, hidden: Sequence[int], data_shape: tuple[int, ...], channels: int):
        sizes = [latent_dim, *hidden, channels * math.prod(data_shape)]
        layers: list[nn.Module] = []
        for i in range(len(sizes) - 1):
            layers.append(nn.Linear(sizes[i], sizes[i + 1]))
            if i < len(sizes) - 2:
                layers.append(nn.ReLU())
        super().__init__(*layers)
        self.out_shape = param_shape(channels, data_shape)

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        return super().forward(z).unflatten(-1, self.out_shape)


@NETWORKS.register("mlp")
class MLP(Network):
    """Fully connected layers over the flattened data (``--hidden``), for any data shape."""

    story = "fully connected layers (--hidden) over the flattened data; any shape"

    @classmethod
    def encoder(cls, config: TrainConfig, data_shape: tuple[int, ...]) -> nn.Module:
        return _pyro(MLPEncoder(math.prod(data_shape), config.hidden))

    @classmethod
    def decoder(cls, config: TrainConfig, data_shape: tuple[int, ...], channels: int) -> nn.Module:
        return _pyro(MLPDecoder(config.latent_dim, config.hidden, data_shape, channels))


class ResidualBlock(nn.Module):
    """``x + conv3x3(relu(conv3x3(relu(x))))`` at constant width."""

    def __init__(self, width: int) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(width, width, 3, padding=1)
        self.conv2 = nn.Conv2d(width, width, 3, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.conv2(torch.relu(self.conv1(torch.relu(x))))


def conv_sizes(height: int, width: int, stages: int) -> list[tuple[int, int]]:
    """The image size before each stride-2 stage and after the last (kernel 4, padding 1)."""
    sizes = [(height, width)]
    for _ in range(stages):
        h, w = sizes[-1]
        sizes.append((h // 2, w // 2))
    return sizes


class ConvEncoder(nn.Module):
    """Per stage a stride-2 ``Conv2d`` (kernel 4) and ``blocks`` residual blocks, then
    ``Linear -> ReLU`` to ``features``."""

    def __init__(self, data_shape: tuple[int, ...], channels: Sequence[int], blocks: int, features: int):
        super().__init__()
        c, h, w = data_shape
        layers: list[nn.Module] = []
        for width in channels:
            layers += [nn.Conv2d(c, width, 4, stride=2, padding=1), nn.ReLU()]
            layers += [ResidualBlock(width) for _ in range(blocks)]
            c = width
        self.convs = nn.Sequential(*layers)
        fh, fw = conv_sizes(h, w, len(channels))[-1]
        self.dense = nn.Linear(c * fh * fw, features)
        self.out_features = features

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.relu(self.dense(self.convs(x).flatten(1)))


class ConvDecoder(nn.Module):
    """``Linear -> ReLU`` to the smallest feature map, per stage ``blocks`` residual blocks and
    a stride-2 ``ConvTranspose2d`` (kernel 4) back to the encoder's sizes, then a 3x3 convolution
    to ``channels * C`` maps, reshaped to ``(..., channels, C, H, W)``."""

    def __init__(
        self,
        latent_dim: int,
        data_shape: tuple[int, ...],
        channels: Sequence[int],
        blocks: int,
        features: int,
        out_channels: int,
    ) -> None:
        super().__init__()
        c, h, w = data_shape
        sizes = conv_sizes(h, w, len(channels))
        widths = list(channels)[::-1]
        self.start = (widths[0], *sizes[-1])
        self.dense = nn.Sequential(
            nn.Linear(latent_dim, features), nn.ReLU(), nn.Linear(features, math.prod(self.start)), nn.ReLU()
        )
        layers: list[nn.Module] = []
        for i, width in enumerate(widths):
            layers += [ResidualBlock(width) for _ in range(blocks)]
            nxt = widths[i + 1] if i + 1 < len(widths) else width
            (hi, wi), (ho, wo) = sizes[-1 - i], sizes[-2 - i]
            pad = (ho - 2 * hi, wo - 2 * wi)  # 0 or 1: an odd size the encoder floored
            layers += [nn.ConvTranspose2d(width, nxt, 4, stride=2, padding=1, output_padding=pad), nn.ReLU()]
        layers.append(nn.Conv2d(widths[-1], out_channels * c, 3, padding=1))
        self.deconvs = nn.Sequential(*layers)
        self.out_shape = param_shape(out_channels, data_shape)

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        lead = z.shape[:-1]
        maps = self.dense(z.reshape(-1, z.shape[-1])).unflatten(-1, self.start)
        return self.deconvs(maps).reshape(*lead, *self.out_shape)


@NETWORKS.register("conv")
class Conv(Network):
    """Convolutional encoder and transposed-convolution decoder for images (C, H, W)."""

    story = "strided convolutions and transposed convolutions (+ residual blocks) for images (C, H, W)"

    @dataclass
    class Options:
        conv_channels: tuple[int, ...] = option(
            (32, 64), "channels of the conv network's stride-2 stages, comma-separated", minimum=1
        )
        conv_blocks: int = option(0, "residual blocks per stage of the conv network", minimum=0)
        conv_features: int = option(256, "width of the conv network's dense layer", minimum=1)

    @classmethod
    def problem(cls, data_shape: tuple[int, ...]) -> str | None:
        if len(data_shape) != 3:
            return f"--network conv takes images of shape (C, H, W), not data of shape {data_shape}"
        return None

    @classmethod
    def _check(cls, config: TrainConfig, data_shape: tuple[int, ...]) -> None:
        problem = cls.problem(data_shape)
        if problem:
            raise ConfigError(f"{problem}; use --network mlp")
        _, h, w = data_shape
        stages = len(config.conv_channels)
        if not stages:
            raise ConfigError("--conv-channels needs at least one stage, such as 32,64")
        if min(h, w) < 2**stages:
            raise ConfigError(
                f"{stages} stride-2 stages (--conv-channels {','.join(map(str, config.conv_channels))}) "
                f"shrink {h}x{w} images below one pixel; give fewer stages"
            )

    @classmethod
    def encoder(cls, config: TrainConfig, data_shape: tuple[int, ...]) -> nn.Module:
        cls._check(config, data_shape)
        return _pyro(ConvEncoder(data_shape, config.conv_channels, config.conv_blocks, config.conv_features))

    @classmethod
    def decoder(cls, config: TrainConfig, data_shape: tuple[int, ...], channels: int) -> nn.Module:
        cls._check(config, data_shape)
        net = ConvDecoder(
            config.latent_dim,
            data_shape,
            config.conv_channels,
            config.conv_blocks,
            config.conv_features,
            channels,
        )
        return _pyro(net)


# -- a user's own modules ---------------------------------------------------------------------------


def _probe(module: nn.Module, x: torch.Tensor, role: str) -> torch.Tensor:
    try:
        with torch.no_grad():
            return module(x)
    except Exception as e:  # a user's module: any error is theirs, reported in one line
        raise ConfigError(
            f"the {role} module {type(module).__name__} fails on an input of shape {tuple(x.shape)} "
            f"({type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}); it must take that shape"
        ) from None


class GivenEncoder(nn.Module):
    """A user's encoder module ``(B, *data_shape) -> (B, F)`` as an encoder body."""

    def __init__(self, module: nn.Module, data_shape: tuple[int, ...]) -> None:
        super().__init__()
        self.module = module
        param = next(module.parameters(), None)
        x = torch.zeros(2, *data_shape, dtype=torch.get_default_dtype() if param is None else param.dtype)
        out = _probe(module, x.to(None if param is None else param.device), "encoder")
        if not isinstance(out, torch.Tensor) or out.ndim != 2 or out.shape[0] != 2:
            got = tuple(out.shape) if isinstance(out, torch.Tensor) else type(out).__name__
            raise ConfigError(
                f"the encoder module {type(module).__name__} must map a batch (B, *{data_shape}) to features "
                f"(B, F); for B = 2 it gave {got}"
            )
        self.out_features = int(out.shape[1])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.module(x)


class GivenDecoder(nn.Module):
    """A user's decoder module ``(B, D) -> (B, channels * first, *rest)`` (the likelihood's
    parameters stacked on the first data axis), reshaped to ``(..., channels, *data_shape)``."""

    def __init__(
        self, module: nn.Module, latent_dim: int, data_shape: tuple[int, ...], channels: int
    ) -> None:
        super().__init__()
        self.module = module
        self.out_shape = param_shape(channels, data_shape)
        expected = (channels * data_shape[0], *data_shape[1:])
        param = next(module.parameters(), None)
        z = torch.zeros(2, latent_dim, dtype=torch.get_default_dtype() if param is None else param.dtype)
        out = _probe(module, z.to(None if param is None else param.device), "decoder")
        if not isinstance(out, torch.Tensor) or tuple(out.shape) != (2, *expected):
            got = tuple(out.shape) if isinstance(out, torch.Tensor) else type(out).__name__
            per = f"{channels} parameters per value, stacked on the first axis: " if channels > 1 else ""
            raise ConfigError(
                f"the decoder module {type(module).__name__} must map z of shape (B, {latent_dim}) to "
                f"(B, {', '.join(map(str, expected))}) ({per}the likelihood's parameters for data of "
                f"shape {data_shape}); for B = 2 it gave {got}"
            )

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        lead = z.shape[:-1]
        out = self.module(z.reshape(-1, z.shape[-1]))
        return out.reshape(*lead, *self.out_shape)


def given_encoder(module: nn.Module, data_shape: tuple[int, ...]) -> nn.Module:
    """A copy of a user's encoder module (checked on a probe batch) as an encoder body.

    The model trains its copy (``guide.body.module``); the object passed in is left as it
    was, so that it can be passed again (``load_run(RUN, encoder=...)``).
    """
    if not isinstance(module, nn.Module):
        raise ConfigError(f"encoder= must be a torch.nn.Module, got {type(module).__name__}")
    return _pyro(GivenEncoder(copy.deepcopy(module), data_shape))


def given_decoder(
    module: nn.Module, latent_dim: int, data_shape: tuple[int, ...], channels: int
) -> nn.Module:
    """A copy of a user's decoder module (checked on a probe batch) as a decoder network
    (``model.decoder.net.module``; the object passed in is left as it was)."""
    if not isinstance(module, nn.Module):
        raise ConfigError(f"decoder= must be a torch.nn.Module, got {type(module).__name__}")
    return _pyro(GivenDecoder(copy.deepcopy(module), latent_dim, data_shape, channels))


#: the layers that ``--weight-init glorot`` initialises
GLOROT_LAYERS = (
    nn.Linear,
    nn.Conv1d,
    nn.Conv2d,
    nn.Conv3d,
    nn.ConvTranspose1d,
    nn.ConvTranspose2d,
    nn.ConvTranspose3d,
    nn.Embedding,
)


def glorot_init_(*modules: nn.Module) -> None:
    """Glorot-uniform weights and zero biases (TensorFlow's and Keras's default initialisation)
    for every linear, convolutional and embedding layer of ``modules`` (``--weight-init glorot``).

    The user's own encoder and decoder modules (inside :class:`GivenEncoder` /
    :class:`GivenDecoder`) keep their weights; a layer shared by several modules is set once.
    """
    seen: set[int] = set()
    for root in modules:
        for module in root.modules():
            if isinstance(module, (GivenEncoder, GivenDecoder)):
                seen.update(id(m) for m in module.modules())
    for root in modules:
        for module in root.modules():
            if id(module) in seen or not isinstance(module, GLOROT_LAYERS):
                continue
            seen.add(id(module))
            with torch.no_grad():
                nn.init.xavier_uniform_(module.weight)
                bias = getattr(module, "bias", None)
                if bias is not None:
                    bias.zero_()
