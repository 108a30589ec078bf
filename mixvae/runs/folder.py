"""The run folder: what a run writes, and how a run is read back.

A run folder holds ``mixvae-run.json`` (the manifest: run id and the files
the run owns, :mod:`mixvae.runs.manifest`), ``config.json``, ``checkpoint.pt``
(see :mod:`mixvae.runs.checkpoint`), ``metrics.jsonl`` (one line per epoch),
``summary.json``, ``evaluation.json`` and figures, and ``.lock`` while a
command writes to it (:mod:`mixvae.runs.lock`).  :func:`load_run` rebuilds
the model and guide from the checkpoint alone, after checking that the
checkpoint is the folder's own.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import math
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from mixvae import __version__
from mixvae.build import build
from mixvae.config import FORMAT_VERSION, READABLE_FORMATS, TrainConfig, torch_dtype
from mixvae.data import DATASETS, Dataset, is_data_path, load_dataset
from mixvae.devices import resolve_device
from mixvae.errors import CheckpointError, ConfigError, DataError, RunFolderError
from mixvae.guides import Guide
from mixvae.models import VAE
from mixvae.models.posthoc import PosthocGMM
from mixvae.plugins import load_recorded_plugins
from mixvae.runs.checkpoint import load_checkpoint, save_checkpoint
from mixvae.runs.files import clean_temporaries, read_json, read_jsonl, write_text
from mixvae.runs.lock import LOCK, RunLock
from mixvae.runs.manifest import (
    MANIFEST,
    create_manifest,
    is_legacy_run,
    read_manifest,
    remove_owned,
)

#: the figures ``mixvae evaluate`` writes
EVALUATION_FIGURES = (
    "eval_latent_densities.png",
    "eval_latent_projection.png",
    "eval_khat.png",
    "eval_confusion.png",
    "eval_samples_by_source.png",
    "eval_component_samples.png",
)

METRICS = "metrics.jsonl"


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
    #: the lock a new run holds on its folder until training ends
    lock: RunLock | None = field(default=None, repr=False, compare=False)


def run_folder(out: str | None, config: TrainConfig | None = None) -> Path:
    """The run folder ``--out`` names (default ``runs/PRIOR-GUIDE-DATASET-TIMESTAMP``); ``''`` is refused."""
    if out is None:
        assert config is not None
        stamp = time.strftime("%Y%m%d-%H%M%S")
        out = os.path.join("runs", f"{config.prior}-{config.guide}-{config.dataset}-{stamp}")
    if not str(out).strip():
        raise ConfigError("--out '' names no folder; give the run a folder such as --out runs/first")
    return Path(out)


def prepare_run_dir(config: TrainConfig, command: str = "train") -> tuple[Path, RunLock]:
    """The run folder of a new run, created, locked and marked by a fresh manifest.

    A new or empty folder becomes the run's; a folder holding a run is
    replaced only with ``--overwrite`` (which removes only the files its
    manifest lists); a non-empty folder that holds no run is refused.

    :returns: the folder and the lock this process now holds on it (release it when done).
    """
    run_dir = run_folder(config.out, config)
    config.out = str(run_dir)
    created = not run_dir.exists()
    try:
        run_dir.mkdir(parents=True, exist_ok=True)
        lock = RunLock(run_dir, command).acquire()
    except RunFolderError:
        raise
    except OSError as e:
        raise ConfigError(
            f"cannot write to the run folder {run_dir} ({e.strerror}); choose another --out"
        ) from None
    try:
        clean_temporaries(run_dir)
        _claim(run_dir, config)
        create_manifest(run_dir)
    except BaseException:
        lock.release()
        if created:
            with contextlib.suppress(OSError):
                (run_dir / MANIFEST).unlink(missing_ok=True)
                run_dir.rmdir()
        raise
    return run_dir, lock


def _claim(run_dir: Path, config: TrainConfig) -> None:
    """Refuse a folder that is not ours to write; with ``--overwrite`` clear the old run's files."""
    contents = sorted(
        p.name for p in run_dir.iterdir() if not p.name.startswith(LOCK)
    )  # .lock and its staging
    if not contents:
        return
    if read_manifest(run_dir) is None and not is_legacy_run(run_dir):
        shown = ", ".join(contents[:3]) + (", ..." if len(contents) > 3 else "")
        raise ConfigError(
            f"{run_dir} is not empty ({shown}) and holds no mixvae run (no {MANIFEST}); mixvae writes a "
            "new run only into a new or empty folder: choose another --out"
        )
    if not config.overwrite:
        if (run_dir / "checkpoint.pt").exists():
            raise ConfigError(
                f"{run_dir} already holds a run; choose another --out, pass --overwrite to replace it, "
                f"or continue it with --resume {run_dir}"
            )
        if (run_dir / "restarts").is_dir():
            raise ConfigError(
                f"{run_dir} holds a run whose restarts stopped before the choice; continue them with "
                f"mixvae train --resume {run_dir}, or pass --overwrite to start again"
            )
        raise ConfigError(
            f"{run_dir} holds a run that stopped before its first checkpoint; pass --overwrite to start "
            "it again, or choose another --out"
        )
    remove_owned(run_dir)


