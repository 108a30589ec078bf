"""MNIST and Fashion-MNIST from their standard IDX ``.gz`` files.

Files are looked for in ``data_dir`` and in the ``MNIST/raw`` /
``FashionMNIST/raw`` layout that torchvision uses below it.  Missing files are
downloaded (torchvision when it imports, else a plain HTTP download) unless
``download=False``; on failure the error says which files to put where.
"""

from __future__ import annotations

import os
import shutil
import tempfile
import urllib.request
from pathlib import Path

import torch

from mixvae.data.base import DATASETS, Dataset
from mixvae.data.idx import read_idx
from mixvae.errors import DataError

FILES = {
    "train_x": "train-images-idx3-ubyte.gz",
    "train_y": "train-labels-idx1-ubyte.gz",
    "test_x": "t10k-images-idx3-ubyte.gz",
    "test_y": "t10k-labels-idx1-ubyte.gz",
}

MIRRORS = {
    "mnist": (
        "https://ossci-datasets.s3.amazonaws.com/mnist/",
        "https://storage.googleapis.com/cvdf-datasets/mnist/",
    ),
    "fashion-mnist": ("https://fashion-mnist.s3-website.eu-central-1.amazonaws.com/",),
}

#: torchvision's sub-folder names below a root directory
TORCHVISION_DIRS = {"mnist": "MNIST", "fashion-mnist": "FashionMNIST"}


def default_data_dir(name: str) -> Path:
    return Path(os.environ.get("MIXVAE_DATA", Path.home() / ".cache" / "mixvae")) / name


def _find(root: Path, name: str) -> Path | None:
    """The folder below ``root`` that holds all four files, if any."""
    for cand in (root, root / TORCHVISION_DIRS[name] / "raw", root / "raw"):
        if all((cand / f).is_file() for f in FILES.values()):
            return cand
    return None


def _download(name: str, root: Path) -> None:
    """Fetch the four files into ``root``; raise :class:`DataError` on failure."""
    root.mkdir(parents=True, exist_ok=True)
    try:
        import torchvision.datasets as tvd

        cls = {"mnist": tvd.MNIST, "fashion-mnist": tvd.FashionMNIST}[name]
        cls(str(root), train=True, download=True)
        cls(str(root), train=False, download=True)
        return
    except Exception:
        pass
    errors = []
    for fname in FILES.values():
        target = root / fname
        if target.is_file():
            continue
        for mirror in MIRRORS[name]:
            try:
                with urllib.request.urlopen(mirror + fname, timeout=30) as r:
                    fd, tmp = tempfile.mkstemp(dir=root, suffix=".part")
                    with os.fdopen(fd, "wb") as f:
                        shutil.copyfileobj(r, f)
                os.replace(tmp, target)
                break
            except OSError as e:
                errors.append(f"{mirror}{fname}: {e}")
        else:
            raise DataError(
                f"could not download {name} ({errors[-1]}); put the files "
                f"{', '.join(FILES.values())} into {root} and run again"
            )


def load_idx_dataset(name: str, data_dir: str | None, download: bool) -> Dataset:
    """Load an MNIST-format data set, scaled to [0, 1], with the held-out split = test files."""
    root = Path(data_dir).expanduser() if data_dir else default_data_dir(name)
    folder = _find(root, name)
    if folder is None and download:
        _download(name, root)
        folder = _find(root, name)
    if folder is None:
        missing = [f for f in FILES.values() if not (root / f).is_file()]
        what = "does not exist" if not root.exists() else f"lacks {', '.join(missing)}"
        raise DataError(
            f"{name} data folder {root} {what}; put {', '.join(FILES.values())} there "
            f"(or in {root / TORCHVISION_DIRS[name] / 'raw'}), pass --data-dir, or allow the download"
        )
    arrays = {
        key: read_idx(folder / fname, "images" if key.endswith("x") else "labels")
        for key, fname in FILES.items()
    }
    for split in ("train", "test"):
        nx, ny = len(arrays[f"{split}_x"]), len(arrays[f"{split}_y"])
        if nx != ny:
            raise DataError(
                f"{folder}: the {split} images file has {nx} items but the labels file has {ny}; "
                "the two files do not belong together"
            )

    def images(a):  # (N, 1, H, W) in [0, 1]
        return torch.as_tensor(a[:, None], dtype=torch.float32) / 255.0

    return Dataset(
        name,
        train_x=images(arrays["train_x"]),
        test_x=images(arrays["test_x"]),
        train_y=torch.as_tensor(arrays["train_y"], dtype=torch.long),
        test_y=torch.as_tensor(arrays["test_y"], dtype=torch.long),
    )


@DATASETS.register("mnist")
def load_mnist(data_dir: str | None = None, download: bool = True) -> Dataset:
    """MNIST (LeCun et al.): 28x28 grey digits; the item count is read from the files."""
    return load_idx_dataset("mnist", data_dir, download)


@DATASETS.register("fashion-mnist")
def load_fashion_mnist(data_dir: str | None = None, download: bool = True) -> Dataset:
    """Fashion-MNIST (Xiao et al. 2017): 28x28 grey clothing images, 10 classes."""
    return load_idx_dataset("fashion-mnist", data_dir, download)


load_mnist.data_shape = load_fashion_mnist.data_shape = (1, 28, 28)  # type: ignore[attr-defined]  # for 0.1 runs
