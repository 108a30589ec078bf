"""A plain-PyTorch conv VAE with mixvae's conv layers, for the results tables' reference row.

Written without mixvae's objectives, likelihoods or estimators: a Gaussian
encoder (stride-2 convolutions, a dense layer), a transposed-convolution
decoder, the N(0, I) prior with the analytic KL, a Bernoulli likelihood or
the discretized logistic (mixture) over 256 levels as PixelCNN++ writes it,
Adam, and the importance-weighted log-likelihood of Burda et al.  If mixvae's
``standard x gaussian`` conv row and this one agree, neither the library's
estimator nor its likelihood is flattering its numbers.

    python benchmarks/plain_conv.py --dataset cifar10 --data-dir ../shared/data/cifar10 --epochs 30
    python benchmarks/plain_conv.py --smoke     # the 8x8 digits, one epoch (CI)

``benchmarks/results.py --plain-reference`` trains it beside the likelihood rows.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import time
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from mixvae.data import evaluation_data, load_dataset
from mixvae.networks import conv_sizes

BIN = 1.0 / 255.0  # the width of one of the 256 levels of a value in [0, 1]


class PlainConvVAE(nn.Module):
    """Encoder, decoder and likelihood in plain torch; the layers of ``--network conv``."""

    def __init__(
        self,
        shape: tuple[int, int, int],
        latent_dim: int,
        *,
        likelihood: str = "bernoulli",
        components: int = 1,
        channels: tuple[int, ...] = (32, 64),
        features: int = 256,
    ) -> None:
        super().__init__()
        c, h, w = shape
        self.shape, self.likelihood, self.m = shape, likelihood, components
        sizes = conv_sizes(h, w, len(channels))
        layers, width = [], c
        for ch in channels:
            layers += [nn.Conv2d(width, ch, 4, stride=2, padding=1), nn.ReLU()]
            width = ch
        flat = width * sizes[-1][0] * sizes[-1][1]
        self.encoder = nn.Sequential(*layers, nn.Flatten(), nn.Linear(flat, features), nn.ReLU())
        self.head = nn.Linear(features, 2 * latent_dim)
        widths = list(channels)[::-1]
        layers = [
            nn.Linear(latent_dim, features),
            nn.ReLU(),
            nn.Linear(features, flat),
            nn.ReLU(),
            nn.Unflatten(1, (widths[0], *sizes[-1])),
        ]
        for i, ch in enumerate(widths):
            nxt = widths[i + 1] if i + 1 < len(widths) else ch
            (hi, wi), (ho, wo) = sizes[-1 - i], sizes[-2 - i]
            layers += [
                nn.ConvTranspose2d(ch, nxt, 4, 2, 1, output_padding=(ho - 2 * hi, wo - 2 * wi)),
                nn.ReLU(),
            ]
        per_value = 1 if likelihood == "bernoulli" else (2 if components == 1 else 3 * components)
        layers.append(nn.Conv2d(widths[-1], per_value * c, 3, padding=1))
        self.decoder = nn.Sequential(*layers)

    def encode(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        loc, raw = self.head(self.encoder(x)).chunk(2, -1)
        return loc, F.softplus(raw) + 1e-5

    def log_px_z(self, x: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
        """log p(x | z) summed over the values: z (..., B, D), x (B, C, H, W) -> (..., B)."""
        batch = z.shape[:-1]
        out = self.decoder(z.reshape(-1, z.shape[-1]))
        xs = x.expand(*batch, *x.shape[-3:]).reshape(-1, *x.shape[-3:])
        if self.likelihood == "bernoulli":
            lp = -F.binary_cross_entropy_with_logits(out, xs, reduction="none")
        else:
            lp = discretized_logistic(xs, out.unflatten(1, (-1, self.shape[0])), self.m)
        return lp.flatten(1).sum(-1).reshape(batch)


def discretized_logistic(x: torch.Tensor, params: torch.Tensor, m: int) -> torch.Tensor:
    """log P(x) per value of the discretized logistic (mixture) over 256 levels of [0, 1].

    ``params`` is (B, K, C, H, W): location and log-scale (M = 1), or M logits, M locations,
    M log-scales.  The end bins take the tails; the log of a difference of sigmoids is clamped
    at 1e-12, as in PixelCNN++'s simplest form.
    """
    if m == 1:
        logits, loc, log_s = torch.zeros_like(params[:, :1]), params[:, :1], params[:, 1:2]
    else:
        logits, loc, log_s = params.chunk(3, 1)
    inv = torch.exp(-log_s.clamp(min=-7.0))
    xc = x.unsqueeze(1)
    upper = torch.where(xc > 1 - BIN / 2, torch.ones_like(xc), torch.sigmoid(inv * (xc + BIN / 2 - loc)))
    lower = torch.where(xc < BIN / 2, torch.zeros_like(xc), torch.sigmoid(inv * (xc - BIN / 2 - loc)))
    log_mass = torch.log((upper - lower).clamp(min=1e-12))
    return torch.logsumexp(logits.log_softmax(1) + log_mass, 1)


def negative_elbo(vae: PlainConvVAE, x: torch.Tensor) -> torch.Tensor:
    """-ELBO per point (B,): one reparameterised draw, the analytic KL to N(0, I)."""
    loc, scale = vae.encode(x)
    z = loc + scale * torch.randn_like(loc)
    kl = 0.5 * (scale**2 + loc**2 - 1 - 2 * scale.log()).sum(-1)
    return kl - vae.log_px_z(x, z)


@torch.no_grad()
def iw_log_likelihood(vae: PlainConvVAE, x: torch.Tensor, samples: int, chunk: int = 100) -> torch.Tensor:
    """log p(x) per point by importance sampling from q(z | x) with ``samples`` draws."""
    out = []
    for xb in x.split(50):
        loc, scale = vae.encode(xb)
        q = torch.distributions.Normal(loc, scale)
        weights = []
        for start in range(0, samples, chunk):
            z = q.sample((min(chunk, samples - start),))
            prior = torch.distributions.Normal(0.0, 1.0).log_prob(z).sum(-1)
            weights.append(vae.log_px_z(xb, z) + prior - q.log_prob(z).sum(-1))
        out.append(torch.logsumexp(torch.cat(weights), 0) - math.log(samples))
    return torch.cat(out)


def train_plain(
    data: Any,
    *,
    epochs: int,
    latent_dim: int,
    likelihood: str,
    components: int = 1,
    batch_size: int = 128,
    lr: float = 1e-3,
    seed: int = 0,
    iw_samples: int = 1000,
    binarize: str = "none",
) -> dict[str, Any]:
    """Train the plain conv VAE on ``data.train_x`` and score ``data.test_x``; a results row.

    With ``binarize="dynamic"`` every minibatch is binarised afresh and the test images once,
    with mixvae's evaluation seed (the same test images as the mixvae rows)."""
    torch.manual_seed(seed)
    vae = PlainConvVAE(tuple(data.data_shape), latent_dim, likelihood=likelihood, components=components)
    opt = torch.optim.Adam(vae.parameters(), lr=lr)
    x, n = data.train_x, len(data.train_x)
    gen = torch.Generator().manual_seed(seed)
    t0 = time.perf_counter()
    for _ in range(epochs):
        for idx in torch.randperm(n, generator=gen).split(batch_size):
            xb = torch.bernoulli(x[idx]) if binarize == "dynamic" else x[idx]
            loss = negative_elbo(vae, xb).mean()
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
    train_seconds = time.perf_counter() - t0
    vae.eval()
    torch.manual_seed(seed + 1)
    test_x = evaluation_data(data.test_x, binarize)
    with torch.no_grad():
        elbo = float(torch.cat([-negative_elbo(vae, xb) for xb in test_x.split(500)]).mean())
    ll = float(iw_log_likelihood(vae, test_x, iw_samples).mean())
    values = math.prod(data.data_shape)
    return {
        "log_likelihood": ll,
        "elbo": elbo,
        "bits_per_dim": -ll / (values * math.log(2)) if likelihood == "logistic" else None,
        "iw_samples": iw_samples,
        "epochs": epochs,
        "train_seconds": train_seconds,
        "num_points": len(data.test_x),
        "seed": seed,
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--dataset", default="cifar10")
    parser.add_argument("--data-dir", default=None)
    parser.add_argument("--epochs", type=int, default=30)
    parser.add_argument("--latent-dim", type=int, default=32)
    parser.add_argument("--likelihood", default="logistic", choices=("logistic", "bernoulli"))
    parser.add_argument("--logistic-components", type=int, default=3)
    parser.add_argument("--iw-samples", type=int, default=1000)
    parser.add_argument("--smoke", action="store_true", help="the 8x8 digits, one epoch, S = 10 (CI)")
    args = parser.parse_args(argv)
    if args.smoke:
        args.dataset, args.epochs, args.latent_dim, args.iw_samples = "digits", 1, 4, 10
    data = load_dataset(args.dataset, args.data_dir, download=False)
    if data.test_x.ndim != 4:
        parser.error(f"{args.dataset} holds vectors; the conv VAE needs images (N, C, H, W)")
    result = train_plain(
        data,
        epochs=args.epochs,
        latent_dim=args.latent_dim,
        likelihood=args.likelihood,
        components=args.logistic_components,
        iw_samples=args.iw_samples,
    )
    print(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
