"""Plain data passed between layers."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field


def heading_context(title: str, headings: tuple[str, ...]) -> str:
    """Title and heading path, without repeating a heading that is the title."""
    parts = [title] if title else []
    parts += [h for h in headings if h and h not in parts]
    return " > ".join(parts)


@dataclass(frozen=True)
class Chunk:
    """A piece of a document, small enough for the embedder to read whole."""

    id: str
    document_id: str
    index: int
    text: str
    path: str
    title: str
    collection: str
    page: int | None = None
    headings: tuple[str, ...] = ()

    @property
    def heading_path(self) -> str:
        return " > ".join(self.headings)

    def embedding_text(self) -> str:
        """What the embedder and the keyword index read: context first, then the text."""
        context = heading_context(self.title, self.headings)
        return f"{context}\n{self.text}" if context else self.text

    def metadata(self) -> dict[str, str | int]:
        meta: dict[str, str | int] = {
            "document_id": self.document_id,
            "index": self.index,
            "path": self.path,
            "title": self.title,
            "collection": self.collection,
            "headings": self.heading_path,
        }
        if self.page is not None:
            meta["page"] = self.page
        return meta


def chunk_id(document_id: str, index: int, text: str) -> str:
    """Stable id: the same document, position and text always give the same id."""
    digest = hashlib.sha256(f"{document_id}\x00{index}\x00{text}".encode())
    return digest.hexdigest()[:32]


@dataclass
class Hit:
    """A retrieved chunk with its fused score and the per-retriever evidence behind it."""

    chunk: Chunk
    score: float
    dense_similarity: float | None = None
    bm25_rank: int | None = None
    dense_rank: int | None = None
    extra: dict[str, float] = field(default_factory=dict)
