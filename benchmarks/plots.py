"""PNG plots from benchmarks/results/*.json (run after the benchmarks).

    python benchmarks/plots.py

serve.png: answers/s and latency against concurrent clients; retrieve.png: p95 latency per
mode against index size, with the brute-force baseline; embedder.png: chunks/s per backend;
generate.png: time to first token and tokens/s against prompt length, Enclave and llama.cpp.
"""

from __future__ import annotations

import json
import sys
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
from common import RESULTS  # type: ignore[import-not-found]


def load(name: str) -> dict[str, Any] | None:
    path = RESULTS / f"{name}.json"
    return json.loads(path.read_text()) if path.exists() else None


def save(fig: Any, name: str) -> None:
    fig.tight_layout()
    fig.savefig(RESULTS / f"{name}.png", dpi=110)
    plt.close(fig)
    print(f"wrote benchmarks/results/{name}.png")


def plot_serve(data: dict[str, Any]) -> None:
    rows = data["rows"]
    clients = [r["clients"] for r in rows]
    fig, (left, right) = plt.subplots(1, 2, figsize=(9, 3.4))
    left.plot(clients, [r["answers_per_s"] for r in rows], "o-")
    left.set(xlabel="concurrent clients", ylabel="answers/s", title="Throughput", xscale="log")
    right.plot(clients, [r["p50_s"] for r in rows], "o-", label="p50")
    right.plot(clients, [r["p95_s"] for r in rows], "s--", label="p95")
    right.set(xlabel="concurrent clients", ylabel="seconds", title="Answer latency (200s)")
    right.set_xscale("log")
    right.legend()
    for ax in (left, right):
        ax.set_xticks(clients, [str(c) for c in clients])
    save(fig, "serve")


def plot_retrieve(data: dict[str, Any]) -> None:
    fig, ax = plt.subplots(figsize=(6, 3.6))
    modes: dict[str, list[tuple[int, float]]] = {}
    for row in data["rows"]:
        modes.setdefault(row["mode"], []).append((row["chunks"], row["p95_ms"]))
    for mode, points in modes.items():
        points.sort()
        style = "k:" if "numpy" in mode else "-"
        ax.plot([p[0] for p in points], [p[1] for p in points], style, marker="o", label=mode)
    ax.axhline(50, color="red", linewidth=0.8, linestyle="--", label="goal: hybrid p95 50 ms")
    ax.set(xscale="log", xlabel="chunks in the index", ylabel="p95 latency (ms)")
    ax.set_title("Query latency, query embedding included")
    ax.legend(fontsize=8)
    save(fig, "retrieve")


def plot_embedder(data: dict[str, Any]) -> None:
    rows = data["rows"]
    fig, ax = plt.subplots(figsize=(5, 3.2))
    ax.bar([r["backend"] for r in rows], [r["chunks_per_s"] for r in rows])
    for i, r in enumerate(rows):
        ax.annotate(f"{r['speedup_vs_torch']}x", (i, r["chunks_per_s"]), ha="center", va="bottom")
    ax.set(ylabel="chunks/s", title="Embedder throughput (same chunks, same run)")
    save(fig, "embedder")


def plot_generate(data: dict[str, Any]) -> None:
    rows = data["rows"]
    sizes = [r["prompt_tokens"] for r in rows]
    fig, (left, right) = plt.subplots(1, 2, figsize=(9, 3.4))
    left.plot(sizes, [r["enclave_ttft_ms_cold"] for r in rows], "o-", label="Enclave, cold")
    left.plot(
        sizes,
        [r["enclave_ttft_ms_cached_prefix"] for r in rows],
        "s-",
        label="Enclave, system prompt cached",
    )
    left.plot(sizes, [r["llama_cpp_ttft_ms"] for r in rows], "k:", marker="o", label="llama.cpp")
    left.set(xlabel="prompt tokens", ylabel="ms", title="Time to first token")
    left.legend(fontsize=8)
    right.plot(sizes, [r["enclave_tokens_per_s"] for r in rows], "o-", label="Enclave")
    right.plot(
        sizes,
        [r["llama_cpp_tokens_per_s_own"] for r in rows],
        "k:",
        marker="o",
        label="llama.cpp (own timer)",
    )
    right.set(xlabel="prompt tokens", ylabel="tokens/s", title="Decode speed")
    right.legend(fontsize=8)
    save(fig, "generate")


def main() -> int:
    for name, plot in (
        ("serve", plot_serve),
        ("retrieve", plot_retrieve),
        ("embedder", plot_embedder),
        ("generate", plot_generate),
    ):
        data = load(name)
        if data is not None:
            plot(data)
    return 0


if __name__ == "__main__":
    sys.exit(main())
