"""The run folder: what a run writes, and how a run is read back.

A run folder holds ``config.json``, ``checkpoint.pt`` (see
:mod:`mixvae.runs.checkpoint`), ``metrics.jsonl`` (one line per epoch),
``summary.json``, ``evaluation.json`` and figures.  :func:`load_run` rebuilds
the model and guide from the checkpoint alone.
"""

from __future__ import annotations

import json
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from mixvae import __version__
from mixvae.build import build
from mixvae.config import FORMAT_VERSION, TrainConfig
from mixvae.errors import CheckpointError, ConfigError
from mixvae.guides import Guide
from mixvae.models import VAE
from mixvae.models.posthoc import PosthocGMM
from mixvae.plugins import load_recorded_plugins
from mixvae.runs.checkpoint import load_checkpoint, save_checkpoint

#: the figures ``mixvae evaluate`` writes (removed by --overwrite with the rest)
EVALUATION_FIGURES = (
    "eval_latent_densities.png",
    "eval_latent_projection.png",
    "eval_khat.png",
    "eval_confusion.png",
    "eval_samples_by_source.png",
    "eval_component_samples.png",
)

#: files a run writes besides config.json and checkpoint.pt (removed by --overwrite)
RUN_ARTIFACTS = (
    "loss_curves.png",
    "reconstructions.png",
    "prior_samples.png",
    "latent_scatter.png",
    "metrics.jsonl",
    "summary.json",
    "posthoc_gmm.pt",
    "evaluation.json",
    "inference_data.nc",
)


@dataclass
class Run:
    """A trained (or loaded) run: the model, the guide and how they were made."""

    model: VAE
    guide: Guide
    config: TrainConfig
    run_dir: Path | None = None
    summary: dict[str, Any] | None = None
    epoch: int = 0
    #: the signal's name when SIGINT/SIGTERM stopped training early
    interrupted: str | None = None


def prepare_run_dir(config: TrainConfig) -> Path:
    """The run folder, created; refuses to overwrite a different run without ``--overwrite``."""
    if config.out is None:
        stamp = time.strftime("%Y%m%d-%H%M%S")
        config.out = os.path.join("runs", f"{config.prior}-{config.guide}-{config.dataset}-{stamp}")
    run_dir = Path(config.out)
    if (run_dir / "checkpoint.pt").exists() and not config.overwrite:
        raise ConfigError(
            f"{run_dir} already holds a run; choose another --out, pass --overwrite to replace it, "
            f"or continue it with --resume {run_dir}"
        )
    try:
        run_dir.mkdir(parents=True, exist_ok=True)
        probe = run_dir / ".write-test"
        probe.write_text("")
        probe.unlink()
    except OSError as e:
        raise ConfigError(
            f"cannot write to the run folder {run_dir} ({e.strerror}); choose another --out"
        ) from None
    if config.overwrite:  # nothing of the replaced run may pass for the new one's
        for name in (*RUN_ARTIFACTS, *EVALUATION_FIGURES, *(p.name for p in run_dir.glob("samples-*.png"))):
            (run_dir / name).unlink(missing_ok=True)
    return run_dir


def read_metrics(run_dir: str | Path) -> list[dict[str, Any]]:
    """The per-epoch records of ``RUN/metrics.jsonl`` (empty when there is none)."""
    path = Path(run_dir) / "metrics.jsonl"
    if not path.is_file():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def truncate_metrics(path: Path, epochs: int) -> None:
    """Drop metric lines written after the checkpoint (e.g. before a divergence)."""
    if path.exists():
        lines = [ln for ln in path.read_text().splitlines() if ln and json.loads(ln)["epoch"] <= epochs]
        path.write_text("".join(ln + "\n" for ln in lines))


def config_from_payload(payload: dict[str, Any], run_dir: Path) -> TrainConfig:
    if payload.get("format_version") != FORMAT_VERSION:
        raise CheckpointError(
            f"{run_dir} was written with checkpoint format {payload.get('format_version')} "
            f"(mixvae {payload.get('mixvae_version')}); this mixvae {__version__} reads format "
            f"{FORMAT_VERSION}: retrain the run with this version"
        )
    try:
        stored = json.loads(payload["config"])
    except (TypeError, ValueError) as e:
        raise CheckpointError(f"{run_dir} holds a configuration this mixvae cannot use ({e})") from None
    load_recorded_plugins(stored, run_dir)  # their parts must be registered before the config is used
    try:
        return TrainConfig.from_dict(stored)
    except (ConfigError, TypeError, ValueError) as e:
        raise CheckpointError(f"{run_dir} holds a configuration this mixvae cannot use ({e})") from None


