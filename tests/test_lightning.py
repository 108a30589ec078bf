"""Data-parallel training through Lightning: 2 CPU processes with the gloo backend."""

from __future__ import annotations

import pytest
import torch

pytest.importorskip("lightning", reason="the optional extra mixvae[lightning] is not installed")

import lightning

from mixvae import TrainConfig
from mixvae.data import Dataset
from mixvae.inference.lightning import train_lightning

pytestmark = [
    # Lightning's own deprecation and "few batches" notices; not our code's warnings.
    pytest.mark.filterwarnings("ignore::DeprecationWarning"),
    pytest.mark.filterwarnings("ignore::UserWarning:lightning"),
    pytest.mark.filterwarnings("ignore:.*LeafSpec.*"),
    pytest.mark.filterwarnings("ignore:.*log_every_n_steps.*"),
    pytest.mark.filterwarnings("ignore:.*does not have many workers.*"),
    pytest.mark.filterwarnings("ignore:.*GPU available but not used.*"),
]


class RecordState(lightning.Callback):
    """Save each rank's gradients after the first backward and its parameters at the end."""

    def __init__(self, folder: str) -> None:
        self.folder = folder

    def on_after_backward(self, trainer, module):
        if trainer.global_step == 0:
            grads = {n: p.grad.detach().clone() for n, p in module.named_parameters() if p.grad is not None}
            torch.save(grads, f"{self.folder}/grads-rank{trainer.global_rank}-world{trainer.world_size}.pt")

    def on_train_end(self, trainer, module):
        params = {n: p.detach().clone() for n, p in module.named_parameters()}
        torch.save(params, f"{self.folder}/params-rank{trainer.global_rank}-world{trainer.world_size}.pt")


def _near_deterministic(data: Dataset, n: int) -> Dataset:
    return Dataset(
        "digits", data.train_x[:n].clone(), data.test_x[:50], data.train_y[:n], data.test_y[:50], (8, 8)
    )


def _config(out, **kw):
    return TrainConfig(
        prior="gmm", guide="gaussian", hidden=(32,), latent_dim=3, components=4, out=str(out), **kw
    )


@pytest.mark.slow
def test_two_gloo_ranks_match_one_process_with_twice_the_batch(small_digits, tmp_path):
    """Ranks stay identical, and 2 ranks x batch B give the gradient of 1 process x batch 2B."""
    b = 16
    data = _near_deterministic(small_digits, 4 * b)
    # Shrink the encoder's scale to ~1e-4 so that the reparameterisation noise, which the two
    # set-ups draw differently, barely moves the gradient: the comparison is then of the data split.
    import mixvae.inference.lightning as lmod

    original = lmod.build

    def build_quiet(config, data_dim):
        model, guide = original(config, data_dim)
        with torch.no_grad():
            head = guide.head
            d = config.latent_dim
            head.weight[d:].zero_()
            head.bias[d:].fill_(-30.0)
        return model, guide

    lmod.build = build_quiet
    try:
        # Lightning shuffles with a seeded DistributedSampler; both runs see the same 2B points in step 1
        # because the data set is exactly 2B points long for the gradient check.
        pair = _near_deterministic(small_digits, 2 * b)
        folder = str(tmp_path)
        train_lightning(
            _config(tmp_path / "two", batch_size=b, epochs=1),
            devices=2,
            strategy="ddp_spawn",
            dataset=pair,
            max_steps=1,
            progress=False,
            callbacks=[RecordState(folder)],
        )
        train_lightning(
            _config(tmp_path / "one", batch_size=2 * b, epochs=1),
            devices=1,
            strategy="auto",
            dataset=pair,
            max_steps=1,
            progress=False,
            callbacks=[RecordState(folder)],
        )
        # a longer run: the ranks stay identical
        (tmp_path / "long-state").mkdir()
        train_lightning(
            _config(tmp_path / "long", batch_size=b, epochs=3),
            devices=2,
            strategy="ddp_spawn",
            dataset=data,
            progress=False,
            callbacks=[RecordState(str(tmp_path / "long-state"))],
        )
    finally:
        lmod.build = original
    g0 = torch.load(tmp_path / "grads-rank0-world2.pt")
    g1 = torch.load(tmp_path / "grads-rank1-world2.pt")
    single = torch.load(tmp_path / "grads-rank0-world1.pt")
    assert g0.keys() == single.keys() and len(g0) > 0
    for name in g0:
        assert torch.equal(g0[name], g1[name]), name  # DDP all-reduced the gradients
        # equal up to the ~1e-4 reparameterisation noise; a sum instead of a mean over
        # ranks (2x), or ranks seeing the same points, would be far outside this
        scale = float(single[name].abs().max())
        assert torch.allclose(g0[name], single[name], rtol=1e-2, atol=1e-3 * scale), name
    flat0 = torch.cat([g.flatten() for g in g0.values()])
    flat1 = torch.cat([g.flatten() for g in single.values()])
    assert (flat0 - flat1).norm() < 0.01 * flat1.norm()
    p0 = torch.load(tmp_path / "long-state" / "params-rank0-world2.pt")
    p1 = torch.load(tmp_path / "long-state" / "params-rank1-world2.pt")
    for name in p0:
        assert torch.equal(p0[name], p1[name]), name
    assert (tmp_path / "long" / "checkpoint.pt").is_file()
    assert (tmp_path / "long" / "summary.json").is_file()


