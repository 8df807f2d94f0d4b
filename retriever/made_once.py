"""Files derived once from a model (an ONNX export, a GGUF rewrite) into the model cache.

Several processes may start at once (gunicorn workers, Celery workers, the CLI): the first
makes the file under a lock, the others wait and find it. The file appears by atomic rename,
so a crash mid-way leaves no half-written file that a later start would take for finished.
"""

from __future__ import annotations

import fcntl
import os
import tempfile
from collections.abc import Callable
from pathlib import Path


def made_once(target: Path, make: Callable[[Path], None]) -> Path:
    """`target`, made first by `make(temporary_path)` if missing. `make` writes the file at
    the path it is given (in a temporary folder beside `target`, removed afterwards)."""
    if target.is_file():
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    with (target.parent / f".{target.name}.lock").open("w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if target.is_file():  # made by another process while this one waited
            return target
        with tempfile.TemporaryDirectory(dir=target.parent, prefix=".making-") as tmp:
            out = Path(tmp) / target.name
            make(out)
            if not out.is_file():
                raise FileNotFoundError(f"nothing was written for {target.name}")
            os.replace(out, target)
    return target
