r"""Evaluation of a trained model/guide pair: likelihood, diagnostics, clustering, samples.

The pieces (each usable on its own):

* :func:`log_likelihood` / :func:`importance_sampling`: the importance-weighted
  estimate of :math:`\log p(x)` (Burda et al. 2016) and the Pareto
  :math:`\hat k` of its weights (Vehtari et al. 2024, via ArviZ)
  (:mod:`mixvae.evaluation.likelihood`, re-exported here).
* ELBO surgery, active units and an MMD test of :math:`q(z)` against
  :math:`p(z)` (:mod:`mixvae.evaluation.aggregate`).
* :func:`clustering_baselines`: k-means and a Gaussian mixture on the encoder means.
* Sample quality by latent source (:mod:`mixvae.evaluation.sample_quality`).
* :func:`to_inference_data`: prior and aggregate-posterior draws plus the
  training history as an :class:`arviz.InferenceData`.
* :func:`evaluate_run`: all of the above for a run folder, written to
  ``evaluation.json``, ``inference_data.nc`` and ``eval_*.png``.

"""

from __future__ import annotations

import math
import warnings
import zlib
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from mixvae.config import torch_dtype
from mixvae.data import Dataset, as_dataset, evaluation_data
from mixvae.errors import CheckpointError, ConfigError
from mixvae.evaluation.aggregate import (
    AggregateDraws,
    active_units,
    draw_aggregate_posterior,
    elbo_surgery,
    mmd_test,
)
from mixvae.evaluation.clustering import cluster_assignments, clustering_scores
from mixvae.evaluation.likelihood import (
    KHAT_THRESHOLD,
    ImportanceResult,
    bits_per_dim,
    import_arviz,
    importance_sampling,
    log_likelihood,
    mass_levels,
    pareto_khat,
)
from mixvae.evaluation.posthoc import ensure_posthoc_gmm, latent_codes
from mixvae.evaluation.sample_quality import score_run_samples
from mixvae.guides import Guide
from mixvae.inference.objectives import evaluate_elbo, has_discrete_site
from mixvae.models import VAE
from mixvae.rng import seeded
from mixvae.runs.files import clean_temporaries, commit_set, staging, write_json
from mixvae.runs.folder import EVALUATION_FIGURES, Run, load_run, read_metrics, run_dataset
from mixvae.runs.lock import RunLock

__all__ = [
    "KHAT_THRESHOLD",
    "Clustering",
    "ImportanceResult",
    "clustering_baselines",
    "evaluate_run",
    "import_arviz",
    "importance_sampling",
    "log_likelihood",
    "pareto_khat",
    "read_metrics",
    "to_inference_data",
]

# ----------------------------------------------------------------------------- clustering


@dataclass
class Clustering:
    """Cluster assignments of the evaluated points and their scores against the labels."""

    assignments: np.ndarray
    scores: dict[str, Any]


def clustering_baselines(
    guide: Guide,
    x: torch.Tensor,
    labels: torch.Tensor | np.ndarray,
    num_clusters: int,
    *,
    fit_x: torch.Tensor | None = None,
    seed: int = 0,
    batch_size: int = 1000,
) -> dict[str, Clustering]:
    """k-means and a full-covariance Gaussian mixture on the encoder means, scored on ``x``.

    Both are fitted to the encoder means of ``fit_x`` (the training data, as
    the model was; default ``x``) and then assign the points of ``x``, scored
    with :func:`~mixvae.evaluation.clustering.clustering_scores`.  They answer
    "does the mixture prior cluster better than clustering the codes of the
    same encoder afterwards?".

    :returns: ``{"kmeans": ..., "gmm": ...}``; the GMM's scores carry ``converged``.
    """
    from sklearn.cluster import KMeans
    from sklearn.exceptions import ConvergenceWarning
    from sklearn.mixture import GaussianMixture

    codes = latent_codes(guide, x, "means", batch_size).cpu().numpy()
    fit_codes = codes if fit_x is None else latent_codes(guide, fit_x, "means", batch_size).cpu().numpy()
    kmeans = KMeans(n_clusters=num_clusters, n_init=10, random_state=seed).fit(fit_codes)
    gmm = GaussianMixture(n_components=num_clusters, covariance_type="full", max_iter=500, random_state=seed)
    with warnings.catch_warnings():
        # Non-convergence is reported as data (the "converged" score), not as a warning.
        warnings.simplefilter("ignore", ConvergenceWarning)
        gmm.fit(fit_codes)
    out = {}
    for name, est in (("kmeans", kmeans), ("gmm", gmm)):
        assigned = est.predict(codes)
        out[name] = Clustering(assigned, clustering_scores(assigned, labels))
    out["gmm"].scores["converged"] = bool(gmm.converged_)
    return out


