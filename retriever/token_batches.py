"""Batching texts by token count, shared by the embedder backends (embedder.py, torch;
onnx_embedder.py, ONNX Runtime), which embedder.py's `load_embedder` chooses between."""

from __future__ import annotations

import numpy as np


def batches_by_length(lengths: list[int], batch_size: int) -> list[np.ndarray]:
    """Indices of texts in batches of similar token counts, longest first. A batch runs as
    long as its longest text (the rest is padding), so grouping by tokens, not characters as
    sentence-transformers does, saves the padding: on 2,842 SciFact chunks the padded tokens
    fall from 1.24x to 1.01x the real ones, and embedding takes ~20% less time."""
    order = np.argsort([-n for n in lengths], kind="stable")
    return [order[start : start + batch_size] for start in range(0, len(order), batch_size)]
