"""Speed of mixvae's conv network against a plain-PyTorch conv VAE with the same layers, in one process.

For ``standard x gaussian`` and ``gmm x gaussian`` with ``--network conv``
(stride-2 convolutions 32, 64, a dense layer of 256, transposed convolutions
back, a Bernoulli likelihood) on images (N, 1, 28, 28), the same initial
weights, objective, data order and optimiser (``mixvae.inference.adam``) are
trained two ways, epochs interleaved: mixvae's loop and a hand-written PyTorch
loop (analytic KL for the Gaussian pair, an exact log-sum-exp over the
components for the mixture prior).  After a warm-up epoch it prints the
median epoch time of each and their ratio (the target: at most 1.10), checks
that both reach the same training loss within 1%, and measures the peak
resident memory of a CIFAR-10 run (conv network, discretized logistic
likelihood) in a fresh process.

    python benchmarks/speed_conv.py --data-dir ../shared/data/mnist --cifar-dir ../shared/data/cifar10
    python benchmarks/speed_conv.py --quick        # a smoke run on the 8x8 digits (CI)

Run it on an otherwise idle machine (see benchmarks/speed.py).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

sys.path.insert(0, str(Path(__file__).resolve().parent))
from speed import _same_loss, _timed_epochs, reference_epoch  # the shared harness

from mixvae import TrainConfig, build, load_dataset
from mixvae.data import Dataset, stream
from mixvae.inference import adam, resume, train
from mixvae.networks import conv_sizes
from mixvae.nn import positive
from mixvae.runs import load_checkpoint

ROOT = Path(__file__).resolve().parents[1]
PAIRS = [("standard", "gaussian"), ("gmm", "gaussian")]
#: (network, DataLoader workers) of the streamed-epoch rows (the target: at most 1.15x in memory)
STREAMS = [("conv", 0), ("conv", 2), ("mlp", 0)]


class ConvReference(nn.Module):
    """mixvae's conv encoder and decoder as plain torch layers, under the same parameter names."""

    def __init__(
        self, prior: str, shape: tuple[int, int, int], d: int, k: int, channels=(32, 64), features=256
    ):
        super().__init__()
        self.prior_name, self.d = prior, d
        c, h, w = shape
        sizes = conv_sizes(h, w, len(channels))
        self.guide = nn.Module()
        self.guide.body = nn.Module()
        layers, width = [], c
        for ch in channels:
            layers += [nn.Conv2d(width, ch, 4, stride=2, padding=1), nn.ReLU()]
            width = ch
        self.guide.body.convs = nn.Sequential(*layers)
        self.guide.body.dense = nn.Linear(width * sizes[-1][0] * sizes[-1][1], features)
        self.guide.head = nn.Linear(features, 2 * d)
        self.decoder = nn.Module()
        self.decoder.net = nn.Module()
        widths = list(channels)[::-1]
        self.start = (widths[0], *sizes[-1])
        self.decoder.net.dense = nn.Sequential(
            nn.Linear(d, features),
            nn.ReLU(),
            nn.Linear(features, widths[0] * sizes[-1][0] * sizes[-1][1]),
            nn.ReLU(),
        )
        layers = []
        for i, ch in enumerate(widths):
            nxt = widths[i + 1] if i + 1 < len(widths) else ch
            (hi, wi), (ho, wo) = sizes[-1 - i], sizes[-2 - i]
            layers += [
                nn.ConvTranspose2d(ch, nxt, 4, 2, 1, output_padding=(ho - 2 * hi, wo - 2 * wi)),
                nn.ReLU(),
            ]
        layers.append(nn.Conv2d(widths[-1], c, 3, padding=1))
        self.decoder.net.deconvs = nn.Sequential(*layers)
        self.prior = nn.Module()
        if prior == "gmm":
            self.prior.logits_unconstrained = nn.Parameter(torch.zeros(k))
            self.prior.locs_unconstrained = nn.Parameter(torch.zeros(k, d))
            self.prior.scales_unconstrained = nn.Parameter(torch.zeros(k, d))

    def load_from(self, model: nn.Module, guide: nn.Module) -> None:
        self.guide.load_state_dict(guide.state_dict())
        self.decoder.load_state_dict(model.decoder.state_dict())
        if self.prior_name == "gmm":
            self.prior.load_state_dict(model.prior.state_dict())

    def loss(self, x: torch.Tensor, n: int) -> torch.Tensor:
        g, dec = self.guide, self.decoder.net
        h = torch.relu(g.body.dense(g.body.convs(x).flatten(1)))
        loc, raw = g.head(h).chunk(2, -1)
        scale = positive(raw)
        z = loc + scale * torch.randn_like(loc)
        logits = dec.deconvs(dec.dense(z).unflatten(-1, self.start))
        bce = F.binary_cross_entropy_with_logits(logits, x, reduction="none").flatten(1).sum(-1)
        if self.prior_name == "standard":
            kl = 0.5 * (scale**2 + loc**2 - 1 - 2 * scale.log()).sum(-1)
        else:
            pr = self.prior
            comp = (
                torch.distributions.Normal(pr.locs_unconstrained, pr.scales_unconstrained.exp())
                .log_prob(z.unsqueeze(-2))
                .sum(-1)
            )
            log_p = torch.logsumexp(pr.logits_unconstrained.log_softmax(-1) + comp, -1)
            kl = torch.distributions.Normal(loc, scale).log_prob(z).sum(-1) - log_p
        return (bce + kl).sum() * (n / len(x))