# ----------------------------------------------------------------------------- ArviZ


def _inference_data(
    run: Run, prior_z: torch.Tensor, posterior_z: torch.Tensor, metrics: list[dict[str, Any]]
) -> Any:
    az = import_arviz()
    d = prior_z.shape[-1]
    dims: dict[str, list[str]] = {"z": ["latent"]}
    coords: dict[str, Any] = {"latent": np.arange(d)}
    sample_stats = None
    if metrics:
        # The history is per epoch, not per draw: chain and draw are singletons here
        # and the epochs get their own dimension.
        # (NaN at the epochs that did not score the held-out data: --eval-every)
        keys = [k for k in ("train_loss", "heldout_elbo", "beta") if any(k in m for m in metrics)]
        sample_stats = {k: np.array([[[m.get(k, np.nan) for m in metrics]]], dtype=float) for k in keys}
        dims.update({k: ["epoch"] for k in keys})
        coords["epoch"] = np.array([m["epoch"] for m in metrics])
    config = run.config
    return az.from_dict(
        prior={"z": prior_z.detach().cpu().numpy()[None]},
        posterior={"z": posterior_z.detach().cpu().numpy()[None]},
        sample_stats=sample_stats,
        dims=dims,
        coords=coords,
        attrs={
            "prior_name": config.prior,
            "guide_name": config.guide,
            "dataset": config.dataset,
            "epoch": run.epoch,
            "posterior_is": "aggregate posterior q(z) = mean_n q(z|x_n): one z ~ q(z|x_n) per draw",
        },
    )


def to_inference_data(run: Run, x: torch.Tensor, *, num_draws: int = 1000, seed: int = 0) -> Any:
    r"""The run's latent space as an :class:`arviz.InferenceData`.

    * ``prior``: ``z`` with dims (chain, draw, latent), draws from :math:`p(z)`;
    * ``posterior``: ``z`` with dims (chain, draw, latent), i.i.d. draws from
      the aggregate posterior :math:`q(z) = \frac{1}{N}\sum_n q(z \mid x_n)` of ``x``;
    * ``sample_stats``: ``train_loss``, ``heldout_elbo``, ``beta`` per epoch
      from ``RUN/metrics.jsonl`` (dims chain, draw, epoch; chain and draw of length 1).

    ``az.plot_dist_comparison`` then overlays prior and aggregate posterior per
    latent dimension.  There is one chain; ``r_hat``/``ess`` mean nothing here.
    The prior is the one the model was trained with (N(0, I) for ``posthoc-gmm``,
    see :meth:`~mixvae.models.Prior.as_trained`).
    """
    with run.model.prior.as_trained():
        prior_z, posterior = _latent_draws(run.model, run.guide, x, num_draws, seed)
    metrics = read_metrics(run.run_dir) if run.run_dir is not None else []
    return _inference_data(run, prior_z, posterior.z, metrics)


def _sub_seed(seed: int, purpose: str) -> int:
    # Distinct, order-independent streams per purpose: equal seeds would make,
    # e.g., the prior draws and the aggregate-posterior draws share their noise.
    return (seed * 1_000_003 + zlib.crc32(purpose.encode())) % 2**63


