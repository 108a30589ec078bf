"""The training loop: seeding, KL warm-up, divergence, devices."""

from __future__ import annotations

import json

import pytest
import torch

from mixvae import TrainConfig, resume, train
from mixvae.errors import ConfigError, TrainingDiverged
from mixvae.inference.step import learning_rate


def _metrics(path):
    return [json.loads(line) for line in (path / "metrics.jsonl").read_text().splitlines()]


def _config(out, **kw):
    base = dict(
        prior="gmm",
        guide="gaussian",
        hidden=(32,),
        latent_dim=3,
        components=4,
        epochs=3,
        batch_size=100,
        out=str(out),
    )
    return TrainConfig(**{**base, **kw})


def test_same_seed_same_numbers(small_digits, tmp_path):
    runs = [
        train(_config(tmp_path / str(i)), dataset=small_digits, progress=False, figures=False)
        for i in range(2)
    ]
    strip = [
        [{k: v for k, v in m.items() if not k.endswith("seconds")} for m in _metrics(tmp_path / str(i))]
        for i in range(2)
    ]
    assert strip[0] == strip[1]
    for a, b in zip(runs[0].guide.state_dict().values(), runs[1].guide.state_dict().values(), strict=True):
        assert torch.equal(a, b)
    other = train(_config(tmp_path / "other", seed=1), dataset=small_digits, progress=False, figures=False)
    assert other.summary["heldout_elbo"] != runs[0].summary["heldout_elbo"]


def test_kl_warmup_schedule(small_digits, tmp_path):
    # 600 points / batch 100 = 6 steps an epoch; beta = step / 12 over two epochs
    train(_config(tmp_path, warmup_epochs=2), dataset=small_digits, progress=False, figures=False)
    betas = [m["beta"] for m in _metrics(tmp_path)]
    assert betas == [pytest.approx(0.5), 1.0, 1.0]
    # the warm-up objective (beta < 1) is not the ELBO: the first epoch's loss
    # is below what the same run reports without warm-up
    train(_config(tmp_path / "nowarm"), dataset=small_digits, progress=False, figures=False)
    assert _metrics(tmp_path)[0]["train_loss"] < _metrics(tmp_path / "nowarm")[0]["train_loss"]


def test_learning_rate_step_decay(small_digits, tmp_path):
    """--lr-decay: the step size of each epoch, in the metrics and after a resume."""
    vade = TrainConfig(lr=0.002, lr_decay=0.9, lr_decay_epochs=10, lr_min=0.0002)
    rates = [learning_rate(e, vade) for e in (0, 9, 10, 25, 100, 300)]
    assert rates == pytest.approx([0.002, 0.002, 0.0018, 0.002 * 0.81, 0.002 * 0.9**10, 0.0002])
    assert learning_rate(57, TrainConfig(lr=0.003)) == 0.003  # constant by default
    # the floor never raises the rate: a run resumed with --lr below --lr-min takes that --lr
    assert learning_rate(0, TrainConfig(lr=1e-4, lr_decay=0.9, lr_min=2e-4)) == 1e-4
    opts = dict(dataset=small_digits, progress=False, figures=False)
    kw = dict(lr=0.01, lr_decay=0.5, lr_decay_epochs=2, lr_min=0.003)
    straight = train(_config(tmp_path / "straight", epochs=5, **kw), **opts)
    assert [m["lr"] for m in _metrics(tmp_path / "straight")] == pytest.approx(
        [0.01, 0.01, 0.005, 0.005, 0.003]
    )
    train(_config(tmp_path / "split", epochs=3, **kw), **opts)
    resumed = resume(tmp_path / "split", epochs=5, **opts)
    assert resumed.summary["heldout_elbo"] == straight.summary["heldout_elbo"]
    assert [m["lr"] for m in _metrics(tmp_path / "split")] == [
        m["lr"] for m in _metrics(tmp_path / "straight")
    ]
    constant = train(_config(tmp_path / "constant", epochs=5, lr=0.01), **opts)
    assert constant.summary["heldout_elbo"] != straight.summary["heldout_elbo"]


@pytest.mark.parametrize(
    ("kw", "message"),
    [
        (dict(lr_decay=1.5), r"--lr-decay is a factor in \(0, 1\]"),
        (dict(lr_decay=0.0), r"--lr-decay is a factor in \(0, 1\]"),
        (dict(lr_decay_epochs=0), "--lr-decay-epochs must be a positive integer"),
        (dict(lr_min=-1e-4), "--lr-min must be >= 0"),
    ],
)
def test_bad_learning_rate_schedules_are_refused_in_one_line(kw, message):
    with pytest.raises(ConfigError, match=message):
        TrainConfig(**kw).validate()


