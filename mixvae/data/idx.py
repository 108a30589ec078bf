"""Readers for the IDX format of MNIST and Fashion-MNIST (``.gz`` or plain)."""

from __future__ import annotations

import gzip
import struct
import zlib
from pathlib import Path

import numpy as np

from mixvae.errors import DataError

#: magic number -> (item dimensions, what the file holds)
MAGIC = {2049: (0, "labels"), 2051: (2, "images")}
#: the largest ratio of inflated to compressed size that deflate can reach
MAX_DEFLATE_RATIO = 1032


def read_idx(path: str | Path, expect: str | None = None) -> np.ndarray:
    """Read an unsigned-byte IDX file, taking the item count from its header.

    :param path: the ``.gz`` (or uncompressed) IDX file.
    :param expect: ``"images"`` or ``"labels"``: raise if the magic number says otherwise.
    :returns: a ``uint8`` array of shape (N,) for labels or (N, rows, cols) for images.
    :raises DataError: for a truncated or corrupt file or a wrong magic number.
    """
    path = Path(path)
    gz = path.suffix == ".gz"
    try:
        size_on_disk = path.stat().st_size
        opener = gzip.open if gz else open
        with opener(path, "rb") as f:
            head = f.read(8)
            if len(head) < 8:
                raise DataError(f"{path} is too short to be an IDX file; delete it and download it again")
            (magic,) = struct.unpack(">i", head[:4])
            ndim, kind = _check_magic(path, magic, expect)
            dims_raw = f.read(4 * ndim)
            if len(dims_raw) < 4 * ndim:
                raise DataError(f"{path} is too short to be an IDX file; delete it and download it again")
            dims = struct.unpack(">" + "i" * (1 + ndim), head[4:] + dims_raw)
            if any(d < 0 for d in dims) or any(d == 0 for d in dims[1:]):
                raise DataError(
                    f"{path} has impossible dimensions {dims} in its header; it is corrupt: delete it "
                    "and download it again"
                )
            body = int(np.prod(dims, dtype=np.int64))
            header = 4 * (2 + ndim)
            # Checked before anything is inflated: deflate cannot compress more than 1032:1,
            # so a header that promises more than that is a lie (or a gzip bomb).
            limit = MAX_DEFLATE_RATIO * size_on_disk + 1024 if gz else size_on_disk
            if body + header > limit:
                raise DataError(
                    f"{path} is truncated or corrupt: its header promises {body + header} bytes "
                    f"({dims[0]} {kind}), more than its {size_on_disk} bytes can hold; delete it and "
                    "download it again"
                )
            raw = f.read(body + 1)  # one byte more than promised shows trailing data
    except (OSError, EOFError, zlib.error) as e:
        raise DataError(
            f"{path} is not a readable {'gzip ' if gz else ''}IDX file ({e}); delete it and download it again"
        ) from None
    if len(raw) != body:
        raise DataError(
            f"{path} is truncated or corrupt: its header promises {body + header} bytes "
            f"({dims[0]} {kind}), the file has {'more' if len(raw) > body else len(raw) + header}; "
            "delete it and download it again"
        )
    return np.frombuffer(raw, dtype=np.uint8).reshape(dims).copy()


def _check_magic(path: Path, magic: int, expect: str | None) -> tuple[int, str]:
    if magic not in MAGIC:
        raise DataError(
            f"{path} has magic number {magic}, not an IDX images (2051) or labels (2049) file; "
            "check that the file is the right one"
        )
    ndim, kind = MAGIC[magic]
    if expect is not None and kind != expect:
        raise DataError(f"{path} holds {kind} (magic {magic}) where {expect} were expected")
    return ndim, kind
