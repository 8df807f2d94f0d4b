"""Generation speed: Enclave's production path, with the model in its own process, against
llama.cpp itself, same GGUF, settings, threads and prompt, in turns within one run.

    python benchmarks/generate.py [--sizes 256,1024,3072] [--rounds 9] [--max-tokens 128]
                                  [--model GGUF] [--out NAME] [--answers 20] [--answer-rounds 3]

The model is what `enclave serve` runs with the current settings (`build_generator`): the
llama.cpp model in its supervised child process (retriever/model_process.py), under the CPU
profile `llm_cpu_profile` picks; by default the bundled Q4_1 GGUF rewritten as Q8_0
(`llm_fast_cpu_weights`) with flash attention (`llm_flash_attention`).
`ENCLAVE_LLM_FAST_CPU_WEIGHTS=false ENCLAVE_LLM_FLASH_ATTENTION=false ... --out
generate-as-shipped` measures the file as shipped, for comparison.

For each prompt size (the production system prompt plus SciFact abstracts as numbered
sources, up to that many tokens after the chat template):
- enclave, cold: `ModelProcessGenerator.stream` in this process (the production path: chat
  template and token loop in the child, each piece sent over the pipe) after the child
  emptied its KV cache: time to first token and decode tokens/s, by this process's clock;
- enclave, system prompt cached: the same after `prime()` (what start-up and every earlier
  question leave in the child's KV cache), so llama.cpp evaluates only what follows it;
- llama.cpp: the same prompt tokens through llama-cpp-python's low-level `eval` and a greedy
  argmax per token, in this process, on the same file and settings (the child's), timed by
  llama.cpp's own counters (`llama_perf_context`) and by the clock.
Then, on answer prompts (`--answers N`, default 20; `--answer-rounds`, default 3): the first
N non-yes/no rag-mini-wikipedia questions, each with the `top_k` passages that share most of
its content words, focused and numbered as the answer service does (`build_prompt`), answered
greedily with the production repeat penalty and the system prompt cached, three ways back to
back per prompt: Enclave plain, Enclave with prompt-lookup drafting (`llm_draft_tokens`, 8 if
that is 0), and llama.cpp's own greedy loop for as many decode calls as the plain answer took
(its own counters). A round's tokens/s is its tokens over its decode time; the row reports the
medians, the drafted/llama.cpp and drafted/plain ratios per round, how many drafted answers
are the plain answer's text, and the drafts' acceptance.
The two models are loaded side by side and run in turn, never at once.
Writes results/generate.json (or results/<out>.json).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np
from common import BEIR, CACHE, EVAL, machine, print_table, read_jsonl, write_result  # type: ignore[import-not-found]

from config.settings import load_settings
from retriever.components import build_generator
from retriever.generation import GenerationParams, LlamaCppGenerator, Message
from retriever.grounding import content_words, focus
from retriever.model_process import ModelProcessGenerator
from retriever.prompt import SOURCES, SYSTEM_PROMPT, build_prompt, fixed_prefix
from retriever.types import Chunk, Hit

WIKI = EVAL / "rag-mini-wikipedia"
QUESTION = "Question: Summarize what each source says.\nAnswer with a citation like [1]:"


def prompt_of(generator: LlamaCppGenerator, tokens: int) -> list[Message]:
    """System prompt + numbered SciFact abstracts, about `tokens` long after the template."""
    budget = tokens - generator.count_tokens(SYSTEM_PROMPT + QUESTION) - 30
    blocks: list[str] = []
    for n, row in enumerate(read_jsonl(BEIR / "corpus.jsonl"), start=1):
        block = f"[{n}] {row['title']}\n{row['text']}"
        cost = generator.count_tokens(block) + 2
        if cost > budget:
            words = block.split(" ")
            while words and generator.count_tokens(" ".join(words)) + 2 > budget:
                words = words[: int(len(words) * 0.9)]
            blocks.append(" ".join(words))
            break
        blocks.append(block)
        budget -= cost
    user = f"{SOURCES}" + "\n\n".join(blocks) + f"\n\n{QUESTION}"
    return [{"role": "system", "content": SYSTEM_PROMPT}, {"role": "user", "content": user}]


def answer_prompts(
    generator: LlamaCppGenerator, count: int, top_k: int, keep: int, max_tokens: int
) -> list[list[Message]]:
    """Answer prompts as the answer service builds them (`build_prompt`, each source focused on
    its `keep` sentences nearest the question): the first `count` rag-mini-wikipedia questions
    whose answer is not yes or no, each with the `top_k` passages sharing most of its content
    words (a stand-in for retrieval that needs no index)."""
    passages = list(read_jsonl(WIKI / "passages.jsonl"))
    words = [content_words(p["passage"]) for p in passages]
    prompts: list[list[Message]] = []
    for row in read_jsonl(WIKI / "qa.jsonl"):
        if str(row["answer"]).strip().lower() in ("yes", "no"):
            continue
        question = str(row["question"])
        asked = content_words(question)
        best = sorted(range(len(passages)), key=lambda i: -len(asked & words[i]))[:top_k]
        hits = [
            Hit(
                Chunk(
                    id=str(i),
                    document_id=str(i),
                    index=0,
                    text=focus(question, passages[i]["passage"], keep),
                    path=f"wiki/{passages[i]['id']}.txt",
                    title="",
                    collection="bench",
                ),
                score=1.0,
            )
            for i in best
        ]
        built = build_prompt(question, hits, generator.count_tokens, 2048, max_tokens)
        prompts.append(built.messages)
        if len(prompts) == count:
            break
    return prompts


def run_answer(
    enclave: ModelProcessGenerator, messages: list[Message], max_tokens: int, draft_tokens: int
) -> dict[str, Any]:
    """One answer as `enclave serve` writes it: the system prompt cached, greedy, the
    production repeat penalty; decode time from the first piece to the last."""
    enclave.prime(fixed_prefix())
    params = GenerationParams(
        max_tokens=max_tokens, temperature=0.0, repeat_penalty=1.15, draft_tokens=draft_tokens
    )
    pieces: list[str] = []
    first = last = 0.0
    for piece in enclave.stream(messages, params):
        last = time.perf_counter()
        first = first or last
        pieces.append(piece)
    stats = enclave.call("stats")
    return {"text": "".join(pieces), "decode_s": last - first, **stats}


def run_llama_answer(generator: LlamaCppGenerator, tokens: list[int], steps: int) -> dict:
    """llama.cpp's own greedy decoding of the same prompt for `steps` decode calls (as many as
    Enclave's answer took), the shared part of the KV cache kept as Enclave keeps it."""
    import llama_cpp

    llm = generator.llm
    generator._evaluate(tokens)
    perf_reset(generator)
    n_vocab = llm.n_vocab()

    def greedy() -> int:
        logits = llama_cpp.llama_get_logits_ith(llm.ctx, -1)
        return int(np.argmax(np.ctypeslib.as_array(logits, shape=(n_vocab,))))

    token = greedy()
    start = time.perf_counter()
    for _ in range(steps):
        llm.eval([token])
        token = greedy()
    end = time.perf_counter()
    counters = perf(generator)
    return {"steps": steps, "clock_s": end - start, "own_s": counters.t_eval_ms / 1000}