def test_divergence_stops_with_a_message_and_keeps_the_checkpoint(small_digits, tmp_path):
    train(_config(tmp_path, epochs=1), dataset=small_digits, progress=False, figures=False)
    saved = (tmp_path / "checkpoint.pt").read_bytes()
    with pytest.raises(
        TrainingDiverged,
        match=r"at epoch 2, step \d+ \(non-finite .*\); the last good "
        r"checkpoint \(.*, after epoch 1\) is kept; continue from it with a lower learning rate",
    ):
        resume(tmp_path, epochs=2, lr=1e30, dataset=small_digits, progress=False, figures=False)
    assert (tmp_path / "checkpoint.pt").read_bytes() == saved


def _poison_updates(monkeypatch):
    """Make every optimiser step of the next training run write NaN into the guide (finite loss)."""
    import importlib

    loop_module = importlib.import_module("mixvae.inference.loop")  # the training loop's module
    make = loop_module.optimizer_of

    def poisoning(run):
        optimizer = make(run)
        step = optimizer.step

        def poisoned_step(*args, **kwargs):
            out = step(*args, **kwargs)
            with torch.no_grad():
                for p in run.guide.parameters():
                    p.fill_(float("nan"))
            return out

        optimizer.step = poisoned_step
        return optimizer

    monkeypatch.setattr(loop_module, "optimizer_of", poisoning)


DIVERGED_AFTER_STEP_1 = r"parameters became non-finite at epoch 1, step 1 \(non-finite"


def test_a_nonfinite_update_on_the_last_step_never_reaches_the_checkpoint(
    small_digits, tmp_path, monkeypatch
):
    """Gradients are not scanned every step: the check before each checkpoint must catch them."""
    _poison_updates(monkeypatch)
    # one step per epoch: the poisoned update is the epoch's last step, before its checkpoint
    with pytest.raises(TrainingDiverged, match=DIVERGED_AFTER_STEP_1 + r".*no checkpoint was written yet"):
        train(
            _config(tmp_path, epochs=1, batch_size=600, checkpoint_every=1),
            dataset=small_digits,
            progress=False,
            figures=False,
        )
    assert not (tmp_path / "checkpoint.pt").exists()


def test_a_nonfinite_update_that_breaks_a_distribution_is_named(small_digits, tmp_path, monkeypatch):
    """NaN mixture weights make torch refuse to sample; the error names the parameters, not torch."""
    _poison_updates(monkeypatch)
    with pytest.raises(TrainingDiverged, match=DIVERGED_AFTER_STEP_1):
        train(
            _config(tmp_path, guide="mixture", epochs=1), dataset=small_digits, progress=False, figures=False
        )


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the message on a machine without a GPU")
def test_cuda_without_gpu_is_a_clear_error(small_digits, tmp_path):
    with pytest.raises(ConfigError, match="no CUDA GPU is available; use --device cpu"):
        train(_config(tmp_path, device="cuda"), dataset=small_digits, progress=False)


def test_adam_is_fused_where_it_can_be_and_makes_the_same_update():
    from mixvae.inference import adam

    torch.manual_seed(0)
    start = [torch.randn(64, 32), torch.randn(32)]
    grads = [[torch.randn_like(p) for p in start] for _ in range(20)]
    finals = []
    for make in (lambda ps: adam(ps, 1e-2), lambda ps: torch.optim.Adam(ps, lr=1e-2)):
        params = [torch.nn.Parameter(p.clone()) for p in start]
        opt = make(params)
        for g in grads:
            for p, gp in zip(params, g, strict=True):
                p.grad = gp.clone()
            opt.step()
        finals.append(params)
    assert adam(finals[0], 1e-2).param_groups[0]["fused"] is True
    for a, b in zip(*finals, strict=True):
        assert torch.allclose(a, b, atol=1e-6)
    # a device the fused kernel does not cover gets the default implementation
    meta = torch.nn.Parameter(torch.empty(3, device="meta"))
    assert not adam([meta], 1e-2).param_groups[0]["fused"]


