"""One writer per data directory: Chroma's embedded store is thread-safe, not process-safe."""

from __future__ import annotations

import fcntl
import os
from pathlib import Path
from types import TracebackType


class DataDirBusyError(RuntimeError):
    pass


def try_flock(path: Path) -> int | None:
    """An exclusive lock on `path` (created if missing), or None when another process holds
    it. The lock lasts as long as the returned descriptor stays open."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        os.close(fd)
        return None
    return fd


class DataDirLock:
    def __init__(self, data_dir: Path, owner: str) -> None:
        self.path = data_dir / ".writer.lock"
        self.owner = owner
        self._fd: int | None = None

    def acquire(self) -> None:
        fd = try_flock(self.path)
        if fd is None:
            holder = self.path.read_text(errors="replace")[:200].strip() or "another process"
            raise DataDirBusyError(
                f"{self.path.parent} is in use by {holder}. Only one process may write to a data "
                "directory: stop it first, or add documents through the running server "
                "(POST /api/v1/documents or its inbox folder)."
            )
        os.ftruncate(fd, 0)
        os.write(fd, f"{self.owner} (pid {os.getpid()})".encode())
        self._fd = fd

    def release(self) -> None:
        if self._fd is not None:
            fcntl.flock(self._fd, fcntl.LOCK_UN)
            os.close(self._fd)
            self._fd = None

    def __enter__(self) -> DataDirLock:
        self.acquire()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.release()