@torch.no_grad()
def _latent_draws(
    model: VAE, guide: Guide, x: torch.Tensor, n: int, seed: int
) -> tuple[torch.Tensor, AggregateDraws]:
    with seeded(_sub_seed(seed, "prior draws"), x.device):
        prior_z = model.prior.sample_z(n)
    return prior_z, draw_aggregate_posterior(guide, x, n, seed=_sub_seed(seed, "posterior draws"))


# ----------------------------------------------------------------------------- a whole run


def _scalar(v: float) -> float | None:
    # JSON has no inf/nan; None marks a value that could not be computed.
    return float(v) if math.isfinite(v) else None


def _iw_summary(res: ImportanceResult) -> dict[str, Any]:
    assert res.khat is not None  # asked for with khat=True
    n = len(res.log_likelihood)
    return {
        "elbo_marginal": float(res.elbo.mean()),
        "log_likelihood": float(res.log_likelihood.mean()),
        "log_likelihood_se": float(res.log_likelihood.std() / math.sqrt(n)) if n > 1 else None,
        "khat_over_0_7": float((res.khat > KHAT_THRESHOLD).double().mean()),
        "khat_median": _scalar(float(res.khat.median())),
        "khat_max": _scalar(float(res.khat.max())),
    }


def _clustering(
    run: Run, data: Dataset, x: torch.Tensor, train_x: torch.Tensor, labels: torch.Tensor, seed: int
) -> tuple[dict[str, Clustering], dict[str, Any]]:
    model, guide = run.model, run.guide
    k = model.prior.num_components or data.num_classes or int(labels.max()) + 1
    found: dict[str, Clustering] = {}
    if has_discrete_site(model, guide):
        assigned = cluster_assignments(model, guide, x, batch_size=run.config.eval_batch_size).cpu().numpy()
        found["model"] = Clustering(assigned, clustering_scores(assigned, labels))
    found.update(clustering_baselines(guide, x, labels, k, fit_x=train_x, seed=seed))
    return found, {"num_clusters": k, **{name: c.scores for name, c in found.items()}}


