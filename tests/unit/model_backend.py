"""A model backend for the tests of the model process: it runs inside the child process
(`ModelSpec("tests.unit.model_backend:ScriptedModel", ...)`), replies as `FakeGenerator`, and
does what the test wrote in its script file before the question: `crash-after N` (N pieces,
then SIGSEGV, as llama.cpp's AMX kernels do), `hang-after N` (N pieces, then stuck in
"native code": no Python runs, so a cancel is never read), `slow` (a long reply, 20 ms a
piece) or `burst` (the same reply, as fast as it can). Every piece it hands out and how
each reply ended is appended to the record file."""

from __future__ import annotations

import os
import signal
import time
from collections.abc import Iterator
from pathlib import Path

from retriever.generation import FakeGenerator, GenerationParams, Message
from retriever.model_process import ModelProcessGenerator, ModelSpec

SCRIPTED = "tests.unit.model_backend:ScriptedModel"


class ScriptedModel(FakeGenerator):
    def __init__(
        self, script: str, record: str, name: str = "scripted", load_s: float = 0.0
    ) -> None:
        time.sleep(load_s)  # a model that takes this long to load
        super().__init__()
        self.name = name
        self.script = Path(script)
        self.record = Path(record)
        self._note(f"loaded {os.getpid()}")

    def _note(self, line: str) -> None:
        with self.record.open("a") as fh:
            fh.write(line + "\n")

    def prime(self, messages: list[Message]) -> None:
        self._note(f"primed {len(messages)}")

    def stream(self, messages: list[Message], params: GenerationParams) -> Iterator[str]:
        command = self.script.read_text().split() if self.script.exists() else []
        action, limit = (
            (command[0], int(command[1]) if len(command) > 1 else 0) if command else ("", 0)
        )
        if action in ("slow", "burst"):
            self.enqueue(" ".join(f"word{i}" for i in range(200)))
        n = 0
        try:
            for piece in super().stream(messages, params):
                if action in ("crash-after", "hang-after") and n == limit:
                    self._note(f"{action} {n}")
                    if action == "crash-after":
                        os.kill(os.getpid(), signal.SIGSEGV)
                    signal.pthread_sigmask(signal.SIG_BLOCK, [signal.SIGTERM, signal.SIGINT])
                    while True:
                        time.sleep(3600)
                if action == "slow":
                    time.sleep(0.02)
                n += 1
                self._note(f"piece {n}")
                yield piece
        finally:
            self._note(f"ended after {n}")


def scripted_process(
    folder: Path, profile: str = "fast", timeout_s: float = 60.0, self_test: bool = False
) -> ModelProcessGenerator:
    """A model process running `ScriptedModel` with its script and record files in `folder`."""
    spec = scripted_spec(folder, profile)
    generator = ModelProcessGenerator(
        spec, FakeGenerator().count_tokens, 2048, timeout_s=timeout_s, self_test=self_test
    )
    generator.hang_grace_s = 1.0
    return generator


def scripted_spec(folder: Path, profile: str = "fast") -> ModelSpec:
    return ModelSpec(
        SCRIPTED,
        {"script": str(folder / "script"), "record": str(folder / "record"), "name": profile},
        profile,
    )


def record(folder: Path) -> list[str]:
    path = folder / "record"
    return path.read_text().splitlines() if path.exists() else []
