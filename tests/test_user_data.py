"""Your own data: arrays of any dtype and shape, .npz / .npy files, folders of images, --dtype."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from PIL import Image

from mixvae import TrainConfig, load_dataset, load_run, train
from mixvae.cli import main
from mixvae.data import from_arrays
from mixvae.errors import DataError

RNG = np.random.default_rng(0)


def test_uint8_images_are_scaled_and_kept_as_images():
    x = RNG.integers(0, 256, size=(50, 28, 28), dtype=np.uint8)
    data = from_arrays(x)
    assert data.train_x.shape == (40, 1, 28, 28) and data.test_x.shape == (10, 1, 28, 28)
    assert data.train_x.dtype == torch.float32 and float(data.train_x.max()) <= 1.0
    both = torch.cat([data.train_x, data.test_x]).flatten(1).sum(1).sort().values
    assert torch.allclose(both, torch.as_tensor(x.reshape(50, -1) / 255.0).float().sum(1).sort().values)


def test_channels_last_colour_images_become_channels_first():
    x = RNG.integers(0, 256, size=(20, 8, 8, 3), dtype=np.uint8)
    data = from_arrays(x, x[:5])
    assert data.train_x.shape == (20, 3, 8, 8)
    assert torch.equal(data.train_x[0, 2], torch.as_tensor(x[0, :, :, 2] / 255.0).float())


def test_every_float_and_integer_dtype_and_a_seeded_split_with_labels():
    y = np.arange(30) % 3
    for dtype in (np.float16, np.float32, np.float64, np.int16, np.int64, np.uint8, bool):
        x = (RNG.random((30, 6)) * (255 if np.dtype(dtype).kind in "iu" else 1)).astype(dtype)
        data = from_arrays(x, train_y=y)
        assert data.train_x.shape == (24, 6) and data.train_x.dtype == torch.float32
        assert len(data.train_y) == 24 and len(data.test_y) == 6
    a, b = from_arrays(RNG.random((30, 6)), train_y=y), from_arrays(RNG.random((30, 6)), train_y=y)
    assert torch.equal(a.test_y, b.test_y)  # the same seeded split
    assert (
        from_arrays(torch.rand(30, 6, dtype=torch.float64), dtype=torch.float64).train_x.dtype
        == torch.float64
    )


@pytest.mark.parametrize(
    ("make", "match"),
    [
        (lambda: from_arrays(np.zeros((5,))), r"shape \(5,\); mixvae takes \(N, P\) vectors"),
        (lambda: from_arrays(np.array([[0.0, np.nan]] * 4)), "contains NaN or inf"),
        (lambda: from_arrays(np.array([[0, 300]] * 4)), r"values in 0\.\.300, outside the 0\.\.255"),
        (lambda: from_arrays(np.zeros((4, 2)), train_y=[0, 1]), r"shape \(2,\) for 4 data points"),
        (
            lambda: from_arrays(np.zeros((4, 2)), np.zeros((2, 3))),
            r"points of shape \(2,\) but test_x of \(3,\)",
        ),
        (lambda: from_arrays(np.array([["a", "b"]] * 3)), "dtype <U1; pass numbers"),
    ],
)
def test_bad_arrays_are_one_line(make, match):
    with pytest.raises(DataError, match=match):
        make()


def test_an_npz_file_trains_and_evaluate_finds_it_again(tmp_path):
    x = (RNG.random((120, 1, 6, 6)) > 0.5).astype(np.float32)
    np.savez(tmp_path / "mine.npz", x=x, y=np.arange(120) % 4)
    out = tmp_path / "run"
    args = [
        "train",
        "--dataset",
        str(tmp_path / "mine.npz"),
        "--network",
        "mlp",
        "--hidden",
        "16",
        "--batch-size",
        "32",
    ]
    assert (
        main([*args, "--epochs", "1", "--latent-dim", "2", "--components", "4", "--quiet", "--out", str(out)])
        == 0
    )
    stored = json.loads((out / "config.json").read_text())
    assert stored["dataset"] == str((tmp_path / "mine.npz").resolve())
    assert main(["evaluate", str(out), "--iw-samples", "5", "--no-figures"]) == 0
    assert main(["train", "--resume", str(out), "--epochs", "2", "--quiet"]) == 0


def test_an_npz_file_without_the_expected_arrays_is_one_line(tmp_path, capsys):
    np.savez(tmp_path / "bad.npz", images=np.zeros((4, 3)))
    assert main(["train", "--dataset", str(tmp_path / "bad.npz"), "--out", str(tmp_path / "run")]) == 2
    err = capsys.readouterr().err
    assert "holds the arrays ['images']; mixvae reads train_x" in err and len(err.strip().splitlines()) == 1
    assert not (tmp_path / "run").exists()  # nothing written


def test_a_pickled_npy_is_refused(tmp_path):
    np.save(tmp_path / "obj.npy", np.array([{"a": 1}], dtype=object), allow_pickle=True)
    with pytest.raises(DataError, match="holds pickled objects, which mixvae does not load"):
        load_dataset(str(tmp_path / "obj.npy"))


def _write_images(folder, n, size=(8, 6), mode="L"):
    folder.mkdir(parents=True, exist_ok=True)
    for i in range(n):
        pixels = RNG.integers(0, 256, size=(size[1], size[0], 3) if mode == "RGB" else (size[1], size[0]))
        Image.fromarray(pixels.astype(np.uint8), mode).save(folder / f"{i}.png")


def test_a_folder_of_class_subfolders_gives_images_and_labels(tmp_path):
    _write_images(tmp_path / "imgs" / "cat", 6, mode="RGB")
    _write_images(tmp_path / "imgs" / "dog", 4, mode="RGB")
    data = load_dataset(str(tmp_path / "imgs"))
    assert data.train_x.shape == (8, 3, 6, 8) and data.test_x.shape == (2, 3, 6, 8)
    assert sorted(torch.cat([data.train_y, data.test_y]).tolist()) == [0] * 6 + [1] * 4
    _write_images(tmp_path / "split" / "train" / "a", 3)
    _write_images(tmp_path / "split" / "test" / "a", 2)
    data = load_dataset(str(tmp_path / "split"))
    assert data.train_x.shape == (3, 1, 6, 8) and data.test_x.shape == (2, 1, 6, 8)


@pytest.mark.parametrize(
    ("setup", "match"),
    [
        (lambda d: d.mkdir(), "holds no images"),
        (
            lambda d: (_write_images(d, 2), _write_images(d / "x", 1, size=(4, 4))),
            "both images .* and class subfolders",
        ),
        (
            lambda d: (_write_images(d / "a", 2), _write_images(d / "b", 2, size=(4, 4))),
            "mixed sizes or modes",
        ),
        (
            lambda d: (_write_images(d / "a", 2), _write_images(d / "b", 2, mode="RGB")),
            "mixed sizes or modes",
        ),
    ],
)
def test_bad_folders_are_one_line(tmp_path, setup, match):
    setup(tmp_path / "d")
    with pytest.raises(DataError, match=match):
        load_dataset(str(tmp_path / "d"))


def test_numpy_arrays_and_float64_tensors_train_from_python(tmp_path):
    x = RNG.random((200, 10))
    run = train(
        TrainConfig(
            prior="gmm", guide="gaussian", likelihood="gaussian", latent_dim=2, hidden=(8,), epochs=1
        ),
        dataset=x,
        out=str(tmp_path / "a"),
        progress=False,
        figures=False,
    )
    assert run.config.dataset == "arrays" and next(run.model.parameters()).dtype == torch.float32
    run = train(
        TrainConfig(likelihood="gaussian", latent_dim=2, hidden=(8,), epochs=1, dtype="float64"),
        dataset=torch.as_tensor(x),
        out=str(tmp_path / "b"),
        progress=False,
        figures=False,
    )
    assert next(run.model.parameters()).dtype == torch.float64
    again = load_run(tmp_path / "b")
    assert next(again.model.parameters()).dtype == torch.float64 and again.config.dtype == "float64"


def test_a_run_on_in_memory_data_says_what_to_pass(tmp_path, capsys):
    train(
        TrainConfig(likelihood="gaussian", latent_dim=2, hidden=(8,), epochs=1, batch_size=32),
        dataset=RNG.random((100, 5)),
        out=str(tmp_path / "run"),
        progress=False,
        figures=False,
    )
    assert main(["evaluate", str(tmp_path / "run"), "--iw-samples", "5", "--no-figures"]) == 2
    err = capsys.readouterr().err
    assert "was trained on in-memory data" in err and "dataset=" in err and len(err.strip().splitlines()) == 1


def test_the_range_check_reads_the_declared_support_not_the_name(tmp_path):
    from mixvae.models import LIKELIHOODS, BernoulliDecoder

    class MyBernoulli(BernoulliDecoder):  # a user's subclass under another name
        pass

    LIKELIHOODS.register("my-bernoulli")(MyBernoulli)
    try:
        with pytest.raises(DataError, match=r"lies in \[0, 16\], outside the \[0, 1\] the my-bernoulli"):
            train(
                TrainConfig(
                    prior="standard", guide="gaussian", likelihood="my-bernoulli", hidden=(8,), epochs=1
                ),
                dataset=RNG.integers(0, 17, size=(50, 4)).astype(np.float32),
                out=str(tmp_path / "run"),
                progress=False,
            )
        assert not (tmp_path / "run").exists()
    finally:
        LIKELIHOODS.drop_module(MyBernoulli.__module__)