def answers_row(
    enclave: ModelProcessGenerator,
    generator: LlamaCppGenerator,
    prompts: list[list[Message]],
    rounds: int,
    max_tokens: int,
    draft_tokens: int,
) -> dict[str, Any]:
    """Decode speed on answer prompts: Enclave without and with prompt-lookup drafting against
    llama.cpp's own greedy loop, each round over every prompt, the three back to back per
    prompt in turning order; a round's tokens/s is its tokens over its decode time."""
    tokens = [generator._prompt_tokens(m) for m in prompts]
    kinds = ("plain", "drafted", "llama")
    per_round: list[dict[str, float]] = []
    same_text = 0
    drafted = accepted = batches = generated = 0
    for round_ in range(rounds):
        totals = {f"{k}_{x}": 0.0 for k in kinds for x in ("tokens", "s")}
        for n, messages in enumerate(prompts):
            results: dict[str, dict[str, Any]] = {}
            order = list(kinds[:2]) if (round_ + n) % 2 == 0 else list(kinds[1::-1])
            for kind in order:
                results[kind] = run_answer(
                    enclave, messages, max_tokens, draft_tokens if kind == "drafted" else 0
                )
            steps = max(1, int(results["plain"]["generated"]) - 1)
            llama = run_llama_answer(generator, tokens[n], steps)
            for kind in ("plain", "drafted"):
                totals[f"{kind}_tokens"] += max(0, int(results[kind]["generated"]) - 1)
                totals[f"{kind}_s"] += results[kind]["decode_s"]
            totals["llama_tokens"] += steps
            totals["llama_s"] += llama["own_s"]
            if round_ == 0:
                same_text += results["plain"]["text"] == results["drafted"]["text"]
                d = results["drafted"]
                drafted, accepted = drafted + d["drafted"], accepted + d["accepted"]
                batches, generated = batches + d["batches"], generated + d["generated"]
        per_round.append({k: totals[f"{k}_tokens"] / max(1e-9, totals[f"{k}_s"]) for k in kinds})
        print(f"round {round_ + 1}: " + ", ".join(f"{k} {v:.1f}" for k, v in per_round[-1].items()))

    def median(key: str) -> float:
        return round(statistics.median(r[key] for r in per_round), 1)

    ratios = [r["drafted"] / r["llama"] for r in per_round]
    return {
        "answer_prompts": len(prompts),
        "prompt_tokens_median": int(statistics.median(len(t) for t in tokens)),
        "draft_tokens": draft_tokens,
        "enclave_tokens_per_s_plain": median("plain"),
        "enclave_tokens_per_s_drafted": median("drafted"),
        "llama_cpp_tokens_per_s_own": median("llama"),
        "ratio_drafted_to_llama_cpp": round(statistics.median(ratios), 3),
        "ratio_pairs_min": round(min(ratios), 3),
        "ratio_pairs_max": round(max(ratios), 3),
        "ratio_drafted_to_plain": round(
            statistics.median(r["drafted"] / r["plain"] for r in per_round), 3
        ),
        "same_text_as_plain": f"{same_text}/{len(prompts)}",
        "draft_acceptance": round(accepted / max(1, drafted), 3),
        "tokens_per_drafted_batch": round(accepted / max(1, batches) + 1, 2),
        "drafted_batches_share": round(batches / max(1, generated), 3),
    }


