"""Turning passages into an answer: when to abstain, generative or extractive, what the model
sees of each source and how much of a sentence a source must support (retriever/answer.py,
support_check.py, abstention.py, grounding.py)."""

from __future__ import annotations

from typing import Literal

from pydantic import ConfigDict, Field

from config.section import Section


class AnswerSettings(Section):
    model_config = ConfigDict(title="Answers and abstention")

    min_relevance: float = Field(
        0.3, ge=-1, le=1, description="Abstain when the best dense cosine is below this."
    )
    min_question_coverage: float = Field(
        0.5, ge=0, le=1, description="Abstain when fewer of the question's words are found."
    )
    min_key_coverage: float = Field(
        0.5,
        ge=0,
        le=1,
        description="Abstain when no passage holds this share of the question's key terms.",
    )
    min_sentence_similarity: float = Field(
        0.4, ge=-1, le=1, description="Abstain when no sentence is this close to the question."
    )
    reworded_similarity: float = Field(
        0.7,
        ge=0,
        le=1,
        description="A sentence at least this close to the question (cosine) answers it "
        "although the passages lack its words (a reworded question); 0: never.",
    )
    abstain_on_unknown_names: bool = Field(
        True,
        description="Abstain when the question names something (a capitalized word, or code "
        "such as max_connections) that no "
        "document of the searched collections holds.",
    )
    answer_mode: Literal["generative", "extractive"] = Field(
        "generative", description="generative: the SLM writes; extractive: quote sources."
    )
    focus_sentences: int = Field(
        3, ge=0, le=50, description="Sentences per source shown to the model; 0: whole."
    )
    support_threshold: float = Field(
        0.6, ge=0, le=1, description="Share of an answer sentence's words a source must hold."
    )
