"""Checkpoints: tensors plus JSON, written atomically, loaded without unpickling code."""

from __future__ import annotations

import os
import pickle
import re
import tempfile
import zipfile
from pathlib import Path
from typing import Any

import torch

from mixvae.errors import CheckpointError


def save_checkpoint(path: str | Path, payload: dict[str, Any]) -> None:
    """Write ``payload`` to ``path`` atomically (temporary file + ``os.replace``).

    A crash half-way leaves the previous checkpoint intact.  ``payload`` must
    hold only tensors, numbers, strings and containers of them, so that
    :func:`load_checkpoint` can read it with ``weights_only=True``.
    """
    path = Path(path)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            torch.save(payload, f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def load_checkpoint(path: str | Path, map_location: str | torch.device = "cpu") -> dict[str, Any]:
    """Read a checkpoint with ``torch.load(weights_only=True)``: no code from it is run.

    :raises CheckpointError: when the file is missing, corrupt, or carries
        pickled objects other than tensors and plain containers.
    """
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"no checkpoint at {path}; train a run there first")
    try:
        payload = torch.load(path, map_location=map_location, weights_only=True)
    except pickle.UnpicklingError as e:
        if not zipfile.is_zipfile(path):  # not torch.save's format at all
            raise CheckpointError(f"{path} is not a readable checkpoint; it may be truncated") from None
        found = re.search(r"GLOBAL (\S+) was not an allowed global", str(e))
        raise CheckpointError(
            f"{path} carries pickled objects other than tensors"
            f"{' (' + found.group(1) + ')' if found else ''} and is refused for safety; "
            "only load checkpoints written by mixvae"
        ) from None
    except (RuntimeError, EOFError, OSError) as e:
        raise CheckpointError(f"{path} is not a readable checkpoint ({e}); it may be truncated") from None
    if not isinstance(payload, dict) or "config" not in payload:
        raise CheckpointError(f"{path} is not a mixvae checkpoint (no config inside)")
    return payload
