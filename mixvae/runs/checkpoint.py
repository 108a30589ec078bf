"""Checkpoints: tensors plus JSON, written atomically, loaded without unpickling code.

A checkpoint holds a run's configuration, its parameters, the optimiser state,
the position inside the epoch and every random state, so that a resumed run
continues bit for bit.
"""

from __future__ import annotations

import hashlib
import io
import json
import math
import pickle
import random
import re
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

from mixvae import __version__
from mixvae.config import FORMAT_VERSION
from mixvae.errors import CheckpointError
from mixvae.runs.files import digest, write_bytes

if TYPE_CHECKING:
    from mixvae.config import TrainConfig


def save_checkpoint(path: str | Path, payload: dict[str, Any]) -> None:
    """Write ``payload`` and its SHA-256 digest to ``path`` atomically (see :mod:`mixvae.runs.files`).

    A crash half-way leaves the previous checkpoint intact.  ``payload`` must
    hold only tensors, numbers, strings and containers of them, so that
    :func:`load_checkpoint` can read it with ``weights_only=True``; the digest
    (of every tensor's bytes and every value) lets it refuse a damaged file.
    """
    payload = {k: v for k, v in payload.items() if k != "digest"}
    buffer = io.BytesIO()
    torch.save({**payload, "digest": digest(payload)}, buffer)
    write_bytes(path, buffer.getvalue())


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
    stored = payload.pop("digest", None)
    if stored is None and payload.get("format_version", 1) >= 2:
        raise CheckpointError(f"{path} has no checksum, which every checkpoint of its format carries")
    if stored is not None and stored != digest(payload):
        raise CheckpointError(
            f"{path} fails its checksum: it was changed or damaged after it was written; restore a "
            "copy of the run folder or train the run again"
        )
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
    data_shape: int | tuple[int, ...],
    pos: Position,
    gen: torch.Generator,
    *,
    run_id: str | None = None,
    metrics: list[dict[str, Any]] | None = None,
    num_data: int | None = None,
) -> dict[str, Any]:
    """The checkpoint of ``modules = (model, guide)``: tensors, numbers and JSON strings only
    (loadable with weights_only).

    It records the run it belongs to (``run_id``, the folder's manifest) and
    the metrics history of its epochs (one JSON line per epoch, with their
    SHA-256), so that ``metrics.jsonl`` and the checkpoint agree by
    construction: ``--resume`` rewrites the history from it.
    """
    model, guide = modules
    shape = (data_shape,) if isinstance(data_shape, int) else tuple(data_shape)
    history = "".join(json.dumps(m) + "\n" for m in (metrics or []))
    return {
        "format_version": FORMAT_VERSION,
        "mixvae_version": __version__,
        "run_id": run_id or "",
        "config": config.to_json(),
        "data_dim": math.prod(shape),
        "data_shape": list(shape),
        "num_data": -1 if num_data is None else int(num_data),
        "epoch": pos.epoch,
        "metrics": history,
        "metrics_sha256": hashlib.sha256(history.encode()).hexdigest(),
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


def describe_kept(path: str | Path) -> str:
    """What a failure message says about the checkpoint at ``path``: kept (after which epoch), or none yet."""
    path = Path(path)
    if not path.is_file():
        return "no checkpoint was written yet"
    try:
        return f"the last good checkpoint ({path}, after epoch {int(load_checkpoint(path)['epoch'])}) is kept"
    except (CheckpointError, KeyError, TypeError, ValueError):
        return f"{path} is left as it was"
