from __future__ import annotations

import json
from pathlib import Path

import pytest

from config.settings import Settings
from retriever.answer_metrics import (
    citation_validity,
    contains_gold,
    exact_match,
    has_fragment,
    normalize,
    token_f1,
)
from service.eval_answers import _golds, evaluate_answers


def test_squad_normalization_and_scores() -> None:
    assert normalize("The Eiffel Tower [1].") == "eiffel tower"
    assert exact_match("the Eiffel tower [2]", ["Eiffel Tower"]) == 1.0
    assert exact_match("Eiffel", ["Eiffel Tower"]) == 0.0
    # predicted "tower in paris" vs gold "eiffel tower": 1 common token, P = 1/3, R = 1/2.
    assert token_f1("tower in Paris", ["Eiffel Tower"]) == pytest.approx(
        2 * (1 / 3) * 0.5 / (1 / 3 + 0.5)
    )
    assert token_f1("nothing", ["Eiffel Tower", "nothing"]) == 1.0  # best of the golds
    assert contains_gold("It was built in 1889 [1].", ["1889"]) == 1.0
    assert contains_gold("It was built in 18890.", ["1889"]) == 0.0  # whole tokens only


def test_citation_validity_checks_each_cited_source() -> None:
    sources = ["The canteen opens at 08:00 on weekdays.", "Parking is free for staff."]
    answer = "The canteen opens at 08:00 [1]. Parking is free [1]. Staff park free [2]."
    assert citation_validity(answer, sources, 0.6) == (2, 3)
    assert citation_validity("Nothing cited here.", sources, 0.6) == (0, 0)


def test_one_shared_token_is_not_a_valid_citation() -> None:
    source = ["1. Level 1: NOC engineer, first diagnosis.\n2. Level 2: on-call engineer."]
    # "1" and "2" occur in the source; the old check counted these citations valid.
    assert citation_validity("1 [1]. 2 [1].", source, 0.6) == (0, 2)
    assert citation_validity("Level 2 is the on-call engineer [1].", source, 0.6) == (1, 1)


def test_fragment_answers_are_found() -> None:
    assert has_fragment("1 [1]. 2 [1]. Level 1: NOC engineer [1].")
    assert has_fragment("Level 1: [1]. The NOC engineer diagnoses first [1].")
    assert not has_fragment("90 seconds \u2013 The hold time is 90 seconds [1].")
    assert not has_fragment("1. Call the NOC [1].\n2. Page the duty manager [1].")


def _demo_like(folder: Path) -> Path:
    folder.mkdir()
    (folder / "leave.md").write_text(
        "# Leave\n\nFull-time employees get 25 working days of annual leave.\n\n"
        "## Parental leave\n\nParental leave lasts 16 weeks at full pay.\n"
    )
    rows = [
        {
            "question": "How many days of annual leave do employees get?",
            "answer": "25 working days",
            "source": "leave.md",
        },
        {"question": "How long is parental leave?", "answer": "16 weeks", "source": "leave.md"},
        {"question": "What is the CEO's salary?", "answer": None, "source": None},
    ]
    (folder / "questions.jsonl").write_text("\n".join(json.dumps(r) for r in rows))
    return folder


def test_evaluate_answers_on_a_demo_like_folder(settings: Settings, tmp_path: Path) -> None:
    folder = _demo_like(tmp_path / "set")
    seen: list[int] = []
    result = evaluate_answers(
        settings, folder, "extractive", asked=lambda done, total: seen.append(done)
    )
    assert seen == [1, 2, 3]
    assert result["questions"] == 3 and result["answerable"] == 2
    assert result["contains_gold"] == 1.0 and result["source_at_3"] == 1.0
    assert result["abstain_unanswerable"] == 1.0 and result["abstain_answerable"] == 0.0
    assert result["citation_validity"] == 1.0
    assert result["useful_rate"] == 1.0 and result["fragment_rate"] == 0.0
    assert result["f1_direct"] > result["f1"]  # the direct answer is the short part
    for key in ("exact_match", "f1", "latency_ms_p50", "latency_ms_p95", "tokens_per_s"):
        assert key in result


def test_evaluate_answers_skips_the_first_questions(settings: Settings, tmp_path: Path) -> None:
    folder = _demo_like(tmp_path / "set")
    result = evaluate_answers(settings, folder, "extractive", skip=1, limit=1)
    assert result["questions"] == 1 and result["answerable"] == 1  # parental leave
    rest = evaluate_answers(settings, folder, "extractive", skip=2)
    assert rest["questions"] == 1 and rest["answerable"] == 0  # the CEO's salary


def test_evaluate_answers_rejects_a_folder_without_questions(
    settings: Settings, tmp_path: Path
) -> None:
    with pytest.raises(FileNotFoundError, match=r"questions\.jsonl"):
        evaluate_answers(settings, tmp_path, "extractive")


def test_golds_are_answer_and_answers_and_none_when_neither_holds_one() -> None:
    assert _golds({"question": "q", "answer": "37", "answers": ["uid 37"]}) == ["37", "uid 37"]
    assert _golds({"question": "q", "answers": ["--append", "-a"]}) == ["--append", "-a"]
    assert _golds({"question": "q", "answer": None, "answers": []}) is None
    assert _golds({"question": "q"}) is None
