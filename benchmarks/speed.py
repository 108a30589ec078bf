"""Speed of mixvae's training loop against a plain-PyTorch reference, in one process.

For each pair (standard x gaussian, gmm x gaussian, gmm x categorical, gmm x
mixture) the same architecture (784-512-512-10), the same initial weights, the
same objective and the same data order are trained two ways, epochs
interleaved: mixvae's own loop (``mixvae.train`` / ``mixvae.inference.resume``,
the ELBO of ``make_elbo``) and a hand-written PyTorch loop (analytic KL for the
Gaussian pair, an exact log-sum-exp over components for the mixture prior, an
exact sum over y for the categorical guide), with the same optimiser
(``mixvae.inference.adam``: torch's fused Adam).  After a warm-up epoch it
prints the median epoch time of each (the optimisation steps only) and their
ratio, and checks that both reach the same training loss within 1%, so that
the comparison is of equal work.  mixvae's loop runs with its default
``--objective auto`` (Pyro's ELBO estimator computed without tracing where
that is exact); a second mixvae run with ``--objective pyro`` (Pyro's ELBO at
every step) is timed beside it, to show Pyro's own per-step cost, and a third
with ``--jit`` (Pyro's compiled ELBOs), as a ratio to the default.  A third column times the reference with
torch's default Adam, as plain scripts usually run: what a user of such a
script would see, not the measure of Pyro's overhead.  It then measures evaluation throughput
(importance-weighted log-likelihood), the peak resident memory of a 10-epoch
training run, and epoch time against the number of components K.

    python benchmarks/speed.py --data-dir ../shared/data/mnist
    python benchmarks/speed.py --quick        # a smoke run on little data (CI)

Run it on an otherwise idle machine: two CPU-bound processes on 2 cores slow
2-thread torch down many times over.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
import os
import platform
import resource
import statistics
import subprocess
import sys
import tempfile
import time
import warnings
from pathlib import Path

import pyro.distributions as dist
import torch
import torch.nn.functional as F
from torch import nn

from mixvae import TrainConfig, build, load_dataset
from mixvae.data import Dataset
from mixvae.evaluation.likelihood import log_likelihood
from mixvae.inference import adam, resume, train
from mixvae.nn import positive
from mixvae.runs import load_checkpoint

PAIRS = [("standard", "gaussian"), ("gmm", "gaussian"), ("gmm", "categorical"), ("gmm", "mixture")]
ROOT = Path(__file__).resolve().parents[1]


# ----------------------------------------------------------------------------- the plain reference
def plain_mlp(sizes: list[int], final_activation: bool = False) -> nn.Sequential:
    layers: list[nn.Module] = []
    for i in range(len(sizes) - 1):
        layers.append(nn.Linear(sizes[i], sizes[i + 1]))
        if i < len(sizes) - 2 or final_activation:
            layers.append(nn.ReLU())
    return nn.Sequential(*layers)


class Reference(nn.Module):
    """The same networks as mixvae's pair, as plain torch modules with the same parameter names."""

    def __init__(self, prior: str, guide: str, p: int, d: int, k: int, hidden: tuple[int, ...]) -> None:
        super().__init__()
        self.prior_name, self.guide_name, self.k, self.d = prior, guide, k, d
        self.decoder = nn.Module()
        self.decoder.net = plain_mlp([d, *hidden, p])
        self.prior = nn.Module()
        if prior == "gmm":
            # PyroParam stores every parameter unconstrained (scales through exp)
            self.prior.logits_unconstrained = nn.Parameter(torch.zeros(k))
            self.prior.locs_unconstrained = nn.Parameter(torch.zeros(k, d))
            self.prior.scales_unconstrained = nn.Parameter(torch.zeros(k, d))
        self.guide = nn.Module()
        if guide in ("gaussian", "mixture"):  # mixvae's guides: an MLP body and their own head
            self.guide.body = plain_mlp([p, *hidden], final_activation=True)
            self.guide.head = nn.Linear(hidden[-1], 2 * d if guide == "gaussian" else k * (2 * d + 1))
        else:
            self.guide.body = plain_mlp([p, *hidden], final_activation=True)
            self.guide.y_head = nn.Linear(hidden[-1], k)
            self.guide.h_proj = nn.Linear(hidden[-1], hidden[-1])
            self.guide.y_embed = nn.Embedding(k, hidden[-1])
            self.guide.z_head = nn.Linear(hidden[-1], 2 * d)

    def load_from(self, model: nn.Module, guide: nn.Module) -> None:
        self.decoder.load_state_dict(model.decoder.state_dict())
        self.guide.load_state_dict(guide.state_dict())
        if self.prior_name == "gmm":
            self.prior.load_state_dict(model.prior.state_dict())

    def log_prior(self, z: torch.Tensor) -> torch.Tensor:
        if self.prior_name == "standard":
            return torch.distributions.Normal(0.0, 1.0).log_prob(z).sum(-1)
        pr = self.prior
        comp = (
            torch.distributions.Normal(pr.locs_unconstrained, pr.scales_unconstrained.exp())
            .log_prob(z.unsqueeze(-2))
            .sum(-1)
        )
        return torch.logsumexp(pr.logits_unconstrained.log_softmax(-1) + comp, -1)

    def bce(self, x: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
        logits = self.decoder.net(z)
        return F.binary_cross_entropy_with_logits(logits, x.expand_as(logits), reduction="none").sum(-1)

    def loss(self, x: torch.Tensor, n: int) -> torch.Tensor:
        """Negative ELBO of the minibatch, scaled to the data set size like the Pyro plate."""
        g = self.guide
        if self.guide_name == "gaussian":
            loc, raw = g.head(g.body(x)).chunk(2, -1)
            scale = positive(raw)
            z = loc + scale * torch.randn_like(loc)
            if self.prior_name == "standard":  # analytic KL
                kl = 0.5 * (scale**2 + loc**2 - 1 - 2 * scale.log()).sum(-1)
            else:
                kl = torch.distributions.Normal(loc, scale).log_prob(z).sum(-1) - self.log_prior(z)
            per_point = self.bce(x, z) + kl
        elif self.guide_name == "mixture":
            out = g.head(g.body(x)).unflatten(-1, (self.k, 2 * self.d + 1))
            locs, scales, logits = out[..., : self.d], positive(out[..., self.d : 2 * self.d]), out[..., -1]
            q = dist.MixtureOfDiagNormals(locs, scales, logits)
            # drawn in float64 and rounded back, as mixvae's mixture guide draws (Pyro's
            # pathwise gradient overflows float32 in high dimensions): equal work, same noise
            z = dist.MixtureOfDiagNormals(locs.double(), scales.double(), logits.double()).rsample().float()
            per_point = self.bce(x, z) + q.log_prob(z) - self.log_prior(z)
        else:  # exact sum over y: the decoder runs once per component
            h = g.body(x)
            log_qy = g.y_head(h).log_softmax(-1).T  # (K, B)
            a = torch.relu(g.h_proj(h) + g.y_embed.weight.unsqueeze(-2))  # (K, B, H)
            loc, raw = g.z_head(a).chunk(2, -1)
            scale = positive(raw)
            z = loc + scale * torch.randn_like(loc)  # (K, B, D)
            pr = self.prior
            log_pz = torch.distributions.Normal(
                pr.locs_unconstrained.unsqueeze(-2), pr.scales_unconstrained.exp().unsqueeze(-2)
            )
            kl_z = torch.distributions.Normal(loc, scale).log_prob(z).sum(-1) - log_pz.log_prob(z).sum(-1)
            kl_y = log_qy - pr.logits_unconstrained.log_softmax(-1).unsqueeze(-1)
            per_point = (log_qy.exp() * (self.bce(x, z) + kl_z + kl_y)).sum(0)
        return per_point.sum() * (n / len(x))


def reference_epoch(
    ref: Reference, opt: torch.optim.Optimizer, x: torch.Tensor, gen: torch.Generator, bs: int
):
    n = len(x)
    t0 = time.perf_counter()
    perm = torch.randperm(n, generator=gen)
    total = 0.0
    steps = math.ceil(n / bs)
    for i in range(steps):
        loss = ref.loss(x[perm[i * bs : (i + 1) * bs]], n)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        total += float(loss.detach()) / n
    return time.perf_counter() - t0, total / steps


# ----------------------------------------------------------------------------- measurements
def compare_pair(prior: str, guide: str, data: Dataset, epochs: int, workdir: Path, hidden, k: int) -> dict:
    config = TrainConfig(
        prior=prior,
        guide=guide,
        latent_dim=10,
        components=k,
        hidden=hidden,
        epochs=1,
        batch_size=128,
        out=str(workdir / f"{prior}-{guide}"),
        overwrite=True,
        seed=0,
        checkpoint_every=1000,
    )
    run = train(config, dataset=data, progress=False, figures=False)  # warm-up epoch
    # The same run with Pyro's ELBOs in the hot loop (--objective pyro): Pyro's own overhead.
    pyro_config = dataclasses.replace(config, objective="pyro", out=str(workdir / f"{prior}-{guide}-pyro"))
    pyro_run = train(pyro_config, dataset=data, progress=False, figures=False)
    # --jit: Pyro's compiled ELBOs (JitTraceEnum_ELBO / JitTraceMeanField_ELBO), against the default
    jit_config = dataclasses.replace(config, jit=True, out=str(workdir / f"{prior}-{guide}-jit"))
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", "`torch.jit.trace` is deprecated", DeprecationWarning)
        jit_run = train(jit_config, dataset=data, progress=False, figures=False)
    ref = Reference(prior, guide, data.data_dim, 10, k, hidden)
    torch.manual_seed(config.seed)
    init_model, init_guide = build(config, data.data_dim)  # the same initial weights as the run
    # The random state mixvae's first step drew from (train() seeds, then builds). Each
    # reference epoch starts from the state mixvae's epoch started from, so the loops draw
    # the same noise wherever they sample the same way (z ~ q(z|x) by loc + scale * eps):
    # their losses then differ by float rounding, not by Monte Carlo noise.
    epoch_state = torch.get_rng_state()
    ref.load_from(init_model, init_guide)
    # A second reference as plain-PyTorch scripts are usually written: torch's default
    # (per-tensor loop) Adam. The ratio is judged against the first, which uses mixvae's
    # optimiser (`mixvae.inference.adam`, fused): equal work down to the update.
    usual = Reference(prior, guide, data.data_dim, 10, k, hidden)
    usual.load_from(init_model, init_guide)
    refs = {
        "plain": (ref, adam(ref.parameters(), lr=config.lr)),
        "plain_default_adam": (usual, torch.optim.Adam(usual.parameters(), lr=config.lr)),
    }
    # the same data order as mixvae's loop, for each reference
    gens = {name: torch.Generator().manual_seed(config.seed) for name in refs}
    torch.set_flush_denormal(True)
    times: dict[str, list[float]] = {name: [] for name in refs}
    losses: dict[str, float] = {}
    for name, (r, opt) in refs.items():
        torch.set_rng_state(epoch_state)
        reference_epoch(r, opt, data.train_x, gens[name], config.batch_size)  # warm-up epoch
    for e in range(2, epochs + 2):
        # resume() continues from the random state saved at the end of the last epoch
        epoch_state = load_checkpoint(run.run_dir / "checkpoint.pt")["rng"]["torch"]
        run = resume(run.run_dir, epochs=e, dataset=data, progress=False, figures=False)
        pyro_run = resume(pyro_run.run_dir, epochs=e, dataset=data, progress=False, figures=False)
        jit_run = resume(jit_run.run_dir, epochs=e, dataset=data, progress=False, figures=False)
        for name, (r, opt) in refs.items():
            torch.set_rng_state(epoch_state)
            t, losses[name] = reference_epoch(r, opt, data.train_x, gens[name], config.batch_size)
            times[name].append(t)
    torch.set_flush_denormal(False)
    ours, ours_loss = _timed_epochs(run.run_dir)
    pyro_s, pyro_loss = _timed_epochs(pyro_run.run_dir)
    jit_s, jit_loss = _timed_epochs(jit_run.run_dir)
    plain, usual_s = statistics.median(times["plain"]), statistics.median(times["plain_default_adam"])
    return {
        "pair": f"{prior} x {guide}",
        "mixvae_s": ours,
        "plain_s": plain,
        "ratio": ours / plain,
        "mixvae_loss": ours_loss,
        "plain_loss": losses["plain"],
        "same_loss": _same_loss(ours_loss, losses["plain"]),
        "pyro_objective_s": pyro_s,
        "ratio_pyro_objective": pyro_s / plain,
        "pyro_objective_loss": pyro_loss,
        "same_loss_pyro_objective": _same_loss(pyro_loss, losses["plain"]),
        "jit_s": jit_s,
        "ratio_jit_vs_default": jit_s / ours,
        "jit_loss": jit_loss,
        "same_loss_jit": _same_loss(jit_loss, losses["plain"]),
        "plain_default_adam_s": usual_s,
        "ratio_vs_default_adam": ours / usual_s,
        "plain_default_adam_loss": losses["plain_default_adam"],
        "same_loss_default_adam": _same_loss(ours_loss, losses["plain_default_adam"]),
    }


def _timed_epochs(run_dir: Path) -> tuple[float, float]:
    """Median time of the optimisation steps of the epochs after the first; the last loss."""
    metrics = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()][1:]
    return statistics.median(m["train_seconds"] for m in metrics), metrics[-1]["train_loss"]


