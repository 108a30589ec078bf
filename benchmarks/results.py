"""Clustering, likelihood and aggregate-posterior tables over several seeds, by one command per data set.

Trains and evaluates, for every seed:

* clustering (latent 10, K = 10 unless stated): ``gmm x categorical`` (Rui Shu's
  GMVAE), ``gmm x gaussian`` (VaDE-style, y enumerated in the model),
  ``dilokthanakul`` with K = 10 and K = 16, k-means / a full-covariance GMM
  on the encoder means of a ``standard x gaussian`` VAE, and ``gmm-full x
  gaussian`` warm-started from that VAE (VaDE's pretraining recipe,
  ``--init-from``, fine-tuned for ``--warm-epochs``), with learned and with
  uniform mixing weights (``--mixture-weights uniform``), the latter also with the
  prior fitted 10 times (``--init-fits 10``), with VaDE's learning-rate schedule and
  warm-started from the best of 4 standard VAEs by their training ELBO (``--restarts 4``),
  and fine-tuned from the best of 4 starts of 20 epochs by the same ELBO;
* likelihood (latent 40, dynamically binarised, as in the VampPrior paper):
  the ``standard``, ``gmm`` and ``vampprior`` priors, each with the
  ``gaussian`` and the ``mixture`` guide, the same epochs for all; the
  VampPrior also started from training images, ``gmm`` also with
  K = 500 (as many components as the VampPrior's pseudo-inputs), and
  ``gmm`` and ``vampprior`` x ``gaussian`` trained on the importance-weighted
  bound (``--objective iwae``) with K = 5 and 50;

* from scratch (``--only scratch``, ``--scratch-epochs``): the seed systems with their
  papers' recipes (``benchmarks/recipes.py``: Rui Shu's GMVAE with K = 10 and 16,
  Dilokthanakul et al.'s model with K = 10 and 16), no pretraining, with their learning
  curves (held-out accuracy and ELBO against epochs, ``scratch-curves.png``; with
  ``--curves`` those of the clustering rows too, ``clustering-curves.png``);

and writes a Markdown report (mean +- sd over seeds and the best seed) with
the clustering table (accuracy with Hungarian matching and with the majority
mapping, NMI, ARI, on the test set), the likelihood table (importance-weighted
log p(x), nats) and the aggregate-posterior table of the likelihood runs
(mutual information, marginal KL, active units, sample quality from the prior,
the aggregate posterior and a post-hoc GMM).  Every run is an ordinary mixvae
run folder under ``--out`` (``mixvae evaluate`` / ``mixvae sample`` work on
it); a run whose ``evaluation.json`` exists is not trained again, so an
interrupted invocation continues where it stopped.  ``--records DIR`` also keeps
each evaluated run's record (its JSON files, no checkpoint), which ``--out DIR
--report-only`` tabulates again where the run folders are gone.

    python benchmarks/results.py --data-dir ../shared/data/mnist --seeds 5
    python benchmarks/results.py --dataset cifar10 --network conv --only likelihood --plain-reference
    python benchmarks/results.py --smoke        # tiny data, a few seconds a run (CI)

``--dataset`` takes any data set with labels (a registered name or a path).
The likelihood follows the data unless ``--likelihood`` is given: Bernoulli on
grey images, binarised dynamically (the MNIST tables), the discretized
logistic mixture on colour images, not binarised, with a bits-per-dimension
column; data sets other than MNIST add ``gmm x categorical`` to the
likelihood rows, and ``--plain-reference`` a plain-PyTorch conv VAE
(``benchmarks/plain_conv.py``) trained at the same settings.
"""

from __future__ import annotations

import argparse
import csv
import dataclasses
import hashlib
import io
import json
import os
import platform
import re
import statistics
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

import mixvae
from mixvae import TrainConfig, load_dataset
from mixvae.data import Dataset
from mixvae.evaluation.evaluate import evaluate_run
from mixvae.evaluation.sample_quality import fit_sample_classifier
from mixvae.figures.training import plot_clustering_curves
from mixvae.runs import read_jsonl, write_bytes, write_json, write_text

sys.path.insert(0, str(Path(__file__).resolve().parent))
from recipes import SCRATCH_ROWS, recipe_flags  # the script's own folder

ROOT = Path(__file__).resolve().parents[1]


@dataclass(frozen=True)
class Setup:
    """One row of a table: a name and the settings that differ from the table's common ones."""

    name: str
    settings: dict[str, Any] = field(default_factory=dict)

    @property
    def slug(self) -> str:
        return re.sub(r"[^a-z0-9]+", "-", self.name.lower()).strip("-")