def evaluate_run(
    run_dir: str | Path,
    iw_samples: int = 1000,
    split: str = "test",
    figures: bool = True,
    *,
    dataset: Dataset | Any = None,
    data_dir: str | None = None,
    seed: int = 0,
    batch_size: int = 100,
    chunk_samples: int = 100,
    elbo_particles: int = 10,
    num_draws: int = 1000,
    surgery_points: int | None = None,
    mmd_permutations: int = 200,
    classifier: Any = None,
    device: str = "cpu",
    encoder: torch.nn.Module | None = None,
    decoder: torch.nn.Module | None = None,
) -> dict[str, Any]:
    r"""Evaluate a trained run on one split and write the results into its folder.

    Writes ``RUN/evaluation.json`` (returned as a dict), ``RUN/inference_data.nc``
    (see :func:`to_inference_data`) and, with ``figures``, ``RUN/eval_*.png``.
    All numbers are nats per datapoint of the split (``"test"``: the held-out
    data; ``"train"``), binarised once with a fixed seed when the run used
    ``--binarize dynamic``, exactly as training evaluated it.

    Top-level numbers: ``elbo`` (Pyro's ``TraceEnum_ELBO``, the training
    objective at beta = 1, ``elbo_particles`` particles), ``elbo_marginal``
    (mean IW log weight: the ELBO with marginal densities, >= ``elbo`` for the
    ``categorical`` guide), ``log_likelihood`` (IWAE, ``iw_samples`` draws) and
    its standard error over datapoints, ``khat_over_0_7`` (fraction of
    datapoints whose weights have Pareto :math:`\hat k > 0.7`), ELBO surgery
    (``avg_kl = mutual_information + marginal_kl``,
    ``mutual_information_bound`` = log N), ``active_units``, ``mmd`` (unbiased
    :math:`\mathrm{MMD}^2` between ``num_draws`` draws of :math:`q(z)` and of
    :math:`p(z)`) with ``mmd_pvalue``.

    Nested: ``posthoc_gmm`` (for the ``posthoc-gmm`` prior: the IW numbers
    with the fitted GMM as :math:`p(z)`, on the same draws), ``clustering``
    (``model``: the pair's own clusters when it has a discrete component;
    ``kmeans``, ``gmm``: baselines on the encoder means, K = the prior's
    components or else the number of classes; needs labels) and
    ``sample_quality`` (one entry per source of
    :data:`mixvae.evaluation.sampling.SOURCES`, plus ``data`` for real images of
    the split; needs training labels).  The ``posthoc-gmm`` source fits and
    saves ``RUN/posthoc_gmm.pt`` when the run has none yet.

    :param dataset: data to evaluate on instead of loading ``config.dataset`` (needed for a run
        trained on in-memory data).
    :param data_dir: where the files of the run's registered data set are now (they moved).
    :param encoder: for a run trained with your own modules: fresh encoder and decoder modules of
        the same architecture (see :func:`~mixvae.runs.load_run`).
    :param decoder: see ``encoder``.
    :param classifier: a fitted classifier with ``predict_proba`` for the sample
        scores (default: :func:`~mixvae.evaluation.sample_quality.fit_sample_classifier`
        on the training images), so that several runs can share one.
    :param surgery_points: score this many datapoints in ELBO surgery (default
        all N; the cost grows as points x N).
    """
    if split not in ("test", "train"):
        raise ConfigError(f"split must be 'test' or 'train', got {split!r}")
    run_dir = Path(run_dir)
    if not (run_dir / "checkpoint.pt").is_file():
        raise CheckpointError(f"no checkpoint at {run_dir / 'checkpoint.pt'}; train a run there first")
    with RunLock(run_dir, "evaluate"):  # one writer at a time; evaluate writes into the folder
        clean_temporaries(run_dir)
        run = load_run(run_dir, device=device, encoder=encoder, decoder=decoder)
        # the numbers of the prior as trained (a post-hoc GMM's are reported beside them)
        with run.model.prior.as_trained():
            model, guide, config = run.model, run.guide, run.config
            data = (
                as_dataset(dataset, torch_dtype(config.dtype))
                if dataset is not None
                else run_dataset(config, run_dir, data_dir=data_dir)
            )
            if split == "train" and data.streamed:
                raise ConfigError(
                    "split 'train' reads the training set into memory, and these data are streamed; evaluate "
                    "the held-out split (split='test'), or pass the points as a tensor"
                )
            raw_x = data.test_x if split == "test" else data.train_x
            labels = data.test_y if split == "test" else data.train_y
            labels = None if labels is None else labels.cpu()
            x = evaluation_data(raw_x.to(device), config.binarize)
            train_x = evaluation_data(data.train_x.to(device), config.binarize)
            result: dict[str, Any] = {
                "prior": config.prior,
                "guide": config.guide,
                "dataset": data.name,
                "split": split,
                "num_points": len(x),
                "epoch": run.epoch,
                "seed": seed,
                "latent_dim": config.latent_dim,
                "elbo": evaluate_elbo(
                    model,
                    guide,
                    x,
                    batch_size=config.eval_batch_size,
                    num_particles=elbo_particles,
                    seed=_sub_seed(seed, "elbo"),
                ),
                "elbo_particles": elbo_particles,
                "iw_samples": iw_samples,
            }
            iw_args = dict(
                chunk_samples=chunk_samples, batch_size=batch_size, seed=_sub_seed(seed, "iw"), khat=True
            )
            iw = _likelihood(run, data, x, iw_samples, iw_args, result)
            prior_z, posterior = _aggregate_posterior(
                model,
                guide,
                x,
                result,
                seed=seed,
                num_draws=num_draws,
                surgery_points=surgery_points,
                mmd_permutations=mmd_permutations,
            )
            clusters: dict[str, Clustering] = {}
            if labels is not None:
                clusters, result["clustering"] = _clustering(run, data, x, train_x, labels, seed)
            quality = score_run_samples(
                run,
                data,
                raw_x,
                labels,
                split,
                classifier,
                num_draws,
                _sub_seed(seed, "samples"),
                result,
                seed,
            )
            idata = _inference_data(run, prior_z, posterior.z, read_metrics(run_dir))
            # The outputs are written as one set: staged, then moved in with evaluation.json last.
            with staging(run_dir, "evaluate") as staged:
                idata.to_netcdf(str(staged / "inference_data.nc"))
                if figures:
                    from mixvae.figures import evaluation as eval_figures
                    from mixvae.figures.training import figure_shape

                    shown = "model" if "model" in clusters else "kmeans"
                    result["figures"] = eval_figures.write_evaluation_figures(
                        staged,
                        model=model,
                        prior_z=prior_z,
                        posterior_z=posterior.z,
                        posterior_labels=None if labels is None else labels[posterior.index.cpu()],
                        khat=iw.khat,
                        image_shape=figure_shape(data.data_shape, data.image_shape),
                        sources=quality,
                        clusters=clusters.get(shown),
                        cluster_source="model" if shown == "model" else "k-means on encoder means",
                        labels=labels,
                        seed=_sub_seed(seed, "figures"),
                    )
                write_json(staged / "evaluation.json", result)
                commit_set(
                    staged, run_dir, "evaluation.json", replaces=(*EVALUATION_FIGURES, "inference_data.nc")
                )
            return result


