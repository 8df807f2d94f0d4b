"""One writer per data directory: Chroma's embedded store is thread-safe, not process-safe."""

from __future__ import annotations

import fcntl
import os
from pathlib import Path
from types import TracebackType

from config.settings import Settings


class DataDirBusyError(RuntimeError):
    """The data directory is locked by `holder`; `server_url` is set when the holder is a
    running `enclave serve`, that commands may hand their work to."""

    def __init__(self, message: str, holder: str = "", server_url: str | None = None) -> None:
        super().__init__(message)
        self.holder = holder
        self.server_url = server_url


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
    """The lock file holds who took it (`owner (pid N)`) and, for a server, its URL on a
    second line: what a `DataDirBusyError` tells the next process."""

    def __init__(self, data_dir: Path, owner: str, server_url: str | None = None) -> None:
        self.path = data_dir / ".writer.lock"
        self.owner = owner
        self.server_url = server_url
        self._fd: int | None = None

    def acquire(self) -> None:
        fd = try_flock(self.path)
        if fd is None:
            lines = self.path.read_text(errors="replace")[:400].splitlines()
            holder = lines[0][:200].strip() if lines else ""
            url = lines[1].strip() if len(lines) > 1 else ""
            raise DataDirBusyError(
                f"{self.path.parent} is in use by {holder or 'another process'}. Only one "
                "process may write to a data directory: stop it first, or add documents "
                "through the running server (POST /api/v1/documents or its inbox folder).",
                holder,
                url if url.startswith(("http://", "https://")) else None,
            )
        os.ftruncate(fd, 0)
        text = f"{self.owner} (pid {os.getpid()})"
        if self.server_url:
            text += f"\n{self.server_url}"
        os.write(fd, text.encode())
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


def lock_or_server(settings: Settings, purpose: str) -> DataDirLock | str:
    """The data directory's write lock, taken; or, when a running `enclave serve` holds it,
    that server's URL, for the command to hand its work to. Any other holder: the error."""
    lock = DataDirLock(settings.data_dir, purpose)
    try:
        lock.acquire()
    except DataDirBusyError as busy:
        if busy.server_url is None:
            raise
        return busy.server_url
    return lock
