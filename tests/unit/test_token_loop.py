"""Choosing tokens and streaming text the way llama.cpp's sampler and llama-cpp-python's
completion loop do, checked on hand-made logits and against the real SmolLM2 loop."""

from __future__ import annotations

import numpy as np
import pytest

from retriever.generation import GenerationParams, LlamaCppGenerator
from retriever.gguf_convert import fast_cpu_gguf
from retriever.models import bundled_llm_path
from retriever.token_loop import (
    PENALTY_LAST_N,
    PromptLookup,
    StreamedText,
    accept_draft,
    apply_repeat_penalty,
    pick_token,
)

RNG = np.random.default_rng(0)


def logits(values: dict[int, float], size: int = 100) -> np.ndarray:
    row = np.full(size, -5.0, dtype=np.float32)
    for token, value in values.items():
        row[token] = value
    return row


def test_greedy_takes_the_highest_logit_and_the_first_of_equals() -> None:
    assert pick_token(logits({7: 3.0, 9: 2.0}), [], 1.0, 0.0, RNG) == 7
    assert pick_token(logits({4: 3.0, 9: 3.0}), [], 1.0, 0.0, RNG) == 4


def test_the_repeat_penalty_divides_positive_and_multiplies_negative_logits() -> None:
    # 7 was generated: 3.0 / 1.5 = 2.0 falls below 9's 2.5.
    assert pick_token(logits({7: 3.0, 9: 2.5}), [7], 1.5, 0.0, RNG) == 9
    # A negative logit is multiplied (pushed further down), never divided towards zero.
    row = logits({3: -1.0, 5: -1.2})
    assert pick_token(row.copy(), [3], 1.5, 0.0, RNG) == 5
    assert row[3] == -1.0  # the caller's copy is the one changed
    # Repeats count once: the penalty is not applied per occurrence.
    penalized = logits({7: 3.0})
    pick_token(penalized, [7, 7, 7], 1.5, 0.0, RNG)
    assert penalized[7] == pytest.approx(2.0)


def test_only_the_last_generated_tokens_are_penalized() -> None:
    history = [7] + [50] * PENALTY_LAST_N  # 7 fell out of the window
    assert pick_token(logits({7: 3.0, 9: 2.5}), history, 1.5, 0.0, RNG) == 7


def test_sampling_stays_inside_top_p_and_min_p() -> None:
    rng = np.random.default_rng(1)
    # Token 2 holds ~88% of the mass, 5 ~12%, 8 far below min-p of the best.
    row = logits({2: 4.0, 5: 2.0, 8: -1.0})
    drawn = {pick_token(row.copy(), [], 1.0, 1.0, rng) for _ in range(300)}
    assert drawn == {2, 5}
    # A dominant token is always drawn.
    assert {pick_token(logits({6: 20.0}), [], 1.0, 0.7, rng) for _ in range(50)} == {6}


def test_stop_strings_are_never_shown_even_split_across_tokens() -> None:
    text = StreamedText(["\n\n", "Question:"])
    shown = [text.add(piece) for piece in (b"The answer", b" is 4.\nQues", b"tion: next")]
    assert shown == ["The answer", " is 4.\n", ""]
    text = StreamedText(["\n\n"])
    assert [text.add(b"Done.\n"), text.add(b"\nMore")] == ["Done.", ""]
    assert text.stopped and text.finish() == ""


def test_held_text_is_released_once_it_cannot_start_a_stop() -> None:
    text = StreamedText(["Question:"])
    assert text.add(b"a Que") == "a "
    assert text.add(b"en") == "Queen"
    assert text.add(b" Qu") == " "
    assert not text.stopped and text.finish() == "Qu"


def test_utf8_characters_split_across_tokens_come_out_whole() -> None:
    text = StreamedText([])
    euro = "€".encode()
    assert text.add(b"5 " + euro[:1]) == "5 "
    assert text.add(euro[1:]) == "€"
    assert text.finish() == ""


@pytest.fixture(scope="module")
def smollm2(tmp_path_factory: pytest.TempPathFactory, llama_cpu_profile: str) -> LlamaCppGenerator:
    # In pytest's own process: the settings this CPU's self-test found safe.
    if llama_cpu_profile == "safe":
        return LlamaCppGenerator(bundled_llm_path(), 2048, 2, False, extra_buffer_types=False)
    model = fast_cpu_gguf(bundled_llm_path(), tmp_path_factory.mktemp("models"))
    return LlamaCppGenerator(model, 2048, 2, True)