def _likelihood(
    run: Run, data: Dataset, x: torch.Tensor, iw_samples: int, iw_args: dict[str, Any], result: dict[str, Any]
) -> ImportanceResult:
    """The importance-weighted numbers into ``result`` (and, for a post-hoc GMM prior, with it as p(z))."""
    model, guide = run.model, run.guide
    iw = importance_sampling(model, guide, x, iw_samples, **iw_args)
    result.update(_iw_summary(iw))
    if mass_levels(model.decoder, x) is not None:
        # log p(x) is a probability mass over the values' levels: bits per dimension
        result["bits_per_dim"] = bits_per_dim(result["log_likelihood"], model.decoder.data_dim)
    if model.prior.fits_posthoc_gmm:
        # For this prior, p(z) in the likelihood is the GMM fitted to q(z) after
        # training.  The same seed gives the same draws of z, so the difference
        # to log_likelihood above is free of sampling noise in q.
        gmm = ensure_posthoc_gmm(run, data)
        p_gmm = gmm.distribution()
        post = importance_sampling(
            model, guide, x, iw_samples, **iw_args, prior_log_prob=lambda lat: p_gmm.log_prob(lat["z"])
        )
        result["posthoc_gmm"] = {"num_components": gmm.num_components, **_iw_summary(post)}
    return iw


def _aggregate_posterior(
    model: VAE,
    guide: Guide,
    x: torch.Tensor,
    result: dict[str, Any],
    *,
    seed: int,
    num_draws: int,
    surgery_points: int | None,
    mmd_permutations: int,
) -> tuple[torch.Tensor, AggregateDraws]:
    """ELBO surgery, active units and the MMD test into ``result``; returns the prior and q(z) draws."""
    surgery = elbo_surgery(model, guide, x, num_points=surgery_points, seed=_sub_seed(seed, "surgery"))
    result.update({k: v for k, v in asdict(surgery).items() if k != "num_points"})
    result["surgery_points"] = surgery.num_points
    units = active_units(guide, x)
    result.update(
        active_units=units.count, active_units_threshold=0.01, latent_variances=units.variances.tolist()
    )
    prior_z, posterior = _latent_draws(model, guide, x, num_draws, seed)
    mmd = mmd_test(posterior.z, prior_z, num_permutations=mmd_permutations, seed=_sub_seed(seed, "mmd"))
    result.update(mmd=mmd.mmd2, mmd_pvalue=mmd.pvalue, mmd_bandwidth=mmd.bandwidth, mmd_draws=num_draws)
    return prior_z, posterior
