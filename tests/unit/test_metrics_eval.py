from __future__ import annotations

import json
import math
from pathlib import Path

import pytest

from ingest.evaluate import evaluate_beir, evaluate_qa, read_qrels
from retriever.components import Components
from retriever.metrics import mrr_at_k, ndcg_at_k, percentile, recall_at_k


def test_ndcg_by_hand() -> None:
    # Relevant d1 (grade 2) at rank 2 and d3 (grade 1) at rank 3; ideal: d1 then d3.
    ranked = ["x", "d1", "d3", "y"]
    relevant = {"d1": 2, "d3": 1}
    dcg = 2 / math.log2(3) + 1 / math.log2(4)
    idcg = 2 / math.log2(2) + 1 / math.log2(3)
    assert ndcg_at_k(ranked, relevant, 10) == pytest.approx(dcg / idcg)
    assert ndcg_at_k(["d1", "d3"], relevant, 10) == pytest.approx(1.0)
    assert ndcg_at_k(["x", "y"], relevant, 10) == 0.0
    assert ndcg_at_k(ranked, relevant, 1) == 0.0


def test_recall_mrr_percentile() -> None:
    relevant = {"a": 1, "b": 1, "c": 0}
    assert recall_at_k(["a", "x", "b"], relevant, 2) == 0.5
    assert recall_at_k(["a", "x", "b"], relevant, 3) == 1.0
    assert mrr_at_k(["x", "y", "b"], relevant, 10) == pytest.approx(1 / 3)
    assert mrr_at_k(["c", "x"], relevant, 10) == 0.0  # grade 0 is not relevant
    assert percentile([5, 1, 3, 2, 4], 0.5) == 3
    assert percentile([1, 2, 3, 4, 100], 0.95) == 100


def _beir(folder: Path) -> Path:
    corpus = [
        {"_id": "d1", "title": "Aspirin", "text": "Aspirin reduces the risk of heart attack."},
        {"_id": "d2", "title": "Vitamin D", "text": "Vitamin D deficiency weakens bones."},
        {"_id": "d3", "title": "Sleep", "text": "Short sleep impairs memory consolidation."},
    ]
    queries = [
        {"_id": "q1", "text": "does aspirin prevent heart attacks"},
        {"_id": "q2", "text": "bone weakness from low vitamin D"},
    ]
    (folder / "qrels").mkdir(parents=True)
    (folder / "corpus.jsonl").write_text("\n".join(json.dumps(r) for r in corpus))
    (folder / "queries.jsonl").write_text("\n".join(json.dumps(r) for r in queries))
    (folder / "qrels" / "test.tsv").write_text("query-id\tcorpus-id\tscore\nq1\td1\t1\nq2\td2\t1\n")
    return folder


def test_read_qrels_skips_header(tmp_path: Path) -> None:
    assert read_qrels(_beir(tmp_path / "b") / "qrels" / "test.tsv") == {
        "q1": {"d1": 1},
        "q2": {"d2": 1},
    }


def test_evaluate_beir_on_a_tiny_set(components: Components, tmp_path: Path) -> None:
    folder = _beir(tmp_path / "tiny")
    for mode in ("dense", "bm25", "hybrid"):
        result = evaluate_beir(components.settings, folder, "test", mode)  # type: ignore[arg-type]
        assert result["queries"] == 2 and result["mode"] == mode
        assert result["ndcg@10"] == pytest.approx(1.0), mode
        assert result["recall@100"] == 1.0 and result["latency_ms_p95"] > 0
    # The index is cached: a second run builds nothing.
    cached = list((components.settings.data_dir / "eval").iterdir())
    assert len(cached) == 1 and (cached[0] / "complete.json").exists()
    with pytest.raises(FileNotFoundError, match="not a BEIR folder"):
        evaluate_beir(components.settings, tmp_path, "test")
    # An eval index is scratch data: never written to a shared database (none answers here).
    elsewhere = components.settings.model_copy(
        update={"database_url": "postgresql://127.0.0.1:1/x"}
    )
    assert evaluate_beir(elsewhere, folder, "test", "bm25")["ndcg@10"] == pytest.approx(1.0)


def test_evaluate_qa_counts_gold_answers_in_top_passages(
    components: Components, tmp_path: Path
) -> None:
    folder = tmp_path / "qa"
    folder.mkdir()
    passages = [
        {"id": 1, "passage": "The Eiffel Tower was completed in 1889 in Paris."},
        {"id": 2, "passage": "Mount Fuji is the highest mountain in Japan."},
    ]
    qa = [
        {"idx": 0, "question": "When was the Eiffel Tower completed?", "answer": "1889"},
        {"idx": 1, "question": "Is Fuji in Japan?", "answer": "yes"},  # yes/no: not counted
        {"idx": 2, "question": "Who painted the Mona Lisa?", "answer": "Leonardo"},
    ]
    (folder / "passages.jsonl").write_text("\n".join(json.dumps(p) for p in passages))
    (folder / "qa.jsonl").write_text("\n".join(json.dumps(q) for q in qa))
    result = evaluate_qa(components.settings, folder, "hybrid")
    assert result["queries"] == 2
    assert result["answer_in_top5"] == 0.5
