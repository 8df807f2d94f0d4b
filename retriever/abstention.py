"""When the retrieved passages are too weak to answer from: the checks that let Enclave say
"not in the documents" without asking the model. Cheapest first; each has a threshold in the
settings (0 turns it off) and a reason a person can read."""

from __future__ import annotations

import re
import threading
from collections import OrderedDict
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np

from retriever.embedder import Embedder
from retriever.grounding import (
    MIN_SENTENCE_CHARS,
    focus,
    identifiers,
    key_term_coverage,
    lower_words,
    names_in,
    question_coverage,
    spelt_alike,
    split_sentences,
)
from retriever.search import SearchResult
from retriever.types import Hit
from retriever.word_roles import wording_words

# Words -> their weight (IDF) over the chunks of the collections given (None: all). Only the
# collections the question was searched in: one it may not read must not move its weights.
TermWeights = Callable[[list[str], Sequence[str] | None], dict[str, float]]
# Words -> those no chunk of the collections given holds (the same rule of collections).
Unmentioned = Callable[[list[str], Sequence[str] | None], list[str]]
# How close a sentence must come to the question (cosine) for the question's own verbs and
# adjectives that no passage holds to weigh less in the key-term check.
WORDING_SIMILARITY = 0.5
# Sentence vectors kept for reuse within and across answers (384 floats each: ~3 MB).
_REMEMBERED_VECTORS = 2048


@dataclass(frozen=True)
class AbstentionThresholds:
    min_relevance: float = 0.0  # best dense cosine of a passage
    min_coverage: float = 0.0  # share of the question's words found in the passages
    min_key_coverage: float = 0.0  # IDF-weighted share of its key terms in one passage
    min_sentence_similarity: float = 0.0  # best cosine of a single sentence
    names_must_occur: bool = False  # a name the question mentions is in the documents
    reworded_similarity: float = 0.0  # a sentence this close outweighs missing words (0: off)


