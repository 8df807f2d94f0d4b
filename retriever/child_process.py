"""A child process with a pipe to it, started and stopped one way: the parser workers
(`ingest/workers.py`) and the model process (`retriever/model_process.py`) are both such."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any


class PipedChild:
    """`target(conn, *args)` in a daemon process of `context`; `self.conn` is this side."""

    def __init__(
        self, context: Any, target: Callable[..., None], args: tuple[Any, ...], name: str
    ) -> None:
        self.conn, child = context.Pipe()
        self.process = context.Process(target=target, args=(child, *args), daemon=True, name=name)
        self.process.start()
        child.close()  # only the child holds its end: its death closes the pipe for us

    def kill(self) -> int | None:
        """Kill the child if it still runs, close the pipe; its exit code."""
        if self.process.is_alive():
            self.process.kill()
        self.process.join(timeout=5)
        self.conn.close()
        return self.process.exitcode
