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
from collections.abc import Callable, Sequence

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


# Prompt-lookup drafting: the n-gram sizes tried, longest first. A one-token match (" the")
# predicts little, and a wrong draft costs a wider batch for nothing.
DRAFT_NGRAMS = (3, 2)
# Tokens the answer must already have copied from the match before a draft is made. On a CPU a
# batch of k+1 tokens costs far more than one token (2 tokens: about 2x, 8: about 4x, with
# SmolLM2 on 2 cores), so a draft pays only when most of it is kept, which is when the answer is
# in the middle of copying a span, not when a 3-token phrase merely recurs (measured on 30
# answer prompts: drafting at every match kept 29% of drafted tokens and ran at 0.8x plain
# decoding; drafting only inside a run of 6 copied tokens ran at 1.1x).
DRAFT_MIN_RUN = 6
_GREEDY = np.random.default_rng(0)  # never drawn from: greedy picks the argmax


class PromptLookup:
    """Drafts the next tokens from the context itself (prompt-lookup decoding): where the last
    `n` tokens occurred before, in the sources or the answer so far, the tokens that followed
    them there. The longest n in `DRAFT_NGRAMS` that matches wins, and of its occurrences the
    latest; the draft is made only when the context's tail matches that occurrence over at
    least `min_run` tokens (`DRAFT_MIN_RUN`). Each n-gram is indexed once, so a draft costs a
    few dict look-ups."""

    def __init__(
        self,
        tokens: Sequence[int],
        ngrams: Sequence[int] = DRAFT_NGRAMS,
        min_run: int = DRAFT_MIN_RUN,
    ) -> None:
        self.ngrams = sorted(set(ngrams), reverse=True)
        self.min_run = min_run
        self.tokens: list[int] = []
        # n-gram -> where the tokens after its latest occurrence begin
        self._after: dict[tuple[int, ...], int] = {}
        for token in tokens:
            self.add(token)

    def add(self, token: int) -> None:
        """One more token of the context (a generated one)."""
        end = len(self.tokens)
        for n in self.ngrams:
            if end >= n:
                self._after[tuple(self.tokens[end - n : end])] = end
        self.tokens.append(token)

    def draft(self, size: int) -> list[int]:
        """Up to `size` tokens that followed the latest earlier occurrence of the context's last
        n tokens; empty when none occurred before, or when the tail and that occurrence agree
        on fewer than `min_run` tokens."""
        if size <= 0:
            return []
        for n in self.ngrams:
            if len(self.tokens) < n:
                continue
            start = self._after.get(tuple(self.tokens[-n:]))
            if start is not None:
                if self._run(start, n) < self.min_run:
                    return []
                return self.tokens[start : start + size]
        return []

    def _run(self, start: int, matched: int) -> int:
        """How many tokens before `start` equal the context's last tokens (at least `matched`,
        counted up to `min_run`)."""
        run = matched
        tokens = self.tokens
        while (
            run < self.min_run
            and start - 1 - run >= 0
            and tokens[start - 1 - run] == tokens[-1 - run]
        ):
            run += 1
        return run


def accept_draft(
    rows: Callable[[int], np.ndarray],
    draft: Sequence[int],
    recent: Sequence[int],
    repeat_penalty: float,
) -> list[int]:
    """Greedy verification of a draft evaluated in one batch after the last chosen token:
    `rows(i)` is the logits row after the batch's i-th token (row 0 follows the chosen token,
    row i follows draft token i). Returns the tokens greedy decoding picks from these rows, in
    order, as `pick_token` picks them one at a time (the repeat penalty counts each earlier
    pick): the draft's longest prefix that it confirms, then the token it picks next (where the
    draft went wrong, or after a fully confirmed draft). So the result is never empty, and all
    but its last token are already evaluated."""
    history = list(recent)
    chosen: list[int] = []
    for i in range(len(draft) + 1):
        token = pick_token(rows(i), history, repeat_penalty, 0.0, _GREEDY)
        chosen.append(token)
        history.append(token)
        if i == len(draft) or token != draft[i]:
            break
    return chosen