def test_weight_decay_shrinks_the_weight_matrices_only():
    """--weight-decay is AdamW's decoupled decay: with a zero gradient one step multiplies each
    weight matrix by 1 - lr * wd exactly and leaves biases and a prior's own parameters alone."""
    from mixvae.inference import adam

    torch.manual_seed(0)
    net = torch.nn.Sequential(torch.nn.Linear(5, 4), torch.nn.ReLU(), torch.nn.Linear(4, 3))
    means = torch.nn.Parameter(torch.randn(10, 3))  # a mixture's means: (K, D), not a layer
    named = [*net.named_parameters(prefix="decoder"), ("model.prior.means", means), *net.named_parameters()]
    before = {n: p.detach().clone() for n, p in [*net.named_parameters(), ("means", means)]}
    opt = adam(named, lr=0.1, weight_decay=0.5)
    assert isinstance(opt, torch.optim.AdamW)
    assert sum(len(g["params"]) for g in opt.param_groups) == 5  # the net listed twice counts once
    for p in [*net.parameters(), means]:
        p.grad = torch.zeros_like(p)
    opt.step()
    for name, p in [*net.named_parameters(), ("means", means)]:
        factor = 1 - 0.1 * 0.5 if name.endswith("weight") else 1.0
        assert torch.allclose(p.detach(), before[name] * factor, rtol=0, atol=1e-7), name
    # without decay: plain Adam, the optimiser of every earlier run
    assert type(adam(net.named_parameters(), lr=0.1)) is torch.optim.Adam
    with pytest.raises(ValueError, match="named_parameters"):
        adam(net.parameters(), lr=0.1, weight_decay=0.5)


def test_weight_decay_trains_resumes_and_is_refused_when_negative(small_digits, tmp_path):
    opts = dict(dataset=small_digits, progress=False, figures=False)
    straight = train(_config(tmp_path / "straight", weight_decay=0.1), **opts)
    train(_config(tmp_path / "split", epochs=2, weight_decay=0.1), **opts)
    resumed = resume(tmp_path / "split", epochs=3, **opts)
    assert resumed.config.weight_decay == 0.1
    assert resumed.summary["heldout_elbo"] == straight.summary["heldout_elbo"]
    plain = train(_config(tmp_path / "plain"), **opts)
    assert plain.summary["heldout_elbo"] != straight.summary["heldout_elbo"]
    with pytest.raises(ConfigError, match="--weight-decay must be >= 0"):
        TrainConfig(weight_decay=-0.01).validate()


@pytest.mark.parametrize(
    "field,flag,message",
    [
        ("binarize", "--binarize", "'none' or 'dynamic'"),
        ("kl", "--kl", "'analytic' or 'mc'"),
        ("pseudo_init", "--pseudo-init", "'random' or 'data'"),
    ],
)
def test_fields_with_choices_refuse_other_values(field, flag, message):
    with pytest.raises(ConfigError) as err:
        TrainConfig(**{field: "bogus"}).validate()
    assert str(err.value) == f"{flag} must be {message}, got 'bogus'"


def test_eval_every_scores_the_chosen_epochs_and_leaves_training_alone(small_digits, tmp_path):
    from mixvae.evaluation.evaluate import to_inference_data

    straight = train(
        _config(tmp_path / "straight", epochs=5), dataset=small_digits, progress=False, figures=False
    )
    # every 2 epochs (1, 2 and the last, 4), then resumed to 5 with every 3 (5: the last)
    train(
        _config(tmp_path / "sparse", epochs=4, eval_every=2),
        dataset=small_digits,
        progress=False,
        figures=False,
    )
    sparse = resume(tmp_path / "sparse", epochs=5, eval_every=3, dataset=small_digits, progress=False)
    assert sparse.config.eval_every == 3
    for a, b in zip(straight.guide.state_dict().values(), sparse.guide.state_dict().values(), strict=True):
        assert torch.equal(a, b)  # scoring draws nothing from the training streams
    every, some = _metrics(tmp_path / "straight"), _metrics(tmp_path / "sparse")
    assert [m["epoch"] for m in some if "heldout_elbo" in m] == [1, 2, 4, 5]
    assert [m["epoch"] for m in some if "clustering" in m] == [1, 2, 4, 5]
    for m, n in zip(every, some, strict=True):
        assert m["train_loss"] == n["train_loss"]
        if "heldout_elbo" in n:
            assert (m["heldout_elbo"], m["clustering"]) == (n["heldout_elbo"], n["clustering"])
    assert (tmp_path / "sparse" / "loss_curves.png").is_file()  # the figures draw the scored epochs
    stats = to_inference_data(sparse, small_digits.test_x, num_draws=10).sample_stats
    assert torch.isnan(torch.tensor(stats["heldout_elbo"].values)).sum() == 1  # epoch 3
    with pytest.raises(ConfigError, match="--eval-every"):
        _config(tmp_path / "bad", eval_every=0).validate()
