"""Choosing tokens and streaming text the way llama.cpp's sampler and llama-cpp-python's
completion loop do, checked on hand-made logits and against the real SmolLM2 loop."""

from __future__ import annotations

import numpy as np
import pytest

from retriever.generation import GenerationParams, LlamaCppGenerator
from retriever.gguf_convert import fast_cpu_gguf
from retriever.models import bundled_llm_path
from retriever.token_loop import PENALTY_LAST_N, StreamedText, pick_token

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
