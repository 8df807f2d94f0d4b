"""Heading-aware chunking, with sizes counted in the embedder's own tokens."""

from __future__ import annotations

import functools
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from langchain_text_splitters import RecursiveCharacterTextSplitter

from ingest.loaders import Element
from retriever.types import Chunk, chunk_id, heading_context

# Room kept for the title/heading prefix that is embedded with each chunk.
MAX_CONTEXT_TOKENS = 48
MIN_BODY_TOKENS = 32
# A passage's size in tokens is also at least its characters / this: prose is 4 to 6 characters
# a token, but the tokenizer reads a word of any length it does not know (over 100 characters)
# as one token, so a document of one long word made one passage of any size, which every
# answer that found it checked whole.
MAX_CHARS_PER_TOKEN = 16


@dataclass
class Section:
    headings: tuple[str, ...]
    parts: list[tuple[str, int | None]]  # (text, page) in reading order

    def text_and_offsets(self) -> tuple[str, list[tuple[int, int | None]]]:
        offsets: list[tuple[int, int | None]] = []
        pieces: list[str] = []
        position = 0
        for text, page in self.parts:
            offsets.append((position, page))
            pieces.append(text)
            position += len(text) + 2
        return "\n\n".join(pieces), offsets


def sections(elements: Sequence[Element]) -> list[Section]:
    """Group body elements under the heading path they belong to.

    A heading followed by no body of its own (a slide title alone, an empty section) is kept
    as text, so its words stay searchable.
    """
    result: list[Section] = []
    for i, element in enumerate(elements):
        if element.is_heading:
            path = (*element.headings, element.text)
            following = elements[i + 1] if i + 1 < len(elements) else None
            if following is not None and following.headings[: len(path)] == path:
                continue
            text = element.text
            headings = element.headings
        else:
            text, headings = element.text, element.headings
        if result and result[-1].headings == headings:
            result[-1].parts.append((text, element.page))
        else:
            result.append(Section(headings, [(text, element.page)]))
    return result


class Chunker:
    def __init__(
        self,
        count_tokens: Callable[[str], int],
        max_tokens: int,
        chunk_tokens: int = 200,
        overlap_tokens: int = 32,
        chars_per_token: int | None = MAX_CHARS_PER_TOKEN,
    ) -> None:
        # The splitter measures every piece twice (to split, then to merge) and headings
        # repeat across sections: a small cache halves the tokenizer calls.
        self.count_tokens = functools.lru_cache(maxsize=4096)(count_tokens)
        # [CLS] and [SEP] take two of the model's positions.
        self.max_tokens = max_tokens - 2
        self.chunk_tokens = min(chunk_tokens, self.max_tokens)
        self.overlap_tokens = min(overlap_tokens, self.chunk_tokens // 2)
        self.chars_per_token = chars_per_token

    def _length(self, text: str) -> int:
        """A piece's size for the splitter: its tokens, or more for a piece of few, long ones."""
        tokens = self.count_tokens(text)
        if self.chars_per_token is None:
            return tokens
        return max(tokens, -(-len(text) // self.chars_per_token))

    def _splitter(self, size: int) -> RecursiveCharacterTextSplitter:
        return RecursiveCharacterTextSplitter(
            chunk_size=size,
            chunk_overlap=min(self.overlap_tokens, size // 2),
            length_function=self._length,
            separators=["\n\n", "\n", ". ", "; ", ", ", " ", ""],
            keep_separator="end",
            add_start_index=True,
        )

    def _fit_context(self, title: str, headings: tuple[str, ...]) -> tuple[str, ...]:
        """Drop the outermost headings until the prefix fits its token allowance."""
        kept = headings
        while kept and self.count_tokens(heading_context(title, kept)) > MAX_CONTEXT_TOKENS:
            kept = kept[1:]
        return kept

    def chunk(
        self,
        elements: Sequence[Element],
        document_id: str,
        path: str,
        title: str,
        collection: str,
    ) -> list[Chunk]:
        chunks: list[Chunk] = []
        for section in sections(elements):
            headings = self._fit_context(title, section.headings)
            prefix_tokens = self.count_tokens(heading_context(title, headings)) + 1
            size = max(MIN_BODY_TOKENS, min(self.chunk_tokens, self.max_tokens - prefix_tokens))
            text, offsets = section.text_and_offsets()
            for doc in self._splitter(size).create_documents([text]):
                body = doc.page_content.strip()
                if not body:
                    continue
                start = int(doc.metadata.get("start_index", 0))
                page = next((p for off, p in reversed(offsets) if off <= start), None)
                index = len(chunks)
                chunks.append(
                    Chunk(
                        id=chunk_id(document_id, index, body),
                        document_id=document_id,
                        index=index,
                        text=body,
                        path=path,
                        title=title,
                        collection=collection,
                        page=page,
                        headings=headings,
                    )
                )
        return chunks
