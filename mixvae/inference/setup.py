"""What both training loops (the plain one and Lightning's) do before the first step."""

from __future__ import annotations

import dataclasses
import functools
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pyro
import torch

from mixvae.build import build, check_names
from mixvae.config import TrainConfig, torch_dtype
from mixvae.data import DATASETS, Dataset, evaluation_data, is_data_path, load_dataset
from mixvae.errors import ConfigError, DataError
from mixvae.guides import GUIDES, Guide
from mixvae.inference.tracking import check_logger
from mixvae.inference.warmstart import warm_start
from mixvae.models import LIKELIHOODS, PRIORS, VAE
from mixvae.networks import AUTO, GIVEN, NETWORKS, resolve
from mixvae.plugins import record_plugins
from mixvae.runs.files import write_json, write_text
from mixvae.runs.folder import Run, prepare_run_dir


def check_values(x: torch.Tensor, what: str, likelihood: str) -> None:
    """Refuse points the likelihood cannot score: NaN or inf, values outside its declared ``support``
    (an interval, or ``None`` for real values, whatever the class is called)."""
    support = LIKELIHOODS[likelihood].data_support()
    if not torch.isfinite(x).all():
        raise DataError(f"{what} contains NaN or inf; clean or impute it first")
    if support is not None and (x.min() < support[0] or x.max() > support[1]):
        raise DataError(
            f"{what} lies in [{float(x.min()):.3g}, {float(x.max()):.3g}], outside the "
            f"[{support[0]:g}, {support[1]:g}] the {likelihood} likelihood needs; rescale it "
            "or use --likelihood gaussian"
        )


def check_data(data: Dataset, config: TrainConfig) -> Dataset:
    """Refuse data the likelihood cannot score, with the fix in the message.

    Streamed training points (:func:`mixvae.data.stream`) are checked minibatch by
    minibatch as they are read, the first minibatch now.

    :returns: the data, streamed points with their check attached.
    """
    for split, x in (("training", data.train_x), ("held-out", data.test_x)):
        if x.ndim not in (2, 4) or len(x) == 0:
            raise DataError(
                f"the {split} data must be a non-empty (N, P) or (N, C, H, W) tensor, got shape {tuple(x.shape)}"
            )
        if isinstance(x, torch.Tensor):
            check_values(x, f"the {split} data of {data.name!r}", config.likelihood)
    if data.streamed:
        data = dataclasses.replace(
            data,
            train_x=data.train_x.with_check(functools.partial(check_values, likelihood=config.likelihood)),
        )
        data.train_x[: config.batch_size]  # the first minibatch, before anything is written
        if config.labels_per_class is not None:
            raise ConfigError(
                "--labels-per-class needs the training labels in memory, and a streamed data set reads them "
                "minibatch by minibatch; stack the data instead (mixvae.data.from_arrays(x, train_y=y))"
            )
    if data.test_x.shape[1:] != data.train_x.shape[1:]:
        raise DataError(
            f"training data of shape {tuple(data.train_x.shape[1:])} per point and held-out data of shape "
            f"{tuple(data.test_x.shape[1:])} do not belong together"
        )
    problem = None if config.network in (AUTO, GIVEN) else NETWORKS[config.network].problem(data.data_shape)
    if problem:
        raise ConfigError(f"{problem}; use --network mlp (or auto)")
    if config.batch_size > len(data.train_x):
        raise ConfigError(
            f"--batch-size {config.batch_size} is larger than the {len(data.train_x)} training "
            "points; use a smaller batch size"
        )
    return data


def load_data(config: TrainConfig, dataset: Dataset | None) -> Dataset:
    """The data of a new run, checked (:func:`check_data`): ``dataset`` in the run's dtype, or
    ``config.dataset`` loaded (a file or folder is recorded by its absolute path)."""
    dtype = torch_dtype(config.dtype)
    if dataset is None:
        if config.dataset not in DATASETS and is_data_path(config.dataset):
            config.dataset = str(Path(config.dataset).expanduser().resolve())  # found again from any folder
        elif config.dataset not in DATASETS:
            load_dataset(config.dataset)  # unknown names fail before any loading, naming the choices
        data = load_dataset(config.dataset, config.data_dir, config.download, dtype=dtype)
    else:
        data = dataset.to(dtype)
    return check_data(data, config)


def start_run(
    config: TrainConfig,
    dataset: Dataset | None,
    *,
    device: torch.device,
    write: bool = True,
    builder: Callable[..., tuple[VAE, Guide]] = build,
    claim: bool = True,
    given: bool = False,
) -> tuple[Run, Dataset, dict[str, Any] | None]:
    """A new run, ready for its first step: checked, its data loaded, model and guide built.

    Checks the settings and the data before any work, records the plugin
    modules of its parts, prepares the run folder, builds the model and guide
    from ``config.seed`` (every process of a multi-process run starts from the
    same parameters), applies the prior's data-dependent start and the warm
    start (``--init-from``).

    :param write: write ``config.json`` and ``init_from.json`` now (Lightning's rank 0 writes them at the end).
    :param given: the builder puts the user's own encoder and decoder modules in (``network="given"``).
    :param claim: prepare and lock the run folder (:func:`~mixvae.runs.folder.prepare_run_dir`);
        the new run's ``lock`` is held until the caller releases it (``with run.lock:``).
    :returns: the run, its data and where its warm start came from (or ``None``).
    """
    config.validate()
    check_names(config)
    record_plugins(config)  # where the parts came from, for evaluate / sample / resume
    data = load_data(config, dataset)
    config.network = GIVEN if given else resolve(config.network, data.data_shape)  # recorded in config.json
    check_logger(config.logger)  # a missing package is refused before the folder is written
    for flag, value, default in (
        ("--mutual-info", config.mutual_info, 0.0),
        ("--y-temperature", config.y_temperature, 1.0),
    ):
        if value != default and GUIDES[config.guide].discrete_site is None:
            raise ConfigError(
                f"{flag} acts on the guide's discrete site, and guide {config.guide!r} has none; "
                "use a guide that provides y (--guide categorical) or drop the flag"
            )
    if config.init_fits > 1 and not PRIORS[config.prior].fits_codes:
        raise ConfigError(
            f"--init-fits fits the prior to the codes, and prior {config.prior!r} has no Gaussian-mixture "
            "components to fit; use --prior gmm or gmm-full, or drop --init-fits"
        )
    # The model, its data-dependent start and the warm start before the folder: a part or a
    # source run that does not fit is refused with nothing written (and no old run replaced).
    pyro.set_rng_seed(config.seed)
    model, guide = builder(config, data.data_shape)
    model, guide = model.to(device), guide.to(device)
    # Its own generator: priors without a data-dependent start leave every stream untouched.
    model.prior.initialise_from_data(data.train_x, torch.Generator().manual_seed(config.seed))
    origin = None
    if config.init_from is not None:
        codes_x = evaluation_data(data.train_x.to(device), config.binarize)
        origin = warm_start(model, guide, config.init_from, codes_x, config=config, seed=config.seed)
    if claim:
        run_dir, lock = prepare_run_dir(config, "train")
    else:  # a worker process of a multi-process run: rank 0 holds the folder
        run_dir, lock = Path(str(config.out)), None
    try:
        if write:
            write_text(run_dir / "config.json", config.to_json() + "\n")
            if origin is not None:
                write_json(run_dir / "init_from.json", origin)
    except BaseException:
        if lock is not None:
            lock.release()
        raise
    run = Run(model, guide, config, run_dir, lock=lock)
    return run, data, origin