WARM_UNIFORM = {
    "prior": "gmm-full",
    "guide": "gaussian",
    "mixture_weights": "uniform",
    "init_from": "{out}/standard-x-gaussian/seed{seed}",
}
VAE = {"prior": "standard", "guide": "gaussian"}
DILO_STARTS = {"prior": "dilokthanakul", "guide": "dilokthanakul", "restarts": 4, "restart_epochs": 10}
CLUSTERING = [
    Setup("gmm x categorical (GMVAE, Rui Shu)", {"prior": "gmm", "guide": "categorical"}),
    Setup("gmm x gaussian (VaDE-style)", {"prior": "gmm", "guide": "gaussian"}),
    Setup("dilokthanakul, K = 10", {"prior": "dilokthanakul", "guide": "dilokthanakul"}),
    Setup("dilokthanakul, K = 16", {"prior": "dilokthanakul", "guide": "dilokthanakul", "components": 16}),
    # the same, best of 4 starts of 10 epochs by the training ELBO (--restarts 4 --restart-epochs 10)
    Setup("dilokthanakul, K = 10, best of 4 starts", {**DILO_STARTS}),
    Setup("dilokthanakul, K = 16, best of 4 starts", {**DILO_STARTS, "components": 16}),
    Setup("standard x gaussian", VAE),
    # VaDE's recipe: start from the standard VAE above (same seed), with a
    # full-covariance mixture prior fitted to its codes (`--init-from`).
    Setup(
        "gmm-full x gaussian, warm start",
        {"prior": "gmm-full", "guide": "gaussian", "init_from": "{out}/standard-x-gaussian/seed{seed}"},
    ),
    # the same with pi fixed at 1/K (--mixture-weights uniform), as in Rui Shu's GMVAE
    Setup("gmm-full x gaussian, warm start, uniform weights", WARM_UNIFORM),
    # the same, the prior fitted 10 times (--init-fits 10) and the fit with the best training ELBO kept
    Setup(
        "gmm-full x gaussian, warm start, uniform weights, best of 10 fits", {**WARM_UNIFORM, "init_fits": 10}
    ),
    # the same fine-tuned with VaDE's learning-rate schedule (0.002, x 0.9 every 10 epochs, floor 0.0002)
    Setup(
        "gmm-full x gaussian, warm start, uniform weights, 10 fits, VaDE's learning rate",
        {
            **WARM_UNIFORM,
            "init_fits": 10,
            "lr": 0.002,
            "lr_decay": 0.9,
            "lr_decay_epochs": 10,
            "lr_min": 0.0002,
        },
    ),
    # the best-of-10-fits row warm-started from the best of 4 standard VAEs: 4 starts trained for
    # all of --epochs (at most 20), the one with the best training ELBO kept (--restarts 4; no labels)
    Setup("standard x gaussian, best of 4 starts", {**VAE, "restarts": 4, "restart_epochs": 20}),
    Setup(
        "gmm-full x gaussian, warm start from the best of 4 starts, uniform, 10 fits",
        {
            **WARM_UNIFORM,
            "init_fits": 10,
            "init_from": "{out}/standard-x-gaussian-best-of-4-starts/seed{seed}",
        },
    ),
    # the best-of-10-fits row fine-tuned from 4 starts (each its own seed: its own 10 fits, batch
    # order and binarisation) for 20 epochs, the one with the best training ELBO trained on
    Setup(
        "gmm-full x gaussian, warm start, uniform, 10 fits, best of 4 fine-tunings",
        {**WARM_UNIFORM, "init_fits": 10, "restarts": 4, "restart_epochs": 20},
    ),
]
LIKELIHOOD = (
    [
        Setup(f"{prior} x {guide}", {"prior": prior, "guide": guide})
        for prior in ("standard", "gmm", "vampprior")
        for guide in ("gaussian", "mixture")
    ]
    + [
        # Tomczak & Welling's other start: pseudo-inputs copied from training images
        Setup(
            f"vampprior, data init x {guide}", {"prior": "vampprior", "guide": guide, "pseudo_init": "data"}
        )
        for guide in ("gaussian", "mixture")
    ]
    + [
        # a learned mixture prior with as many components as the VampPrior has pseudo-inputs
        Setup(f"gmm, K = 500 x {guide}", {"prior": "gmm", "guide": guide, "components": 500})
        for guide in ("gaussian", "mixture")
    ]
    + [
        # trained on the importance-weighted bound (Burda et al.) with K particles, same epochs
        Setup(
            f"{prior}, IWAE K = {k} x gaussian",
            {"prior": prior, "guide": "gaussian", "objective": "iwae", "particles": k},
        )
        for prior in ("gmm", "vampprior")
        for k in (5, 50)
    ]
)
#: the likelihood rows of data sets other than MNIST (whose tables stay as measured): Rui Shu's
#: GMVAE beside them, scored by its likelihood too
OTHER_DATA_LIKELIHOOD = [Setup("gmm x categorical", {"prior": "gmm", "guide": "categorical"})]
CLUSTER_SCORES = ("acc_hungarian", "acc_majority", "nmi", "ari")
#: the seed systems from scratch, with their papers' recipes (benchmarks/recipes.py)
SCRATCH = [Setup(name, settings) for name, settings in SCRATCH_ROWS]


def likelihood_rows(dataset: str) -> list[Setup]:
    """The rows of the likelihood table for ``dataset``."""
    return LIKELIHOOD if dataset in ("mnist", "digits") else LIKELIHOOD + OTHER_DATA_LIKELIHOOD


# ----------------------------------------------------------------------------- running