def read_metrics(run_dir: str | Path) -> list[dict[str, Any]]:
    """The per-epoch records of ``RUN/metrics.jsonl`` (empty when there is none).

    A torn last line (a crash while it was appended) is dropped with a
    warning; see :func:`mixvae.runs.files.read_jsonl`.
    """
    return read_jsonl(Path(run_dir) / METRICS)


def restore_metrics(run_dir: Path, payload: dict[str, Any]) -> list[dict[str, Any]]:
    """Make ``metrics.jsonl`` the history of the checkpoint's epochs; returns that history.

    A checkpoint of this format carries its history: the file is rewritten
    from it (atomically) when it differs (lines of epochs after the
    checkpoint, a torn or damaged line, a history from elsewhere).  A mixvae
    0.1 checkpoint carries none: the file's records up to its epoch are kept.
    """
    path, done = run_dir / METRICS, int(payload["epoch"])
    if "metrics" in payload:
        history = str(payload["metrics"])
        if hashlib.sha256(history.encode()).hexdigest() != payload.get("metrics_sha256"):
            raise CheckpointError(f"{run_dir}/checkpoint.pt: its metrics history fails its checksum")
        current = path.read_bytes() if path.is_file() else b""
        if current != history.encode():
            write_text(path, history)
        return [json.loads(line) for line in history.splitlines() if line.strip()]
    kept = [m for m in read_jsonl(path) if m["epoch"] <= done]
    write_text(path, "".join(json.dumps(m) + "\n" for m in kept))
    return kept


def check_belongs(payload: dict[str, Any], run_dir: Path) -> None:
    """Refuse a checkpoint that is not the one of the folder's run (its manifest's run id)."""
    manifest = read_manifest(run_dir)
    ours = payload.get("run_id") or None
    if manifest is None:
        if ours is not None:
            raise CheckpointError(
                f"{run_dir} holds a checkpoint but no {MANIFEST}, so it is not that checkpoint's run "
                "folder (was the checkpoint copied out of its folder?); copy the whole run folder"
            )
        return
    if ours is None and manifest.get("adopted"):
        return  # a mixvae 0.1 run, resumed: its new checkpoints carry the id
    if ours != manifest["run_id"]:
        raise CheckpointError(
            f"{run_dir}/checkpoint.pt belongs to another run ({(ours or 'none')[:12]}, the folder's run "
            f"is {manifest['run_id'][:12]}); it was copied in: copy whole run folders, never a "
            "checkpoint alone"
        )


def config_from_payload(payload: dict[str, Any], run_dir: Path) -> TrainConfig:
    if payload.get("format_version") not in READABLE_FORMATS:
        raise CheckpointError(
            f"{run_dir} was written with checkpoint format {payload.get('format_version')} "
            f"(mixvae {payload.get('mixvae_version')}); this mixvae {__version__} reads format "
            f"{FORMAT_VERSION}: retrain the run with this version"
        )
    return stored_config(payload["config"], run_dir)


def stored_config(text: Any, run_dir: Path) -> TrainConfig:
    """The configuration stored as JSON ``text`` (a checkpoint's, or ``config.json``), checked."""
    try:
        stored = json.loads(text)
    except (TypeError, ValueError) as e:
        raise CheckpointError(f"{run_dir} holds a configuration this mixvae cannot use ({e})") from None
    load_recorded_plugins(stored, run_dir)  # their parts must be registered before the config is used
    try:
        config = TrainConfig.from_dict(stored)
        config.validate()  # sizes within bounds before any tensor is built
        return config
    except (ConfigError, TypeError, ValueError) as e:
        raise CheckpointError(f"{run_dir} holds a configuration this mixvae cannot use ({e})") from None


