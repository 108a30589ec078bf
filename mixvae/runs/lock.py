"""An exclusive lock on a run folder for every command that writes to it.

``RUN/.lock`` is created with ``O_CREAT | O_EXCL`` (atomic on every local and
network file system) and holds the owner's PID, host, command and start
time.  A second process gets one line naming the first.  A lock whose owner
no longer runs (same host, the PID is gone: a ``kill -9`` or a power cut) is
reported as stale with the command that clears it, as git does with its
``index.lock``: a PID may be reused, so mixvae never removes it by itself.
The lock is re-entrant within one process (``train`` inside a script that
already holds it).
"""

from __future__ import annotations

import contextlib
import errno
import json
import os
import socket
import sys
import time
from pathlib import Path
from types import TracebackType

from mixvae.errors import RunFolderError

LOCK = ".lock"
_HELD: dict[Path, int] = {}  # the folders this process holds, with their nesting depth


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # it exists, owned by another user
        return True
    return True


def _owner_text(info: dict[str, object]) -> str:
    return f"PID {info.get('pid')} on host {info.get('host')} ({info.get('command')}, since {info.get('started')})"


def _write_new(path: Path, info: dict[str, object], exclusive: bool) -> None:
    """Write ``info`` to ``path`` durably; ``exclusive``: fail if it exists (O_EXCL)."""
    flags = os.O_WRONLY | os.O_CREAT | (os.O_EXCL if exclusive else os.O_TRUNC)
    fd = os.open(path, flags, 0o644)
    try:
        os.write(fd, json.dumps(info).encode())
        os.fsync(fd)
    except OSError:
        os.close(fd)
        path.unlink(missing_ok=True)
        raise
    os.close(fd)


class RunLock:
    """``with RunLock(run_dir, "train"):`` holds ``run_dir/.lock``; the folder must exist."""

    def __init__(self, run_dir: str | Path, command: str) -> None:
        self.run_dir = Path(run_dir)
        self.key = self.run_dir.resolve()
        self.command = command
        self.path = self.run_dir / LOCK

    def acquire(self) -> RunLock:
        if self.key in _HELD:
            _HELD[self.key] += 1
            return self
        info = {
            "pid": os.getpid(),
            "host": socket.gethostname(),
            "command": f"mixvae {self.command}",
            "started": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
            "argv": sys.argv[1:][:20],
        }
        # The owner's record is written to a private file first and then hard-linked
        # to .lock (atomic, and fails if .lock exists), so that a second process never
        # sees a lock without its owner; where the file system has no hard links,
        # O_EXCL creates .lock and a reader waits briefly for its content.
        tmp = self.run_dir / f"{LOCK}.{os.getpid()}.{socket.gethostname()}"
        try:
            _write_new(tmp, info, exclusive=False)
            try:
                os.link(tmp, self.path)
            except FileExistsError:
                raise RunFolderError(self._held_message()) from None
            except OSError as e:
                if e.errno not in (errno.EPERM, errno.ENOTSUP, errno.EOPNOTSUPP, errno.EXDEV, errno.EMLINK):
                    raise
                self._create_exclusive(info)
        except OSError as e:
            if e.errno in (errno.EACCES, errno.EPERM, errno.EROFS):
                raise RunFolderError(
                    f"cannot write to the run folder {self.run_dir} ({e.strerror}); mixvae {self.command} "
                    "writes into it: make it writable or copy the run folder somewhere writable"
                ) from None
            raise
        finally:
            with contextlib.suppress(OSError):
                tmp.unlink()
        _HELD[self.key] = 1
        return self

    def _create_exclusive(self, info: dict[str, object]) -> None:
        try:
            _write_new(self.path, info, exclusive=True)
        except FileExistsError:
            raise RunFolderError(self._held_message()) from None

    def _held_message(self) -> str:
        info: object = None
        for _ in range(20):  # an O_EXCL lock may be a moment away from its content
            try:
                info = json.loads(self.path.read_text())
                pid = int(info["pid"])  # type: ignore[index]
                break
            except FileNotFoundError:
                return f"{self.run_dir} was in use a moment ago (its lock has just been released); run the command again"
            except (OSError, ValueError, KeyError, TypeError):
                info = None
                time.sleep(0.05)
        if not isinstance(info, dict):
            return (
                f"{self.path} exists but names no owner (a process killed while taking the lock?); "
                f"if no mixvae process uses {self.run_dir}, clear it with: rm {self.path}"
            )
        if info.get("host") == socket.gethostname() and not _alive(pid):
            return (
                f"{self.path} is a stale lock of {_owner_text(info)}, which no longer runs (killed?); "
                f"if no mixvae process uses {self.run_dir}, clear it with: rm {self.path}"
            )
        return f"{self.run_dir} is in use by {_owner_text(info)}; wait until it ends or choose another folder"

    def release(self) -> None:
        depth = _HELD.get(self.key, 0)
        if depth > 1:
            _HELD[self.key] = depth - 1
            return
        if depth == 1:
            del _HELD[self.key]
            with contextlib.suppress(OSError):
                self.path.unlink()

    def __enter__(self) -> RunLock:
        return self.acquire()

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.release()


def holds(run_dir: str | Path) -> bool:
    """Whether this process holds the lock of ``run_dir``."""
    return Path(run_dir).resolve() in _HELD
