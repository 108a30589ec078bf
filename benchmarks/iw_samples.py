"""How much the importance-weighted log p(x) of trained runs moves with S, on the same test images.

The likelihood table's estimate, log (1/S) sum_s w_s with z_s ~ q(z|x), is a
lower bound of log p(x) that tightens as S grows (Burda et al. 2016), so an
S smaller than the protocol's 5,000 understates every row.  This script
evaluates each run at several S on the same test images and prints

* each run's mean log p(x) at every S, and the gain of the largest S over
  the smallest (mean ± standard error over images);
* each run's difference to the first run at every S (paired over images):
  the comparison the table is about, and whether it depends on S.

    python benchmarks/iw_samples.py RUN [RUN ...] --data-dir ../shared/data/mnist \\
        --samples 1000 5000 --test-points 500
    python benchmarks/iw_samples.py --smoke     # trains two tiny runs on digits (CI)
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import tempfile
import time
from pathlib import Path

import torch

from mixvae import TrainConfig, load_dataset, load_run, train
from mixvae.data import Dataset, evaluation_data
from mixvae.evaluation.likelihood import importance_sampling


def mean_se(values: torch.Tensor) -> tuple[float, float]:
    v = values.double()
    return float(v.mean()), float(v.std() / math.sqrt(len(v))) if len(v) > 1 else 0.0


def check(
    runs: list[str], samples: list[int], test_points: int | None, data_dir: str | None, seed: int
) -> dict:
    """Per-image log p(x) of every run at every S; the summaries the script prints."""
    out: dict = {"samples": samples, "runs": []}
    per_image: list[dict[int, torch.Tensor]] = []
    datasets: dict[tuple[str, str | None], Dataset] = {}  # runs on the same data load it once
    for path in runs:
        run = load_run(path)
        where = (run.config.dataset, data_dir or run.config.data_dir)
        if where not in datasets:
            datasets[where] = load_dataset(*where, download=False)
        data = datasets[where]
        x = evaluation_data(data.test_x[:test_points], run.config.binarize)
        lls, seconds = {}, {}
        for s in samples:
            t0 = time.perf_counter()
            lls[s] = importance_sampling(run.model, run.guide, x, s, seed=seed).log_likelihood
            seconds[s] = time.perf_counter() - t0
        per_image.append(lls)
        gain = mean_se(lls[max(samples)] - lls[min(samples)])
        out["runs"].append(
            {
                "run": str(path),
                "prior": run.config.prior,
                "guide": run.config.guide,
                "test_points": len(x),
                "log_likelihood": {s: mean_se(lls[s]) for s in samples},
                "gain": gain,
                "seconds": seconds,
                "vs_first": {s: mean_se(lls[s] - per_image[0][s]) for s in samples},
            }
        )
    return out


def table(result: dict) -> str:
    samples = result["samples"]
    lo, hi = min(samples), max(samples)
    head = ["run", "images"] + [f"log p(x), S = {s}" for s in samples]
    head += [f"S = {hi} minus S = {lo}"] + [f"minus first run, S = {s}" for s in samples]
    head += ["seconds"]
    lines = ["| " + " | ".join(head) + " |", "|" + " --- |" * len(head)]
    for r in result["runs"]:
        cells = [r["run"], str(r["test_points"])]
        cells += [f"{r['log_likelihood'][s][0]:.2f} ± {r['log_likelihood'][s][1]:.2f}" for s in samples]
        cells += [f"{r['gain'][0]:+.3f} ± {r['gain'][1]:.3f}"]
        cells += [f"{r['vs_first'][s][0]:+.2f} ± {r['vs_first'][s][1]:.2f}" for s in samples]
        cells += [" / ".join(f"{r['seconds'][s]:.0f}" for s in samples)]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("runs", nargs="*", help="run folders (the first is the reference of the differences)")
    parser.add_argument("--samples", type=int, nargs="+", default=[1000, 5000], help="the values of S")
    parser.add_argument(
        "--test-points", type=int, default=None, help="the first N test images (default: all)"
    )
    parser.add_argument("--data-dir", default=None, help="folder of the data files (default: each run's own)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--json", default=None, help="also write the numbers here")
    parser.add_argument("--smoke", action="store_true", help="train two tiny runs on digits and check them")
    args = parser.parse_args(argv)
    if not args.smoke and not args.runs:
        parser.error("name at least one run folder (or --smoke)")
    if any(s < 1 for s in args.samples):
        parser.error(f"--samples must be positive, got {args.samples}")
    if args.test_points is not None and args.test_points < 2:
        parser.error(f"--test-points must be >= 2, got {args.test_points}")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    torch.set_num_threads(2)
    with tempfile.TemporaryDirectory() as tmp:
        if args.smoke:
            args.runs, args.samples, args.test_points = [], [10, 50], 40
            for prior in ("standard", "gmm"):
                config = TrainConfig(
                    prior=prior, guide="gaussian", hidden=(32,), latent_dim=4, epochs=2, out=f"{tmp}/{prior}"
                )
                train(config, progress=False, figures=False)
                args.runs.append(f"{tmp}/{prior}")
        result = check(args.runs, args.samples, args.test_points, args.data_dir, args.seed)
    print(table(result))
    if args.json:
        Path(args.json).write_text(json.dumps(result, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
