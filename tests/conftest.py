"""Shared fixtures: seeded tests, small data, the real MNIST folder."""

from __future__ import annotations

from pathlib import Path

import pyro
import pytest
import torch

from mixvae.data import Dataset, load_dataset

ROOT = Path(__file__).resolve().parents[1]
#: real MNIST (23,797 train / 10,000 test), see ../shared/data/README.md
MNIST_DIR = ROOT.parent / "shared" / "data" / "mnist"


@pytest.fixture(autouse=True)
def _seed_and_clean():
    pyro.set_rng_seed(0)
    pyro.clear_param_store()
    yield
    pyro.clear_param_store()


@pytest.fixture(scope="session")
def digits() -> Dataset:
    return load_dataset("digits")


@pytest.fixture(scope="session")
def small_digits(digits: Dataset) -> Dataset:
    """600 training and 200 held-out 8x8 digits, flat (N, 64) with their image shape for figures:
    enough for a loss to fall in a few epochs (the mlp network; ``small_digit_images`` keep
    the (N, 1, 8, 8) shape, for the conv network)."""
    return Dataset(
        "digits",
        digits.train_x[:600].flatten(1),
        digits.test_x[:200].flatten(1),
        digits.train_y[:600],
        digits.test_y[:200],
        digits.image_shape,
    )


@pytest.fixture(scope="session")
def small_digit_images(digits: Dataset) -> Dataset:
    """The same 600 + 200 digits as images (N, 1, 8, 8)."""
    return Dataset(
        "digits", digits.train_x[:600], digits.test_x[:200], digits.train_y[:600], digits.test_y[:200]
    )


@pytest.fixture(scope="session")
def mnist_dir() -> Path:
    assert (MNIST_DIR / "train-images-idx3-ubyte.gz").is_file(), (
        f"the real MNIST files are expected in {MNIST_DIR} (see ../shared/data/README.md)"
    )
    return MNIST_DIR


def torch_threads() -> None:
    torch.set_num_threads(min(2, torch.get_num_threads()))


def run_readme_block(marker: str, folder: Path, monkeypatch: pytest.MonkeyPatch) -> dict:
    """Execute, in ``folder``, the one python block of README.md that contains ``marker``; its names."""
    import re

    text = (ROOT / "README.md").read_text()
    blocks = [b for b in re.findall(r"```python\n(.*?)```", text, flags=re.S) if marker in b]
    assert len(blocks) == 1, f"README.md has no (or more than one) python block with {marker!r}"
    monkeypatch.chdir(folder)
    namespace: dict = {}
    exec(compile(blocks[0], "README.md", "exec"), namespace)
    return namespace
