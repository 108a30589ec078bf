"""Restarts (--restarts R --restart-epochs E): the best start by its training ELBO goes on."""

import json
import signal

import pytest
import torch

from mixvae import TrainConfig
from mixvae.errors import ConfigError
from mixvae.inference import resume, train
from mixvae.inference.restarts import restart_seed
from mixvae.runs import load_checkpoint


def _config(out, **kw):
    base = dict(
        prior="gmm",
        guide="categorical",
        hidden=(32,),
        latent_dim=3,
        components=4,
        epochs=3,
        batch_size=100,
        out=str(out),
    )
    return TrainConfig(**{**base, **kw})


def _metrics(folder):
    lines = [json.loads(line) for line in (folder / "metrics.jsonl").read_text().splitlines()]
    return [{k: v for k, v in m.items() if not k.endswith("seconds")} for m in lines]


def _same_parameters(a, b):
    for x, y in zip(
        [*a.model.state_dict().values(), *a.guide.state_dict().values()],
        [*b.model.state_dict().values(), *b.guide.state_dict().values()],
        strict=True,
    ):
        assert torch.equal(x, y)


def test_the_best_start_by_training_elbo_goes_on_as_if_trained_straight(small_digits, tmp_path):
    opts = dict(dataset=small_digits, progress=False, figures=False)
    run = train(_config(tmp_path / "r", restarts=3, restart_epochs=1), **opts)
    record = json.loads((tmp_path / "r" / "restarts.json").read_text())
    starts = record["starts"]
    assert [s["seed"] for s in starts] == [restart_seed(0, r) for r in range(3)]
    assert len({s["seed"] for s in starts}) == 3 and starts[0]["seed"] == 0
    # the chosen start is the one whose training ELBO (from its summary) is highest
    scores = [
        json.loads((tmp_path / "r" / s["folder"] / "summary.json").read_text())["train_elbo"] for s in starts
    ]
    assert [s["training_elbo"] for s in starts] == scores
    best = max(range(3), key=scores.__getitem__)
    assert [s["chosen"] for s in starts] == [r == best for r in range(3)]
    assert len(set(scores)) == 3  # the starts differ, so the choice means something
    # the run is the chosen start trained straight through to --epochs, bitwise, history included
    straight = train(_config(tmp_path / "straight", seed=starts[best]["seed"]), **opts)
    _same_parameters(run, straight)
    assert _metrics(tmp_path / "r") == _metrics(tmp_path / "straight")
    assert run.summary["heldout_elbo"] == straight.summary["heldout_elbo"]
    assert run.epoch == 3 and json.loads((tmp_path / "r" / "config.json").read_text())["restarts"] == 3
    # the starts of seed 1 are not seed 0's shifted by one (seed + r would share them)
    assert not {restart_seed(1, r) for r in range(3)} & {restart_seed(0, r) for r in range(3)}
    # --overwrite removes the starts with the run
    train(_config(tmp_path / "r", overwrite=True), **opts)
    assert not (tmp_path / "r" / "restarts").exists() and not (tmp_path / "r" / "restarts.json").exists()


def test_a_run_stopped_during_its_restarts_resumes_them_exactly(small_digits, tmp_path):
    opts = dict(dataset=small_digits, progress=False, figures=False)
    straight = train(_config(tmp_path / "straight", restarts=2, restart_epochs=2), **opts)

    def interrupt(step):
        if step == 9:  # in start 0's second epoch (6 steps an epoch)
            signal.raise_signal(signal.SIGINT)

    stopped = train(_config(tmp_path / "split", restarts=2, restart_epochs=2), after_step=interrupt, **opts)
    assert stopped.interrupted == "SIGINT" and not (tmp_path / "split" / "checkpoint.pt").exists()
    with pytest.raises(ConfigError, match="restarts stopped before the choice; continue them with"):
        train(_config(tmp_path / "split", restarts=2, restart_epochs=2), **opts)
    run = resume(tmp_path / "split", dataset=small_digits, progress=False, figures=False)
    _same_parameters(run, straight)
    assert _metrics(tmp_path / "split") == _metrics(tmp_path / "straight")
    assert (tmp_path / "split" / "restarts.json").read_text() == (
        tmp_path / "straight" / "restarts.json"
    ).read_text()
    # after the choice the run has its own checkpoint: a later resume trains it on as any run
    longer = resume(tmp_path / "split", epochs=4, dataset=small_digits, progress=False, figures=False)
    assert longer.epoch == 4 and len(_metrics(tmp_path / "split")) == 4