@pytest.mark.parametrize(
    ("question", "stop"),
    [
        ("What is the capital of France? Answer in one sentence.", []),
        ("List three fruits, one per line.", ["\n"]),
        ("Write a long story about a cat who repeats the word cat.", []),
    ],
)
def test_the_loop_answers_as_llama_cpp_pythons_chat_completion(
    smollm2: LlamaCppGenerator, question: str, stop: list[str]
) -> None:
    messages = [
        {"role": "system", "content": "You answer briefly."},
        {"role": "user", "content": question},
    ]
    params = GenerationParams(max_tokens=60, temperature=0.0, repeat_penalty=1.15, stop=stop)
    ours = "".join(smollm2.stream(messages, params))
    theirs = smollm2.llm.create_chat_completion(
        messages=messages,  # type: ignore[arg-type]
        max_tokens=60,
        temperature=0.0,
        repeat_penalty=1.15,
        stop=stop or None,
    )
    assert ours and ours == theirs["choices"][0]["message"]["content"]  # type: ignore[index]
    # Asked again, the KV cache holds the whole prompt but one token: the same answer.
    assert "".join(smollm2.stream(messages, params)) == ours


def test_a_prompt_longer_than_the_context_is_a_clear_error(smollm2: LlamaCppGenerator) -> None:
    from retriever.generation import GenerationError

    messages = [{"role": "user", "content": "word " * 3000}]
    with pytest.raises(GenerationError, match="context holds 2048"):
        list(smollm2.stream(messages, GenerationParams()))


def test_the_draft_is_what_followed_the_latest_match_of_the_longest_tail() -> None:
    #            0  1  2  3  4  5  6  7  8  9 10 11
    context = [1, 2, 3, 4, 5, 9, 2, 3, 7, 8, 1, 2]
    lookup = PromptLookup(context, ngrams=(3, 2), min_run=0)
    # The tail (1, 2) occurred once before, at 0: what followed it.
    assert lookup.draft(3) == [3, 4, 5]
    lookup.add(3)  # tail (1, 2, 3): the 3-gram at 0 wins over the later 2-gram (2, 3) at 6
    assert lookup.draft(2) == [4, 5]
    # A draft never runs past the context and never exceeds its size.
    assert lookup.draft(50) == [4, 5, 9, 2, 3, 7, 8, 1, 2, 3]
    assert lookup.draft(0) == []
    # (2, 3) occurred at 1 and 6: the latest, 6, is the one drafted from.
    lookup = PromptLookup([2, 3, 4, 0, 2, 3, 5, 6], ngrams=(2,), min_run=0)
    lookup.add(2)
    lookup.add(3)
    assert lookup.draft(3) == [5, 6, 2]
    # Nothing drafts when the tail never occurred, and single tokens are not matched.
    assert PromptLookup([1, 2, 3, 4], ngrams=(2,), min_run=0).draft(4) == []
    assert PromptLookup([5, 6, 7, 5], ngrams=(3, 2), min_run=0).draft(2) == []


def test_a_draft_is_made_only_inside_a_run_of_copied_tokens() -> None:
    # The source: 10 11 12 13 14 15 16 17 18 19, then an answer copying it from 12 on.
    source = list(range(10, 20))
    lookup = PromptLookup([*source, 99, 12, 13, 14], ngrams=(3, 2), min_run=5)
    assert lookup.draft(4) == []  # (12, 13, 14) matches, but only 3 tokens of it
    lookup.add(15)
    assert lookup.draft(4) == []  # 4 copied tokens
    lookup.add(16)
    assert lookup.draft(4) == [17, 18, 19, 99]  # 5 copied tokens: a run, drafted
    # A recurring phrase after different words is no run, however often it recurs.
    phrase = PromptLookup([1, 7, 8, 9, 2, 7, 8, 9, 3, 4, 7, 8, 9], ngrams=(3, 2), min_run=5)
    assert phrase.draft(3) == []
    assert PromptLookup([1, 7, 8, 9, 2, 7, 8, 9], ngrams=(3, 2), min_run=3).draft(3) == [2, 7, 8]


