"""(query, passage) training pairs: read/written as JSONL, built from a BEIR folder's qrels, or
made from the index itself (titles and headings as queries for their sections)."""

from __future__ import annotations

import hashlib
import json
import random
import re
from collections.abc import Iterable, Iterator
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from retriever.types import Chunk

# Headings that name a kind of section, not its subject: useless as queries.
GENERIC_HEADINGS = frozenset(
    [
        "table of contents",
        "executive summary",
        "further reading",
        "see also",
        "general information",
        "document history",
        "revision history",
        "change log",
        "contact information",
        "frequently asked questions",
        "untitled document",
    ]
)
_WORD = re.compile(r"[^\W\d_]{2,}", re.UNICODE)


@dataclass(frozen=True)
class Pair:
    """A query and a passage that answers it. `passage_id` groups passages for evaluation;
    `source` says where the pair came from (labels, title, heading, question)."""

    query: str
    passage: str
    passage_id: str = ""
    source: str = "labelled"

    @property
    def key(self) -> str:
        return self.passage_id or hashlib.sha256(self.passage.encode()).hexdigest()[:16]


def read_pairs(path: Path) -> list[Pair]:
    """Pairs from a JSONL file: one `{"query": ..., "passage": ...}` object a line
    (`passage_id` and `source` optional)."""
    pairs = []
    with path.open(encoding="utf-8") as fh:
        for n, line in enumerate(fh, 1):
            if not line.strip():
                continue
            try:
                row: dict[str, Any] = json.loads(line)
                query, passage = str(row["query"]).strip(), str(row["passage"]).strip()
            except (ValueError, KeyError, TypeError) as exc:
                raise ValueError(
                    f'{path}:{n}: expected {{"query": ..., "passage": ...}} ({exc})'
                ) from None
            if query and passage:
                pid = str(row.get("passage_id") or "")
                pairs.append(Pair(query, passage, pid, str(row.get("source") or "labelled")))
    if not pairs:
        raise ValueError(f"{path}: no (query, passage) pairs")
    return pairs


def write_pairs(path: Path, pairs: Iterable[Pair]) -> int:
    path.parent.mkdir(parents=True, exist_ok=True)
    n = 0
    with path.open("w", encoding="utf-8") as fh:
        for pair in pairs:
            fh.write(json.dumps(asdict(pair), ensure_ascii=False) + "\n")
            n += 1
    return n


def _jsonl(path: Path) -> Iterator[dict[str, Any]]:
    with path.open(encoding="utf-8") as fh:
        for line in fh:
            if line.strip():
                yield json.loads(line)


def pairs_from_beir(folder: Path, split: str = "train") -> list[Pair]:
    """One pair per positive qrel of `split`: the query text and the document as the index
    holds it (title, newline, text)."""
    qrels_file = folder / "qrels" / f"{split}.tsv"
    corpus_file, queries_file = folder / "corpus.jsonl", folder / "queries.jsonl"
    for needed in (qrels_file, corpus_file, queries_file):
        if not needed.is_file():
            raise FileNotFoundError(f"not a BEIR folder with a {split} split: {needed} is missing")
    wanted: list[tuple[str, str]] = []
    with qrels_file.open(encoding="utf-8") as fh:
        for n, line in enumerate(fh):
            parts = line.rstrip("\n").split("\t")
            if len(parts) < 3 or (n == 0 and not parts[2].lstrip("-").isdigit()):
                continue  # header
            if int(parts[2]) > 0:
                wanted.append((parts[0], parts[1]))
    queries = {str(q["_id"]): str(q["text"]) for q in _jsonl(queries_file)}
    needed_docs = {doc for _, doc in wanted}
    documents = {}
    for row in _jsonl(corpus_file):
        if str(row["_id"]) in needed_docs:
            title, text = str(row.get("title") or ""), str(row.get("text") or "")
            documents[str(row["_id"])] = f"{title}\n{text}" if title else text
    return [
        Pair(queries[q], documents[d], d, "labelled")
        for q, d in wanted
        if q in queries and d in documents
    ]


def informative(query: str) -> bool:
    """A heading or title worth asking: two or more words, not a generic section name."""
    words = _WORD.findall(query.lower())
    return len(words) >= 2 and " ".join(words) not in GENERIC_HEADINGS


def structure_pairs(chunks: Iterable[Chunk]) -> list[Pair]:
    """Titles as queries for a document's first chunk, the last heading of a section as the
    query for the section's first chunk. The passage is the chunk's own text, without the
    title and headings the index puts before it (or the query would be in the passage)."""
    pairs: list[Pair] = []
    seen: set[tuple[str, str]] = set()
    for chunk in sorted(chunks, key=lambda c: (c.document_id, c.index)):
        candidates = []
        if chunk.title:
            candidates.append((chunk.title, "title", chunk.document_id))
        if chunk.headings:
            section = f"{chunk.document_id}\x00{chunk.heading_path}"
            candidates.append((chunk.headings[-1], "heading", section))
        for query, source, scope in candidates:
            query = " ".join(query.split())
            if (scope, source) in seen or not informative(query) or len(chunk.text) < 40:
                continue
            seen.add((scope, source))
            pairs.append(Pair(query, chunk.text, chunk.id, source))
    return pairs


def split_heldout(
    pairs: list[Pair], fraction: float = 0.1, seed: int = 13, most: int = 300
) -> tuple[list[Pair], list[Pair]]:
    """(train, held out): whole queries are held out (every pair of a held-out query), so the
    evaluation never sees a query the model was trained on."""
    queries = sorted({p.query for p in pairs})
    random.Random(seed).shuffle(queries)
    n = min(most, int(len(queries) * fraction))
    if n == 0 and len(queries) >= 5:
        n = 1
    held = set(queries[:n])
    return [p for p in pairs if p.query not in held], [p for p in pairs if p.query in held]


def sample_chunks(chunks: list[Chunk], n: int, seed: int = 13) -> list[Chunk]:
    """`n` chunks spread over documents (at most one per document while documents last)."""
    rng = random.Random(seed)
    by_document: dict[str, list[Chunk]] = {}
    for chunk in chunks:
        by_document.setdefault(chunk.document_id, []).append(chunk)
    groups = list(by_document.values())
    rng.shuffle(groups)
    for group in groups:
        rng.shuffle(group)
    picked: list[Chunk] = []
    depth = 0
    while len(picked) < n and any(depth < len(g) for g in groups):
        picked += [g[depth] for g in groups if depth < len(g)][: n - len(picked)]
        depth += 1
    return picked
