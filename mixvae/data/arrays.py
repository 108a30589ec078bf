"""Your own data: arrays and tensors in memory, ``.npz`` / ``.npy`` files, folders of images.

Every source becomes the same :class:`~mixvae.data.base.Dataset`: float
tensors of shape (N, P) for vectors or (N, C, H, W) for images, with
optional labels and a held-out split (the given one, or a seeded 20%).

- **Values.** Floating-point data are kept as they are (cast to the
  requested dtype); ``uint8`` (and other integer) images are scaled to
  [0, 1] by 1/255 and must lie in 0..255; booleans become 0/1.
- **Shapes.** (N, P) vectors; (N, H, W) grey images become (N, 1, H, W);
  (N, C, H, W) is kept; channels-last (N, H, W, C) with C = 1, 3 or 4 is
  moved to channels-first when the second axis cannot be the channels.
- **Files** are read without running anything they contain:
  ``numpy.load(allow_pickle=False)``, Pillow for images.

Bad input is one :class:`~mixvae.errors.DataError` line that names the
problem and the fix.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from mixvae.data.base import Dataset
from mixvae.errors import DataError

#: the held-out fraction when the data come without a held-out set
HELDOUT_FRACTION = 0.2
#: the seed of that split
SPLIT_SEED = 0
#: the array names an ``.npz`` file may hold
NPZ_NAMES = ("train_x", "test_x", "train_y", "test_y", "x", "y")
#: the file suffixes read as images
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".gif", ".tif", ".tiff", ".webp", ".ppm", ".pgm")
#: Pillow modes and their channels (others are refused with the conversion to make)
IMAGE_MODES = {"L": 1, "1": 1, "RGB": 3}


def _as_array(values: Any, what: str) -> np.ndarray:
    if isinstance(values, torch.Tensor):
        return values.detach().cpu().numpy()
    try:
        array = np.asarray(values)
    except (TypeError, ValueError) as e:
        raise DataError(
            f"{what} cannot be read as an array ({e}); pass a numpy array or a torch tensor"
        ) from None
    if array.dtype == object:
        raise DataError(
            f"{what} is an array of Python objects; pass numbers (a numpy array or a torch tensor)"
        )
    return array


def to_points(values: Any, what: str = "the data", dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """Data points as a float tensor (N, P) or (N, C, H, W), values as the module doc says."""
    array = _as_array(values, what)
    if array.dtype.kind not in "biuf":
        raise DataError(f"{what} has dtype {array.dtype}; pass numbers (float, integer or bool)")
    if array.ndim == 3:  # (N, H, W): grey images
        array = array[:, None]
    elif array.ndim == 4 and array.shape[-1] in (1, 3, 4) and array.shape[1] not in (1, 3, 4):
        array = np.moveaxis(array, -1, 1)  # channels-last images
    if array.ndim not in (2, 4) or array.shape[0] == 0 or 0 in array.shape:
        raise DataError(
            f"{what} has shape {array.shape}; mixvae takes (N, P) vectors or (N, H, W) / (N, C, H, W) images "
            "with N > 0: reshape it"
        )
    if array.dtype.kind in "iu":
        low, high = int(array.min()), int(array.max())
        if low < 0 or high > 255:
            raise DataError(
                f"{what} is an integer array with values in {low}..{high}, outside the 0..255 of 8-bit images; "
                "convert it to floats in the range your likelihood needs"
            )
        return torch.as_tensor(array.astype(np.float64) / 255.0).to(dtype)
    tensor = torch.as_tensor(np.ascontiguousarray(array)).to(dtype)
    if array.dtype.kind == "f" and not bool(torch.isfinite(tensor).all()):
        raise DataError(f"{what} contains NaN or inf; clean or impute it first")
    return tensor


def to_labels(values: Any, n: int, what: str) -> torch.Tensor:
    """Integer labels (N,) for ``n`` points."""
    array = _as_array(values, what)
    if array.ndim != 1 or len(array) != n:
        raise DataError(
            f"{what} has shape {array.shape} for {n} data points; pass one integer label per point"
        )
    if array.dtype.kind == "f" and np.isfinite(array).all() and np.array_equal(array, np.round(array)):
        array = array.astype(np.int64)
    if array.dtype.kind not in "iu" or (len(array) and int(array.min()) < 0):
        raise DataError(f"{what} must be integers 0, 1, ... (one class per point), got dtype {array.dtype}")
    return torch.as_tensor(array.astype(np.int64))


def split_heldout(
    n: int, fraction: float = HELDOUT_FRACTION, seed: int = SPLIT_SEED
) -> tuple[np.ndarray, np.ndarray]:
    """A seeded split of ``n`` indices: (train, held-out), the held-out part ``fraction`` of them."""
    if n < 2:
        raise DataError(f"{n} data point(s) cannot be split into training and held-out data; give more")
    order = np.random.default_rng(seed).permutation(n)
    n_test = min(n - 1, max(1, int(round(fraction * n))))
    return order[n_test:], order[:n_test]


def from_arrays(
    train_x: Any,
    test_x: Any = None,
    train_y: Any = None,
    test_y: Any = None,
    *,
    name: str = "arrays",
    dtype: torch.dtype = torch.float32,
    heldout_fraction: float = HELDOUT_FRACTION,
    seed: int = SPLIT_SEED,
) -> Dataset:
    """A :class:`Dataset` from arrays or tensors (numpy, torch, nested lists) of any float, integer
    or bool dtype.

    :param train_x: the data, (N, P), (N, H, W), (N, C, H, W) or (N, H, W, C).
    :param test_x: held-out data of the same shape per point; default a seeded split of ``train_x``
        (``heldout_fraction`` of it, permutation seed ``seed``), labels split alike.
    :param train_y: integer labels of ``train_x`` (optional).
    :param test_y: integer labels of ``test_x`` (with ``test_x`` and ``train_y``).
    :param name: what the run records as its data set.
    :param dtype: the floating dtype of the tensors.
    """
    x = to_points(train_x, "train_x" if test_x is not None else "the data", dtype)
    y = (
        None
        if train_y is None
        else to_labels(train_y, len(x), "train_y" if test_x is not None else "the labels")
    )
    if test_x is None:
        if test_y is not None:
            raise DataError("test_y was given without test_x; pass both, or neither for a seeded split")
        train, test = split_heldout(len(x), heldout_fraction, seed)
        tx = x[torch.as_tensor(test)]
        ty = None if y is None else y[torch.as_tensor(test)]
        x, y = x[torch.as_tensor(train)], None if y is None else y[torch.as_tensor(train)]
    else:
        tx = to_points(test_x, "test_x", dtype)
        if tx.shape[1:] != x.shape[1:]:
            raise DataError(
                f"train_x has points of shape {tuple(x.shape[1:])} but test_x of {tuple(tx.shape[1:])}; "
                "they must be the same data"
            )
        if (y is None) != (test_y is None):
            raise DataError("pass labels for both train_x and test_x (train_y and test_y), or for neither")
        ty = None if test_y is None else to_labels(test_y, len(tx), "test_y")
    return Dataset(name, x, tx, y, ty)


def load_array_file(path: str | Path, dtype: torch.dtype = torch.float32) -> Dataset:
    """An ``.npz`` file (arrays ``train_x`` [``test_x``, ``train_y``, ``test_y``], or ``x`` [``y``])
    or an ``.npy`` file (the data, split 80/20 with a fixed seed); nothing pickled is read."""
    path = Path(path)
    try:
        loaded = np.load(path, allow_pickle=False)
    except ValueError as e:
        raise DataError(
            f"{path} holds pickled objects, which mixvae does not load ({e}); save plain arrays"
        ) from None
    except (OSError, EOFError) as e:
        raise DataError(
            f"{path} is not a readable numpy file ({e}); save it with numpy.savez or numpy.save"
        ) from None
    if isinstance(loaded, np.ndarray):
        return from_arrays(loaded, name=str(path), dtype=dtype)
    with loaded:
        names = list(loaded.files)
        arrays = {k: _read_member(loaded, k, path) for k in names if k in NPZ_NAMES}
    if "train_x" in arrays:
        unused = [k for k in ("x", "y") if k in arrays]
        if unused:
            raise DataError(
                f"{path} holds both train_x and {unused[0]}; keep one naming (train_x ... or x, y)"
            )
        return from_arrays(
            arrays["train_x"], arrays.get("test_x"), arrays.get("train_y"), arrays.get("test_y"),
            name=str(path), dtype=dtype,
        )  # fmt: skip
    if "x" in arrays:
        return from_arrays(arrays["x"], None, arrays.get("y"), name=str(path), dtype=dtype)
    raise DataError(
        f"{path} holds the arrays {names or '(none)'}; mixvae reads train_x (with test_x, train_y, test_y "
        "optional) or x (with y optional): save them under those names"
    )


def _read_member(loaded: Any, key: str, path: Path) -> np.ndarray:
    try:
        return loaded[key]
    except ValueError as e:
        raise DataError(f"{path}: array {key!r} holds pickled objects ({e}); save plain arrays") from None


def _images_in(folder: Path) -> list[Path]:
    return sorted(p for p in folder.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)


def _read_images(files: Sequence[Path], root: Path) -> np.ndarray:
    from PIL import Image, UnidentifiedImageError

    arrays, first = [], None
    for file in files:
        try:
            with Image.open(file) as image:
                mode, size = image.mode, image.size
                if mode not in IMAGE_MODES:
                    raise DataError(
                        f"{file} has Pillow mode {mode!r}; mixvae reads grey (L) and colour (RGB) images: "
                        "convert them (image.convert('RGB'))"
                    )
                if first is None:
                    first = (file, mode, size)
                elif (IMAGE_MODES[mode], size) != (IMAGE_MODES[first[1]], first[2]):
                    raise DataError(
                        f"images of mixed sizes or modes in {root}: {first[0].name} is {first[2][0]}x{first[2][1]} "
                        f"{first[1]} but {file.name} is {size[0]}x{size[1]} {mode}; resize or convert them to one"
                    )
                arrays.append(np.asarray(image.convert("L" if IMAGE_MODES[mode] == 1 else "RGB")))
        except (UnidentifiedImageError, OSError) as e:
            raise DataError(
                f"{file} is not a readable image ({type(e).__name__}); remove or replace it"
            ) from None
    return np.stack(arrays)  # (N, H, W) or (N, H, W, 3), uint8


def _class_folders(folder: Path) -> tuple[list[Path], list[int], list[str]]:
    classes = sorted(p for p in folder.iterdir() if p.is_dir() and not p.name.startswith("."))
    files, labels = [], []
    for k, sub in enumerate(classes):
        found = _images_in(sub)
        files += found
        labels += [k] * len(found)
    return files, labels, [c.name for c in classes]


def load_image_folder(path: str | Path, dtype: torch.dtype = torch.float32) -> Dataset:
    """A folder of images (read with Pillow, 8-bit values scaled to [0, 1]).

    Layouts, as torchvision's ``ImageFolder``: class subfolders (``DIR/cat/*.png``,
    ``DIR/dog/*.png``: labels 0, 1, ... in sorted order) or the images themselves
    (no labels); ``DIR/train/`` and ``DIR/test/`` of that kind give the held-out
    split, else a seeded 20% is held out.  All images must have one size and
    one mode (grey L or colour RGB).
    """
    root = Path(path)
    parts = [root / "train", root / "test"]
    if all(p.is_dir() for p in parts):
        splits = [_folder_arrays(p) for p in parts]
        (x, y, classes), (tx, ty, test_classes) = splits
        if classes != test_classes:
            raise DataError(
                f"{root}/train has the classes {classes} but {root}/test has {test_classes}; give both the same"
            )
        return from_arrays(x, tx, y, ty, name=str(root), dtype=dtype)
    x, y, _ = _folder_arrays(root)
    return from_arrays(x, None, y, name=str(root), dtype=dtype)


def _folder_arrays(folder: Path) -> tuple[np.ndarray, list[int] | None, list[str]]:
    files, labels, classes = _class_folders(folder)
    flat = _images_in(folder)
    if files and flat:
        raise DataError(
            f"{folder} holds both images ({flat[0].name}, ...) and class subfolders; keep one layout"
        )
    if not files and not flat:
        raise DataError(
            f"{folder} holds no images ({', '.join(IMAGE_SUFFIXES[:4])}, ...), neither itself nor in class "
            "subfolders; point --dataset at the folder of images"
        )
    if flat:
        return _read_images(flat, folder), None, []
    return _read_images(files, folder), labels, classes


def load_path(path: str | Path, dtype: torch.dtype = torch.float32) -> Dataset:
    """The data at ``path``: an ``.npz`` / ``.npy`` file or a folder of images."""
    path = Path(path).expanduser()
    if path.is_dir():
        return load_image_folder(path, dtype)
    if path.is_file() and path.suffix.lower() in (".npz", ".npy"):
        return load_array_file(path, dtype)
    if path.is_file():
        raise DataError(f"{path} is neither an .npz / .npy file nor a folder of images; convert it to one")
    raise DataError(f"{path} does not exist; give the path of an .npz / .npy file or a folder of images")
