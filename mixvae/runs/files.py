"""How a run folder's files are written and read: atomically, whole lines only, tolerantly.

Every file of a run is written through :func:`write_bytes` (a temporary file
in the same folder, ``fsync``, :func:`os.replace`, then ``fsync`` of the
folder): a reader sees the old file or the new one, never a part.  A file
written into a run folder is first listed in the folder's manifest
(:mod:`mixvae.runs.manifest`), so that ``--overwrite`` knows what the run owns.
``metrics.jsonl`` grows by :func:`append_line` (one ``write`` of a whole line
to a file opened for appending) and is read by :func:`read_jsonl`, which drops
a torn last line with a warning.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import json
import os
import shutil
import signal
import tempfile
import threading
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import torch

from mixvae.errors import RunFolderError

#: the prefix and suffix of every temporary file a writer makes (removed on the next start)
TMP_PREFIX, TMP_SUFFIX = ".", ".tmp"


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


_FILE_MODE = 0o666 & ~_umask()


def _fsync_dir(folder: Path) -> None:
    with contextlib.suppress(OSError):  # not every file system lets a folder be opened
        fd = os.open(folder, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


@contextlib.contextmanager
def atomic_path(path: str | Path) -> Iterator[Path]:
    """A temporary path beside ``path`` for a writer that needs a file name (``to_netcdf``);
    it replaces ``path`` when the block ends without an error and is removed otherwise."""
    path = Path(path)
    _register(path)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f"{TMP_PREFIX}{path.name}.", suffix=TMP_SUFFIX)
    os.close(fd)
    try:
        os.chmod(tmp, _FILE_MODE)  # mkstemp makes 0600; a run's files get the usual permissions
        yield Path(tmp)
        with open(tmp, "rb+") as f:
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    _fsync_dir(path.parent)


def write_bytes(path: str | Path, data: bytes) -> None:
    """Write ``data`` to ``path`` atomically: the old file or the new one survives any crash."""
    with atomic_path(path) as tmp, open(tmp, "wb") as f:
        f.write(data)


def write_text(path: str | Path, text: str) -> None:
    write_bytes(path, text.encode())


def write_json(path: str | Path, obj: Any) -> None:
    write_text(path, json.dumps(obj, indent=2) + "\n")


def save_figure(fig: Any, path: str | Path) -> None:
    """``fig.savefig`` into memory, then :func:`write_bytes` (a killed run leaves no torn PNG)."""
    buffer = io.BytesIO()
    fig.savefig(buffer, format=Path(path).suffix.lstrip(".") or "png")
    write_bytes(path, buffer.getvalue())


def append_line(path: str | Path, line: str) -> None:
    """Append one whole line with a single ``write`` (``O_APPEND``) and ``fsync``.

    A write that fails half-way (a full disk) is cut back to the old length,
    so the file never keeps a torn line it knows of; one torn by a crash is
    dropped by :func:`read_jsonl`.
    """
    path = Path(path)
    _register(path)
    data = (line.rstrip("\n") + "\n").encode()
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        size = os.fstat(fd).st_size
        try:
            written = os.write(fd, data)
            if written != len(data):
                raise OSError(28, "No space left on device (short write)", str(path))
            os.fsync(fd)
        except OSError:
            with contextlib.suppress(OSError):
                os.ftruncate(fd, size)
            raise
    finally:
        os.close(fd)


def read_json(path: str | Path, what: str = "file") -> Any:
    """The JSON in ``path``; a damaged file is a :class:`RunFolderError` naming it and the fix."""
    path = Path(path)
    try:
        return json.loads(path.read_bytes().decode())
    except (UnicodeDecodeError, ValueError) as e:
        raise RunFolderError(
            f"{path} is damaged ({type(e).__name__}: {str(e).splitlines()[0][:80]}); it is the run's "
            f"{what}: delete it and run the command that writes it again (or restore a copy)"
        ) from None


def read_jsonl(path: str | Path) -> list[dict[str, Any]]:
    """The records of a JSON-lines file; a torn last line (a crash mid-append) is dropped with a warning.

    :raises RunFolderError: when a line other than the last is damaged.
    """
    path = Path(path)
    if not path.is_file():
        return []
    raw = path.read_bytes()
    lines = raw.split(b"\n")
    records: list[dict[str, Any]] = []
    for i, line in enumerate(lines):
        if not line.strip():
            continue
        last = i == len(lines) - 1  # no newline after it: a torn append
        try:
            record = json.loads(line.decode())
            if not isinstance(record, dict) or not isinstance(record.get("epoch"), int):
                raise ValueError("not a record with an integer 'epoch'")
        except (UnicodeDecodeError, ValueError) as e:
            if last:
                warnings.warn(
                    f"{path}: the last line is torn (a crash while it was written); it is ignored",
                    RuntimeWarning,
                    stacklevel=2,
                )
                break
            raise RunFolderError(
                f"{path} line {i + 1} is damaged ({str(e).splitlines()[0][:60]}); delete that line "
                "or the file (--resume rewrites the history from the checkpoint)"
            ) from None
        records.append(record)
    return records


def clean_temporaries(folder: str | Path) -> list[str]:
    """Remove the temporary files (and staging folders) that killed writers left in ``folder``.

    Call it only while holding the folder's lock (no other writer is active).
    :returns: the names removed.
    """
    removed = []
    for tmp in Path(folder).glob(f"{TMP_PREFIX}*{TMP_SUFFIX}"):
        if tmp.is_dir() and not tmp.is_symlink():
            shutil.rmtree(tmp, ignore_errors=True)
        else:
            tmp.unlink(missing_ok=True)
        removed.append(tmp.name)
    return removed


@contextlib.contextmanager
def staging(folder: str | Path, purpose: str) -> Iterator[Path]:
    """A temporary folder inside ``folder`` for a set of outputs (see :func:`commit_set`);
    removed when the block ends, and by :func:`clean_temporaries` after a crash."""
    path = Path(tempfile.mkdtemp(dir=folder, prefix=f"{TMP_PREFIX}{purpose}.", suffix=TMP_SUFFIX))
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)


@contextlib.contextmanager
def signals_deferred() -> Iterator[None]:
    """SIGINT and SIGTERM wait until the block ends (then act as they would have)."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    caught: list[int] = []
    old = {sig: signal.signal(sig, lambda signum, frame: caught.append(signum)) for sig in _DEFERRED}
    try:
        yield
    finally:
        for sig, handler in old.items():
            signal.signal(sig, handler)
        for sig in dict.fromkeys(caught):
            signal.raise_signal(sig)