class EvidenceCheck:
    def __init__(
        self,
        thresholds: AbstentionThresholds,
        embedder: Embedder,
        term_weights: TermWeights,
        focus_sentences: int = 3,
        unmentioned: Unmentioned | None = None,
    ) -> None:
        self.thresholds = thresholds
        self.embedder = embedder
        self.term_weights = term_weights
        self.focus_sentences = focus_sentences or 3
        self.unmentioned = unmentioned
        # Texts embedded lately: the same question and sentences are weighed here before the
        # model and again when the best extract is chosen after it (`cosines`).
        self._vectors: OrderedDict[str, np.ndarray] = OrderedDict()
        self._vectors_lock = threading.Lock()

    def cosines(self, question: str, sentences: Sequence[str]) -> np.ndarray:
        """The embedding cosine of each sentence with the question; texts embedded by a recent
        call are not embedded again."""
        texts = [question, *sentences]
        with self._vectors_lock:
            known = {t: self._vectors[t] for t in texts if t in self._vectors}
        missing = list(dict.fromkeys(t for t in texts if t not in known))
        if missing:
            fresh = dict(zip(missing, self.embedder.embed(missing), strict=True))
            known.update(fresh)
            with self._vectors_lock:
                self._vectors.update(fresh)
                while len(self._vectors) > _REMEMBERED_VECTORS:
                    self._vectors.popitem(last=False)
        vectors = np.stack([known[t] for t in texts])
        return vectors[1:] @ vectors[0]

    def weakness(self, question: str, result: SearchResult) -> str | None:
        """Why the passages cannot answer the question, or None if they may."""
        t = self.thresholds
        if not result.hits:
            return "nothing in the documents matches the question"
        passages = [h.chunk.embedding_text() for h in result.hits]
        # An identifier the question names (`asn1_der_decoding`, `POL-OPS-007`) found whole in
        # a passage outweighs the embedder, which knows such names only as unknown pieces.
        named = identifiers(question)
        exact = bool(named) and any(named & identifiers(p) for p in passages)
        best = result.best_dense_similarity
        if best is not None and best < t.min_relevance and not exact:
            return f"no passage is close to the question (best cosine {best:.2f})"
        if t.names_must_occur and self.unmentioned is not None:
            missing = self.unknown_names(question, result, passages, named)
            if missing:
                quoted = ", ".join(f'"{name}"' for name in missing)
                return f"the documents do not mention {quoted}"
        similarity: float | None = None
        unshared = self._unshared_words(question, result, passages)
        if unshared is not None:
            if not t.reworded_similarity:
                return unshared
            # A person rewords ("files git isn't tracking yet" for "untracked files"): a
            # sentence as close in meaning as one that says it outweighs the missing words.
            similarity = self.best_sentence_similarity(question, result.hits)
            if similarity < t.reworded_similarity:
                return unshared
        # Last, as it costs an embedding pass (made above when the words fell short).
        if t.min_sentence_similarity and not exact:
            if similarity is None:
                similarity = self.best_sentence_similarity(question, result.hits)
            if similarity < t.min_sentence_similarity:
                return f"no sentence answers the question (best cosine {similarity:.2f})"
        return None

    def _unshared_words(
        self, question: str, result: SearchResult, passages: Sequence[str]
    ) -> str | None:
        """Why the passages do not share enough of the question's words, or None if they do:
        too few of its words in all of them, or too little of its key terms in any one."""
        t = self.thresholds
        if t.min_coverage and question_coverage(question, passages) < t.min_coverage:
            return "most of the question's words occur in no passage"
        if t.min_key_coverage:

            def weights(words: list[str]) -> dict[str, float]:
                return self.term_weights(words, result.collections)

            coverage = key_term_coverage(question, passages, weights)
            if coverage < t.min_key_coverage and self._near_in_meaning(question, result):
                # Tagging the question costs a model load, so only when it falls short.
                coverage = key_term_coverage(question, passages, weights, wording_words(question))
            if coverage < t.min_key_coverage:
                return f"no passage holds what the question is about ({coverage:.0%} of it)"
        return None

    def _near_in_meaning(self, question: str, result: SearchResult) -> bool:
        """Whether a sentence comes near enough the question for its missing verbs and
        adjectives to be taken for the asker's wording (`WORDING_SIMILARITY`): a question on a
        subject the passages only touch ("How long does nscd cache successful lookups?"
        against lsof's device cache) stays short of its key terms."""
        return self.best_sentence_similarity(question, result.hits) >= WORDING_SIMILARITY

    def unknown_names(
        self,
        question: str,
        result: SearchResult,
        passages: Sequence[str],
        codes: set[str] | frozenset[str] = frozenset(),
    ) -> list[str]:
        """The names the question mentions that no document of the searched collections
        holds, and no passage found holds misspelt ("Janpan" for "Japan"), asked of the
        keyword index once:
        - capitalized names ("Docker"), when they are half its names or more: the documents
          cannot say anything of what they never name, however near the rest of the question
          they are ("Which group controls access to the Docker daemon?" against a list of
          system groups). One unknown name beside names the documents know ("Anderw
          Hamilton") is more likely a slip of the person asking;
        - else any of the `codes` it names (`max_connections`, `macOS`, `arm64`): a name
          written as code is exact, and documents that never write it do not document it.
          A word with digits slipped in ("S08_settlement") is a mangled word, not code."""
        assert self.unmentioned is not None
        names = names_in(question)
        asked = list(dict.fromkeys([*names, *sorted(codes)]))
        if not asked:
            return []
        absent = set(self.unmentioned(asked, result.collections))
        if not absent:
            return []
        words = set().union(*map(lower_words, passages))
        unknown = [n for n in names if n in absent and not spelt_alike(n, words)]
        if unknown and 2 * len(unknown) >= len(names):
            return unknown
        return [
            code
            for code in sorted(codes)
            if code in absent and not spelt_alike(code, words) and not _mangled_word(code, words)
        ]

    def best_sentence_similarity(self, question: str, hits: Sequence[Hit]) -> float:
        """The highest cosine between the question and a sentence of the passages (the few
        per passage sharing most words with it, as the model would see them). A passage can
        be near a question as a whole (same topic) while no sentence in it answers it."""
        sentences = [
            span.text
            for hit in hits
            for span in split_sentences(focus(question, hit.chunk.text, self.focus_sentences))
            if len(span.text) >= MIN_SENTENCE_CHARS
        ]
        if not sentences:
            return 0.0
        return float(self.cosines(question, sentences).max())


def _mangled_word(code: str, words: set[str]) -> bool:
    """Whether `code` is a word of the passages with digits or underscores slipped in
    ("S08_settlement" for "settlement"), not a name written as code: its letters alone, five
    or more, spell a word of the passages, or one slip away from one."""
    letters = re.sub(r"[\d_]", "", code)
    return letters != code and len(letters) >= 5 and spelt_alike(letters, words)