def run_dataset(
    config: TrainConfig, run_dir: str | Path, download: bool = False, data_dir: str | None = None
) -> Dataset:
    """The data a stored run was trained on, found again from its configuration (a registered
    name, or the file or folder it was read from), in the run's dtype.

    :param data_dir: where a registered data set's files are now, instead of the configuration's.

    :raises DataError: for a run trained on in-memory data, saying what to pass instead.
    """
    if config.dataset not in DATASETS and not Path(config.dataset).expanduser().exists():
        if is_data_path(config.dataset):
            raise DataError(
                f"{run_dir} was trained on {config.dataset}, which is not there any more; put it back, or "
                "pass the data from Python (dataset=...)"
            )
        raise DataError(
            f"{run_dir} was trained on in-memory data ({config.dataset!r}), which a run folder does not keep; "
            "pass them again from Python: evaluate_run(RUN, dataset=data), resume(RUN, dataset=data)"
        )
    return load_dataset(
        config.dataset, data_dir or config.data_dir, download, dtype=torch_dtype(config.dtype)
    )


def payload_data_shape(payload: dict[str, Any], config: TrainConfig) -> tuple[int, ...]:
    """The data shape a checkpoint was trained on.  A mixvae 0.1 checkpoint records only the
    number P of values (its images were flat): a registered data set's declared shape with
    P values is taken, else ``(P,)``."""
    if "data_shape" in payload:
        return tuple(int(s) for s in payload["data_shape"])
    data_dim = int(payload["data_dim"])
    loader = DATASETS.get(config.dataset)
    declared = tuple(getattr(loader, "data_shape", ()) or ())
    return declared if declared and math.prod(declared) == data_dim else (data_dim,)


def load_into_run(
    payload: dict[str, Any],
    config: TrainConfig,
    run_dir: Path,
    encoder: torch.nn.Module | None = None,
    decoder: torch.nn.Module | None = None,
) -> Run:
    model, guide = build(config, payload_data_shape(payload, config), encoder=encoder, decoder=decoder)
    try:
        model.load_state_dict(payload["model"])
        guide.load_state_dict(payload["guide"])
    except RuntimeError as e:
        raise CheckpointError(
            f"{run_dir}/checkpoint.pt does not fit the configuration stored with it "
            f"({str(e).splitlines()[0]}); was it copied from another run?"
        ) from None
    for prefix, module in (("model", model), ("guide", guide)):
        for name, t in module.state_dict().items():
            if t.is_floating_point() and not bool(torch.isfinite(t).all()):
                raise CheckpointError(
                    f"{run_dir}: the parameter {prefix}.{name} is not finite (the run diverged before "
                    "the file was written, or it was edited); train the run again"
                )
    return Run(model, guide, config, run_dir, epoch=int(payload["epoch"]))


def load_run(
    run_dir: str | Path,
    device: str = "cpu",
    *,
    encoder: torch.nn.Module | None = None,
    decoder: torch.nn.Module | None = None,
) -> Run:
    """Rebuild the model and guide of a run folder from its ``checkpoint.pt``.

    :param encoder: for a run trained with your own modules (``network="given"``): a fresh
        encoder module of the same architecture (given with ``decoder``); its weights are
        read from the checkpoint.
    :param decoder: the decoder module, likewise.
    """
    run_dir = Path(run_dir)
    dev = resolve_device(device)  # before reading: a wrong device is not a damaged checkpoint
    payload = load_checkpoint(run_dir / "checkpoint.pt")
    check_belongs(payload, run_dir)
    run = load_into_run(payload, config_from_payload(payload, run_dir), run_dir, encoder, decoder)
    run.model.to(dev)
    run.guide.to(dev)
    summary_path = run_dir / "summary.json"
    run.summary = read_json(summary_path, "summary") if summary_path.exists() else None
    if run.model.prior.fits_posthoc_gmm:
        gmm = load_posthoc_gmm(run_dir)
        if gmm is not None:  # fitted at the end of training: the model's p(z) from now on
            run.model.prior.set_gmm(gmm.to(dev))
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
        "data_shape": list(model.decoder.data_shape),
        "epoch": 0,
        "run_id": "",
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
    dev = resolve_device(device)
    payload = load_checkpoint(path)
    run = load_into_run(payload, config_from_payload(payload, path), path)
    run.model.to(dev)
    run.guide.to(dev)
    if "posthoc_gmm" in payload:
        run.model.prior.set_gmm(_gmm_from_payload(payload["posthoc_gmm"]).to(dev))
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
