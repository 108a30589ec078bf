"""``--logger``: what was logged is read back with each tool's own reader."""

from __future__ import annotations

import csv
import importlib.util

import pytest

from mixvae import TrainConfig, resume, train
from mixvae.cli import main
from mixvae.runs import read_manifest, read_metrics


def _train(out, data, logger, **kw):
    config = TrainConfig(
        prior="gmm", guide="categorical", hidden=(16,), latent_dim=2, components=3, epochs=2, out=str(out)
    )
    config.logger = logger
    for k, v in kw.items():
        setattr(config, k, v)
    return train(config, dataset=data, progress=False, figures=True)


def test_csv_logs_every_epoch_and_resume_goes_on(small_digits, tmp_path):
    _train(tmp_path, small_digits, "csv")
    resume(tmp_path, epochs=3, dataset=small_digits, progress=False, figures=False)
    rows = []
    for version in ("version_0", "version_1"):  # the run, then its resume
        with open(tmp_path / "logs" / version / "metrics.csv") as f:
            rows += list(csv.DictReader(f))
    history = read_metrics(tmp_path)
    assert [float(r["heldout_elbo"]) for r in rows] == pytest.approx([m["heldout_elbo"] for m in history])
    assert {"train_loss", "beta", "lr", "seconds", "clustering/acc_hungarian", "clustering/nmi"} <= set(
        rows[0]
    )
    assert "logs" in read_manifest(tmp_path)["files"]


def test_tensorboard_scalars_images_and_hyperparameters(small_digits, tmp_path):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    _train(tmp_path, small_digits, "tensorboard")
    events = EventAccumulator(str(tmp_path / "tensorboard" / "version_0"), size_guidance={"images": 0})
    events.Reload()
    elbo = events.Scalars("heldout_elbo")
    assert [e.step for e in elbo] == [1, 2]
    assert [e.value for e in elbo] == pytest.approx([m["heldout_elbo"] for m in read_metrics(tmp_path)])
    assert "clustering/acc_hungarian" in events.Tags()["scalars"]
    assert {"loss_curves", "prior_samples", "reconstructions"} <= set(events.Tags()["images"])
    assert (tmp_path / "tensorboard" / "version_0" / "hparams.yaml").read_text().count("latent_dim: 2") == 1


def test_mlflow_metrics_params_and_artifacts(small_digits, tmp_path):
    from mlflow.tracking import MlflowClient

    _train(tmp_path, small_digits, "mlflow")
    client = MlflowClient(tracking_uri=(tmp_path / "mlruns").resolve().as_uri())
    (experiment,) = [e for e in client.search_experiments() if e.name == "mixvae"]
    (run,) = client.search_runs([experiment.experiment_id])
    history = client.get_metric_history(run.info.run_id, "heldout_elbo")
    assert [h.step for h in history] == [1, 2]
    assert [h.value for h in history] == pytest.approx([m["heldout_elbo"] for m in read_metrics(tmp_path)])
    assert run.data.params["latent_dim"] == "2" and run.data.params["prior"] == "gmm"
    assert {"loss_curves.png", "prior_samples.png"} <= {
        a.path for a in client.list_artifacts(run.info.run_id)
    }


@pytest.mark.skipif(importlib.util.find_spec("wandb") is not None, reason="checks the message without wandb")
def test_a_logger_whose_package_is_missing_is_one_line(tmp_path, capsys):
    assert main(["train", "--logger", "wandb", "--epochs", "1", "--out", str(tmp_path / "r"), "--quiet"]) == 2
    assert "--logger wandb needs the wandb package: pip install wandb" in capsys.readouterr().err
    assert not (tmp_path / "r").exists()  # refused before the run folder is made