def load_into_run(payload: dict[str, Any], config: TrainConfig, run_dir: Path) -> Run:
    model, guide = build(config, int(payload["data_dim"]))
    try:
        model.load_state_dict(payload["model"])
        guide.load_state_dict(payload["guide"])
    except RuntimeError as e:
        raise CheckpointError(
            f"{run_dir}/checkpoint.pt does not fit the configuration stored with it "
            f"({str(e).splitlines()[0]}); was it copied from another run?"
        ) from None
    return Run(model, guide, config, run_dir, epoch=int(payload["epoch"]))


def load_run(run_dir: str | Path, device: str = "cpu") -> Run:
    """Rebuild the model and guide of a run folder from its ``checkpoint.pt``."""
    run_dir = Path(run_dir)
    payload = load_checkpoint(run_dir / "checkpoint.pt", map_location=device)
    run = load_into_run(payload, config_from_payload(payload, run_dir), run_dir)
    run.model.to(device)
    run.guide.to(device)
    summary_path = run_dir / "summary.json"
    run.summary = json.loads(summary_path.read_text()) if summary_path.exists() else None
    if run.model.prior.fits_posthoc_gmm:
        gmm = load_posthoc_gmm(run_dir)
        if gmm is not None:  # fitted at the end of training: the model's p(z) from now on
            run.model.prior.set_gmm(gmm.to(device))
    return run


def save_model(path: str | Path, model: VAE, guide: Guide, config: TrainConfig | None = None) -> Path:
    """Save a model and guide to one file that :func:`load_model` rebuilds in any process.

    The file holds the configuration (``config``, default the one
    :func:`mixvae.build` made the model from), the data dimension and the
    ``state_dict`` of both modules (a fitted post-hoc GMM too): tensors,
    numbers and strings only, written atomically and read with
    ``weights_only=True``.  Module state dicts are keyed by the modules'
    structure, not by Pyro's parameter names (which carry a process-wide
    counter, ``vae3.prior.locs``), so the file loads whatever else the new
    process built first.  Pyro's parameter store cannot do this: its
    ``save``/``load`` keeps only what Pyro registered under those names, and a
    ``PyroModule`` does not read its ``nn.Parameter`` weights back from it.
    """
    config = config if config is not None else model.config
    if config is None:
        raise ConfigError(
            "this model was not made by mixvae.build and has no configuration; pass config= (the "
            "TrainConfig that builds the same pair)"
        )
    path = Path(path)
    payload: dict[str, Any] = {
        "format_version": FORMAT_VERSION,
        "mixvae_version": __version__,
        "config": config.to_json(),
        "data_dim": model.decoder.data_dim,
        "epoch": 0,
        "model": model.state_dict(),
        "guide": guide.state_dict(),
    }
    gmm = getattr(model.prior, "gmm", None) if model.prior.fits_posthoc_gmm else None
    if gmm is not None:
        payload["posthoc_gmm"] = _gmm_payload(gmm)
    try:
        save_checkpoint(path, payload)
    except OSError as e:
        raise ConfigError(f"cannot write {path} ({e.strerror}); choose another path") from None
    return path


def load_model(path: str | Path, device: str = "cpu") -> tuple[VAE, Guide]:
    """The model and guide of a file written by :func:`save_model` (or of a run folder), on ``device``."""
    path = Path(path)
    if path.is_dir():
        run = load_run(path, device)
        return run.model, run.guide
    payload = load_checkpoint(path, map_location=device)
    run = load_into_run(payload, config_from_payload(payload, path), path)
    run.model.to(device)
    run.guide.to(device)
    if "posthoc_gmm" in payload:
        run.model.prior.set_gmm(_gmm_from_payload(payload["posthoc_gmm"]).to(device))
    return run.model, run.guide


def _gmm_payload(gmm: PosthocGMM) -> dict[str, Any]:
    return {"weights": gmm.weights, "means": gmm.means, "covariances": gmm.covariances, "source": gmm.source}


def _gmm_from_payload(p: dict[str, Any]) -> PosthocGMM:
    return PosthocGMM(p["weights"], p["means"], p["covariances"], p["source"])


#: the post-hoc GMM of a run (see :mod:`mixvae.evaluation.posthoc`)
POSTHOC_GMM_FILE = "posthoc_gmm.pt"


def save_posthoc_gmm(run_dir: str | Path, gmm: PosthocGMM) -> None:
    """Write ``RUN/posthoc_gmm.pt`` (tensors only, atomically)."""
    save_checkpoint(Path(run_dir) / POSTHOC_GMM_FILE, {"config": "{}", **_gmm_payload(gmm)})


def load_posthoc_gmm(run_dir: str | Path) -> PosthocGMM | None:
    """The GMM saved with a run, or ``None`` when the run has none."""
    path = Path(run_dir) / POSTHOC_GMM_FILE
    if not path.exists():
        return None
    return _gmm_from_payload(load_checkpoint(path))