def run_one(
    setup: Setup,
    common: dict[str, Any],
    seed: int,
    data: Dataset,
    out: Path,
    eval_args: dict[str, Any],
    report_only: bool = False,
) -> dict[str, Any] | None:
    """Train (or continue) one seed of one setup and evaluate it; returns evaluation + summary.

    A run folder is reused only when its ``config.json`` and evaluation settings
    are the ones asked for; a half-trained run is resumed, and so is a finished
    one asked for more epochs (then evaluated again); a run stopped by
    SIGINT/SIGTERM ends the script (exit 130/143) instead of being evaluated.
    """
    run_dir = out / setup.slug / f"seed{seed}"
    settings = {
        k: v.format(out=out, seed=seed) if isinstance(v, str) else v for k, v in setup.settings.items()
    }
    if "restart_epochs" in settings:  # (--smoke trains fewer epochs than a start's 10)
        settings["restart_epochs"] = min(settings["restart_epochs"], common["epochs"])
    config = TrainConfig(**{**common, **settings, "seed": seed, "out": str(run_dir)})
    wanted_eval = {"iw_samples": eval_args["iw_samples"], "num_points": len(data.test_x)}
    longer = False  # a finished run asked to train for more epochs: continue it
    if (run_dir / "config.json").exists():
        stored = TrainConfig.from_dict(json.loads((run_dir / "config.json").read_text()))
        if stored.restarts > 1 and stored.restart_epochs == stored.epochs < config.restart_epochs:
            # its starts were cut to a shorter budget and are done: a longer one trains the chosen on
            config = dataclasses.replace(config, restart_epochs=stored.restart_epochs)
        same = dataclasses.replace(  # (--eval-every only decides which epochs are scored;
            stored,  # a copied or moved folder records where it was trained)
            out=config.out,
            init_from=_moved(stored.init_from, Path(stored.out).parents[1], out),
            overwrite=config.overwrite,
            dataset=config.dataset,
            data_dir=config.data_dir,
            eval_every=config.eval_every,
        )
        longer = stored.epochs < config.epochs and dataclasses.replace(same, epochs=config.epochs) == config
        if same != config and not longer:
            raise SystemExit(
                f"{run_dir} holds a run with other settings; use another --out or delete that folder"
            )
    if config.init_from is not None and (run_dir / "init_from.json").exists():
        _check_warm_start_source(run_dir, Path(config.init_from), gone_ok=report_only)
    done = run_dir / "evaluation.json"
    if longer and not report_only:
        # the evaluation and summary are of the shorter run; resume() trains up to config.epochs
        done.unlink(missing_ok=True)
        (run_dir / "summary.json").unlink(missing_ok=True)
    if done.exists() and {k: json.loads(done.read_text())[k] for k in wanted_eval} != wanted_eval:
        done.unlink()  # evaluated with other settings: evaluate again
    if not done.exists() and report_only:
        return None
    if not done.exists():
        if not (run_dir / "summary.json").exists():
            if (run_dir / "checkpoint.pt").exists() or (run_dir / "restarts").is_dir():  # (in its --restarts)
                run = mixvae.inference.resume(
                    run_dir,
                    epochs=config.epochs,
                    eval_every=config.eval_every,
                    dataset=data,
                    progress=False,
                    figures=False,
                )
            else:
                run = mixvae.train(config, dataset=data, progress=False, figures=False, overwrite=True)
            if run.interrupted:
                print(f"{run_dir}: stopped by {run.interrupted}; run the same command again to go on")
                raise SystemExit(130 if run.interrupted == "SIGINT" else 143)
        t0 = time.perf_counter()
        evaluate_run(run_dir, dataset=data, figures=False, seed=seed, **eval_args)
        summary = json.loads((run_dir / "summary.json").read_text())
        summary["evaluation_seconds"] = time.perf_counter() - t0
        write_json(run_dir / "summary.json", summary)  # atomically, as every file of a run
    result = json.loads(done.read_text())
    result["summary"] = json.loads((run_dir / "summary.json").read_text())
    result["config"] = json.loads((run_dir / "config.json").read_text())
    result["run_dir"] = str(run_dir)
    # the optimisation steps of every epoch, whether trained in one go or resumed,
    # plus those of the run a warm start began from
    result["train_seconds"], result["epochs"] = _training_time(run_dir, config.init_from)
    return result


def _moved(path: str | None, before: Path, now: Path) -> str | None:
    """``path`` inside the results folder ``before``, read inside ``now`` (the folder has moved)."""
    if path is None or not Path(path).is_relative_to(before):
        return path
    return str(now / Path(path).relative_to(before))


def _check_warm_start_source(run_dir: Path, source: Path, gone_ok: bool = False) -> None:
    """A warm-started run is reused only while the run it started from is the one it read; with
    ``gone_ok`` (``--report-only``: nothing trains from it) a source without its checkpoint, such as
    a record kept by ``--records``, is not checked."""
    recorded = json.loads((run_dir / "init_from.json").read_text())["checkpoint_sha256"]
    checkpoint = source / "checkpoint.pt"
    now = hashlib.sha256(checkpoint.read_bytes()).hexdigest() if checkpoint.exists() else None
    if now is None and gone_ok:
        return
    if now != recorded:
        raise SystemExit(
            f"{run_dir} was warm-started from a {source} that has since changed or gone; "
            "delete that folder to train it again from the current one"
        )


def _training_time(run_dir: Path, init_from: str | None = None) -> tuple[float, int | str]:
    """Seconds of optimisation steps and epochs of a run: its own epochs, after those of the
    starts its ``--restarts`` did not choose, after those of the run it was warm-started from
    (``init_from``, with that run's own restarts); epochs read "others + own" when there are any."""
    metrics = read_jsonl(run_dir / "metrics.jsonl")
    seconds, epochs = sum(m["train_seconds"] for m in metrics), len(metrics)
    if (run_dir / "restarts.json").exists():  # --restarts: the starts not chosen trained too
        starts = json.loads((run_dir / "restarts.json").read_text())["starts"]
        others = [_training_time(run_dir / s["folder"]) for s in starts if not s["chosen"]]
        seconds += sum(t for t, _ in others)
        epochs = f"{sum(int(e) for _, e in others)} + {epochs}"
    if init_from is not None:
        t, e = _training_time(Path(init_from))
        seconds, epochs = seconds + t, f"{e} + {epochs}"
    return seconds, epochs


def keep_record(run_dir: Path, record: Path) -> None:
    """Copy the record of an evaluated run -- its JSON files: config, metrics, evaluation,
    summary, where it was warm-started from (``init_from.json``) and the starts of ``--restarts``;
    no checkpoint, no manifest, so it is not a run folder -- into ``record``, where ``--out RECORDS
    --report-only`` tabulates it again on a machine that no longer has the run folders
    (kilobytes a run: small enough to commit)."""
    if record.resolve() == run_dir.resolve():
        return
    for path in sorted(run_dir.rglob("*")):
        if path.is_file() and path.suffix in (".json", ".jsonl") and path.name != "mixvae-run.json":
            target = record / path.relative_to(run_dir)
            target.parent.mkdir(parents=True, exist_ok=True)
            write_bytes(target, path.read_bytes())


def train_minutes(results: list[dict[str, Any]]) -> float:
    """Mean time per seed (minutes) spent in the optimisation steps, from ``metrics.jsonl``."""
    return statistics.fmean(r["train_seconds"] for r in results) / 60


# ----------------------------------------------------------------------------- tables


