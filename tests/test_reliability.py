"""Training never loses work: exact resume, signals, incompatible checkpoints, soak."""

from __future__ import annotations

import errno
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pyro
import pytest
import torch

from mixvae import TrainConfig, load_run, train
from mixvae.cli import main
from mixvae.data import Dataset
from mixvae.errors import CheckpointError, ConfigError, DataError
from mixvae.inference import evaluate_elbo, resume
from mixvae.runs import load_checkpoint, save_checkpoint


def _config(out, **kw):
    base = dict(
        prior="gmm",
        guide="mixture",
        hidden=(32,),
        latent_dim=3,
        components=4,
        guide_components=2,
        epochs=4,
        batch_size=64,
        out=str(out),
        binarize="dynamic",
        warmup_epochs=3,
    )
    return TrainConfig(**{**base, **kw})


def _metrics(run_dir):
    lines = (run_dir / "metrics.jsonl").read_text().splitlines()
    return [{k: v for k, v in json.loads(line).items() if not k.endswith("seconds")} for line in lines]


def _assert_same_run(a, b):
    for x, y in zip(
        [*a.model.state_dict().values(), *a.guide.state_dict().values()],
        [*b.model.state_dict().values(), *b.guide.state_dict().values()],
        strict=True,
    ):
        assert torch.equal(x, y)
    assert _metrics(a.run_dir) == _metrics(b.run_dir)
    assert a.summary == {**b.summary, "train_seconds": a.summary["train_seconds"]}


@pytest.mark.parametrize("guide", ["mixture", "categorical"])
def test_resume_is_bitwise_exact(guide, small_digits, tmp_path):
    opts = dict(dataset=small_digits, progress=False, figures=False)
    straight = train(_config(tmp_path / "straight", guide=guide), **opts)
    train(_config(tmp_path / "split", guide=guide, epochs=2), **opts)
    resumed = resume(tmp_path / "split", epochs=4, **opts)
    _assert_same_run(straight, resumed)


@pytest.mark.parametrize(
    ("at_step", "batch", "epochs_done"),
    [(13, 3, 1), (10, 10, 0)],
    ids=["mid-epoch", "last-step-of-an-epoch"],
)
def test_interrupt_then_resume_is_exact(small_digits, tmp_path, at_step, batch, epochs_done):
    """SIGINT finishes the step, writes a checkpoint, and resume continues bit for bit."""
    opts = dict(dataset=small_digits, progress=False, figures=False)
    straight = train(_config(tmp_path / "straight"), **opts)

    def interrupt(step):
        if step == at_step:  # 600 points / 64 = 10 steps an epoch
            signal.raise_signal(signal.SIGINT)

    stopped = train(_config(tmp_path / "split"), after_step=interrupt, **opts)
    assert stopped.interrupted == "SIGINT" and stopped.epoch == epochs_done
    payload = load_checkpoint(tmp_path / "split" / "checkpoint.pt")
    assert payload["position"]["step"] == at_step and payload["position"]["batch"] == batch
    # the handler is removed afterwards: SIGINT is a KeyboardInterrupt again
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler
    resumed = resume(tmp_path / "split", **opts)
    assert resumed.interrupted is None
    _assert_same_run(straight, resumed)


def test_interrupt_during_the_epoch_end_evaluation_keeps_that_epoch(small_digits, tmp_path, monkeypatch):
    """A signal after an epoch's last step, while the held-out ELBO is computed, loses no epoch."""
    import importlib

    opts = dict(dataset=small_digits, progress=False, figures=False)
    straight = train(_config(tmp_path / "straight"), **opts)
    loop_module = importlib.import_module("mixvae.inference.loop")
    original, calls = loop_module.evaluate_elbo, []

    def interrupting(*args, **kwargs):
        calls.append(1)
        if len(calls) == 1:  # the end of epoch 1 (checkpoints are due every 10 epochs only)
            signal.raise_signal(signal.SIGINT)
        return original(*args, **kwargs)

    monkeypatch.setattr(loop_module, "evaluate_elbo", interrupting)
    stopped = train(_config(tmp_path / "split"), **opts)
    monkeypatch.setattr(loop_module, "evaluate_elbo", original)
    assert stopped.interrupted == "SIGINT" and stopped.epoch == 1
    assert load_checkpoint(tmp_path / "split" / "checkpoint.pt")["epoch"] == 1
    _assert_same_run(straight, resume(tmp_path / "split", **opts))