def compare_pair(prior: str, guide: str, data: Dataset, epochs: int, workdir: Path) -> dict:
    config = TrainConfig(
        prior=prior,
        guide=guide,
        network="conv",
        latent_dim=10,
        components=10,
        epochs=1,
        batch_size=128,
        out=str(workdir / f"{prior}-{guide}"),
        overwrite=True,
        seed=0,
        checkpoint_every=1000,
    )
    run = train(config, dataset=data, progress=False, figures=False)  # warm-up epoch
    ref = ConvReference(prior, data.data_shape, 10, 10)
    torch.manual_seed(config.seed)
    init_model, init_guide = build(config, data.data_shape)  # the run's initial weights
    epoch_state = torch.get_rng_state()
    ref.load_from(init_model, init_guide)
    opt = adam(ref.parameters(), lr=config.lr)
    gen = torch.Generator().manual_seed(config.seed)  # mixvae's data order
    torch.set_rng_state(epoch_state)
    reference_epoch(ref, opt, data.train_x, gen, config.batch_size)  # warm-up epoch
    times, loss = [], float("nan")
    for e in range(2, epochs + 2):
        epoch_state = load_checkpoint(run.run_dir / "checkpoint.pt")["rng"]["torch"]
        run = resume(run.run_dir, epochs=e, dataset=data, progress=False, figures=False)
        torch.set_rng_state(epoch_state)
        t, loss = reference_epoch(ref, opt, data.train_x, gen, config.batch_size)
        times.append(t)
    ours, ours_loss = _timed_epochs(run.run_dir)
    plain = statistics.median(times)
    return {
        "pair": f"{prior} x {guide} (conv)",
        "mixvae_s": ours,
        "plain_s": plain,
        "ratio": ours / plain,
        "mixvae_loss": ours_loss,
        "plain_loss": loss,
        "same_loss": _same_loss(ours_loss, loss),
    }


def compare_stream(network: str, data: Dataset, epochs: int, workdir: Path, workers: int = 0) -> dict:
    """``gmm x gaussian`` trained on the points in memory and on a ``torch.utils.data.Dataset`` of the
    same points read through mixvae's DataLoader (:func:`mixvae.data.stream`), epochs interleaved."""
    tensors = torch.utils.data.TensorDataset
    streamed = stream(tensors(data.train_x), tensors(data.test_x), workers=workers)
    runs = {}
    for name, d in (("memory", data), ("stream", streamed)):
        config = TrainConfig(
            prior="gmm", guide="gaussian", network=network, latent_dim=10, components=10, epochs=1,
            batch_size=128, out=str(workdir / f"{network}-{name}-{workers}"), overwrite=True, seed=0,
            checkpoint_every=1000,
        )  # fmt: skip
        runs[name] = (train(config, dataset=d, progress=False, figures=False).run_dir, d)  # warm-up epoch
    for e in range(2, epochs + 2):
        for run_dir, d in runs.values():
            resume(run_dir, epochs=e, dataset=d, progress=False, figures=False)
    (memory, memory_loss), (streaming, stream_loss) = (_timed_epochs(r) for r, _ in runs.values())
    return {
        "pair": f"gmm x gaussian ({network}), {workers} workers",
        "memory_s": memory,
        "stream_s": streaming,
        "ratio": streaming / memory,
        "same_loss": memory_loss == stream_loss,
    }