class FakeModel:
    """Logits as a fixed function of the whole context: a stand-in for llama.cpp whose batch
    rows are by construction what one-token decoding gives."""

    def __init__(self, vocab: int = 30, seed: int = 0) -> None:
        self.vocab = vocab
        self.seed = seed

    def logits(self, context: list[int]) -> np.ndarray:
        rng = np.random.default_rng([self.seed, *context])
        row = rng.normal(0, 2, self.vocab).astype(np.float32)
        row[(context[-1] + 1) % self.vocab] += 3.0  # mostly: the next number
        return row

    def greedy(self, prompt: list[int], steps: int, penalty: float) -> list[int]:
        out: list[int] = []
        for _ in range(steps):
            out.append(pick_token(self.logits(prompt + out), out, penalty, 0.0, RNG))
        return out

    def drafted(
        self, prompt: list[int], steps: int, penalty: float, size: int
    ) -> tuple[list[int], int]:
        """The drafting loop's order of work: pick, draft from the context, verify the batch."""
        out = [pick_token(self.logits(prompt), [], penalty, 0.0, RNG)]
        lookup = PromptLookup([*prompt, out[0]], ngrams=(2, 1), min_run=0)
        accepted = 0
        while len(out) < steps:
            draft = lookup.draft(min(size, steps - len(out)))
            batch = [*prompt, *out, *draft]
            base = len(prompt) + len(out)

            def row(i: int, batch: list[int] = batch, base: int = base) -> np.ndarray:
                return self.logits(batch[: base + i])

            chosen = accept_draft(row, draft, out, penalty)
            assert chosen[:-1] == draft[: len(chosen) - 1]
            accepted += len(chosen) - 1
            for token in chosen:
                out.append(token)
                lookup.add(token)
        return out[:steps], accepted


@pytest.mark.parametrize("seed", range(6))
@pytest.mark.parametrize("penalty", [1.0, 1.15, 3.0])
def test_verified_drafts_give_the_greedy_tokens(seed: int, penalty: float) -> None:
    model = FakeModel(seed=seed)
    noise = np.random.default_rng(seed).integers(0, model.vocab, 20)
    prompt = [*(int(t) for t in noise), *range(3, 23)]  # sources repeat what the model says
    plain = model.greedy(prompt, 40, penalty)
    drafted, accepted = model.drafted(prompt, 40, penalty, size=6)
    assert drafted == plain
    if penalty < 3.0:
        assert accepted > 0  # the fake model counts up, as the prompt often does


def test_the_repeat_penalty_rejects_a_draft_the_raw_logits_would_keep() -> None:
    rows = [logits({5: 3.0, 6: 2.9}), logits({7: 3.0}), logits({8: 3.0})]
    # Without the penalty 5 is confirmed, then 7, then the token after the draft.
    assert accept_draft(lambda i: rows[i].copy(), [5, 7], [1], 1.0) == [5, 7, 8]
    # 5 was generated already: penalized, 6 wins, and the draft stops there.
    assert accept_draft(lambda i: rows[i].copy(), [5, 7], [5], 1.15) == [6]
    # A token confirmed in this batch counts for the next row's penalty too.
    rows = [logits({5: 3.0}), logits({5: 3.0, 9: 2.8})]
    assert accept_draft(lambda i: rows[i].copy(), [5], [], 1.15) == [5, 9]


# Answer prompts as retriever.prompt builds them: numbered sources, then the question.
ANSWER_SOURCES = [
    (
        "[1] Incident runbook - Escalation\nA severity 1 incident is escalated in three "
        "levels. Level 1: the NOC engineer makes the first diagnosis and opens a ticket. "
        "Level 2: the on-call lead joins within 15 minutes. Level 3: the head of operations "
        "is called after 45 minutes without a fix.\n\n[2] HR policy - Leave\nEmployees get 25 "
        "working days of paid leave a year; up to 5 unused days carry over to March 31.",
        "What is the escalation procedure for a severity 1 incident?",
    ),
    (
        "[1] Backup standard\nDatabases are backed up every night at 02:00 to the Leeds data "
        "centre, and each backup is kept for 35 days. A restore test runs on the first Monday "
        "of each month.\n\n[2] Facilities\nThe Leeds office is open from 07:30 to 19:00.",
        "How long is each database backup kept?",
    ),
    (
        "[1] Expenses policy\nTravel must be booked through GateBook. Hotel costs are refunded "
        "up to 140 euros a night in capital cities and 110 euros elsewhere, with the receipt "
        "attached to the claim within 30 days.",
        "How much is refunded for a hotel night in a capital city?",
    ),
]
# llama.cpp evaluates a batch of tokens with other kernels than one token (flash attention
# splits long KV caches differently, matrix kernels tile by batch width): past ~64 tokens of
# context its logits differ by up to about 1 (measured here: 0.3-1.1 on Zen 5), so greedy
# choices between two tokens closer than that can flip either way.
NEAR_TIE = 2.5