def test_restarts_bad_settings_are_one_line(small_digits, tmp_path):
    with pytest.raises(ConfigError, match="--restart-epochs between 1 and --epochs 3"):
        train(_config(tmp_path, restarts=2, restart_epochs=5), dataset=small_digits, progress=False)
    with pytest.raises(ConfigError, match="--restarts must be >= 1"):
        train(_config(tmp_path, restarts=0), dataset=small_digits, progress=False)
    with pytest.raises(ConfigError, match="fresh networks for every start"):
        train(
            _config(tmp_path, restarts=2, restart_epochs=1),
            dataset=small_digits,
            encoder=torch.nn.Linear(64, 8),
            decoder=torch.nn.Linear(3, 64),
            progress=False,
        )
    from mixvae.inference.lightning import train_lightning

    with pytest.raises(ConfigError, match="one after another in one process; drop --devices"):
        train_lightning(_config(tmp_path, restarts=2, restart_epochs=1), devices=1, dataset=small_digits)
    assert not any(tmp_path.iterdir())  # nothing written


def test_the_cli_trains_restarts_and_resume_refuses_to_change_them(tmp_path, capsys):
    from mixvae.cli import main

    tiny = ["--hidden", "32", "--epochs", "2", "--batch-size", "64", "--quiet", "--dataset", "digits"]
    out = tmp_path / "run"
    assert main(["train", *tiny, "--prior", "gmm", "--guide", "categorical", "--restarts", "2",
                 "--restart-epochs", "1", "--out", str(out)]) == 0  # fmt: skip
    assert sorted(p.name for p in (out / "restarts").iterdir()) == ["0", "1"]
    assert json.loads((out / "summary.json").read_text())["epochs"] == 2
    assert main(["train", "--resume", str(out), "--restarts", "3"]) == 2
    assert "--resume continues the stored configuration" in capsys.readouterr().err


def test_resume_changes_reach_the_start_it_continues(small_digits, tmp_path):
    def interrupt(step):
        if step == 3:
            signal.raise_signal(signal.SIGINT)

    opts = dict(dataset=small_digits, progress=False, figures=False)
    train(_config(tmp_path, restarts=2, restart_epochs=1), after_step=interrupt, **opts)
    resume(tmp_path, lr=5e-4, eval_every=2, **opts)
    for folder in (tmp_path, tmp_path / "restarts" / "0"):
        stored = json.loads((folder / "config.json").read_text())
        assert (stored["lr"], stored["eval_every"]) == (5e-4, 2)
    assert json.loads((tmp_path / "restarts" / "0" / "config.json").read_text())["epochs"] == 1


def test_restarts_of_a_warm_start_fit_the_prior_per_start_and_keep_the_chosen_origin(small_digits, tmp_path):
    opts = dict(dataset=small_digits, progress=False, figures=False)
    common = dict(guide="gaussian", hidden=(32,), latent_dim=3, components=4, batch_size=100)
    train(TrainConfig(prior="standard", epochs=2, out=str(tmp_path / "pre"), **common), **opts)
    run = train(
        TrainConfig(
            prior="gmm-full",
            epochs=2,
            init_from=str(tmp_path / "pre"),
            restarts=2,
            restart_epochs=1,
            out=str(tmp_path / "warm"),
            **common,
        ),
        **opts,
    )
    record = json.loads((tmp_path / "warm" / "restarts.json").read_text())
    chosen = next(s for s in record["starts"] if s["chosen"])
    # each start fitted the prior to the same codes with its own seed: their priors differ
    priors = [
        load_checkpoint(tmp_path / "warm" / s["folder"] / "checkpoint.pt")["model"] for s in record["starts"]
    ]
    assert any(not torch.equal(priors[0][k], priors[1][k]) for k in priors[0] if k.startswith("prior"))
    origin = (tmp_path / "warm" / "init_from.json").read_text()
    assert origin == (tmp_path / "warm" / chosen["folder"] / "init_from.json").read_text()
    assert run.epoch == 2
