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


def read_idx(path: str | Path, expect: str | None = None) -> np.ndarray:
    """Read an unsigned-byte IDX file, taking the item count from its header.

    :param path: the ``.gz`` (or uncompressed) IDX file.
    :param expect: ``"images"`` or ``"labels"``: raise if the magic number says otherwise.
    :returns: a ``uint8`` array of shape (N,) for labels or (N, rows, cols) for images.
    :raises DataError: for a truncated or corrupt file or a wrong magic number.
    """
    path = Path(path)
    try:
        opener = gzip.open if path.suffix == ".gz" else open
        with opener(path, "rb") as f:
            raw = f.read()
    except (OSError, EOFError, zlib.error) as e:
        raise DataError(
            f"{path} is not a readable {'gzip ' if path.suffix == '.gz' else ''}IDX file ({e}); "
            "delete it and download it again"
        ) from None
    if len(raw) < 8:
        raise DataError(f"{path} is too short to be an IDX file; delete it and download it again")
    (magic,) = struct.unpack(">i", raw[:4])
    if magic not in MAGIC:
        raise DataError(
            f"{path} has magic number {magic}, not an IDX images (2051) or labels (2049) file; "
            "check that the file is the right one"
        )
    ndim, kind = MAGIC[magic]
    if expect is not None and kind != expect:
        raise DataError(f"{path} holds {kind} (magic {magic}) where {expect} were expected")
    header = 4 * (2 + ndim)
    dims = struct.unpack(">" + "i" * (1 + ndim), raw[4:header])
    expected = int(np.prod(dims)) + header
    if len(raw) != expected:
        raise DataError(
            f"{path} is truncated or corrupt: its header promises {expected} bytes "
            f"({dims[0]} {kind}), the file has {len(raw)}; delete it and download it again"
        )
    return np.frombuffer(raw, dtype=np.uint8, offset=header).reshape(dims).copy()
