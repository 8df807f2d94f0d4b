"""Which embedder serves, and the vector collection it made.

A generation is a model and the Chroma collection embedded with it. Generation 0 is the
configured model (`embed_model`, else the bundled one) with the original collection; each
activated tuned model gets the next number, a copy of its files under
`data/models/generations/N/` and its own collection. `data/models/active.json` names the current
generation and the previous one (what `rollback` returns to); it is replaced atomically, so a
reader sees one or the other, never half of each. This module imports nothing heavy: the
composition root reads it on every start."""

from __future__ import annotations

import json
import os
import shutil
import time
from dataclasses import asdict, dataclass
from pathlib import Path

from retriever.store import COLLECTION

STATE_FILE = Path("models") / "active.json"
GENERATIONS_DIR = Path("models") / "generations"


class GenerationError(RuntimeError):
    pass


@dataclass(frozen=True)
class Generation:
    number: int
    model: str  # relative to the data dir; empty: the configured/bundled model
    collection: str
    source: str = ""  # the folder it was activated from
    activated_at: float = 0.0

    def model_path(self, data_dir: Path) -> Path | None:
        return data_dir / self.model if self.model else None

    def describe(self) -> str:
        if self.number == 0:
            return "generation 0 (the configured embedder)"
        return f"generation {self.number} (tuned, from {self.source})"


BASE = Generation(0, "", COLLECTION)


def is_model_dir(path: Path) -> bool:
    return (path / "modules.json").is_file() or (path / "config.json").is_file()


def model_dir_of(path: Path) -> Path:
    """A sentence-transformers folder, or a `tune embedder` output folder holding one."""
    if (path / "model").is_dir() and is_model_dir(path / "model"):
        return path / "model"
    if path.is_dir() and is_model_dir(path):
        return path
    raise GenerationError(f"{path} is not a sentence-transformers model folder")


class Generations:
    def __init__(self, data_dir: Path) -> None:
        self.data_dir = data_dir
        self.state_path = data_dir / STATE_FILE

    def read(self) -> tuple[Generation, Generation | None]:
        """(current, previous); generation 0 and no previous when nothing was activated."""
        if not self.state_path.exists():
            return BASE, None
        state = json.loads(self.state_path.read_text(encoding="utf-8"))
        previous = state.get("previous")
        return Generation(**state["current"]), Generation(**previous) if previous else None

    @property
    def current(self) -> Generation:
        return self.read()[0]

    def write(self, current: Generation, previous: Generation | None) -> None:
        self.state_path.parent.mkdir(parents=True, exist_ok=True)
        tmp = self.state_path.with_suffix(".tmp")
        body = {"current": asdict(current), "previous": asdict(previous) if previous else None}
        tmp.write_text(json.dumps(body, indent=2), encoding="utf-8")
        os.replace(tmp, self.state_path)  # atomic: readers see the old or the new pointer

    def next_number(self) -> int:
        current, previous = self.read()
        used = [current.number, previous.number if previous else 0]
        folder = self.data_dir / GENERATIONS_DIR
        if folder.is_dir():
            used += [int(p.name) for p in folder.iterdir() if p.name.isdigit()]
        return max(used) + 1

    def install(self, source: Path) -> Generation:
        """Copy a model into the data dir as a new generation (not yet active): the active
        model never changes under the server even if its source folder is retrained."""
        model = model_dir_of(source)
        number = self.next_number()
        relative = GENERATIONS_DIR / str(number)
        target = self.data_dir / relative
        shutil.rmtree(target, ignore_errors=True)
        shutil.copytree(model, target, ignore=shutil.ignore_patterns("checkpoint-*", "*.partial"))
        return Generation(
            number, str(relative), f"{COLLECTION}_g{number}", str(source.resolve()), time.time()
        )

    def discard(self, keep: set[int]) -> list[int]:
        """Delete the model copies of generations not in `keep`; returns their numbers."""
        folder = self.data_dir / GENERATIONS_DIR
        removed = []
        if folder.is_dir():
            for path in folder.iterdir():
                if path.name.isdigit() and int(path.name) not in keep:
                    shutil.rmtree(path, ignore_errors=True)
                    removed.append(int(path.name))
        return sorted(removed)
