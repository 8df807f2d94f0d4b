"""Old model vs new on the held-out pairs: each held-out query ranks a corpus of passages (its
own and every other pair's), and nDCG@10, Recall@10 and MRR@10 say how well its passages come
first."""

from __future__ import annotations

import random
from collections.abc import Sequence
from typing import Any

import numpy as np

from retriever.embedder import Embedder
from retriever.metrics import mrr_at_k, ndcg_at_k, recall_at_k
from retriever.tuning.pairs import Pair

MAX_CORPUS = 3000  # passages ranked per query; the held-out ones are always in


def heldout_corpus(
    heldout: Sequence[Pair], others: Sequence[Pair], most: int = MAX_CORPUS, seed: int = 13
) -> dict[str, str]:
    """Passages by key: every held-out passage, then a sample of the others as distractors."""
    corpus = {p.key: p.passage for p in heldout}
    rest = sorted({p.key: p.passage for p in others if p.key not in corpus}.items())
    random.Random(seed).shuffle(rest)
    corpus.update(rest[: max(0, most - len(corpus))])
    return corpus


def rank_metrics(
    embedder: Embedder, heldout: Sequence[Pair], corpus: dict[str, str]
) -> dict[str, float]:
    relevant: dict[str, dict[str, int]] = {}
    for pair in heldout:
        relevant.setdefault(pair.query, {})[pair.key] = 1
    keys = list(corpus)
    passages = embedder.embed([corpus[k] for k in keys])
    queries = list(relevant)
    vectors = embedder.embed(queries)
    scores = vectors @ passages.T  # normalized: cosine
    totals = {"ndcg@10": 0.0, "recall@10": 0.0, "mrr@10": 0.0}
    for row, query in zip(scores, queries, strict=True):
        ranked = [keys[i] for i in np.argsort(-row)[:10]]
        totals["ndcg@10"] += ndcg_at_k(ranked, relevant[query], 10)
        totals["recall@10"] += recall_at_k(ranked, relevant[query], 10)
        totals["mrr@10"] += mrr_at_k(ranked, relevant[query], 10)
    n = max(1, len(queries))
    return {name: round(total / n, 4) for name, total in totals.items()}


def compare(
    old: Embedder, new: Embedder, heldout: Sequence[Pair], train: Sequence[Pair]
) -> dict[str, Any]:
    corpus = heldout_corpus(heldout, train)
    return {
        "queries": len({p.query for p in heldout}),
        "corpus": len(corpus),
        "old": rank_metrics(old, heldout, corpus),
        "new": rank_metrics(new, heldout, corpus),
    }
