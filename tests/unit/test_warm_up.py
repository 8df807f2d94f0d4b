"""Start-up warm-up: models loaded, the vector index queried once, the system prompt primed."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from config.settings import Settings
from retriever.components import Components
from retriever.embedder import SentenceTransformerEmbedder
from retriever.generation import FakeGenerator, Message
from retriever.prompt import SOURCES, SYSTEM_PROMPT, build_prompt, fixed_prefix
from retriever.types import Chunk, Hit
from server.app import create_app


class PrimedGenerator(FakeGenerator):
    """A fake model that records what it was asked to keep in its cache."""

    def __init__(self) -> None:
        super().__init__()
        self.primed: list[list[Message]] = []

    def prime(self, messages: list[Message]) -> None:
        self.primed.append(messages)


class CountingEmbedder:
    def __init__(self, inner: SentenceTransformerEmbedder) -> None:
        self.inner, self.dimension, self.max_tokens = inner, inner.dimension, inner.max_tokens
        self.identity = inner.identity
        self.calls: list[list[str]] = []

    def embed(self, texts: list[str]) -> np.ndarray:
        self.calls.append(texts)
        return self.inner.embed(texts)

    def count_tokens(self, text: str) -> int:
        return self.inner.count_tokens(text)


def _settings(tmp_path: Path) -> Settings:
    return Settings(data_dir=tmp_path / "data", llm_backend="fake", watch="off", parse_workers=0)


def test_app_start_warms_models_index_and_prompt_cache(
    tmp_path: Path, embedder: SentenceTransformerEmbedder
) -> None:
    counting, model = CountingEmbedder(embedder), PrimedGenerator()
    components = Components(_settings(tmp_path), embedder=counting, generator=model)
    chunk = Chunk("c1", "d1", 0, "Parental leave lasts 16 weeks.", "p", "Leave", "default")
    components.store.upsert([chunk], embedder.embed([chunk.embedding_text()]))
    components.keyword.add([chunk])

    create_app(components.settings, components, load="now")

    assert model.primed == [fixed_prefix()]
    assert len(counting.calls) == 2  # the model's warm-up, then a search that loads the index
    assert components.serving.built  # the serving index, its searcher included


def test_warm_up_on_an_empty_index_skips_the_search(
    tmp_path: Path, embedder: SentenceTransformerEmbedder
) -> None:
    counting, model = CountingEmbedder(embedder), PrimedGenerator()
    components = Components(_settings(tmp_path), embedder=counting, generator=model)
    components.warm_up()
    assert len(counting.calls) == 1 and model.primed


def test_every_prompt_starts_with_the_primed_prefix() -> None:
    chunk = Chunk("c1", "d1", 0, "Parental leave lasts 16 weeks.", "p", "Leave", "default")
    built = build_prompt("How long?", [Hit(chunk, 1.0)], lambda t: len(t.split()), 2048, 200)
    system, user = fixed_prefix()
    assert built.messages[0] == system == {"role": "system", "content": SYSTEM_PROMPT}
    assert built.messages[1]["content"].startswith(user["content"]) and user["content"] == SOURCES