def _greedy_with_margins(
    model: LlamaCppGenerator, messages: list[dict[str, str]], max_tokens: int
) -> tuple[list[int], list[float]]:
    """Plain greedy decoding one token at a time, as `stream` does without drafting, with the
    gap between the best and second-best logit (after the penalty) at each step."""
    import llama_cpp

    model._evaluate(model._prompt_tokens(messages))
    tokens: list[int] = []
    margins: list[float] = []
    while len(tokens) < max_tokens:
        row = model._logits(-1).copy()
        apply_repeat_penalty(row, tokens, 1.15)
        second, best = np.sort(row)[-2:]
        token = int(np.argmax(row))
        margins.append(float(best - second))  # the end of the answer is a choice too
        if llama_cpp.llama_vocab_is_eog(model._vocab, token):
            break
        tokens.append(token)
        model.llm.eval([token])
    return tokens, margins


def _decode(model: LlamaCppGenerator, messages: list[dict[str, str]], draft: int) -> list[int]:
    params = GenerationParams(max_tokens=60, temperature=0.0, draft_tokens=draft)
    "".join(model.stream(messages, params))
    return list(model.last_tokens)


def test_drafted_decoding_gives_the_plain_tokens_where_llama_cpp_batches_exactly(
    smollm2: LlamaCppGenerator, llama_cpu_profile: str
) -> None:
    """Short contexts, where llama.cpp's fast profile computes a batch's rows bit for bit as
    one token at a time: the drafted decode must be the plain one, token for token."""
    if llama_cpu_profile == "safe":
        pytest.skip("the safe profile's Q4_1 kernels round batches differently at any length")
    accepted = 0
    for text in (
        "Repeat exactly: the red fox ran to the old mill by the river.",
        "Copy this line: Invoice 4471 is due on 12 March at the Leeds office.",
    ):
        messages = [{"role": "user", "content": text}]
        _decode(smollm2, messages, 0)  # the prompt in the KV cache, as for every later run
        plain = _decode(smollm2, messages, 0)
        drafted = _decode(smollm2, messages, 8)
        assert drafted == plain
        assert len(smollm2._prompt_tokens(messages)) + len(plain) <= 80
        accepted += smollm2.stats()["accepted"]
    assert accepted > 0  # drafts were confirmed, not only rejected


def test_drafted_answers_are_the_plain_answers_but_at_llama_cpps_near_ties(
    smollm2: LlamaCppGenerator,
) -> None:
    """Answer prompts: the drafted decode is the plain one token for token, or where it is not,
    the first difference is a choice plain decoding made by less than `NEAR_TIE` (llama.cpp's
    batch rounding), never a confident one, which a wrong row, KV cache rollback or penalty
    in the drafting would give."""
    from retriever.prompt import SOURCES, SYSTEM_PROMPT

    same = accepted = 0
    for sources, question in ANSWER_SOURCES:
        user = f"{SOURCES}{sources}\n\nQuestion: {question}\nAnswer with a citation like [1]:"
        messages = [
            {"role": "system", "content": SYSTEM_PROMPT},
            {"role": "user", "content": user},
        ]
        _decode(smollm2, messages, 0)
        plain = _decode(smollm2, messages, 0)
        reference, margins = _greedy_with_margins(smollm2, messages, 60)
        assert reference == plain  # the stream's plain loop is greedy one token at a time
        drafted = _decode(smollm2, messages, 8)
        accepted += smollm2.stats()["accepted"]
        if drafted == plain:
            same += 1
            continue
        first = next(
            (i for i, (a, b) in enumerate(zip(plain, drafted, strict=False)) if a != b),
            min(len(plain), len(drafted)),
        )
        assert first < len(margins) and margins[first] < NEAR_TIE, (first, margins[: first + 1])
    assert accepted > 0
    assert same >= 1
