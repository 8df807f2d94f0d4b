"""How fast prompt-lookup drafting could make answers on this CPU, at best: the bound behind
`llm_draft_tokens`'s default.

    python benchmarks/draft_bound.py [--answers 30] [--max-draft 16] [--out draft-bound]

On the answer prompts of benchmarks/generate.py (rag-mini-wikipedia questions, sources focused
as the answer service focuses them), each answer is decoded plainly (greedy, the production
repeat penalty), then:
- the cost of one `llama_decode` of a batch of n tokens with logits at every position, n = 1 to
  `--max-draft` + 1 (median of 21, after the answer prompt, on this machine);
- replaying the plain answers with those costs, the speed-up over plain decoding of
  - `PromptLookup` as shipped (`DRAFT_MIN_RUN`) and without its run rule (a draft at every
    match), drafting `--draft` tokens;
  - a perfect drafter: at every step it knows how far the prompt-lookup draft will be kept and
    drafts exactly the length with the lowest cost per token. No prompt-lookup policy beats it.
The replay counts a kept token where the draft equals the plain answer's next token; llama.cpp's
batch rounding can flip near ties, which this ignores. Writes results/draft-bound.json.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path

from common import CACHE, machine, print_table, write_result  # type: ignore[import-not-found]
from generate import answer_prompts  # type: ignore[import-not-found]

from config.settings import load_settings
from retriever.components import build_generator
from retriever.generation import GenerationParams, LlamaCppGenerator
from retriever.model_process import ModelProcessGenerator
from retriever.token_loop import DRAFT_MIN_RUN, PromptLookup

Answer = tuple[list[int], list[int]]  # prompt tokens, plain answer tokens


def batch_costs(generator: LlamaCppGenerator, prompt: list[int], largest: int) -> list[float]:
    """Milliseconds of one decode of n tokens (all logits), n = 1..largest, after `prompt`."""
    import llama_cpp

    llm = generator.llm
    generator._evaluate(prompt)
    n_past = llm.n_tokens
    batch = llama_cpp.llama_batch_init(largest, 0, 1)
    memory = llama_cpp.llama_get_memory(llm.ctx)

    def once(n: int) -> float:
        for i in range(n):
            batch.token[i] = prompt[i]
            batch.pos[i] = n_past + i
            batch.n_seq_id[i] = 1
            batch.seq_id[i][0] = 0
            batch.logits[i] = True
        batch.n_tokens = n
        start = time.perf_counter()
        if llama_cpp.llama_decode(llm.ctx, batch) != 0:
            raise RuntimeError("llama_decode failed")
        elapsed = time.perf_counter() - start
        llama_cpp.llama_memory_seq_rm(memory, 0, n_past, -1)
        return elapsed * 1000

    try:
        return [0.0] + [
            statistics.median(once(n) for _ in range(21)) for n in range(1, largest + 1)
        ]
    finally:
        llama_cpp.llama_batch_free(batch)
        generator.forget()


def replay(
    answers: list[Answer],
    cost: list[float],
    min_run: int,
    size: int,
    share: Callable[[int], int] | None = None,
) -> float:
    """Plain decoding's time over drafted decoding's, replaying the plain answers with one
    `PromptLookup(min_run=min_run)` per answer: at each step it drafts up to `size` tokens,
    the batch pays for all of them, and confirms what the answer keeps plus one token.
    `share(kept)`, where given, drafts only that many of them instead (a drafter that knows
    how many the answer will keep)."""
    plain = drafted = 0.0
    for prompt, answer in answers:
        plain += cost[1] * len(answer)
        drafted += cost[1]  # the first token, from the prompt's own decode
        lookup = PromptLookup([*prompt, answer[0]], min_run=min_run)
        i = 0
        while i < len(answer) - 1:
            rest = answer[i + 1 :]
            proposal = lookup.draft(min(size, len(rest)))
            kept = 0
            while kept < len(proposal) and rest[kept] == proposal[kept]:
                kept += 1
            used = len(proposal) if share is None else share(kept)
            kept = min(kept, used)
            drafted += cost[1 + used]
            for token in rest[: kept + 1]:
                lookup.add(token)
            i += 1 + kept
    return plain / drafted


def policies(answers: list[Answer], cost: list[float], draft: int) -> dict[str, float]:
    """The replayed speed-ups of the shipped rule, of drafting at every match, and the bound:
    the longest draft the batch costs allow, of which exactly the cheapest-per-token share of
    what the answer keeps is drafted."""

    def cheapest(kept: int) -> int:
        return min(range(kept + 1), key=lambda k: cost[1 + k] / (1 + k))

    return {
        "speedup_as_shipped": round(replay(answers, cost, DRAFT_MIN_RUN, draft), 3),
        "speedup_every_match": round(replay(answers, cost, 0, draft), 3),
        "speedup_perfect_drafter": round(replay(answers, cost, 0, len(cost) - 2, cheapest), 3),
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--answers", type=int, default=30)
    parser.add_argument("--max-draft", type=int, default=16)
    parser.add_argument("--draft", type=int, default=8, help="tokens drafted by the policies")
    parser.add_argument("--out", default="draft-bound")
    args = parser.parse_args()
    settings = load_settings(data_dir=CACHE, embed_cache_dir=str(CACHE / "models"))
    # The file and settings `enclave serve` would run (its CPU profile), in this process.
    enclave = build_generator(settings)
    assert isinstance(enclave, ModelProcessGenerator), settings.llm_backend
    enclave.wait_ready()
    generator = LlamaCppGenerator(**enclave.spec.kwargs)
    enclave.close()
    path = Path(enclave.spec.kwargs["model_path"])
    prompts = answer_prompts(
        generator, args.answers, settings.top_k, settings.focus_sentences, settings.llm_max_tokens
    )
    params = GenerationParams(
        max_tokens=settings.llm_max_tokens, temperature=0.0, repeat_penalty=1.15
    )
    answers: list[Answer] = []
    for messages in prompts:
        "".join(generator.stream(messages, params))
        if generator.last_tokens:
            answers.append((generator._prompt_tokens(messages), list(generator.last_tokens)))
    cost = batch_costs(generator, answers[0][0], args.max_draft + 1)
    row = {
        "answers": len(answers),
        "answer_tokens": sum(len(a) for _, a in answers),
        "draft_tokens": args.draft,
        "draft_min_run": DRAFT_MIN_RUN,
        **policies(answers, cost, args.draft),
    }
    print_table([row])
    print(
        "batch cost / one token: "
        + ", ".join(f"{n}: {cost[n] / cost[1]:.2f}" for n in range(1, len(cost)))
    )
    write_result(
        args.out,
        {
            "benchmark": "draft-bound",
            "model": path.name,
            "threads": settings.llm_threads,
            **row,
            "batch_ms": {n: round(cost[n], 2) for n in range(1, len(cost))},
            "machine": machine(),
        },
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
