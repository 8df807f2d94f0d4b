"""`enclave eval answers`: ask every question of a set through the production answer path and
score the answers (exact match, token F1 on the whole text and on the direct answer, gold
containment, useful and fragment answers, citation validity, abstention)."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any, TextIO

from config.settings import Settings
from ingest.evaluate import Progress, cache_dir, open_index, read_jsonl
from ingest.pipeline import build_pipeline
from retriever.answer_metrics import (
    citation_validity,
    contains_gold,
    exact_match,
    has_fragment,
    is_yes_no,
    token_f1,
)
from retriever.components import Components
from retriever.metrics import percentile
from retriever.question import AnswerMode, Mode, Question


def _golds(row: dict[str, Any]) -> list[str] | None:
    """Gold answers of a row (`answer`, and `answers`: alternatives, or the only golds), or
    None when the documents cannot answer it (neither holds one)."""
    golds = [] if row.get("answer") is None else [str(row["answer"])]
    golds += [str(a) for a in row.get("answers") or [] if a is not None]
    return golds or None


def _files_index(settings: Settings, folder: Path) -> Components:
    """A cached index of the documents in `folder`, built with the real ingestion pipeline."""
    listing = sorted((p.name, p.stat().st_size, p.stat().st_mtime) for p in folder.iterdir())
    data = cache_dir(settings, folder.name, [str(folder.resolve()), listing])
    components = Components(settings.model_copy(update={"data_dir": data}))
    marker = data / "complete.json"
    if not marker.exists():
        pipeline = build_pipeline(components)
        report = pipeline.ingest([folder])
        pipeline.close()
        if report.count("failed"):
            # No marker: a half-built index must not be taken for a finished one next time.
            failures = report.to_dict()["failures"]
            raise RuntimeError(f"could not index the question set's documents: {failures}")
        marker.write_text(json.dumps(report.to_dict()))
    return components


def load_question_set(
    settings: Settings, path: Path, progress: Progress | None = None
) -> tuple[Components, list[dict[str, Any]]]:
    """A passages + qa folder (rag-mini-wikipedia layout: yes/no questions are left out), or
    a questions.jsonl (or its folder) whose documents lie beside it."""
    folder = path if path.is_dir() else path.parent
    if (folder / "passages.jsonl").is_file() and (folder / "qa.jsonl").is_file():
        passages = folder / "passages.jsonl"

        def documents() -> Iterator[tuple[str, str, str]]:
            for row in read_jsonl(passages):
                yield str(row["id"]), "", str(row["passage"])

        rows = [r for r in read_jsonl(folder / "qa.jsonl") if not is_yes_no(r.get("answer"))]
        return open_index(settings, passages, documents, progress), rows
    questions = path if path.is_file() else folder / "questions.jsonl"
    if not questions.is_file():
        raise FileNotFoundError(
            f"{path}: expected passages.jsonl + qa.jsonl, or a questions.jsonl beside documents"
        )
    return _files_index(settings, folder), list(read_jsonl(questions))


def evaluate_answers(
    settings: Settings,
    path: Path,
    answer_mode: AnswerMode | None = None,
    retrieval_mode: Mode | None = None,
    limit: int = 0,
    progress: Progress | None = None,
    asked: Progress | None = None,
    details: TextIO | None = None,
    skip: int = 0,
) -> dict[str, Any]:
    """`progress` follows indexing (documents), `asked` the questions; `details` receives one
    JSON line per question (question, gold answers, answer, abstained, sources). `skip` leaves out
    the first questions, so a set tuned on its first N can be checked on the questions after."""
    components, rows = load_question_set(settings, path, progress)
    rows = rows[skip:]
    if limit:
        rows = rows[:limit]
    service = components.answers
    mode = answer_mode or settings.answer_mode
    scores: dict[str, list[float]] = {
        k: [] for k in ("exact_match", "f1", "contains_gold", "f1_direct", "useful_rate")
    }
    fragment: list[float] = []
    abstained_answerable: list[float] = []
    abstained_unanswerable: list[float] = []
    source_at_3: list[float] = []
    valid = cited = 0
    latencies: list[float] = []
    rates: list[float] = []
    model_cited: list[float] = []
    for row in rows:
        start = time.perf_counter()
        answer = service.ask(Question(str(row["question"]), mode=retrieval_mode, answer_mode=mode))
        latencies.append((time.perf_counter() - start) * 1000)
        if asked:
            asked(len(latencies), len(rows))
        if answer.model_cited is not None:
            model_cited.append(float(answer.model_cited))
        if answer.timings.get("tokens_per_s"):
            rates.append(float(answer.timings["tokens_per_s"]))
        golds = _golds(row)
        if details is not None:
            record = {
                "question": row["question"],
                "golds": golds,
                "answer": answer.answer,
                "abstained": answer.abstained,
                "abstention_reason": answer.abstention_reason,
                "answer_mode": answer.mode,
                "direct_answer": answer.direct_answer,
                "sources": [s.path for s in answer.sources],
            }
            details.write(json.dumps(record) + "\n")
            details.flush()  # a long run read while it goes, or stopped, keeps every answer
        if not answer.abstained:
            fragment.append(float(has_fragment(answer.answer)))
        if golds is None:
            abstained_unanswerable.append(float(answer.abstained))
            continue
        abstained_answerable.append(float(answer.abstained))
        text = "" if answer.abstained else answer.answer
        direct = "" if answer.abstained else answer.direct_answer or answer.answer
        scores["exact_match"].append(exact_match(direct, golds))
        scores["f1"].append(token_f1(text, golds))
        scores["f1_direct"].append(token_f1(direct, golds))
        scores["contains_gold"].append(contains_gold(text, golds))
        scores["useful_rate"].append(
            float(bool(text) and contains_gold(text, golds) > 0 and not has_fragment(text))
        )
        if row.get("source"):
            names = [Path(s.path).name for s in answer.sources[:3]]
            source_at_3.append(float(row["source"] in names))
        if not answer.abstained:
            v, c = citation_validity(
                answer.answer, [s.text for s in answer.sources], service.support_threshold
            )
            valid, cited = valid + v, cited + c

    def mean(values: list[float]) -> float | None:
        return round(sum(values) / len(values), 4) if values else None

    result: dict[str, Any] = {name: mean(values) for name, values in scores.items()}
    result.update(
        citation_validity=round(valid / cited, 4) if cited else None,
        fragment_rate=mean(fragment),
        abstain_answerable=mean(abstained_answerable),
        abstain_unanswerable=mean(abstained_unanswerable),
        latency_ms_p50=round(percentile(latencies, 0.5), 1),
        latency_ms_p95=round(percentile(latencies, 0.95), 1),
        tokens_per_s=mean(rates),
        model_citation_rate=mean(model_cited),
        questions=len(rows),
        answerable=len(abstained_answerable),
        unanswerable=len(abstained_unanswerable),
        mode=mode,
        dataset=path.name,
    )
    if source_at_3:
        result["source_at_3"] = mean(source_at_3)
    return result
