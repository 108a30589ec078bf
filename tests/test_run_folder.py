"""The run folder never loses or mixes work: ownership, locking, atomic writes, verified checkpoints.

One test (or more) per numbered item of the run-folder issue; the kill cases by
an exception that escapes the loop as a ``kill -9`` would stop it (nothing
after it runs), the full disk by injecting ``OSError(ENOSPC)`` into the writer.
"""

from __future__ import annotations

import errno
import gzip
import json
import os
import shlex
import signal
import struct
import subprocess
import sys
import time
import zipfile
import zlib

import pytest
import torch

import mixvae.runs.checkpoint as checkpoint_module
import mixvae.runs.files as files_module
from mixvae import TrainConfig, evaluate_run, load_run, resume, train
from mixvae.cli import main
from mixvae.data.idx import read_idx
from mixvae.errors import CheckpointError, ConfigError, DataError, RunFolderError
from mixvae.runs import MANIFEST, RunLock, load_checkpoint, read_manifest, read_metrics, save_checkpoint

QUICK = ["--hidden", "16", "--latent-dim", "2", "--batch-size", "256", "--quiet"]


def _config(out, **kw):
    base = dict(prior="gmm", guide="gaussian", hidden=(16,), latent_dim=2, components=3, epochs=2)
    return TrainConfig(**{**base, "batch_size": 100, "out": str(out), **kw})


def _train(out, data, **kw):
    return train(_config(out, **kw), dataset=data, progress=False, figures=False)


def _cli(capsys, *argv):
    rc = main(list(argv))
    return rc, capsys.readouterr().err.strip()


class Killed(BaseException):
    """Stands for kill -9: escapes every handler of the loop."""


def _kill_at(step):
    def after_step(n):
        if n == step:
            raise Killed

    return after_step


# ----------------------------------------------------------------------------- 1. ownership


def test_a_folder_that_is_not_a_run_is_never_written(capsys, tmp_path):
    mine = tmp_path / "mine"
    mine.mkdir()
    for name, text in {"config.json": "my own", "summary.json": "{}", "metrics.jsonl": "x\n"}.items():
        (mine / name).write_text(text)
    for extra in ([], ["--overwrite"]):
        rc, err = _cli(capsys, "train", *QUICK, "--epochs", "1", "--out", str(mine), *extra)
        assert rc == 2 and "holds no mixvae run" in err and len(err.splitlines()) == 1
    assert sorted(p.name for p in mine.iterdir()) == ["config.json", "metrics.jsonl", "summary.json"]
    assert (mine / "config.json").read_text() == "my own"
    rc, err = _cli(capsys, "train", *QUICK, "--out", "")
    assert rc == 2 and "--out '' names no folder" in err


def test_overwrite_removes_only_what_the_run_owns(small_digits, tmp_path):
    first = _train(tmp_path / "base", small_digits, epochs=1)
    run_dir = tmp_path / "run"
    _train(run_dir, small_digits, epochs=1, init_from=str(first.run_dir), prior="gmm")
    evaluate_run(run_dir, iw_samples=2, figures=True, dataset=small_digits, num_draws=50, mmd_permutations=5)
    assert main(["sample", str(run_dir), "--n", "4"]) == 0
    (run_dir / "notes.txt").write_text("the user's")
    owned = set(read_manifest(run_dir)["files"])
    assert {"init_from.json", "evaluation.json", "inference_data.nc", "samples-prior.png"} <= owned
    old_id = read_manifest(run_dir)["run_id"]
    _train(run_dir, small_digits, epochs=1, overwrite=True)
    left = {p.name for p in run_dir.iterdir()}
    assert "notes.txt" in left  # not the run's: kept
    assert not left & {"init_from.json", "evaluation.json", "inference_data.nc", "samples-prior.png"}
    assert read_manifest(run_dir)["run_id"] != old_id


# ----------------------------------------------------------------------------- 2. torn and atomic files