def _same_loss(ours: float, plain: float) -> bool:
    """Equal work: both loops reach the same training loss, within 1%."""
    return abs(ours - plain) / abs(plain) < 0.01


def eval_throughput(data: Dataset, n_points: int, samples: int, workdir: Path, hidden) -> dict:
    """IW log-likelihood of standard x gaussian: mixvae's estimator vs a hand-written loop."""
    config = TrainConfig(prior="standard", guide="gaussian", hidden=hidden, latent_dim=10)
    torch.manual_seed(0)
    model, guide = build(config, data.data_dim)
    x = data.test_x[:n_points]
    t0 = time.perf_counter()
    ours = log_likelihood(model, guide, x, samples).mean()
    t_ours = time.perf_counter() - t0
    ref = Reference("standard", "gaussian", data.data_dim, 10, 1, hidden)
    ref.load_from(model, guide)
    t0 = time.perf_counter()
    with torch.no_grad():
        out = []
        for xb in x.split(100):
            loc, raw = ref.guide.head(ref.guide.body(xb)).chunk(2, -1)
            q = torch.distributions.Normal(loc, positive(raw))
            lw = []
            for _ in range(0, samples, 100):
                z = q.sample((100,))
                lw.append(-ref.bce(xb, z) + ref.log_prior(z) - q.log_prob(z).sum(-1))
            out.append(torch.logsumexp(torch.cat(lw), 0) - math.log(samples))
        plain = torch.cat(out).mean()
    t_plain = time.perf_counter() - t0
    return {
        "points": n_points,
        "samples": samples,
        "mixvae_s": t_ours,
        "plain_s": t_plain,
        "ratio": t_ours / t_plain,
        "mixvae_ll": float(ours),
        "plain_ll": float(plain),
    }