@pytest.mark.slow
def test_cli_devices_two_processes(tmp_path):
    """`mixvae train --devices 2` relaunches itself as 2 gloo ranks and writes a loadable run."""
    import json
    import subprocess
    import sys

    from mixvae import load_run

    out = tmp_path / "run"
    cmd = [
        sys.executable,
        "-m",
        "mixvae.cli",
        "train",
        "--devices",
        "2",
        "--epochs",
        "2",
        "--hidden",
        "32",
        "--quiet",
        "--out",
        str(out),
    ]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-2000:]
    summary = json.loads((out / "summary.json").read_text())
    assert summary["devices"] == 2 and summary["epochs"] == 2
    assert load_run(out).epoch == 2
    assert list((out / "lightning_logs").glob("*/metrics.csv"))
    # --logger under --devices: the same logger, with the plain loop's numbers per epoch
    tracked = tmp_path / "tracked"
    proc = subprocess.run(
        [*cmd[:-1], str(tracked), "--logger", "csv"], capture_output=True, text=True, timeout=600
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    (log,) = (tracked / "logs").glob("version_*/metrics.csv")
    header = log.read_text().splitlines()[0].split(",")
    assert {"train_loss", "heldout_elbo", "beta", "lr", "clustering/acc_hungarian"} <= set(header)
    proc = subprocess.run(
        [sys.executable, "-m", "mixvae.cli", "train", "--devices", "2", "--quiet"],
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert proc.returncode == 2 and "needs an explicit --out" in proc.stderr


def test_lightning_path_applies_data_and_warm_starts(small_digits, tmp_path):
    """--devices runs start like single-process ones: data-initialised pseudo-inputs, --init-from."""
    from mixvae import train

    common = dict(hidden=(16,), latent_dim=2, components=10, epochs=1, lr=1e-9, batch_size=64)
    vamp = train_lightning(
        TrainConfig(
            prior="vampprior",
            guide="gaussian",
            pseudo_inputs=5,
            pseudo_init="data",
            out=str(tmp_path / "v"),
            **common,
        ),
        devices=1,
        strategy="auto",
        dataset=small_digits,
        max_steps=1,
        progress=False,
    )
    u = vamp.model.prior.pseudo_inputs().detach()
    assert torch.cdist(u, small_digits.train_x.clamp(0.01, 0.99)).min(1).values.max() < 1e-3
    source = train(
        TrainConfig(prior="standard", guide="gaussian", out=str(tmp_path / "s"), **common),
        dataset=small_digits,
        progress=False,
        figures=False,
    )
    warm = train_lightning(
        TrainConfig(
            prior="gmm", guide="gaussian", init_from=str(tmp_path / "s"), out=str(tmp_path / "w"), **common
        ),
        devices=1,
        strategy="auto",
        dataset=small_digits,
        max_steps=1,
        progress=False,
    )
    assert (tmp_path / "w" / "init_from.json").is_file()
    w = warm.guide.state_dict()
    for name, value in source.guide.state_dict().items():
        assert torch.allclose(w[name], value, atol=1e-6), name  # copied, then one step of lr 1e-9


@pytest.mark.slow
def test_lightning_trains_with_labels_and_dynamic_binarisation(small_digits, tmp_path):
    """Every option of the plain loop works under --devices: the same step (RunObjective) on each rank."""
    run = train_lightning(
        TrainConfig(
            prior="gmm",
            guide="categorical",
            hidden=(32,),
            latent_dim=4,
            components=10,
            labels_per_class=20,
            binarize="dynamic",
            warmup_epochs=1.0,
            epochs=6,
            batch_size=50,
            lr=3e-3,
            out=str(tmp_path),
        ),
        devices=2,
        strategy="ddp_spawn",
        dataset=small_digits,
        progress=False,
    )
    assert run.summary["labels_used"] == 200 and run.summary["objective"] == "direct"
    # the labelled term trained q(y|x) as a classifier (chance: 0.1)
    assert run.summary["classification_accuracy"] > 0.5, run.summary


def test_lightning_trains_on_a_streamed_torch_dataset(small_digits, tmp_path):
    """A torch dataset goes to Lightning as a DataLoader (its sampler, its shards); the points are
    converted in the loader and the run folder is written as for in-memory data."""
    x = (torch.cat([small_digits.train_x, small_digits.test_x]) * 255).round().to(torch.uint8)
    source = torch.utils.data.TensorDataset(x)
    config = TrainConfig(
        prior="gmm", guide="gaussian", hidden=(16,), latent_dim=2, components=3, epochs=2, batch_size=64,
        out=str(tmp_path / "run"),
    )  # fmt: skip
    run = train_lightning(config, devices=1, strategy="auto", dataset=source, progress=False)
    assert run.epoch == 2 and run.summary["num_train"] == 640
    assert torch.isfinite(torch.tensor(run.summary["heldout_elbo"]))
    assert (tmp_path / "run" / "checkpoint.pt").is_file()


def test_lightning_scores_the_epochs_of_eval_every(small_digits, tmp_path):
    import csv

    config = _config(
        tmp_path, epochs=4, eval_every=3, batch_size=100, logger="csv", lr_decay=0.5, lr_decay_epochs=2
    )
    train_lightning(config, devices=1, strategy="auto", dataset=small_digits, progress=False)
    (log,) = (tmp_path / "logs").glob("version_*/metrics.csv")
    rows = [r for r in csv.DictReader(log.read_text().splitlines()) if r.get("beta")]  # epochs' ends
    assert [int(r["step"]) for r in rows] == [1, 2, 3, 4]
    # --lr-decay steps the learning rate as in the plain loop
    assert [float(r["lr"]) for r in rows] == pytest.approx([1e-3, 1e-3, 5e-4, 5e-4])
    assert [int(r["step"]) for r in rows if r["heldout_elbo"]] == [1, 3, 4]
    assert [int(r["step"]) for r in rows if r["clustering/acc_hungarian"]] == [1, 3, 4]
