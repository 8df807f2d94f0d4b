"""`enclave ask`: one question through the production answer path, in this process."""

from __future__ import annotations

import json
from typing import Any

import click

from cli.common import ANSWER_MODES, RETRIEVAL_MODES, enclave_command
from config.settings import Settings


def print_answer(body: dict[str, Any]) -> None:
    print(body["answer"])
    if body["sources"]:
        print("\nSources:")
    for s in body["sources"]:
        page = f", page {s['page']}" if s["page"] else ""
        print(f"  [{s['n']}] {s['title']}{page} ({s['path']})")
    t = body["timings"]
    print(
        f"\nretrieve {t['retrieve_ms']:.0f} ms, generate {t['generate_ms']:.0f} ms, "
        f"{t['tokens_per_s']} tokens/s"
    )


@enclave_command("ask", "answer one question")
@click.argument("question")
@click.option("--top-k", type=click.IntRange(min=1))
@click.option("--mode", type=RETRIEVAL_MODES)
@click.option("--answer-mode", type=ANSWER_MODES)
@click.option("--json", "as_json", is_flag=True, help="print the API's JSON answer")
def ask(
    settings: Settings,
    question: str,
    top_k: int | None,
    mode: Any,
    answer_mode: Any,
    as_json: bool,
) -> int:
    from retriever.components import Components
    from retriever.question import Question

    asked = Question(question, top_k=top_k, mode=mode, answer_mode=answer_mode)
    answer = Components(settings).answers.ask(asked)
    body = answer.to_dict()
    if as_json:
        print(json.dumps(body))
    else:
        print_answer(body)
    return 0
