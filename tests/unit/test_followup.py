from __future__ import annotations

from retriever.followup import Turn, contextualize, key_terms, needs_context

HISTORY = [
    Turn("user", "How many days of paid annual leave do full-time employees get?"),
    Turn("assistant", "Full-time employees get 25 days of paid annual leave [1]."),
]


def test_a_question_that_stands_alone_is_unchanged() -> None:
    question = "What is the extension of the NOC shift lead desk?"
    assert contextualize(question, HISTORY) == question
    assert contextualize("And for part-time staff?", []) == "And for part-time staff?"


def test_a_short_follow_up_takes_the_previous_questions_key_terms() -> None:
    query = contextualize("And part-time staff?", HISTORY)
    assert query.startswith("And part-time staff? (")
    assert all(term in query for term in ("paid", "annual", "leave", "full-time", "employees"))
    assert "How" not in query and "many" not in query  # question words add nothing


def test_a_pronoun_makes_a_long_question_a_follow_up() -> None:
    question = "Can it be carried over into the next calendar year or does it expire?"
    assert needs_context(question)
    query = contextualize(question, HISTORY)
    assert query.startswith(question) and "annual" in query and "leave" in query


def test_terms_the_follow_up_already_has_are_not_repeated() -> None:
    query = contextualize("What about annual leave for interns?", HISTORY)
    assert query.lower().count("annual") == 1 and query.lower().count("leave") == 1


def test_only_user_turns_count_and_a_fragment_reaches_one_turn_further() -> None:
    history = [*HISTORY, Turn("user", "And part-time staff?"), Turn("assistant", "Pro rata [1].")]
    query = contextualize("Who approves it?", history)
    # "part-time staff" from the last question, the topic from the one before it.
    assert "part-time" in query and "leave" in query
    assert "Pro" not in query and "rata" not in query


def test_key_terms_keep_order_and_drop_stopwords() -> None:
    assert key_terms("What is the BGP hold time on external BGP sessions?") == [
        "BGP",
        "hold",
        "time",
        "external",
        "sessions",
    ]


def test_the_query_respects_the_length_limit() -> None:
    assert contextualize("And it?", HISTORY, max_chars=10) == "And it?"