def cifar_peak_memory(cifar_dir: str, work: Path, epochs: int, quick: bool) -> dict:
    """Peak RSS of a fresh process that trains a conv VAE with the logistic likelihood on CIFAR-10."""
    code = (
        "import resource, sys, time, mixvae\n"
        "t0 = time.perf_counter()\n"
        f"data = mixvae.load_dataset('cifar10', {cifar_dir!r}, download=False)\n"
        f"data = data if not {quick} else type(data)('cifar10', data.train_x[:256], data.test_x[:64])\n"
        "mixvae.train(mixvae.TrainConfig(prior='gmm', guide='gaussian', likelihood='logistic', latent_dim=32, "
        f"epochs={epochs}, out={str(work / 'cifar')!r}, overwrite=True), dataset=data, progress=False, "
        "figures=False)\n"
        "print(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, time.perf_counter() - t0)\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True
    ).stdout.split()
    return {"epochs": epochs, "peak_rss_mb": float(out[-2]), "wall_s": float(out[-1])}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data-dir", default=str(ROOT.parent / "shared" / "data" / "mnist"))
    parser.add_argument("--cifar-dir", default=str(ROOT.parent / "shared" / "data" / "cifar10"))
    parser.add_argument("--epochs", type=int, default=3, help="timed epochs after the warm-up epoch")
    parser.add_argument("--quick", action="store_true", help="smoke run on the 8x8 digits (CI)")
    parser.add_argument("--json", default=None, help="also write the results to this file")
    args = parser.parse_args()
    torch.set_num_threads(2)
    if args.quick:
        data, args.epochs, cifar_epochs = load_dataset("digits"), 1, 1
    else:
        full = load_dataset("mnist", args.data_dir, download=False)
        data = Dataset("mnist", full.train_x, full.test_x[:500], full.train_y, full.test_y[:500])
        cifar_epochs = 1
    results: dict = {
        "machine": f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores, torch "
        f"{torch.__version__}, {torch.get_num_threads()} threads",
        "data": f"{data.name} {tuple(data.data_shape)} ({len(data.train_x)} train)",
        "pairs": [],
    }
    print(f"# {results['machine']}; {results['data']}")
    print(f"{'pair':<28} {'mixvae s/epoch':>14} {'plain s/epoch':>14} {'ratio':>6}  same loss (<1%)")
    load0 = os.getloadavg()[0]
    t0 = time.perf_counter()
    with tempfile.TemporaryDirectory() as tmp:
        for prior, guide in PAIRS:
            r = compare_pair(prior, guide, data, args.epochs, Path(tmp))
            results["pairs"].append(r)
            print(
                f"{r['pair']:<28} {r['mixvae_s']:>14.3f} {r['plain_s']:>14.3f} {r['ratio']:>6.2f}  "
                f"{r['same_loss']} ({r['mixvae_loss']:.2f} vs {r['plain_loss']:.2f})",
                flush=True,
            )
        print(f"{'streamed epoch':<40} {'in memory s':>11} {'DataLoader s':>12} {'ratio':>6}  same loss")
        results["stream"] = []
        for network, workers in STREAMS:
            r = compare_stream(network, data, args.epochs, Path(tmp), workers)
            results["stream"].append(r)
            print(
                f"{r['pair']:<40} {r['memory_s']:>11.3f} {r['stream_s']:>12.3f} {r['ratio']:>6.2f}  {r['same_loss']}",
                flush=True,
            )
        r = cifar_peak_memory(args.cifar_dir, Path(tmp), cifar_epochs, args.quick)
        results["cifar_memory"] = r
        print(
            f"peak RSS of a {r['epochs']}-epoch CIFAR-10 conv run: {r['peak_rss_mb']:.0f} MB ({r['wall_s']:.0f} s)"
        )
    results["load_before"], results["load_after"] = load0, os.getloadavg()[0]
    results["wall_s"] = time.perf_counter() - t0
    if results["load_before"] > 1.0:
        print(f"warning: load average {load0:.1f} at the start: the machine was not idle", file=sys.stderr)
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
