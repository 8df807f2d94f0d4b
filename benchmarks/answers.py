"""Answer quality and latency on a question set (default: the demo corpus and its questions).

    python benchmarks/answers.py [--corpus corpora/demo] [--questions FILE] [--limit N]

Indexes the corpus into a temporary data dir, asks every question through the real pipeline
(embedder, Chroma + FTS5, SmolLM2 via llama.cpp) and reports: source found at rank 1 / top 3,
gold answer contained in the answer, share of answers citing a source, abstention on questions
with no answer, and latency percentiles. Prints a table; writes benchmarks/results/answers.json.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from ingest.pipeline import build_pipeline  # noqa: E402
from retriever.components import Components  # noqa: E402
from retriever.metrics import percentile  # noqa: E402
from retriever.settings import load_settings  # noqa: E402


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--corpus", type=Path, default=ROOT / "corpora" / "demo")
    parser.add_argument("--questions", type=Path)
    parser.add_argument("--limit", type=int, default=0)
    parser.add_argument("--answer-mode", choices=["generative", "extractive"])
    parser.add_argument("--out", type=Path, help="default: benchmarks/results/answers-MODE.json")
    args = parser.parse_args()
    questions_file = args.questions or args.corpus / "questions.jsonl"
    rows = [json.loads(line) for line in questions_file.read_text().splitlines() if line.strip()]
    if args.limit:
        rows = rows[: args.limit]

    with tempfile.TemporaryDirectory() as data:
        settings = load_settings(data_dir=data)
        components = Components(settings)
        start = time.perf_counter()
        pipeline = build_pipeline(components)
        report = pipeline.ingest([args.corpus])
        pipeline.close()
        ingest_s = time.perf_counter() - start
        components.warm_up()

        answerable = [r for r in rows if r["answer"] is not None]
        unanswerable = [r for r in rows if r["answer"] is None]
        at1 = at3 = contained = cited = false_abstain = right_abstain = 0
        timings: dict[str, list[float]] = {
            k: []
            for k in ("retrieve_ms", "generate_ms", "first_token_ms", "tokens_per_s", "total_ms")
        }
        for row in rows:
            start = time.perf_counter()
            answer = components.answers.ask(row["question"], answer_mode=args.answer_mode)
            timings["total_ms"].append((time.perf_counter() - start) * 1000)
            for key in ("retrieve_ms", "generate_ms", "first_token_ms", "tokens_per_s"):
                if answer.timings.get(key):
                    timings[key].append(float(answer.timings[key]))
            names = [Path(s.path).name for s in answer.sources]
            if row["answer"] is None:
                right_abstain += answer.abstained
                continue
            at1 += names[:1] == [row["source"]]
            at3 += row["source"] in names[:3]
            contained += row["answer"].lower() in answer.answer.lower()
            cited += bool(answer.citations)
            false_abstain += answer.abstained

    n = max(1, len(answerable))
    result = {
        "questions": len(rows),
        "answerable": len(answerable),
        "unanswerable": len(unanswerable),
        "ingest_seconds": round(ingest_s, 2),
        "ingest": report.to_dict(),
        "source_at_1": round(at1 / n, 3),
        "source_at_3": round(at3 / n, 3),
        "answer_contains_gold": round(contained / n, 3),
        "answers_citing_a_source": round(cited / n, 3),
        "false_abstentions": round(false_abstain / n, 3),
        "abstained_when_no_answer": round(right_abstain / max(1, len(unanswerable)), 3),
        "model": components.generator.name,
        "answer_mode": args.answer_mode or settings.answer_mode,
        "latency": {
            key: {"p50": round(percentile(v, 0.5), 1), "p95": round(percentile(v, 0.95), 1)}
            for key, v in timings.items()
        },
    }
    print(f"{'metric':32} value")
    for key in (
        "source_at_1",
        "source_at_3",
        "answer_contains_gold",
        "answers_citing_a_source",
        "false_abstentions",
        "abstained_when_no_answer",
        "ingest_seconds",
    ):
        print(f"{key:32} {result[key]}")
    for key, v in result["latency"].items():
        print(f"{key:32} p50 {v['p50']}  p95 {v['p95']}")
    print(f"mean tokens/s {statistics.fmean(timings['tokens_per_s'] or [0]):.1f}")
    out = args.out or ROOT / "benchmarks" / "results" / f"answers-{result['answer_mode']}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