def test_sigterm_on_the_command_line_then_resume(tmp_path):
    out = tmp_path / "run"
    cmd = [
        sys.executable,
        "-m",
        "mixvae.cli",
        "train",
        "--hidden",
        "64",
        "--epochs",
        "400",
        "--quiet",
        "--out",
        str(out),
    ]
    proc = subprocess.Popen(cmd, stderr=subprocess.PIPE, text=True)
    deadline = time.time() + 120
    while not ((out / "metrics.jsonl").exists() and (out / "metrics.jsonl").read_text()):
        assert time.time() < deadline and proc.poll() is None, proc.stderr.read()
        time.sleep(0.1)
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 143
    assert err.strip().startswith("mixvae: SIGTERM after") and "mixvae train --resume" in err
    assert len(err.strip().splitlines()) == 1
    done = load_checkpoint(out / "checkpoint.pt")["epoch"]
    assert 1 <= done < 400
    assert (
        main(["train", "--resume", str(out), "--epochs", str(done + 1), "--eval-every", "5", "--quiet"]) == 0
    )
    assert load_run(out).epoch == done + 1 and load_run(out).config.eval_every == 5
    assert [m["epoch"] for m in _metrics(out)] == list(range(1, done + 2))


def test_resume_refuses_changed_settings_and_fewer_epochs(small_digits, tmp_path, capsys):
    train(_config(tmp_path, epochs=2), dataset=small_digits, progress=False, figures=False)
    assert main(["train", "--resume", str(tmp_path), "--latent-dim", "5"]) == 2
    err = capsys.readouterr().err
    assert (
        "only --checkpoint-every, --checkpoint-minutes, --clip-grad, --data-dir, --device, --epochs, "
        "--eval-every, --logger, --lr" in err
    )
    assert "(drop --latent-dim" in err
    with pytest.raises(ConfigError, match="already trained 2 epochs"):
        resume(tmp_path, epochs=1, dataset=small_digits)


def test_resume_from_moved_data_files(mnist_dir, tmp_path):
    """Where the data files are is not a setting of the run: --resume may name a new folder."""
    first = tmp_path / "first"
    first.mkdir()
    for f in mnist_dir.glob("*-ubyte.gz"):
        (first / f.name).symlink_to(f)
    run = tmp_path / "run"
    flags = ["--dataset", "mnist", "--no-download", "--network", "mlp", "--hidden", "16", "--latent-dim", "2"]
    args = ["train", *flags, "--prior", "standard", "--guide", "gaussian", "--epochs", "1", "--quiet"]
    assert main([*args, "--data-dir", str(first), "--out", str(run)]) == 0
    for f in first.iterdir():
        f.unlink()
    first.rmdir()
    with pytest.raises(DataError, match="does not exist"):
        resume(run, epochs=2, progress=False, figures=False)
    grid = tmp_path / "grid.png"  # sample and evaluate take the new folder too
    assert (
        main(["sample", str(run), "--source", "aggregate", "--data-dir", str(mnist_dir), "--out", str(grid)])
        == 0
    )
    assert grid.is_file() and main(["sample", str(run), "--source", "aggregate", "--out", str(grid)]) == 2
    assert (
        main(["train", "--resume", str(run), "--epochs", "2", "--data-dir", str(mnist_dir), "--quiet"]) == 0
    )
    assert load_run(run).epoch == 2
    assert json.loads((run / "config.json").read_text())["data_dir"] == str(mnist_dir)


def test_resume_with_data_of_another_dimension(small_digits, tmp_path):
    train(_config(tmp_path, epochs=1), dataset=small_digits, progress=False, figures=False)
    other = Dataset("digits", small_digits.train_x[:, :32], small_digits.test_x[:, :32])
    with pytest.raises(
        DataError, match=r"have shape \(32,\) per point but the run .* was trained on \(64,\)"
    ):
        resume(tmp_path, epochs=2, dataset=other)


