"""What the variants of a from-scratch recipe cost per optimisation step, against the recipe
itself, timed in one process (so that the ratios hold whatever else the machine runs).

    python benchmarks/recipe_cost.py --data-dir ../shared/data/mnist --threads 1
    python benchmarks/recipe_cost.py --smoke        # tiny networks on the 8x8 digits (CI)

Dilokthanakul et al.'s recipe (``benchmarks/recipes.py``, K = 16) as measured in the README,
and the same with what the authors' code adds: M = 10 draws per point (``--particles 10``), a
prior network from w of width 500 (``--w-hidden 500``), and both. Each step is the trainer's
loss (:class:`mixvae.inference.loss.TrainingLoss`) on one minibatch of the recipe's size, its
backward pass and an Adam update; prints milliseconds a step, the ratio to the recipe and the
minutes an epoch of the data set would take.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import time
from pathlib import Path
from typing import Any

import torch

import mixvae
from mixvae import TrainConfig, load_dataset
from mixvae.inference.loss import TrainingLoss

sys.path.insert(0, str(Path(__file__).resolve().parent))
from recipes import DILOKTHANAKUL  # the script's own folder

#: small enough for CI
SMOKE = {"hidden": (32,), "latent_dim": 8, "w_dim": 4, "w_hidden": 16}


def variants(wide: int) -> list[tuple[str, dict[str, Any]]]:
    """The recipe and what the authors' code adds to it (``wide``: their prior network's width)."""
    return [
        ("recipe", {}),
        ("--particles 10", {"particles": 10}),
        (f"--w-hidden {wide}", {"w_hidden": wide}),
        (f"--particles 10 --w-hidden {wide}", {"particles": 10, "w_hidden": wide}),
    ]


def time_steps(
    config: TrainConfig, x: torch.Tensor, num_data: int, steps: int, warmup: int
) -> dict[str, Any]:
    """Seconds a step of ``config``'s training loss on the minibatch ``x`` (after ``warmup`` steps)."""
    torch.manual_seed(0)
    model, guide = mixvae.build(config, tuple(x.shape[1:]))
    loss = TrainingLoss(model, guide, particles=config.particles)
    optimizer = torch.optim.Adam([*model.parameters(), *guide.parameters()], lr=config.lr)
    for i in range(warmup + steps):
        if i == warmup:
            start = time.perf_counter()
        optimizer.zero_grad()
        value = loss(x, num_data)
        value.backward()
        optimizer.step()
    seconds = (time.perf_counter() - start) / steps
    return {
        "seconds_per_step": seconds,
        "loss": float(value.detach()) / num_data,
        "objective": loss.describe(),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data-dir", default=str(Path(__file__).resolve().parents[2] / "shared/data/mnist"))
    parser.add_argument("--steps", type=int, default=20, help="timed steps per variant (after 5 untimed)")
    parser.add_argument("--threads", type=int, default=1, help="torch threads")
    parser.add_argument("--json", default=None, help="also write the numbers to this file")
    parser.add_argument("--smoke", action="store_true", help="tiny networks on the 8x8 digits (CI)")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    if args.smoke:
        data, steps, warmup, scale, wide = load_dataset("digits"), 2, 1, SMOKE, 64
    else:
        data, steps, warmup, scale, wide = (
            load_dataset("mnist", args.data_dir, download=False),
            args.steps,
            5,
            {},
            500,
        )
    base = {**DILOKTHANAKUL, "components": 16, "network": "mlp", **scale}
    x = data.train_x[: base["batch_size"]]
    epoch_steps = math.ceil(len(data.train_x) / base["batch_size"])
    rows = []
    for name, extra in variants(wide):
        config = TrainConfig(**{**base, **extra})
        rows.append({"variant": name, **time_steps(config, x, len(data.train_x), steps, warmup)})
    for row in rows:
        row["ratio"] = row["seconds_per_step"] / rows[0]["seconds_per_step"]
        row["minutes_per_epoch"] = row["seconds_per_step"] * epoch_steps / 60
    print(
        f"Dilokthanakul et al.'s recipe, K = 16, on {data.name} ({len(data.train_x)} training points, "
        f"{epoch_steps} steps an epoch), {args.threads} torch thread(s), {steps} timed steps each:"
    )
    print("| variant | ms/step | vs recipe | min/epoch | objective |")
    print("| --- | --- | --- | --- | --- |")
    for row in rows:
        print(
            f"| {row['variant']} | {1000 * row['seconds_per_step']:.1f} | {row['ratio']:.2f} | "
            f"{row['minutes_per_epoch']:.1f} | {row['objective']} |"
        )
    if args.json:
        Path(args.json).write_text(
            json.dumps({"rows": rows, "steps": steps, "threads": args.threads}, indent=2)
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