def test_a_torn_last_metrics_line_is_dropped_and_resume_rewrites_the_history(small_digits, tmp_path):
    _train(tmp_path, small_digits, epochs=2)
    with open(tmp_path / "metrics.jsonl", "a") as f:
        f.write('{"epoch": 3, "train_lo')  # a full disk during an append
    with pytest.warns(RuntimeWarning, match="last line is torn"):
        assert [m["epoch"] for m in read_metrics(tmp_path)] == [1, 2]
    run = resume(tmp_path, epochs=3, dataset=small_digits, progress=False, figures=False)
    assert run.epoch == 3 and [m["epoch"] for m in read_metrics(tmp_path)] == [1, 2, 3]


def test_a_damaged_middle_line_is_one_line_and_resume_repairs_it(small_digits, tmp_path, capsys):
    _train(tmp_path, small_digits, epochs=2)
    lines = (tmp_path / "metrics.jsonl").read_text().splitlines()
    (tmp_path / "metrics.jsonl").write_text("\x00garbage\n" + lines[1] + "\n")
    with pytest.raises(RunFolderError, match=r"metrics.jsonl line 1 is damaged"):
        read_metrics(tmp_path)
    resume(tmp_path, epochs=2, dataset=small_digits, progress=False, figures=False)
    assert (tmp_path / "metrics.jsonl").read_text().splitlines() == lines


def test_a_write_killed_before_its_rename_leaves_the_old_file(tmp_path, monkeypatch):
    target = tmp_path / "metrics.jsonl"
    target.write_text("six epochs of history\n")

    def killed(*args):
        raise Killed

    monkeypatch.setattr(files_module.os, "replace", killed)
    with pytest.raises(Killed):
        files_module.write_text(target, "")
    assert target.read_text() == "six epochs of history\n"
    assert [p.name for p in tmp_path.iterdir()] == ["metrics.jsonl"]  # no temporary left