_DEFERRED = (signal.SIGINT, signal.SIGTERM)


def commit_set(staged: Path, folder: Path, marker: str, replaces: tuple[str, ...] = ()) -> list[str]:
    """Move every file of ``staged`` into ``folder`` as one set, ``marker`` last.

    The old ``marker`` goes first and the old files of ``replaces`` that the
    new set lacks go too, so the folder holds the old set, no marker, or the
    whole new set: a reader that trusts the files only beside their marker
    never mixes two sets.  Signals wait until the moves are done.
    :returns: the names moved in.
    """
    names = sorted(p.name for p in staged.iterdir() if p.is_file())
    if marker not in names:
        raise ValueError(f"the staged set has no {marker}")
    names = [n for n in names if n != marker] + [marker]
    with signals_deferred():
        (folder / marker).unlink(missing_ok=True)
        for name in replaces:
            if name not in names:
                (folder / name).unlink(missing_ok=True)
        for name in names:
            _register(folder / name)
            os.replace(staged / name, folder / name)
        _fsync_dir(folder)
    return names


def _register(path: Path) -> None:
    from mixvae.runs.manifest import own

    own(path.parent, path.name)


# ----------------------------------------------------------------------------- digests


def _feed(h: Any, obj: Any) -> None:
    if isinstance(obj, torch.Tensor):
        t = obj.detach().cpu().contiguous()
        h.update(f"T{t.dtype}{tuple(t.shape)}".encode())
        if t.numel():
            h.update(t.reshape(-1).view(torch.uint8).numpy().tobytes())
    elif isinstance(obj, dict):
        h.update(f"D{len(obj)}".encode())
        for k in sorted(obj, key=repr):
            h.update(repr(k).encode())
            _feed(h, obj[k])
    elif isinstance(obj, list | tuple):
        h.update(f"L{len(obj)}".encode())
        for v in obj:
            _feed(h, v)
    else:
        h.update(f"{type(obj).__name__}:{obj!r};".encode())


def digest(obj: Any) -> str:
    """SHA-256 of a checkpoint payload's content (tensors by dtype, shape and bytes)."""
    h = hashlib.sha256()
    _feed(h, obj)
    return h.hexdigest()