def peak_memory(args: argparse.Namespace, workdir: Path) -> dict:
    """Peak resident memory of a whole `mixvae train` process (a child, so it is measured alone)."""
    cmd = [
        sys.executable,
        "-m",
        "mixvae.cli",
        "train",
        "--prior",
        "gmm",
        "--guide",
        "categorical",
        "--epochs",
        str(args.memory_epochs),
        "--quiet",
        "--out",
        str(workdir / "memory"),
        "--overwrite",
    ]
    if not args.quick:
        cmd += ["--dataset", "mnist", "--data-dir", args.data_dir, "--no-download"]
    t0 = time.perf_counter()
    subprocess.run(cmd, check=True, capture_output=True)
    return {
        "epochs": args.memory_epochs,
        "peak_rss_mb": resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024,
        "wall_s": time.perf_counter() - t0,
        "command": " ".join(cmd[1:]),
    }


def components_scaling(data: Dataset, ks: list[int], workdir: Path, hidden) -> list[dict]:
    rows = []
    for guide in ("gaussian", "categorical"):
        for k in ks:
            config = TrainConfig(
                prior="gmm",
                guide=guide,
                components=k,
                hidden=hidden,
                epochs=2,
                out=str(workdir / f"k{k}-{guide}"),
                overwrite=True,
                checkpoint_every=1000,
            )
            run = train(config, dataset=data, progress=False, figures=False)
            last = json.loads((run.run_dir / "metrics.jsonl").read_text().splitlines()[-1])
            rows.append({"pair": f"gmm x {guide}", "K": k, "epoch_s": last["train_seconds"]})
    return rows


