"""Checkpoints: tensors plus JSON, written atomically, loaded without unpickling code.

A checkpoint holds a run's configuration, its parameters, the optimiser state,
the position inside the epoch and every random state, so that a resumed run
continues bit for bit.
"""

from __future__ import annotations

import json
import os
import pickle
import random
import re
import tempfile
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

from mixvae import __version__
from mixvae.config import FORMAT_VERSION
from mixvae.errors import CheckpointError

if TYPE_CHECKING:
    from mixvae.config import TrainConfig


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


@dataclass
class Position:
    """Where the loop stands: enough, with the RNG states, to continue bit for bit."""

    epoch: int = 0  # completed epochs
    step: int = 0  # completed optimisation steps in all
    batch: int = 0  # completed steps of the current epoch
    perm: torch.Tensor | None = None  # the current epoch's data order
    total: float = 0.0  # running sum of the current epoch's per-datapoint losses


def checkpoint_payload(
    modules: tuple[torch.nn.Module, torch.nn.Module],
    config: TrainConfig,
    optimizer: torch.optim.Optimizer,
    data_dim: int,
    pos: Position,
    gen: torch.Generator,
) -> dict[str, Any]:
    """The checkpoint of ``modules = (model, guide)``: tensors, numbers and JSON strings only
    (loadable with weights_only)."""
    model, guide = modules
    return {
        "format_version": FORMAT_VERSION,
        "mixvae_version": __version__,
        "config": config.to_json(),
        "data_dim": data_dim,
        "epoch": pos.epoch,
        "position": {
            "step": pos.step,
            "batch": pos.batch,
            "total": pos.total,
            "perm": pos.perm if pos.batch else None,
        },
        "model": model.state_dict(),
        "guide": guide.state_dict(),
        "optimizer": optimizer.state_dict(),
        "rng": {
            "torch": torch.get_rng_state(),
            "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
            "data": gen.get_state(),
            "python": json.dumps(random.getstate()),
            "numpy": json.dumps(np.random.get_state(legacy=False), default=_json_array),
        },
    }


def _json_array(obj: Any) -> Any:
    if isinstance(obj, np.ndarray):
        return obj.tolist()
    raise TypeError(type(obj))


def restore_rng(rng: dict[str, Any], gen: torch.Generator) -> None:
    torch.set_rng_state(rng["torch"])
    if rng["cuda"]:
        torch.cuda.set_rng_state_all(rng["cuda"])
    gen.set_state(rng["data"])
    version, state, gauss = json.loads(rng["python"])
    random.setstate((version, tuple(state), gauss))
    np_state = json.loads(rng["numpy"])
    np_state["state"] = {k: np.uint64(v) if isinstance(v, int) else v for k, v in np_state["state"].items()}
    np.random.set_state(np_state)