def perf(generator: LlamaCppGenerator) -> Any:
    import llama_cpp

    return llama_cpp.llama_perf_context(generator.llm.ctx)


def perf_reset(generator: LlamaCppGenerator) -> None:
    import llama_cpp

    llama_cpp.llama_perf_context_reset(generator.llm.ctx)


def run_enclave(
    enclave: ModelProcessGenerator, messages: list[Message], max_tokens: int, cold: bool
) -> dict[str, float]:
    if cold:
        enclave.call("forget")
    else:
        enclave.prime(fixed_prefix())
    enclave.call("perf_counters", True)  # reset
    params = GenerationParams(max_tokens=max_tokens, temperature=0.0, repeat_penalty=1.15)
    start = time.perf_counter()
    first = last = 0.0
    for _ in enclave.stream(messages, params):
        last = time.perf_counter()
        if not first:
            first = last
    counters = enclave.call("perf_counters")
    decoded = max(1, int(counters["n_eval"]))
    return {
        "ttft_ms": (first - start) * 1000,
        "tokens_per_s": decoded / max(1e-9, last - first),
        "prompt_evaluated": counters["n_p_eval"],
        "tokens": decoded + 1,
    }


def run_llama_cpp(generator: LlamaCppGenerator, tokens: list[int], max_tokens: int) -> dict:
    import llama_cpp

    llm = generator.llm
    llm.reset()
    perf_reset(generator)
    start = time.perf_counter()
    llm.eval(tokens)
    n_vocab = llm.n_vocab()

    def greedy() -> int:
        logits = llama_cpp.llama_get_logits_ith(llm.ctx, -1)
        return int(np.argmax(np.ctypeslib.as_array(logits, shape=(n_vocab,))))

    token = greedy()
    first = time.perf_counter()
    for _ in range(max_tokens - 1):
        llm.eval([token])
        token = greedy()
    end = time.perf_counter()
    counters = perf(generator)
    return {
        "ttft_ms": (first - start) * 1000,
        "tokens_per_s": (max_tokens - 1) / (end - first),
        "own_prompt_ms": counters.t_p_eval_ms,
        "own_tokens_per_s": counters.n_eval / (counters.t_eval_ms / 1000),
        "own_prompt_tokens_per_s": counters.n_p_eval / (counters.t_p_eval_ms / 1000),
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="256,1024,3072")
    parser.add_argument("--rounds", type=int, default=9)
    parser.add_argument("--max-tokens", type=int, default=128)
    parser.add_argument("--model", type=Path, help="another GGUF (default: the bundled one)")
    parser.add_argument("--out", default="generate", help="results/<out>.json")
    parser.add_argument(
        "--answers", type=int, default=20, help="answer prompts for the drafting row (0: none)"
    )
    parser.add_argument("--answer-rounds", type=int, default=3)
    args = parser.parse_args()
    overrides = {"llm_model": str(args.model)} if args.model else {}
    settings = load_settings(
        data_dir=CACHE, embed_cache_dir=str(CACHE / "models"), llm_context=4096, **overrides
    )
    threads = settings.llm_threads or os.cpu_count() or 1
    # What `enclave serve` runs: the model in its own process, under the chosen CPU profile.
    enclave = build_generator(settings)
    assert isinstance(enclave, ModelProcessGenerator), settings.llm_backend
    enclave.wait_ready()
    # A run on a busy machine may take longer than llm_timeout_s: not a hung model here.
    enclave.timeout_s = 3600.0
    # llama.cpp on its own: the same file and settings as the child's, in this process.
    generator = LlamaCppGenerator(**enclave.spec.kwargs)
    rows: list[dict[str, Any]] = []
    answers: dict[str, Any] | None = None
    if args.answers:
        prompts = answer_prompts(
            generator,
            args.answers,
            settings.top_k,
            settings.focus_sentences,
            settings.llm_max_tokens,
        )
        answers = answers_row(
            enclave,
            generator,
            prompts,
            args.answer_rounds,
            settings.llm_max_tokens,
            settings.llm_draft_tokens or 8,
        )
        print_table([answers])
    for size in [int(s) for s in args.sizes.split(",") if s]:
        messages = prompt_of(generator, size)
        runs: dict[str, list[dict[str, float]]] = {"cold": [], "cached": [], "llama": []}
        # A first, untimed run warms up and finds the prompt's tokens for the llama.cpp side.
        first = run_enclave(enclave, messages, args.max_tokens, cold=True)
        prompt_tokens = generator._prompt_tokens(messages)
        assert len(prompt_tokens) == first["prompt_evaluated"], (len(prompt_tokens), first)
        kinds = {
            "cold": partial(run_enclave, enclave, messages, args.max_tokens, cold=True),
            "llama": partial(run_llama_cpp, generator, prompt_tokens, args.max_tokens),
            "cached": partial(run_enclave, enclave, messages, args.max_tokens, cold=False),
        }
        for round_ in range(args.rounds):
            # Enclave and llama.cpp run back to back, so drift in the VM's speed between
            # rounds falls on both sides of a pair's ratio alike; the order within the pair
            # alternates, and the cached run goes before or after the pair in turn.
            pair = ["cold", "llama"] if round_ % 2 == 0 else ["llama", "cold"]
            order = [*pair, "cached"] if round_ % 4 < 2 else ["cached", *pair]
            for kind in order:
                runs[kind].append(kinds[kind]())
        pair_ratios = [
            ours["tokens_per_s"] / theirs["own_tokens_per_s"]
            for ours, theirs in zip(runs["cold"], runs["llama"], strict=True)
        ]
        # Time to first token against llama.cpp's own prompt evaluation, pair by pair.
        ttft_ratios = [
            ours["ttft_ms"] / theirs["own_prompt_ms"]
            for ours, theirs in zip(runs["cold"], runs["llama"], strict=True)
        ]

        def median(kind: str, key: str, runs: dict[str, list[dict[str, float]]] = runs) -> float:
            return round(statistics.median(r[key] for r in runs[kind]), 1)

        def best(kind: str, key: str, runs: dict[str, list[dict[str, float]]] = runs) -> float:
            return round(max(r[key] for r in runs[kind]), 1)

        llama_tps = median("llama", "own_tokens_per_s")
        rows.append(
            {
                "prompt_tokens": len(prompt_tokens),
                "enclave_ttft_ms_cold": median("cold", "ttft_ms"),
                "enclave_ttft_ms_cached_prefix": median("cached", "ttft_ms"),
                "cached_prefix_tokens": len(prompt_tokens)
                - int(median("cached", "prompt_evaluated")),
                "llama_cpp_ttft_ms": median("llama", "ttft_ms"),
                "llama_cpp_prompt_ms_own": median("llama", "own_prompt_ms"),
                "enclave_tokens_per_s": median("cold", "tokens_per_s"),
                "llama_cpp_tokens_per_s_own": llama_tps,
                "llama_cpp_tokens_per_s_clock": median("llama", "tokens_per_s"),
                # Decode speed on this VM drifts by 10-20% between runs a minute apart: the
                # ratio is the median of the rounds' paired ratios (each pair back to back),
                # with the lowest and highest pair beside it; the ratio of the best round of
                # each side (as `timeit` takes the minimum) is kept for comparison.
                "ratio_tokens_per_s": round(statistics.median(pair_ratios), 3),
                "ratio_pairs_min": round(min(pair_ratios), 3),
                "ratio_pairs_max": round(max(pair_ratios), 3),
                "ratio_tokens_per_s_best": round(
                    best("cold", "tokens_per_s") / best("llama", "own_tokens_per_s"), 3
                ),
                "enclave_tokens": median("cold", "tokens"),
                "ratio_ttft_to_llama_prompt": round(statistics.median(ttft_ratios), 3),
                "ratio_ttft_pairs_min": round(min(ttft_ratios), 3),
                "ratio_ttft_pairs_max": round(max(ttft_ratios), 3),
            }
        )
        print_table(rows[-1:])
    enclave.close()
    result = {
        "benchmark": "generate",
        "model": enclave.name,
        "model_process": True,
        "cpu_profile": enclave.spec.profile,
        "cpu_profile_settings": enclave.spec.describe(),
        "flash_attention": bool(enclave.spec.kwargs.get("flash_attention")),
        "fast_cpu_weights": settings.llm_fast_cpu_weights,
        "threads": threads,
        "max_tokens": args.max_tokens,
        "rounds": args.rounds,
        "rows": rows,
        "answers": answers,
        "machine": machine(),
    }
    print_table(rows)
    write_result(args.out, result)
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
