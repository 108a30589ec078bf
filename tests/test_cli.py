"""The command line end to end, its errors, and checkpoints that reload exactly."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
import torch

from mixvae import load_run
from mixvae.cli import main
from mixvae.data import evaluation_data
from mixvae.errors import CheckpointError
from mixvae.inference import evaluate_elbo
from mixvae.runs import load_checkpoint, save_checkpoint

TINY = ["--hidden", "32", "--epochs", "2", "--batch-size", "64", "--quiet"]


def test_list_shows_the_registries(capsys):
    assert main(["list"]) == 0
    out = capsys.readouterr().out
    for name in ("standard", "gmm", "gaussian", "mixture", "categorical", "digits", "mnist", "fashion-mnist"):
        assert name in out


def test_train_end_to_end_writes_the_run_folder(tmp_path, capsys):
    out = tmp_path / "run"
    assert main(["train", *TINY, "--latent-dim", "2", "--components", "4", "--out", str(out)]) == 0
    for f in (
        "config.json",
        "checkpoint.pt",
        "metrics.jsonl",
        "summary.json",
        "loss_curves.png",
        "reconstructions.png",
        "prior_samples.png",
        "latent_scatter.png",
    ):
        assert (out / f).is_file(), f
    metrics = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert [m["epoch"] for m in metrics] == [1, 2]
    summary = json.loads((out / "summary.json").read_text())
    assert summary["prior"] == "gmm" and summary["guide"] == "categorical"
    assert summary["heldout_elbo"] < 0 and summary["train_elbo"] < 0
    assert 0 <= summary["clustering"]["acc_hungarian"] <= 1
    assert json.loads((out / "config.json").read_text())["components"] == 4
    assert "cluster accuracy" in capsys.readouterr().out
    # a second run into the same folder is refused, then allowed with --overwrite
    assert main(["train", *TINY, "--out", str(out)]) == 2
    assert "already holds a run" in capsys.readouterr().err
    assert main(["train", *TINY, "--epochs", "1", "--out", str(out), "--overwrite"]) == 0
    assert len((out / "metrics.jsonl").read_text().splitlines()) == 1


def test_train_on_real_mnist(mnist_dir, tmp_path):
    out = tmp_path / "mnist"
    args = [
        "train",
        "--dataset",
        "mnist",
        "--data-dir",
        str(mnist_dir),
        "--no-download",
        "--prior",
        "standard",
        "--guide",
        "gaussian",
        "--hidden",
        "64",
        "--epochs",
        "1",
        "--batch-size",
        "256",
        "--quiet",
        "--binarize",
        "dynamic",
        "--out",
        str(out),
    ]
    assert main(args) == 0
    summary = json.loads((out / "summary.json").read_text())
    assert summary["num_train"] == 23797 and summary["num_heldout"] == 10000
    assert "clustering" not in summary  # the standard prior has no discrete component
    assert -250 < summary["heldout_elbo"] < -80


@pytest.mark.parametrize(
    "prior,guide", [("gmm", "categorical"), ("gmm", "mixture"), ("standard", "gaussian")]
)
def test_checkpoint_reloads_to_the_same_heldout_elbo(prior, guide, tmp_path, small_digits):
    from mixvae import TrainConfig, train

    run = train(
        TrainConfig(
            prior=prior,
            guide=guide,
            hidden=(32,),
            epochs=2,
            batch_size=64,
            latent_dim=3,
            components=4,
            out=str(tmp_path),
        ),
        dataset=small_digits,
        progress=False,
        figures=False,
    )
    loaded = load_run(tmp_path)
    assert loaded.epoch == 2 and loaded.config == run.config
    x = evaluation_data(small_digits.test_x, loaded.config.binarize)
    assert evaluate_elbo(loaded.model, loaded.guide, x) == run.summary["heldout_elbo"]
    for a, b in zip(run.model.state_dict().values(), loaded.model.state_dict().values(), strict=True):
        assert torch.equal(a, b)


def test_checkpoint_with_pickled_object_is_refused(tmp_path):
    path = tmp_path / "checkpoint.pt"
    torch.save({"config": "{}", "evil": subprocess.Popen}, path)
    with pytest.raises(CheckpointError, match="refused for safety"):
        load_checkpoint(path)


def test_checkpoint_write_is_atomic(tmp_path, monkeypatch):
    path = tmp_path / "checkpoint.pt"
    save_checkpoint(path, {"config": "{}", "w": torch.ones(3)})

    def broken_save(obj, f):
        f.write(b"half a checkpoint")
        raise OSError("disk full")

    monkeypatch.setattr(torch, "save", broken_save)
    with pytest.raises(OSError, match="disk full"):
        save_checkpoint(path, {"config": "{}", "w": torch.zeros(3)})
    monkeypatch.undo()
    assert torch.equal(load_checkpoint(path)["w"], torch.ones(3))
    assert [p.name for p in tmp_path.iterdir()] == ["checkpoint.pt"]


@pytest.mark.parametrize(
    "args,message",
    [
        (
            ["--prior", "nope"],
            "unknown prior 'nope'; choose one of: standard, gmm, gmm-full, vampprior, dilokthanakul, posthoc-gmm",
        ),
        (["--guide", "nope"], "unknown guide 'nope'; choose one of: gaussian, mixture, categorical"),
        (["--dataset", "nope"], "unknown dataset 'nope'; choose one of: digits"),
        (["--prior", "standard", "--guide", "categorical"], "inflate the ELBO by up to log K"),
        (["--components", "0"], "--components must be a positive integer, got 0"),
        (["--latent-dim", "0"], "--latent-dim must be a positive integer"),
        (["--epochs", "0"], "--epochs must be a positive integer"),
        (["--batch-size", "5000"], "larger than the 1438 training points"),
        (["--likelihood", "poisson"], "unknown likelihood 'poisson'"),
        (
            ["--dataset", "mnist", "--data-dir", "/nonexistent/mnist", "--no-download"],
            "mnist data folder /nonexistent/mnist does not exist; put train-images-idx3-ubyte.gz",
        ),
    ],
)
def test_bad_input_is_one_line_and_exit_2(args, message, capsys, tmp_path):
    assert main(["train", *args, "--out", str(tmp_path / "r"), "--quiet"]) == 2
    err = capsys.readouterr().err
    assert message in err
    assert len(err.strip().splitlines()) == 1 and "Traceback" not in err


def test_data_outside_unit_interval_with_bernoulli(tmp_path, small_digits):
    from mixvae import TrainConfig, train
    from mixvae.data import Dataset
    from mixvae.errors import DataError

    scaled = Dataset("digits", small_digits.train_x * 16, small_digits.test_x * 16)
    with pytest.raises(DataError, match="use --likelihood gaussian"):
        train(TrainConfig(hidden=(8,), out=str(tmp_path)), dataset=scaled, progress=False)
    # the Gaussian likelihood accepts it
    run = train(
        TrainConfig(
            prior="standard",
            guide="gaussian",
            likelihood="gaussian",
            hidden=(8,),
            epochs=1,
            out=str(tmp_path),
            overwrite=True,
        ),
        dataset=scaled,
        progress=False,
        figures=False,
    )
    assert run.summary["heldout_elbo"] == run.summary["heldout_elbo"]  # finite, not NaN
    nan = Dataset("digits", small_digits.train_x.clone(), small_digits.test_x)
    nan.train_x[3, 3] = float("nan")
    with pytest.raises(DataError, match="NaN or inf"):
        train(TrainConfig(hidden=(8,), out=str(tmp_path / "n")), dataset=nan, progress=False)


def test_console_script_exit_code_and_no_traceback(tmp_path):
    proc = subprocess.run(
        [sys.executable, "-m", "mixvae.cli", "train", "--components", "-3", "--out", str(tmp_path / "r")],
        capture_output=True,
        text=True,
    )
    assert proc.returncode == 2
    assert proc.stderr.strip() == "mixvae: error: --components must be a positive integer, got -3"


def test_evaluate_command_and_overwrite_clears_it(tmp_path, capsys):
    out = tmp_path / "run"
    assert main(["train", *TINY, "--components", "3", "--out", str(out)]) == 0
    assert main(["evaluate", str(out), "--iw-samples", "20", "--no-figures", "--surgery-points", "100"]) == 0
    result = json.loads((out / "evaluation.json").read_text())
    assert result["iw_samples"] == 20 and result["elbo"] <= result["log_likelihood"] + 0.5
    assert set(result["clustering"]) >= {"model", "kmeans", "gmm"}
    assert "log p(x)" in capsys.readouterr().out
    assert main(["evaluate", str(out), "--iw-samples", "0"]) == 2
    assert "--iw-samples must be a positive integer" in capsys.readouterr().err
    assert main(["train", *TINY, "--epochs", "1", "--out", str(out), "--overwrite"]) == 0
    assert not (out / "evaluation.json").exists()