def _flat(full: Dataset, n_test: int) -> Dataset:
    """The images as flat vectors (the mlp network), as the plain reference takes them."""
    return Dataset(
        full.name,
        full.train_x.flatten(1),
        full.test_x[:n_test].flatten(1),
        full.train_y,
        full.test_y[:n_test],
        full.image_shape,
    )


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data-dir", default=str(ROOT.parent / "shared" / "data" / "mnist"))
    parser.add_argument("--epochs", type=int, default=3, help="timed epochs after the warm-up epoch")
    parser.add_argument("--quick", action="store_true", help="smoke run on little data (CI)")
    parser.add_argument("--skip", nargs="*", default=[], choices=("pairs", "eval", "memory", "components"))
    parser.add_argument("--json", default=None, help="also write the results to this file")
    args = parser.parse_args()
    torch.set_num_threads(2)
    hidden = (512, 512)
    if args.quick:
        data = _flat(load_dataset("digits"), 200)
        args.epochs, args.memory_epochs, ks, eval_points, eval_samples = 1, 1, [10, 30], 50, 50
    else:
        # a small held-out set: the per-epoch held-out ELBO is not part of the timed steps anyway
        data = _flat(load_dataset("mnist", args.data_dir, download=False), 500)
        args.memory_epochs, ks, eval_points, eval_samples = 10, [10, 30, 100], 2000, 1000
    results: dict = {
        "machine": f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores, torch "
        f"{torch.__version__}, {torch.get_num_threads()} threads",
        "data": f"{data.name} ({len(data.train_x)} train)",
    }
    print(f"# {results['machine']}; {results['data']}")
    load0 = os.getloadavg()[0]
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        if "pairs" not in args.skip:
            print(
                f"{'pair':<22} {'mixvae s/epoch':>14} {'plain s/epoch':>14} {'ratio':>6}  same loss (<1%)"
                f"   | --objective pyro: s/epoch, ratio, same loss"
                f"   | --jit: s/epoch, ratio to mixvae's default, same loss"
                f"   | plain, torch's default Adam: s/epoch, ratio, same loss"
            )
            results["pairs"] = []
            for prior, guide in PAIRS:
                r = compare_pair(prior, guide, data, args.epochs, work, hidden, 10)
                results["pairs"].append(r)
                print(
                    f"{r['pair']:<22} {r['mixvae_s']:>14.3f} {r['plain_s']:>14.3f} {r['ratio']:>6.2f}  "
                    f"{r['same_loss']} ({r['mixvae_loss']:.2f} vs {r['plain_loss']:.2f})   | "
                    f"{r['pyro_objective_s']:.3f}, {r['ratio_pyro_objective']:.2f}, "
                    f"{r['same_loss_pyro_objective']} ({r['pyro_objective_loss']:.2f})   | "
                    f"{r['jit_s']:.3f}, {r['ratio_jit_vs_default']:.2f}, "
                    f"{r['same_loss_jit']} ({r['jit_loss']:.2f})   | "
                    f"{r['plain_default_adam_s']:.3f}, {r['ratio_vs_default_adam']:.2f}, "
                    f"{r['same_loss_default_adam']} ({r['plain_default_adam_loss']:.2f})",
                    flush=True,
                )
        if "eval" not in args.skip:
            r = eval_throughput(data, eval_points, eval_samples, work, hidden)
            results["eval"] = r
            print(
                f"IW log-likelihood, S={r['samples']}, {r['points']} test images: mixvae {r['mixvae_s']:.1f} s, "
                f"plain {r['plain_s']:.1f} s, ratio {r['ratio']:.2f}",
                flush=True,
            )
        if "memory" not in args.skip:
            r = peak_memory(args, work)
            results["memory"] = r
            print(
                f"peak RSS of a {r['epochs']}-epoch training run: {r['peak_rss_mb']:.0f} MB "
                f"({r['wall_s']:.0f} s)",
                flush=True,
            )
        if "components" not in args.skip:
            subset = Dataset(data.name, data.train_x[:5000], data.test_x[:200], None, None, data.image_shape)
            results["components"] = components_scaling(subset, ks, work, hidden)
            for r in results["components"]:
                print(f"{r['pair']:<22} K={r['K']:<4} {r['epoch_s']:.2f} s/epoch (5,000 images)", flush=True)
    results["load_average"] = [load0, os.getloadavg()[0]]
    print(f"# load average before/after: {load0:.2f} / {os.getloadavg()[0]:.2f}")
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
