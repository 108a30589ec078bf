"""The manifest that marks a folder as a mixvae run: its id, format and the files it owns.

``RUN/mixvae-run.json`` is written first (atomically) when a run starts; every
file written into the folder through :mod:`mixvae.runs.files` is listed in it
before it is written.  ``--overwrite`` removes only the files listed there, a
folder that holds files but no manifest is not a run and is refused, and a
checkpoint records the run id, so one copied in from another run is refused.
Run folders of mixvae 0.1 (no manifest) are recognised by their
``checkpoint.pt`` and ``config.json`` and get a manifest when they are resumed.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

from mixvae.errors import RunFolderError

MANIFEST = "mixvae-run.json"
#: the manifest's own format (independent of the checkpoint format)
MANIFEST_VERSION = 1
#: files a run writes besides config.json and checkpoint.pt (and its evaluation figures)
RUN_ARTIFACTS = (
    "loss_curves.png",
    "reconstructions.png",
    "prior_samples.png",
    "latent_scatter.png",
    "metrics.jsonl",
    "summary.json",
    "posthoc_gmm.pt",
    "evaluation.json",
    "inference_data.nc",
)
#: what a run folder of mixvae 0.1 (before manifests) owns, besides its PNG figures
LEGACY_FILES = ("config.json", "checkpoint.pt", "init_from.json", "lightning_logs", *RUN_ARTIFACTS)
#: names inside a run folder that are never listed (the lock, temporary files)
UNLISTED_PREFIX = "."


def read_manifest(run_dir: str | Path) -> dict[str, Any] | None:
    """The folder's manifest, or ``None`` when it has none; a damaged one is a :class:`RunFolderError`."""
    path = Path(run_dir) / MANIFEST
    if not path.is_file():
        return None
    try:
        manifest = json.loads(path.read_bytes().decode())
        if not isinstance(manifest, dict) or not isinstance(manifest.get("run_id"), str):
            raise ValueError("no run_id")
        if not isinstance(manifest.get("files"), list):
            raise ValueError("no list of files")
    except (UnicodeDecodeError, ValueError) as e:
        raise RunFolderError(
            f"{path} is damaged ({e}); the folder's ownership is unknown: move the files you want to "
            "keep elsewhere and train the run again"
        ) from None
    return manifest


def _write(run_dir: Path, manifest: dict[str, Any]) -> None:
    # Not through files.write_bytes: that lists every file in the manifest first.
    fd, tmp = tempfile.mkstemp(dir=run_dir, prefix=f".{MANIFEST}.", suffix=".tmp")
    try:
        os.fchmod(fd, 0o644)
        with os.fdopen(fd, "w") as f:
            json.dump(manifest, f, indent=2)
            f.write("\n")
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, run_dir / MANIFEST)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def create_manifest(
    run_dir: str | Path, files: list[str] | tuple[str, ...] = (), *, adopted: bool = False
) -> str:
    """Mark ``run_dir`` as a new run (``adopted``: a mixvae 0.1 run that gets one); returns its run id."""
    from mixvae import __version__

    run_id = uuid.uuid4().hex
    _write(
        Path(run_dir),
        {
            "format": "mixvae run folder",
            "manifest_version": MANIFEST_VERSION,
            "run_id": run_id,
            "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
            "mixvae_version": __version__,
            "files": sorted(set(files)),
            **({"adopted": True} if adopted else {}),
        },
    )
    return run_id


def own(folder: str | Path, name: str) -> None:
    """List ``name`` among the files of the run in ``folder`` (nothing when ``folder`` is no run)."""
    folder = Path(folder)
    if name == MANIFEST or name.startswith(UNLISTED_PREFIX):
        return
    manifest = read_manifest(folder)
    if manifest is None or name in manifest["files"]:
        return
    manifest["files"] = sorted({*manifest["files"], name})
    _write(folder, manifest)


def run_id(run_dir: str | Path) -> str | None:
    manifest = read_manifest(run_dir)
    return None if manifest is None else manifest["run_id"]


def is_legacy_run(run_dir: str | Path) -> bool:
    """A run folder of mixvae 0.1: a checkpoint and a config, but no manifest."""
    run_dir = Path(run_dir)
    return (
        not (run_dir / MANIFEST).exists()
        and (run_dir / "checkpoint.pt").is_file()
        and (run_dir / "config.json").is_file()
    )


def adopt_legacy(run_dir: str | Path) -> str:
    """Give a mixvae 0.1 run folder a manifest listing the run files it holds; returns the new id."""
    return create_manifest(run_dir, _legacy_files(Path(run_dir)), adopted=True)


def _legacy_files(run_dir: Path) -> list[str]:
    """The files a mixvae 0.1 run folder holds of its run: the known names and its PNG figures."""
    return [n for n in LEGACY_FILES if (run_dir / n).exists()] + [p.name for p in run_dir.glob("*.png")]


def remove_owned(run_dir: str | Path) -> list[str]:
    """Delete the files the folder's run owns (the manifest last); returns their names."""
    run_dir = Path(run_dir)
    manifest = read_manifest(run_dir)
    names = list(manifest["files"]) if manifest is not None else []
    if manifest is None and is_legacy_run(run_dir):
        names = _legacy_files(run_dir)
    removed = []
    for name in names:
        if "/" in name or name in ("", ".", ".."):
            continue  # a manifest lists plain names inside the folder only
        path = run_dir / name
        if path.is_dir() and not path.is_symlink():
            shutil.rmtree(path)
        elif path.exists() or path.is_symlink():
            path.unlink()
        else:
            continue
        removed.append(name)
    with contextlib.suppress(FileNotFoundError):
        (run_dir / MANIFEST).unlink()
    return removed
