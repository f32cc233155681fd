"""One trainer per run dir: ``RUN/.lock``, held while a trainer runs.

The lock is an exclusive ``flock`` on the file (POSIX), which the kernel releases when the
holding process ends however it ends (``kill -9`` included), so a lock left by a dead process
is simply taken over; the file records the holder's pid, host and start time for the message
a second trainer gets. Where ``fcntl`` is missing (Windows) or the filesystem has no flock
(some network and FUSE filesystems), the file itself is the lock, created exclusively; one
whose pid is no longer running on this host is taken over (on Windows, where a pid cannot be
probed safely, the message says to delete the file).
"""

from __future__ import annotations

import errno
import json
import logging
import os
import socket
import time
from pathlib import Path
from types import TracebackType

from facediff.errors import FacediffError

try:
    import fcntl
except ImportError:  # Windows
    fcntl = None  # type: ignore[assignment]

log = logging.getLogger(__name__)
LOCK_FILE = ".lock"


class RunLockedError(FacediffError):
    """The run dir is being trained by another live process."""


def _alive(pid: int) -> bool:
    if os.name == "nt":  # os.kill(pid, 0) would send Ctrl-C there: assume it runs
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # someone else's process: alive
        return True
    return True


def _holder(text: str) -> dict:
    try:
        info = json.loads(text)
        return info if isinstance(info, dict) else {}
    except ValueError:
        return {}


def _describe(info: dict) -> str:
    since = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(info["since"])) \
        if isinstance(info.get("since"), (int, float)) else "an unknown time"
    return f"pid {info.get('pid', '?')} on {info.get('host', '?')} since {since}"


class RunLock:
    """``with RunLock(run_dir):`` holds the run's lock, or raises ``RunLockedError``."""

    def __init__(self, run_dir: str | Path) -> None:
        self.path = Path(run_dir) / LOCK_FILE
        self._fd: int | None = None
        self._flock = False

    def acquire(self) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        if fcntl is None or not self._acquire_flock():
            self._acquire_exclusive()
        try:
            os.ftruncate(self._fd, 0)
            os.write(self._fd, json.dumps({"pid": os.getpid(), "host": socket.gethostname(),
                                           "since": time.time()}).encode())
            os.fsync(self._fd)
        except OSError as e:
            self.release()
            raise RunLockedError(f"cannot write the lock {self.path}: {e.strerror or e}") \
                from None

    def _acquire_flock(self) -> bool:
        """Take the flock; False where the filesystem has no flock (some network and FUSE
        filesystems), so the exclusive-file lock is used instead."""
        existed = self.path.exists()
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as e:
            os.close(fd)
            if e.errno not in (errno.EWOULDBLOCK, errno.EAGAIN, errno.EACCES):
                log.warning("no flock on %s (%s): using an exclusive lock file",
                            self.path.parent, e.strerror or e)
                if not existed:  # only the empty file this attempt made
                    self.path.unlink(missing_ok=True)
                return False
            info = _holder(self.path.read_text(errors="replace"))
            raise RunLockedError(
                f"{self.path.parent} is being trained by another process ({_describe(info)}); "
                "wait for it to finish or stop it (its checkpoint is saved on Ctrl-C)"
            ) from None
        info = _holder(os.pread(fd, 4096, 0).decode(errors="replace"))
        if info.get("pid") and info.get("pid") != os.getpid():
            log.info("took over the lock of %s left by %s (no longer running)",
                     self.path.parent, _describe(info))
        self._fd, self._flock = fd, True
        return True

    def _acquire_exclusive(self) -> None:
        for _ in range(2):
            try:
                self._fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_EXCL, 0o644)
                return
            except FileExistsError:
                info = _holder(self.path.read_text(errors="replace"))
                same_host = info.get("host") == socket.gethostname()
                empty = not info  # emptied by a holder that released it (or never written)
                if empty or (same_host and isinstance(info.get("pid"), int)
                             and not _alive(info["pid"])):
                    log.info("took over the stale lock of %s left by %s", self.path.parent,
                             _describe(info))
                    self.path.unlink(missing_ok=True)
                    continue
                raise RunLockedError(
                    f"{self.path.parent} is being trained by another process "
                    f"({_describe(info)}); wait for it to finish or stop it (if none runs, "
                    f"delete {self.path})"
                ) from None
        raise RunLockedError(f"cannot take the lock {self.path}")

    def release(self) -> None:
        if self._fd is None:
            return
        fd, self._fd = self._fd, None
        if self._flock:
            os.ftruncate(fd, 0)  # a holder recorded in the file means one that died
            os.close(fd)  # closing releases the flock; the empty file stays
        else:  # the exclusive file is the lock
            os.close(fd)
            self.path.unlink(missing_ok=True)

    def __enter__(self) -> RunLock:
        self.acquire()
        return self

    def __exit__(self, kind: type[BaseException] | None, value: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.release()