def test_a_failed_append_leaves_no_torn_line(tmp_path, monkeypatch):
    target = tmp_path / "metrics.jsonl"
    target.write_text('{"epoch": 1}\n')
    real_write = os.write

    def half(fd, data):
        real_write(fd, data[: len(data) // 2])
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(files_module.os, "write", half)
    with pytest.raises(OSError):
        files_module.append_line(target, json.dumps({"epoch": 2, "train_loss": 1.0}))
    assert target.read_text() == '{"epoch": 1}\n'


# ----------------------------------------------------------------------------- 3. the lock


def test_a_second_process_on_one_folder_gets_one_line_naming_the_first(small_digits, tmp_path, capsys):
    run_dir = tmp_path / "run"
    _train(run_dir, small_digits, epochs=1)
    cmd = [
        sys.executable,
        "-m",
        "mixvae.cli",
        "train",
        *QUICK,
        "--epochs",
        "100000",
        "--out",
        str(tmp_path / "a"),
    ]
    first = subprocess.Popen(cmd, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.time() + 120
        while not (tmp_path / "a" / "checkpoint.pt").exists():
            assert time.time() < deadline and first.poll() is None, first.stderr.read()
            time.sleep(0.1)
        for argv in (
            ["train", *QUICK, "--out", str(tmp_path / "a"), "--overwrite"],
            ["train", "--resume", str(tmp_path / "a"), "--epochs", "100001"],
            ["evaluate", str(tmp_path / "a"), "--iw-samples", "2"],
            ["sample", str(tmp_path / "a")],
        ):
            rc, err = _cli(capsys, *argv)
            assert rc == 2 and f"is in use by PID {first.pid}" in err and len(err.splitlines()) == 1
    finally:
        first.send_signal(signal.SIGTERM)
        first.wait(timeout=60)
    assert first.returncode == 143
    # two trainings started at once: exactly one gets the folder
    both = [
        subprocess.Popen([*cmd[:-1], str(tmp_path / "b")], stderr=subprocess.PIPE, text=True) for _ in "ab"
    ]
    deadline = time.time() + 120
    while not any(p.poll() is not None for p in both) or not (tmp_path / "b" / "checkpoint.pt").exists():
        assert time.time() < deadline
        time.sleep(0.1)
    for p in both:
        if p.poll() is None:
            p.send_signal(signal.SIGTERM)
    codes = sorted(p.wait(timeout=60) for p in both)
    errors = [p.communicate()[1] for p in (*both, first)]
    assert codes == [2, 143], errors
    assert "is in use by PID" in errors[[p.returncode for p in both].index(2)]


def test_a_stale_lock_is_reported_with_the_command_that_clears_it(small_digits, tmp_path, capsys):
    _train(tmp_path, small_digits, epochs=1)
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    (tmp_path / ".lock").write_text(json.dumps({"pid": dead.pid, "host": os.uname().nodename}))
    rc, err = _cli(capsys, "train", "--resume", str(tmp_path), "--epochs", "2")
    assert rc == 2 and "stale lock" in err and f"rm {tmp_path / '.lock'}" in err
    (tmp_path / ".lock").unlink()
    with RunLock(tmp_path, "test"), RunLock(tmp_path, "test again"):  # re-entrant in one process
        assert (tmp_path / ".lock").exists()
    assert not (tmp_path / ".lock").exists()


# ----------------------------------------------------------------------------- 4. foreign or damaged checkpoints


def test_a_checkpoint_copied_from_another_run_is_refused(small_digits, tmp_path, capsys):
    a, b = _train(tmp_path / "a", small_digits), _train(tmp_path / "b", small_digits)
    before = (b.run_dir / "metrics.jsonl").read_bytes(), (b.run_dir / "config.json").read_bytes()
    (b.run_dir / "checkpoint.pt").write_bytes((a.run_dir / "checkpoint.pt").read_bytes())
    for call in (lambda: load_run(b.run_dir), lambda: resume(b.run_dir, epochs=3, dataset=small_digits)):
        with pytest.raises(CheckpointError, match="belongs to another run"):
            call()
    assert ((b.run_dir / "metrics.jsonl").read_bytes(), (b.run_dir / "config.json").read_bytes()) == before


def test_flipped_bytes_inside_the_optimiser_state_fail_the_checksum(small_digits, tmp_path):
    _train(tmp_path, small_digits, epochs=1)
    path = tmp_path / "checkpoint.pt"
    payload = load_checkpoint(path)
    exp_avg = max((s["exp_avg"] for s in payload["optimizer"]["state"].values()), key=lambda t: t.nbytes)
    raw = bytearray(path.read_bytes())
    with zipfile.ZipFile(path) as zf:  # the stored bytes of that tensor
        info = next(i for i in zf.infolist() if "/data/" in i.filename and i.file_size == exp_avg.nbytes)
    name_len, extra_len = struct.unpack("<HH", raw[info.header_offset + 26 : info.header_offset + 30])
    start = info.header_offset + 30 + name_len + extra_len
    for i in range(100):
        raw[start + i] ^= 0xFF
    # with the zip's CRC-32 fixed up, as a damage that torch's reader does not see
    crc = struct.pack("<I", zlib.crc32(raw[start : start + info.file_size]))
    end = start + info.file_size  # torch writes the CRC in a data descriptor after the data
    descriptor = end + 4 if raw[end : end + 4] == b"PK\x07\x08" else info.header_offset + 14
    raw[descriptor : descriptor + 4] = crc
    central = raw.find(b"PK\x01\x02" + raw[info.header_offset + 4 : info.header_offset + 8])
    while raw[central + 46 : central + 46 + name_len] != info.filename.encode():
        central = raw.find(b"PK\x01\x02", central + 1)
    raw[central + 16 : central + 20] = crc
    path.write_bytes(bytes(raw))
    torch.load(path, weights_only=True)  # torch's reader accepts the damaged file
    with pytest.raises(CheckpointError, match="fails its checksum"):
        load_checkpoint(path)


# ----------------------------------------------------------------------------- 5. kills and stale artefacts


def test_a_run_killed_before_its_first_checkpoint_is_not_appended_to(small_digits, tmp_path, capsys):
    with pytest.raises(Killed):
        train(_config(tmp_path, epochs=3), dataset=small_digits, progress=False, after_step=_kill_at(3))
    assert not (tmp_path / "checkpoint.pt").exists() and not (tmp_path / ".lock").exists()
    with pytest.raises(ConfigError, match="stopped before its first checkpoint; pass --overwrite"):
        _train(tmp_path, small_digits, epochs=3)
    _train(tmp_path, small_digits, epochs=3, overwrite=True)
    assert [m["epoch"] for m in read_metrics(tmp_path)] == [1, 2, 3]


def test_checkpoints_after_the_first_epoch_and_on_a_time_interval(small_digits, tmp_path):
    steps = -(-len(small_digits.train_x) // 100)
    with pytest.raises(Killed):  # the default --checkpoint-every 10: epoch 1 is kept all the same
        train(
            _config(tmp_path, epochs=5), dataset=small_digits, progress=False, after_step=_kill_at(steps + 2)
        )
    assert load_checkpoint(tmp_path / "checkpoint.pt")["epoch"] == 1
    with pytest.raises(Killed):  # a time interval shorter than a step: a checkpoint after every step
        train(
            _config(tmp_path / "t", epochs=5, checkpoint_minutes=1e-9),
            dataset=small_digits,
            progress=False,
            after_step=_kill_at(3),
        )
    assert load_checkpoint(tmp_path / "t" / "checkpoint.pt")["position"]["step"] == 2
    run = resume(tmp_path / "t", epochs=2, dataset=small_digits, progress=False, figures=False)
    straight = _train(tmp_path / "s", small_digits, epochs=2)
    for x, y in zip(run.model.state_dict().values(), straight.model.state_dict().values(), strict=True):
        assert torch.equal(x, y)


def test_orphaned_temporaries_are_cleaned_up_on_start(small_digits, tmp_path):
    _train(tmp_path, small_digits, epochs=1)
    (tmp_path / ".checkpoint.pt.x1y2.tmp").write_bytes(b"\0" * 1000)
    (tmp_path / ".evaluate.abc.tmp").mkdir()
    resume(tmp_path, epochs=2, dataset=small_digits, progress=False, figures=False)
    assert not list(tmp_path.glob(".*.tmp"))


def test_an_interrupted_evaluate_leaves_the_old_set(small_digits, tmp_path, monkeypatch):
    import mixvae.figures.evaluation as eval_figures

    _train(tmp_path, small_digits, epochs=1)
    opts = dict(iw_samples=2, dataset=small_digits, num_draws=50, mmd_permutations=5)
    evaluate_run(tmp_path, **opts)
    old = {p.name: p.read_bytes() for p in tmp_path.iterdir() if p.name.startswith(("eval", "inference"))}

    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(eval_figures, "write_evaluation_figures", interrupted)
    with pytest.raises(KeyboardInterrupt):
        evaluate_run(tmp_path, **{**opts, "seed": 1})
    now = {p.name: p.read_bytes() for p in tmp_path.iterdir() if p.name.startswith(("eval", "inference"))}
    assert now == old and not list(tmp_path.glob(".*.tmp"))


# ----------------------------------------------------------------------------- 6. divergence


def test_the_divergence_advice_works_as_printed(capsys, tmp_path):
    out = tmp_path / "run"
    rc, err = _cli(capsys, "train", *QUICK, "--epochs", "1", "--lr", "1e30", "--out", str(out))
    assert rc == 2 and len(err.splitlines()) == 1 and "no checkpoint was written yet" in err
    command = err.split("start again with a lower learning rate")[1].split(": ", 1)[1]
    assert command.startswith("mixvae train") and "--lr 0.001" in command and "--overwrite" in command
    assert main(shlex.split(command)[1:]) == 0
    capsys.readouterr()
    rc, err = _cli(capsys, "train", "--resume", str(out), "--epochs", "2", "--lr", "1e30")
    assert rc == 2 and "the last good checkpoint" in err and "after epoch 1) is kept" in err
    command = err.split("gradient clipping: ")[1].split(" (or")[0]
    assert main([*shlex.split(command)[1:], "--epochs", "2", "--quiet"]) == 0


def test_the_divergence_report_cannot_fail(small_digits, tmp_path, monkeypatch):
    import mixvae.inference.divergence as divergence

    def broken(*args):
        raise RuntimeError("unordered_map::at")

    monkeypatch.setattr(divergence, "_report", broken)
    with pytest.raises(Exception, match=r"could not be inspected: RuntimeError: unordered_map::at") as info:
        _train(tmp_path, small_digits, lr=1e30)
    assert type(info.value).__name__ == "TrainingDiverged"


# ----------------------------------------------------------------------------- 7. one line, exit 2


def test_a_full_disk_is_one_line_and_keeps_the_last_checkpoint(capsys, tmp_path, monkeypatch):
    out = tmp_path / "run"
    assert main(["train", *QUICK, "--epochs", "1", "--out", str(out)]) == 0
    saved = (out / "checkpoint.pt").read_bytes()

    def full(*args):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(checkpoint_module, "write_bytes", full)
    rc, err = _cli(capsys, "train", "--resume", str(out), "--epochs", "2", "--quiet")
    assert rc == 2 and len(err.splitlines()) == 1
    assert "No space left on device" in err and "after epoch 1) is kept" in err
    assert (out / "checkpoint.pt").read_bytes() == saved
    monkeypatch.setattr(files_module.os, "write", lambda *a: full())  # already full at the start
    rc, err = _cli(capsys, "train", *QUICK, "--epochs", "1", "--out", str(tmp_path / "new"))
    assert rc == 2 and len(err.splitlines()) == 1 and "No space left" in err
    assert not (tmp_path / "new" / "config.json").exists()


def test_a_read_only_run_folder_is_one_line(small_digits, tmp_path, capsys, monkeypatch):
    import mixvae.runs.lock as lock_module

    _train(tmp_path, small_digits, epochs=1)
    real_open = os.open

    def read_only(path, flags, *args):
        if flags & os.O_CREAT:
            raise OSError(errno.EROFS, "Read-only file system", str(path))
        return real_open(path, flags, *args)

    monkeypatch.setattr(lock_module.os, "open", read_only)
    for argv in (["train", "--resume", str(tmp_path), "--epochs", "2"], ["evaluate", str(tmp_path)]):
        rc, err = _cli(capsys, *argv)
        assert rc == 2 and "Read-only file system" in err and "copy the run folder" in err


def test_damaged_json_files_are_one_line(small_digits, tmp_path, capsys):
    _train(tmp_path, small_digits, epochs=1)
    (tmp_path / "summary.json").write_bytes(b"\xff\xfe{")
    rc, err = _cli(capsys, "sample", str(tmp_path))
    assert rc == 2 and "summary.json is damaged" in err and len(err.splitlines()) == 1
    (tmp_path / MANIFEST).write_text("{")
    rc, err = _cli(capsys, "sample", str(tmp_path))
    assert rc == 2 and "mixvae-run.json is damaged" in err


@pytest.mark.parametrize("dims", [(-1, -28, 28), (5, 0, 0)])
def test_impossible_idx_dimensions_are_refused(tmp_path, dims):
    path = tmp_path / "images.gz"
    path.write_bytes(gzip.compress(struct.pack(">iiii", 2051, *dims)))
    with pytest.raises(DataError, match="impossible dimensions"):
        read_idx(path, "images")


def test_bad_numbers_on_the_command_line_are_one_line(small_digits, tmp_path, capsys):
    _train(tmp_path, small_digits, epochs=1)
    cases = [
        (["train", *QUICK, "--seed", "-1", "--out", str(tmp_path / "x")], "--seed must be an integer in 0.."),
        (["train", *QUICK, "--seed", str(10**20), "--out", str(tmp_path / "x")], "--seed must be"),
        (
            ["train", *QUICK, "--warmup-epochs", "nan", "--out", str(tmp_path / "x")],
            "must be a finite number",
        ),
        (["train", *QUICK, "--class-weight", "nan", "--out", str(tmp_path / "x")], "must be a finite number"),
        (["evaluate", str(tmp_path), "--surgery-points", "0"], "--surgery-points must be a positive"),
        (["evaluate", str(tmp_path), "--surgery-points", "-3"], "--surgery-points must be a positive"),
        (["evaluate", str(tmp_path), "--seed", "-1"], "--seed must be"),
        (["sample", str(tmp_path), "--out", str(tmp_path / "none" / "s.png")], "does not exist; create it"),
        (["sample", str(tmp_path), "--out", str(tmp_path / "sm")], "is not a .png path"),
        (["sample", str(tmp_path), "--n", "0"], "--n must be a positive integer"),
    ]
    for argv, message in cases:
        rc, err = _cli(capsys, *argv)
        assert rc == 2 and message in err and len(err.splitlines()) == 1, (argv, err)
    assert not (tmp_path / "x").exists()


def test_resume_mid_epoch_with_fewer_training_points_is_one_line(small_digits, tmp_path):
    with pytest.raises(Killed):
        train(_config(tmp_path, checkpoint_minutes=1e-9), dataset=small_digits, after_step=_kill_at(3))
    smaller = type(small_digits)("digits", small_digits.train_x[:300], small_digits.test_x)
    with pytest.raises(DataError, match="trained on 600 training points, these data have 300"):
        resume(tmp_path, epochs=2, dataset=smaller)


def test_nonfinite_weights_are_refused_before_evaluate_or_sample(small_digits, tmp_path, capsys):
    _train(tmp_path, small_digits, epochs=1)
    payload = load_checkpoint(tmp_path / "checkpoint.pt")
    name = next(k for k in payload["model"] if k.startswith("decoder") and k.endswith("weight"))
    payload["model"][name] = torch.full_like(payload["model"][name], float("nan"))
    save_checkpoint(tmp_path / "checkpoint.pt", payload)
    for argv in (["evaluate", str(tmp_path)], ["sample", str(tmp_path)]):
        rc, err = _cli(capsys, *argv)
        assert rc == 2 and f"model.{name} is not finite" in err
    assert not list(tmp_path.glob("samples-*.png"))


def test_ctrl_c_while_the_command_starts_is_one_line(tmp_path):
    code = "import _mixvae_entry, sys; sys.argv = ['mixvae', 'list']; sys.exit(_mixvae_entry.main())"
    proc = subprocess.Popen([sys.executable, "-c", code], stderr=subprocess.PIPE, text=True)
    time.sleep(0.3)  # still importing torch
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 130 and err.strip() == "mixvae: interrupted", err


def test_ctrl_c_during_the_end_of_run_summary_is_honoured(capsys, tmp_path, monkeypatch):
    import importlib

    loop_module = importlib.import_module("mixvae.inference.loop")  # the training loop's module

    def interrupted(*args, **kwargs):
        os.kill(os.getpid(), signal.SIGINT)
        time.sleep(5)  # the signal arrives first
        raise AssertionError("SIGINT was ignored")

    monkeypatch.setattr(loop_module, "summarize", interrupted)
    out = tmp_path / "run"
    rc, err = _cli(capsys, "train", *QUICK, "--epochs", "1", "--out", str(out))
    assert rc == 130 and f"continue with mixvae train --resume {out}" in err
    monkeypatch.undo()
    assert main(["train", "--resume", str(out), "--epochs", "1", "--quiet"]) == 0  # writes the summary


# ----------------------------------------------------------------------------- 8. limits before allocation


def test_a_gzip_bomb_is_refused_without_inflating_it(tmp_path, monkeypatch):
    import mixvae.data.idx as idx_module

    inflated = []  # bytes handed out by the decompressor
    real_open = gzip.open

    class Counting:
        def __init__(self, f):
            self.f = f

        def read(self, n=-1):
            data = self.f.read(n)
            inflated.append(len(data))
            return data

        def __enter__(self):
            return self

        def __exit__(self, *exc):
            self.f.close()

    monkeypatch.setattr(idx_module.gzip, "open", lambda *a, **k: Counting(real_open(*a, **k)))
    path = tmp_path / "bomb-images-idx3-ubyte.gz"
    with real_open(path, "wb", compresslevel=9) as f:
        f.write(struct.pack(">iiii", 2051, 10, 28, 28))
        zeros = bytes(2**20)
        for _ in range(200):  # 200 MiB inflated, about 200 KB on disk
            f.write(zeros)
    with pytest.raises(DataError, match="truncated or corrupt"):
        read_idx(path, "images")
    assert sum(inflated) <= 16 + 10 * 28 * 28 + 1  # the header, what it promises, one byte more
    inflated.clear()
    with real_open(path, "wb") as f:  # a header that promises more than deflate can hold
        f.write(struct.pack(">iiii", 2051, 10**8, 28, 28))
    with pytest.raises(DataError, match=r"more than its .* bytes can hold"):
        read_idx(path, "images")
    assert sum(inflated) == 16  # refused on the header alone


@pytest.mark.parametrize("edit", [{"latent_dim": 10**9}, {"hidden": [10**6, 10**6]}])
def test_a_hostile_config_in_a_checkpoint_is_refused_before_allocation(small_digits, tmp_path, edit):
    _train(tmp_path, small_digits, epochs=1)
    payload = load_checkpoint(tmp_path / "checkpoint.pt")
    payload["config"] = json.dumps({**json.loads(payload["config"]), **edit})
    save_checkpoint(tmp_path / "checkpoint.pt", payload)
    with pytest.raises(CheckpointError, match=r"(larger than mixvae builds|billion weights)"):
        load_run(tmp_path)


def test_a_loaded_run_never_downloads_or_creates_folders(tmp_path, capsys):
    out, elsewhere = tmp_path / "run", tmp_path / "elsewhere" / "data"
    assert main(["train", *QUICK, "--epochs", "1", "--out", str(out)]) == 0
    payload = load_checkpoint(out / "checkpoint.pt")
    config = {
        **json.loads(payload["config"]),
        "dataset": "mnist",
        "data_dir": str(elsewhere),
        "download": True,
    }
    save_checkpoint(out / "checkpoint.pt", {**payload, "config": json.dumps(config)})
    for argv in (
        ["sample", str(out), "--source", "aggregate"],
        ["train", "--resume", str(out), "--epochs", "2"],
    ):
        rc, err = _cli(capsys, *argv)
        assert rc == 2 and "does not exist" in err
    assert not (tmp_path / "elsewhere").exists()


# ----------------------------------------------------------------------------- 9. misleading messages


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the message on a machine without a GPU")
def test_a_wrong_device_is_named_not_blamed_on_the_checkpoint(small_digits, tmp_path, capsys):
    _train(tmp_path, small_digits, epochs=1)
    for device, message in [
        ("cuda", "no CUDA GPU is available"),
        ("tpu", "unknown device"),
        ("cpu:7", "there is one cpu device"),
        ("meta", "mixvae trains on cpu, cuda or mps"),
    ]:
        for argv in (
            ["train", "--resume", str(tmp_path), "--device", device],
            ["evaluate", str(tmp_path), "--device", device],
        ):
            rc, err = _cli(capsys, *argv)
            assert rc == 2 and message in err and "truncated" not in err, (argv, err)
