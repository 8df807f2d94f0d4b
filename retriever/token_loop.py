"""The per-token work of a generation loop, kept off the model: choosing the next token from
the logits, and turning token bytes into streamed text that never shows part of a stop string.

llama-cpp-python's own completion loop spends about 0.6 ms a token outside llama.cpp's
decode (its sampler chain copies all 49k logits into a token array and looks each one up in
the penalty history; the stop-string check detokenizes the whole completion again per token).
At 120 tokens/s that is 7% of the decode. Here the penalty touches only the tokens in the
history and the text is decoded once per token. The choices are llama.cpp's: its repetition
penalty over the last 64 generated tokens (multiply a logit <= 0, divide one > 0), then greedy
at temperature 0, else top-k 40, top-p 0.95, min-p 0.05, temperature, a draw.
"""

from __future__ import annotations

import codecs
from collections.abc import Sequence

import numpy as np

PENALTY_LAST_N = 64  # llama-cpp-python's `last_n_tokens_size`
TOP_K = 40
TOP_P = 0.95
MIN_P = 0.05


def apply_repeat_penalty(logits: np.ndarray, recent: Sequence[int], penalty: float) -> None:
    """Penalize, in place, each distinct token among the last `PENALTY_LAST_N` generated."""
    if penalty == 1.0 or not recent:
        return
    ids = list(set(recent[-PENALTY_LAST_N:]))
    values = logits[ids]
    logits[ids] = np.where(values <= 0, values * penalty, values / penalty)


def pick_token(
    logits: np.ndarray,
    recent: Sequence[int],
    repeat_penalty: float,
    temperature: float,
    rng: np.random.Generator,
) -> int:
    """The next token. `logits` is changed in place (the penalty): pass llama.cpp's own row,
    which the next decode overwrites anyway, rather than a copy of 49k floats."""
    apply_repeat_penalty(logits, recent, repeat_penalty)
    if temperature <= 0:
        return int(np.argmax(logits))  # the first of equal maxima, as llama.cpp's greedy
    top = np.argpartition(-logits, TOP_K)[:TOP_K] if logits.size > TOP_K else np.arange(logits.size)
    top = top[np.argsort(-logits[top], kind="stable")]
    scores = logits[top].astype(np.float64)
    # top-p and min-p on the distribution at temperature 1, as llama.cpp's chain orders them.
    probs = np.exp(scores - scores[0])
    probs /= probs.sum()
    keep = int(np.searchsorted(np.cumsum(probs), TOP_P) + 1)
    keep = min(keep, int(np.count_nonzero(probs >= MIN_P * probs[0])))
    scores = scores[: max(1, keep)] / temperature
    weights = np.exp(scores - scores[0])
    return int(top[rng.choice(weights.size, p=weights / weights.sum())])


class StreamedText:
    """Token bytes in, text out: UTF-8 characters split across tokens are held until whole,
    and text that could begin a stop string is held until it cannot."""

    def __init__(self, stops: Sequence[str]) -> None:
        self.stops = [s for s in stops if s]
        self._decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")
        self._held = ""
        self.stopped = False

    def add(self, piece: bytes) -> str:
        """The text that is now safe to show (empty while held); sets `stopped` at a stop."""
        self._held += self._decoder.decode(piece)
        found = [(self._held.find(s), s) for s in self.stops if s in self._held]
        if found:
            self.stopped = True
            text, self._held = self._held[: min(found)[0]], ""
            return text
        keep = self._partial_stop()
        text = self._held[: len(self._held) - keep]
        self._held = self._held[len(self._held) - keep :]
        return text

    def finish(self) -> str:
        """What is still held, once generation has ended without a stop string."""
        text = "" if self.stopped else self._held + self._decoder.decode(b"", final=True)
        self._held = ""
        return text

    def _partial_stop(self) -> int:
        """The length of the longest end of the held text that begins some stop string."""
        longest = 0
        for stop in self.stops:
            for size in range(min(len(stop) - 1, len(self._held)), longest, -1):
                if self._held.endswith(stop[:size]):
                    longest = size
                    break
        return longest