def mean_sd(values: list[float], scale: float = 1.0, digits: int = 1) -> str:
    """``mean ± sd`` (sample sd over seeds; a lone seed gets no sd)."""
    v = [scale * x for x in values]
    if len(v) == 1:
        return f"{v[0]:.{digits}f}"
    return f"{statistics.fmean(v):.{digits}f} ± {statistics.stdev(v):.{digits}f}"


def best(values: list[float], scale: float = 1.0, digits: int = 1) -> str:
    return f"{scale * max(values):.{digits}f}"


def clustering_table(found: dict[str, list[dict[str, Any]]]) -> list[str]:
    rows = [
        "| model | clusters from | accuracy (Hungarian), % | best seed | accuracy (majority), % | NMI | ARI"
        " | epochs | train min/seed |",
        "| --- | --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    for name, results in found.items():
        sources = ["model"] if "model" in results[0]["clustering"] else ["kmeans", "gmm"]
        for source in sources:
            scores = [r["clustering"][source] for r in results]
            label = {"model": "the model's own (most probable y)", "kmeans": "k-means on encoder means"}.get(
                source, "full-covariance GMM on encoder means"
            )
            k = results[0]["clustering"]["num_clusters"]
            rows.append(
                f"| {name} | {label} (K = {k}) | {mean_sd([s['acc_hungarian'] for s in scores], 100)} | "
                f"{best([s['acc_hungarian'] for s in scores], 100)} | "
                f"{mean_sd([s['acc_majority'] for s in scores], 100)} | "
                f"{mean_sd([s['nmi'] for s in scores], digits=3)} | "
                f"{mean_sd([s['ari'] for s in scores], digits=3)} | "
                f"{results[0]['epochs']} | {train_minutes(results):.1f} |"
            )
    return rows


def scratch_table(found: dict[str, list[dict[str, Any]]]) -> list[str]:
    """The from-scratch table: accuracy (Hungarian: mean ± sd, best and worst seed; majority
    mapping), NMI, held-out ELBO, epochs, minutes per seed and each row's recipe as flags."""
    rows = [
        "| model | accuracy (Hungarian), % | best seed | worst seed | accuracy (majority), % | NMI | "
        "ELBO, nats | epochs | train min/seed | recipe (`mixvae train` flags) |",
        "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    for name, results in found.items():
        scores = [r["clustering"]["model"] for r in results]
        acc = [s["acc_hungarian"] for s in scores]
        rows.append(
            f"| {name} | {mean_sd(acc, 100)} | "
            f"{best(acc, 100)} | {100 * min(acc):.1f} | {mean_sd([s['acc_majority'] for s in scores], 100)} | "
            f"{mean_sd([s['nmi'] for s in scores], digits=3)} | {mean_sd([r['elbo'] for r in results], digits=2)} | "
            f"{results[0]['epochs']} | {train_minutes(results):.1f} | `{recipe_flags(results[0]['config'])}` |"
        )
    return rows


def read_curves(path: Path) -> dict[str, dict[int, list[dict[str, Any]]]]:
    """The learning curves of a ``scratch-curves.csv`` or ``clustering-curves.csv`` written
    earlier (``--curves-from``), as ``metrics.jsonl`` records: row -> seed -> the scored epochs
    (their ``train_seconds`` the training time since the previous one, so that they add up as
    those of a run)."""
    try:
        with path.open(newline="") as f:
            lines = list(csv.DictReader(f))
        curves: dict[str, dict[int, list[dict[str, Any]]]] = {}
        so_far: dict[tuple[str, int], float] = {}  # the cumulative seconds of each curve's last line
        for line in lines:
            key = (line["row"], int(line["seed"]))
            records = curves.setdefault(key[0], {}).setdefault(key[1], [])
            before, so_far[key] = so_far.get(key, 0.0), float(line["train_seconds"])
            records.append(
                {
                    "epoch": int(line["epoch"]),
                    "clustering": {k: float(line[k]) for k in ("acc_hungarian", "acc_majority", "nmi")},
                    "heldout_elbo": float(line["heldout_elbo"]),
                    "train_seconds": float(line["train_seconds"]) - before,
                }
            )
    except (OSError, KeyError, ValueError, TypeError) as e:
        raise SystemExit(
            f"--curves-from {path}: not a curves CSV of results.py ({type(e).__name__}: {e}); "
            "give the .csv written beside a scratch-curves.png or clustering-curves.png"
        ) from None
    return curves


def write_curves(
    found: dict[str, list[dict[str, Any]]], path: Path, earlier: list[Path] | tuple[Path, ...] = ()
) -> None:
    """Held-out accuracy and ELBO against epochs of every seed of every row in ``found``: the
    figure at ``path`` and its numbers beside it (``path`` with ``.csv``: row, seed, epoch,
    accuracy (Hungarian, majority), NMI, held-out ELBO, training seconds so far), with the
    curves of the ``earlier`` CSVs (``--curves-from``) of the rows and seeds not trained here."""
    curves: dict[str, dict[int, list[dict[str, Any]]]] = {}
    for name, results in found.items():
        row = re.sub(r" \(\d+ of \d+ seeds\)$", "", name)  # a row short of seeds: the same row
        for r in results:
            curves.setdefault(row, {})[r["seed"]] = read_jsonl(Path(r["run_dir"]) / "metrics.jsonl")
    for csv_path in earlier:
        for row, seeds in read_curves(csv_path).items():
            for seed, records in seeds.items():
                curves.setdefault(row, {}).setdefault(seed, records)  # this invocation's runs first
    plot_clustering_curves({row: list(seeds.values()) for row, seeds in curves.items()}, path)
    text = io.StringIO()
    table = csv.writer(text, lineterminator="\n")
    table.writerow(
        ["row", "seed", "epoch", "acc_hungarian", "acc_majority", "nmi", "heldout_elbo", "train_seconds"]
    )
    for row, seeds in curves.items():
        for seed, metrics in seeds.items():
            seconds = 0.0
            for m in metrics:
                seconds += m["train_seconds"]
                if "clustering" not in m:  # an epoch that --eval-every skips
                    continue
                c = m["clustering"]
                table.writerow(
                    [row, seed, m["epoch"], f"{c['acc_hungarian']:.4f}", f"{c['acc_majority']:.4f}"]
                    + [f"{c['nmi']:.4f}", f"{m['heldout_elbo']:.3f}", f"{seconds:.3f}"]
                )
    write_text(path.with_suffix(".csv"), text.getvalue())  # atomically, like the figure


def _bits(results: list[dict[str, Any]]) -> bool:
    """Whether log p(x) of these runs is a mass over discrete levels: bits per dimension apply."""
    return all(r.get("bits_per_dim") is not None for r in results)


def likelihood_table(found: dict[str, list[dict[str, Any]]], bits: bool = False) -> list[str]:
    """The likelihood table; with ``bits`` (8-bit data) a bits-per-dimension column."""
    bits = bits and all(_bits(r) for r in found.values())
    rows = [
        "| prior x guide | log p(x), nats | best seed | "
        + ("bits/dim | " if bits else "")
        + "ELBO, nats | vs standard, same guide | mixture guide vs gaussian, same prior | k-hat > 0.7 | "
        "epochs | train min/seed |",
        "| --- | --- | --- | " + ("--- | " if bits else "") + "--- | --- | --- | --- | --- | --- |",
    ]
    # log p(x) per seed, by (row's prior, guide): differences pair the same seeds. The row's
    # prior is its name before " x guide", so "vampprior, data init" is a prior of its own.
    ll = {
        (_row_prior(name), r[0]["guide"]): {x["seed"]: x["log_likelihood"] for x in r}
        for name, r in found.items()
    }
    for name, results in found.items():
        prior, guide = _row_prior(name), results[0]["guide"]
        mine = ll[prior, guide]
        ref = ll.get(("standard", guide))
        other = ll.get((prior, "gaussian" if guide == "mixture" else "mixture"))
        vs_standard = "—" if prior == "standard" or ref is None else _diff(mine, ref)
        vs_guide = "—" if guide != "mixture" or other is None else _diff(mine, other)
        values = list(mine.values())
        bpd = f"{mean_sd([r['bits_per_dim'] for r in results], digits=3)} | " if bits else ""
        rows.append(
            f"| {name} | {mean_sd(values, digits=2)} | {best(values, digits=2)} | {bpd}"
            f"{mean_sd([r['elbo'] for r in results], digits=2)} | {vs_standard} | {vs_guide} | "
            f"{mean_sd([r['khat_over_0_7'] for r in results], 100, 0)}% | {results[0]['epochs']} | "
            f"{train_minutes(results):.1f} |"
        )
    return rows


def _row_prior(name: str) -> str:
    """``"vampprior, data init"`` of the row ``"vampprior, data init x mixture"``."""
    return name.rsplit(" x ", 1)[0]


def _diff(a: dict[int, float], b: dict[int, float]) -> str:
    """Difference of the means over the seeds both have, ± the sd of the per-seed differences."""
    d = [a[seed] - b[seed] for seed in sorted(a.keys() & b.keys())]
    return mean_sd(d, digits=2) if d else "—"


def aggregate_table(found: dict[str, list[dict[str, Any]]]) -> list[str]:
    rows = [
        "| prior x guide | avg KL | mutual information (≤ log N) | marginal KL | active units | "
        "sample confidence: prior / aggregate / post-hoc GMM / real images |",
        "| --- | --- | --- | --- | --- | --- |",
    ]
    for name, results in found.items():
        q = [r["sample_quality"] for r in results]
        conf = " / ".join(
            mean_sd([s[source]["mean_max_prob"] for s in q], digits=3)
            for source in ("prior", "aggregate", "posthoc-gmm", "data")
        )
        rows.append(
            f"| {name} | {mean_sd([r['avg_kl'] for r in results], digits=2)} | "
            f"{mean_sd([r['mutual_information'] for r in results], digits=2)} "
            f"(≤ {results[0]['mutual_information_bound']:.2f}) | "
            f"{mean_sd([r['marginal_kl'] for r in results], digits=2)} | "
            f"{mean_sd([float(r['active_units']) for r in results])} / {results[0]['latent_dim']} | {conf} |"
        )
    return rows


def machine(threads: int) -> str:
    """The machine the tables were measured on."""
    return f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores, {threads} torch threads, torch {torch.__version__}"


def _likelihood_text(c: dict[str, Any]) -> str:
    if c["likelihood"] == "logistic":
        return f"discretized logistic mixture of {c['logistic_components']}"
    return c["likelihood"]


def plain_table(found: list[dict[str, Any]]) -> list[str]:
    """The plain-PyTorch conv VAE rows (benchmarks/plain_conv.py), one per seed's mean."""
    bits = all(r["bits_per_dim"] is not None for r in found)
    return [
        "| model | log p(x), nats | "
        + ("bits/dim | " if bits else "")
        + "ELBO, nats | epochs | train min/seed |",
        "| --- | --- | " + ("--- | " if bits else "") + "--- | --- | --- |",
        "| plain-PyTorch conv VAE, N(0, I) prior, Gaussian encoder (the conv layers) | "
        f"{mean_sd([r['log_likelihood'] for r in found], digits=2)} | "
        + (f"{mean_sd([r['bits_per_dim'] for r in found], digits=3)} | " if bits else "")
        + f"{mean_sd([r['elbo'] for r in found], digits=2)} | {found[0]['epochs']} | "
        f"{statistics.fmean(r['train_seconds'] for r in found) / 60:.1f} |",
    ]


def report(
    args: argparse.Namespace,
    data: Dataset,
    clustering: dict[str, list[dict[str, Any]]],
    likelihood: dict[str, list[dict[str, Any]]],
    common: dict[str, dict[str, Any]],
    plain: list[dict[str, Any]] | None = None,
    scratch: dict[str, list[dict[str, Any]]] | None = None,
) -> str:
    """The Markdown report: what was run, then the tables (and the plain-PyTorch reference)."""
    lines = [
        "# mixvae results",
        "",
        f"Data: `{data.name}` {tuple(data.data_shape)}, {len(data.train_x)} training images, evaluated on "
        f"{len(data.test_x)} test images. "
        f"Seeds: {', '.join(map(str, args.seed_list))}. Command: `{' '.join(args.command)}`. "
        f"Machine: {machine(args.threads)}.",
        "",
    ]
    if clustering:
        c = common["clustering"]
        lines += [
            "## Clustering (test set)",
            "",
            f"Settings shared by all rows: latent {c['latent_dim']}, hidden {c['hidden']}, "
            f"{c['epochs']} epochs, batch {c['batch_size']}, lr {c['lr']}, KL warm-up "
            f"{c['warmup_epochs']} epochs, binarisation {c['binarize']}, network {c['network']}, "
            f"likelihood {_likelihood_text(c)}. No pretraining or "
            "initialisation from a clustering, except in the warm-start rows: they start from the "
            "standard x gaussian run of the same seed (`--init-from`), with the full-covariance "
            "mixture prior set to a GMM fitted to that run's encoder means on the training images "
            "(components widened by the mean encoder variance; with `--mixture-weights uniform` "
            "its means and covariances only, pi staying 1/K); their epochs read "
            "pretraining + fine-tuning and their minutes include both. The best-of-starts rows "
            "train 4 starts for 10 epochs each and go on with the one whose training ELBO is highest "
            "(`--restarts 4 --restart-epochs 10`; no labels): their epochs read the 3 other starts' + "
            "the run's, and their minutes include all four."
            + (" Held-out accuracy and ELBO against epochs: `clustering-curves.png`." if args.curves else ""),
            "",
            *clustering_table(clustering),
            "",
        ]
    if likelihood:
        c = common["likelihood"]
        first = next(iter(likelihood.values()))[0]
        lines += [
            f"## Likelihood (test set, S = {first['iw_samples']} importance samples, nats)",
            "",
            f"Settings shared by all rows: latent {c['latent_dim']}, hidden {c['hidden']}, "
            f"{c['epochs']} epochs, batch {c['batch_size']}, lr {c['lr']}, KL warm-up "
            f"{c['warmup_epochs']} epochs, binarisation {c['binarize']}, network {c['network']}, "
            f"likelihood {_likelihood_text(c)}, K = {c['components']} "
            f"(gmm, unless the row names its K), {c['pseudo_inputs']} pseudo-inputs (vampprior; they start as near-constant grey "
            "images, or, in the data-init rows, as random training images: `--pseudo-init data`), "
            f"{c['guide_components'] or c['components']} components (mixture guide). "
            "Differences are of seed means, ± the sd of the per-seed differences.",
            "",
            *likelihood_table(likelihood, bits=c["likelihood"] == "logistic"),
            "",
            *(
                [
                    "Reference trained in the same invocation, at the same settings, by "
                    "`benchmarks/plain_conv.py` (plain torch: its own likelihood and importance-weighted "
                    "estimator, no mixvae objective):",
                    "",
                    *plain_table(plain),
                    "",
                ]
                if plain
                else []
            ),
            "## Aggregate posterior (same runs as the likelihood table)",
            "",
            "ELBO surgery on the test set: avg KL = mutual information + marginal KL(q(z) ‖ p(z)). "
            "Sample confidence: mean largest class probability that a logistic regression "
            "(trained on the training images) gives to decoded samples.",
            "",
            *aggregate_table(likelihood),
            "",
        ]
    if scratch:
        lines += [
            "## From scratch, the papers' recipes (test set)",
            "",
            "No pretraining, no initialisation from a clustering, no labels at any step; the numbers "
            "are those of the last epoch (no selection of seed, restart or epoch). Each row's recipe is "
            "the `mixvae train` flags beside it (besides the data, `--epochs` and `--seed`). Held-out "
            "accuracy and ELBO against epochs: `scratch-curves.png`.",
            "",
            *scratch_table(scratch),
            "",
        ]
    return "\n".join(lines)


# ----------------------------------------------------------------------------- main


def select_rows(plan: list[tuple[str, Setup, int]], texts: list[str]) -> list[tuple[str, Setup, int]]:
    """The rows whose name contains one of ``texts``, plus the rows their warm starts start from."""
    needed = set()
    for table, setup, _ in plan:
        if any(text in setup.name for text in texts):
            needed.add((table, setup.name))
            source = setup.settings.get("init_from", "")
            needed |= {(t, s.name) for t, s, _ in plan if t == table and f"/{s.slug}/" in source}
    return [p for p in plan if (p[0], p[1].name) in needed]


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--dataset",
        default="mnist",
        help="a registered data set with labels (mnist, fashion-mnist, cifar10, digits) or the path of an "
        ".npz file or image folder; the MNIST tables are the default",
    )
    parser.add_argument(
        "--data-dir", default=None, help="its folder (default ../shared/data/mnist or ../shared/data/cifar10)"
    )
    parser.add_argument(
        "--likelihood",
        default="auto",
        help="likelihood of every run: auto (bernoulli on grey images, binarised dynamically; logistic "
        "on colour images, not binarised) | bernoulli | gaussian | logistic",
    )
    parser.add_argument(
        "--logistic-components", type=int, default=3, help="M of the logistic likelihood's mixture"
    )
    parser.add_argument(
        "--plain-reference",
        action="store_true",
        help="also train a plain-PyTorch conv VAE of the conv layers (benchmarks/plain_conv.py) per seed",
    )
    parser.add_argument(
        "--seeds", type=int, default=None, help="number of seeds (0, 1, ...; default 5, 2 with --smoke)"
    )
    parser.add_argument(
        "--train-seeds",
        default=None,
        help="comma-separated seeds of the --seeds that this process trains and evaluates (to share a "
        "table among processes, one thread each); the others are tabulated when already evaluated",
    )
    parser.add_argument("--epochs", type=int, default=50, help="training epochs of the clustering runs")
    parser.add_argument(
        "--likelihood-epochs", type=int, default=50, help="training epochs of the likelihood runs"
    )
    parser.add_argument(
        "--warm-epochs",
        type=int,
        default=None,
        help="epochs of the warm-started rows (after the --epochs of the run they start from; "
        "default 100, 2 with --smoke)",
    )
    parser.add_argument("--hidden", default="512,512", help="hidden layers of encoders and decoders")
    parser.add_argument(
        "--network", default="mlp", help="network of every run: mlp (the tables as measured) | conv | auto"
    )
    parser.add_argument("--warmup-epochs", type=float, default=0.0, help="KL warm-up of every run")
    parser.add_argument("--iw-samples", type=int, default=5000, help="S of the likelihood table")
    parser.add_argument(
        "--cluster-iw-samples", type=int, default=100, help="S of the clustering runs' evaluation"
    )
    parser.add_argument("--test-points", type=int, default=None, help="evaluate on the first N test images")
    parser.add_argument("--only", choices=("clustering", "likelihood", "scratch"), default=None)
    parser.add_argument(
        "--curves-from",
        nargs="+",
        type=Path,
        default=[],
        metavar="CSV",
        help="add the learning curves of a scratch-curves.csv or clustering-curves.csv written "
        "earlier (rows and seeds not trained in this invocation) to scratch-curves.png and its CSV",
    )
    parser.add_argument(
        "--curves",
        action="store_true",
        help="also draw the learning curves of the clustering rows tabulated here "
        "(clustering-curves.png and its .csv, which --curves-from adds to scratch-curves.png)",
    )
    parser.add_argument(
        "--eval-every",
        type=int,
        default=1,
        help="score the held-out data every N epochs of every run (and after the first and the last): "
        "the points of the learning curves; training is the same whatever N",
    )
    parser.add_argument(
        "--scratch-epochs",
        type=int,
        default=None,
        help="training epochs of the from-scratch rows (default 150, 2 with --smoke; a larger number "
        "resumes finished runs)",
    )
    parser.add_argument(
        "--rows",
        nargs="+",
        default=None,
        metavar="TEXT",
        help="train and tabulate only the rows whose name contains one of these (a warm-start row "
        "also runs the row it starts from)",
    )
    parser.add_argument(
        "--out",
        default=None,
        help="folder of the runs and of results.md (default: results, or results-smoke)",
    )
    parser.add_argument(
        "--records",
        default=None,
        help="also copy the record of every evaluated run (its JSON files, no checkpoint) into this "
        "folder, laid out as --out: `--out RECORDS --report-only` tabulates them where the run "
        "folders are gone (benchmarks/records/ keeps those behind the README's newest numbers)",
    )
    parser.add_argument(
        "--threads", type=int, default=2, help="torch threads (1 leaves a core free for other work)"
    )
    parser.add_argument("--smoke", action="store_true", help="tiny data and networks (CI)")
    parser.add_argument(
        "--report-only", action="store_true", help="train nothing: tabulate the runs already evaluated"
    )
    args = parser.parse_args(argv)
    args.command = ["python", "benchmarks/results.py", *(sys.argv[1:] if argv is None else argv)]
    if args.smoke:
        args.epochs, args.likelihood_epochs, args.hidden = 2, 2, "32"
        args.seeds = 2 if args.seeds is None else args.seeds
        args.warm_epochs = 2 if args.warm_epochs is None else args.warm_epochs
        args.scratch_epochs = 2 if args.scratch_epochs is None else args.scratch_epochs
        args.iw_samples, args.cluster_iw_samples = 20, 10
    if args.warm_epochs is None:
        args.warm_epochs = 100
    if args.scratch_epochs is None:
        args.scratch_epochs = 150
    if args.data_dir is None and args.dataset in ("mnist", "cifar10"):
        args.data_dir = str(ROOT.parent / "shared" / "data" / args.dataset)
    if args.seeds is None:
        args.seeds = 5
    if args.seeds < 1:
        parser.error(f"--seeds must be >= 1, got {args.seeds}")
    every_row = [("clustering", s, 0) for s in CLUSTERING]
    every_row += [("likelihood", s, 0) for s in likelihood_rows(args.dataset)]
    every_row += [("scratch", s, 0) for s in SCRATCH]
    if args.rows and not select_rows(every_row, args.rows):
        parser.error(
            f"no row matches --rows {' '.join(args.rows)}; the rows: {[s.name for _, s, _ in every_row]}"
        )
    args.seed_list = list(range(args.seeds))
    if args.train_seeds is None:
        args.train_seed_list = args.seed_list
    else:
        try:
            args.train_seed_list = [int(s) for s in args.train_seeds.split(",")]
        except ValueError:
            parser.error(f"--train-seeds takes comma-separated seeds such as 0,2, got {args.train_seeds!r}")
        if not set(args.train_seed_list) <= set(args.seed_list):
            parser.error(f"--train-seeds {args.train_seeds} must be among the seeds 0..{args.seeds - 1}")
    if args.out is None:
        args.out = "results-smoke" if args.smoke else "results"
    return args


def run_plain(
    config: TrainConfig, data: Dataset, out: Path, seed: int, args: argparse.Namespace
) -> dict[str, Any] | None:
    """One seed of the plain-PyTorch conv VAE at the likelihood table's settings (cached in its folder)."""
    from plain_conv import train_plain

    settings = dict(
        epochs=config.epochs,
        latent_dim=config.latent_dim,
        likelihood=config.likelihood,
        components=config.logistic_components if config.likelihood == "logistic" else 1,
        batch_size=config.batch_size,
        lr=config.lr,
        seed=seed,
        iw_samples=args.iw_samples,
        binarize=config.binarize,
    )
    path = out / "plain-pytorch-conv-vae" / f"seed{seed}" / "result.json"
    wanted = {**settings, "num_points": len(data.test_x)}
    if path.exists() and json.loads(path.read_text())["settings"] == wanted:
        result = json.loads(path.read_text())
    elif args.report_only:
        return None
    else:
        result = train_plain(data, **settings)
        result["settings"] = wanted
        path.parent.mkdir(parents=True, exist_ok=True)
        write_json(path, result)
        print(f"plain-PyTorch conv VAE seed {seed}: log p(x) {result['log_likelihood']:.2f}", flush=True)
    if args.records:  # kept with the runs' records, in the same layout
        keep_record(path.parent, Path(args.records) / out.name / path.parent.parent.name / path.parent.name)
    return result


def load_data(args: argparse.Namespace) -> Dataset:
    """The data set of the tables; with ``--smoke`` its first 600 / 150 points (the 8x8 digits for
    the default MNIST)."""
    if args.smoke and args.dataset == "mnist":
        args.dataset = "digits"
    data = load_dataset(args.dataset, args.data_dir, download=False)
    if data.train_y is None or data.test_y is None:
        raise SystemExit(f"{args.dataset} has no labels; the tables score clusters against labels")
    if args.smoke:
        data = Dataset(
            data.name,
            data.train_x[:600],
            data.test_x[:150],
            data.train_y[:600],
            data.test_y[:150],
            data.image_shape,
        )
    return data


def data_likelihood(args: argparse.Namespace, data: Dataset) -> tuple[str, str]:
    """The likelihood and binarisation of every run: ``--likelihood``, or by the data when ``auto``."""
    colour = len(data.data_shape) == 3 and data.data_shape[0] == 3
    likelihood = args.likelihood if args.likelihood != "auto" else ("logistic" if colour else "bernoulli")
    return likelihood, "dynamic" if likelihood == "bernoulli" else "none"


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    torch.set_num_threads(args.threads)
    data = load_data(args)
    if args.test_points is not None:
        data = dataclasses.replace(
            data, test_x=data.test_x[: args.test_points], test_y=data.test_y[: args.test_points]
        )
    hidden = tuple(int(h) for h in args.hidden.split(",") if h)
    likelihood, binarize = data_likelihood(args, data)
    shared = dict(
        dataset=data.name,
        network=args.network,
        hidden=hidden,
        warmup_epochs=args.warmup_epochs,
        binarize=binarize,
        likelihood=likelihood,
        data_dir=args.data_dir,  # recorded, so that mixvae evaluate / sample find the files
        download=False,
        eval_every=args.eval_every,
    )
    if likelihood == "logistic":
        shared["logistic_components"] = args.logistic_components
    common = {
        "clustering": TrainConfig(**shared, latent_dim=10, components=10, epochs=args.epochs),
        "likelihood": TrainConfig(
            **shared,
            latent_dim=4 if args.smoke else 40,
            components=10,
            pseudo_inputs=20 if args.smoke else 500,
            guide_components=3,
            epochs=args.likelihood_epochs,
        ),
        "scratch": TrainConfig(**shared, epochs=args.scratch_epochs),
    }
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    # one sample-quality classifier for every run (fitted on the training images)
    classifier = fit_sample_classifier(data.train_x, data.train_y, seed=0)
    eval_common = dict(classifier=classifier, surgery_points=min(2000, len(data.test_x)))
    tables: dict[str, dict[str, list[dict[str, Any]]]] = {"clustering": {}, "likelihood": {}, "scratch": {}}
    plan = [("clustering", s, args.cluster_iw_samples) for s in CLUSTERING]
    plan += [("likelihood", s, args.iw_samples) for s in likelihood_rows(args.dataset)]
    plan += [("scratch", s, args.cluster_iw_samples) for s in SCRATCH]
    if args.rows:
        plan = select_rows(plan, args.rows)
    for table, setup, samples in plan:
        if args.only not in (None, table):
            continue
        base = {k: v for k, v in common[table].settings().items() if k not in ("seed", "out", "plugins")}
        if "init_from" in setup.settings:
            base["epochs"] = args.warm_epochs
        results = []
        for seed in args.seed_list:
            t0 = time.perf_counter()
            eval_args = {**eval_common, "iw_samples": samples}
            report_only = args.report_only or seed not in args.train_seed_list
            r = run_one(setup, base, seed, data, out / table, eval_args, report_only=report_only)
            if r is None:
                continue
            results.append(r)
            if args.records:
                keep_record(Path(r["run_dir"]), Path(args.records) / table / setup.slug / f"seed{seed}")
            cl = r.get("clustering", {})
            shown = cl.get("model") or cl.get("kmeans") or {}
            print(
                f"{table:<10} {setup.name:<36} seed {seed}: log p(x) {r['log_likelihood']:8.2f}"
                + (f"  accuracy {100 * shown['acc_hungarian']:5.1f}%" if shown else "")
                + f"  ({time.perf_counter() - t0:.0f} s)",
                flush=True,
            )
        if len(results) == len(args.seed_list):
            tables[table][setup.name] = results
        elif results:
            tables[table][f"{setup.name} ({len(results)} of {len(args.seed_list)} seeds)"] = results
    plain = []
    if args.plain_reference and args.only in (None, "likelihood"):
        plain = [
            run_plain(common["likelihood"], data, out / "likelihood", seed, args) for seed in args.seed_list
        ]
        plain = [r for r in plain if r is not None]
    if tables["scratch"] or args.curves_from:
        write_curves(tables["scratch"], out / "scratch-curves.png", args.curves_from)
    if args.curves and tables["clustering"]:
        write_curves(tables["clustering"], out / "clustering-curves.png")
    text = report(
        args,
        data,
        tables["clustering"],
        tables["likelihood"],
        {k: v.settings() for k, v in common.items()},
        plain,
        tables["scratch"],
    )
    (out / "results.md").write_text(text + "\n")
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
