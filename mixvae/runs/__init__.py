"""The run folder: config, checkpoint, metrics, and :func:`load_run` to read a run back.

Its safety is in three modules: :mod:`mixvae.runs.manifest` (what marks a
folder as a run and which files it owns), :mod:`mixvae.runs.lock` (one writer
at a time) and :mod:`mixvae.runs.files` (atomic writes, whole-line appends,
tolerant reads, checkpoint digests).
"""

from mixvae.runs.checkpoint import Position, checkpoint_payload, load_checkpoint, save_checkpoint
from mixvae.runs.files import read_jsonl, write_bytes, write_json, write_text
from mixvae.runs.folder import (
    Run,
    load_model,
    load_run,
    prepare_run_dir,
    read_metrics,
    save_model,
)
from mixvae.runs.lock import RunLock
from mixvae.runs.manifest import MANIFEST, RUN_ARTIFACTS, read_manifest

__all__ = [
    "MANIFEST",
    "RUN_ARTIFACTS",
    "Position",
    "Run",
    "RunLock",
    "checkpoint_payload",
    "load_checkpoint",
    "load_model",
    "load_run",
    "prepare_run_dir",
    "read_jsonl",
    "read_manifest",
    "read_metrics",
    "save_checkpoint",
    "save_model",
    "write_bytes",
    "write_json",
    "write_text",
]