def test_incompatible_checkpoints_are_refused(small_digits, tmp_path):
    train(_config(tmp_path, epochs=1), dataset=small_digits, progress=False, figures=False)
    path = tmp_path / "checkpoint.pt"
    good = load_checkpoint(path)
    save_checkpoint(path, {**good, "format_version": 99})
    with pytest.raises(CheckpointError, match="checkpoint format 99"):
        load_run(tmp_path)
    config = json.loads(good["config"])
    save_checkpoint(path, {**good, "config": json.dumps({**config, "from_the_future": 1})})
    with pytest.raises(CheckpointError, match="unknown configuration keys"):
        load_run(tmp_path)
    save_checkpoint(path, {**good, "config": json.dumps({**config, "latent_dim": 5})})
    with pytest.raises(CheckpointError, match="does not fit the configuration"):
        load_run(tmp_path)
    path.write_bytes(b"not a checkpoint")
    with pytest.raises(CheckpointError, match="not a readable checkpoint"):
        load_run(tmp_path)


def test_unwritable_output_directory(small_digits, tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("")
    with pytest.raises(ConfigError, match="cannot write to the run folder"):
        train(_config(blocker / "run"), dataset=small_digits, progress=False)


def _rss_mb() -> float:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20


@pytest.mark.slow
def test_soak_train_evaluate_resume_cycles(small_digits, tmp_path):
    """200 short cycles in one process: no memory growth, no leftover files or parameters."""
    tiny = Dataset(
        "digits",
        small_digits.train_x[:128],
        small_digits.test_x[:64],
        small_digits.train_y[:128],
        small_digits.test_y[:64],
        (8, 8),
    )
    pairs = [("gmm", "categorical"), ("gmm", "mixture"), ("standard", "gaussian"), ("standard", "mixture")]
    opts = dict(dataset=tiny, progress=False, figures=False)
    rss = []
    for i in range(200):
        prior, guide = pairs[i % len(pairs)]
        out = tmp_path / f"r{i % 3}"
        config = _config(out, prior=prior, guide=guide, hidden=(16,), epochs=1, seed=i, overwrite=True)
        run = train(config, **opts)
        assert evaluate_elbo(run.model, run.guide, tiny.test_x) == pytest.approx(
            run.summary["heldout_elbo"], abs=5
        )
        resume(out, epochs=2, **opts)
        if i in (20, 199):
            rss.append(_rss_mb())
    assert rss[1] - rss[0] < 50, rss
    leftovers = [p.name for p in tmp_path.rglob("*") if p.name.endswith(".tmp") or p.name.startswith(".")]
    assert leftovers == []
    assert len(pyro.get_param_store()) == 0


def test_a_lock_never_shows_without_its_owner(tmp_path, monkeypatch):
    """Two processes taking one folder's lock at once: the loser names the winner, never 'no owner'."""
    import threading

    import mixvae.runs.lock as lock_module
    from mixvae.errors import RunFolderError
    from mixvae.runs.lock import RunLock

    seen = []
    real_link = os.link

    def link(src, dst):  # the lock appears only with its content
        seen.append(json.loads(Path(src).read_text())["pid"])
        return real_link(src, dst)

    monkeypatch.setattr(lock_module.os, "link", link)
    with RunLock(tmp_path, "train"):
        assert seen == [os.getpid()] and json.loads((tmp_path / ".lock").read_text())["pid"] == os.getpid()
        assert [p.name for p in tmp_path.iterdir()] == [".lock"]  # the staging file is gone
    assert not any(tmp_path.iterdir())
    # a file system without hard links: O_EXCL, and a reader that meets the lock before its
    # content waits for it
    monkeypatch.setattr(
        lock_module.os, "link", lambda *a: (_ for _ in ()).throw(OSError(errno.EPERM, "no links"))
    )
    (tmp_path / ".lock").write_text("")
    owner = {"pid": os.getppid(), "host": lock_module.socket.gethostname(), "command": "mixvae train"}
    threading.Timer(0.2, lambda: (tmp_path / ".lock").write_text(json.dumps(owner))).start()
    with pytest.raises(RunFolderError, match=f"is in use by PID {os.getppid()}"):
        RunLock(tmp_path, "evaluate").acquire()
    (tmp_path / ".lock").unlink()
    with RunLock(tmp_path, "train"):
        assert json.loads((tmp_path / ".lock").read_text())["pid"] == os.getpid()
