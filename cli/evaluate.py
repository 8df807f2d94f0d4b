"""`enclave eval retrieval|answers`: measure quality on a dataset, offline."""

from __future__ import annotations

import contextlib
import json
import sys
from pathlib import Path
from typing import Any

import click

from cli.common import ANSWER_MODES, RETRIEVAL_MODES, enclave_command, path_type
from config.settings import Settings

evaluate = click.Group("eval", help="measure quality", short_help="measure quality")
ONE_JSON_LINE = "end with one JSON line"


def _serving(settings: Settings) -> Settings:
    """Measure the embedder that serves: a tuned one if active."""
    from retriever.components import Components

    active = Components(settings)
    if active.generation.number:
        return settings.model_copy(update={"embed_model": str(active.embedder_path())})
    return settings


class _IndexingBar:
    """The `Indexing` progress bar, made on the first report (a cached index reports none)."""

    def __init__(self) -> None:
        self.bar: Any = None

    def __call__(self, done: int, total: int) -> None:
        from tqdm import tqdm

        if self.bar is None:
            self.bar = tqdm(total=total, unit="doc", desc="Indexing", file=sys.stderr, disable=None)
        self.bar.update(done - self.bar.n)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()


def _report(result: dict[str, Any], as_json: bool) -> int:
    for key, value in result.items():
        print(f"{key:16} {value}")
    if as_json:
        print(json.dumps(result))
    return 0


@enclave_command("retrieval", "retrieval metrics on a dataset", parent=evaluate)
@click.option("--beir", type=path_type(), help="BEIR folder: corpus/queries.jsonl, qrels/")
@click.option("--qa", type=path_type(), help="folder with passages.jsonl and qa.jsonl")
@click.option("--split", default="test", show_default=True)
@click.option("--mode", type=RETRIEVAL_MODES)
@click.option("--limit", type=int, default=0, help="evaluate only the first N queries")
@click.option("--json", "as_json", is_flag=True, help=ONE_JSON_LINE)
def retrieval(
    settings: Settings,
    beir: Path | None,
    qa: Path | None,
    split: str,
    mode: Any,
    limit: int,
    as_json: bool,
) -> int:
    from ingest.evaluate import evaluate_beir, evaluate_qa

    if (beir is None) == (qa is None):
        raise click.UsageError("name one of --beir DIR or --qa DIR")
    settings = _serving(settings)
    progress = _IndexingBar()
    retrieval_mode = mode or settings.retrieval_mode
    if beir is not None:
        result = evaluate_beir(settings, beir, split, retrieval_mode, limit, progress)
    else:
        assert qa is not None
        result = evaluate_qa(settings, qa, retrieval_mode, limit, progress)
    progress.close()
    return _report(result, as_json)


@enclave_command("answers", "answer quality on a question set", parent=evaluate)
@click.option(
    "--qa",
    type=path_type(),
    required=True,
    help="folder with passages.jsonl + qa.jsonl, or a questions.jsonl beside its documents",
)
@click.option("--mode", type=ANSWER_MODES, help="answer mode")
@click.option("--retrieval", type=RETRIEVAL_MODES)
@click.option("--limit", type=int, default=0, help="evaluate only the first N questions")
@click.option(
    "--skip",
    type=click.IntRange(min=0),
    default=0,
    help="leave out the first N questions (held-out questions after a tuning set)",
)
@click.option("--json", "as_json", is_flag=True, help=ONE_JSON_LINE)
@click.option("--details", type=path_type(), help="write each question's answer to this JSONL file")
def answers(
    settings: Settings,
    qa: Path,
    mode: Any,
    retrieval: Any,
    limit: int,
    skip: int,
    as_json: bool,
    details: Path | None,
) -> int:
    from tqdm import tqdm

    from service.eval_answers import evaluate_answers

    settings = _serving(settings)
    progress = _IndexingBar()
    questions = tqdm(unit="question", desc="Asking", file=sys.stderr, disable=None)

    def asked(done: int, total: int) -> None:
        questions.total = total
        questions.update(done - questions.n)

    with contextlib.ExitStack() as stack:
        out = stack.enter_context(details.open("w")) if details else None
        result = evaluate_answers(
            settings, qa, mode, retrieval, limit, progress, asked, out, skip=skip
        )
    questions.close()
    progress.close()
    return _report(result, as_json)
