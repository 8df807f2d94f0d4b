"""The language model that writes answers: backend, file, decoding, CPU settings, and how many
answers it writes at once (retriever/generation.py, model_process.py, slots.py)."""

from __future__ import annotations

from typing import Literal

from pydantic import ConfigDict, Field

from config.section import Section


class ModelSettings(Section):
    model_config = ConfigDict(title="Model")

    llm_backend: Literal["llamacpp", "openai", "ctransformers", "fake"] = Field("llamacpp")
    llm_model: str = Field(
        "",
        description="Path of a GGUF (or GGML) model; empty: bundled SmolLM2. With the openai "
        "backend: the model name on the server (empty: its first).",
    )
    llm_endpoint: str = Field(
        "", description="Base URL of an OpenAI-compatible server, for the openai backend."
    )
    llm_api_key: str = Field("", description="Bearer key for llm_endpoint, if it needs one.")
    llm_timeout_s: float = Field(
        120.0, gt=0, le=3600, description="Longest time one answer may take (queue included)."
    )
    llm_threads: int = Field(0, ge=0, le=256, description="CPU threads; 0: all cores.")
    llm_context: int = Field(2048, ge=256, le=131072, description="Context window in tokens.")
    llm_fast_cpu_weights: bool = Field(
        True,
        description="Run a Q4_1/Q5_0/Q5_1 GGUF as its Q8_0 rewrite (made once in the models "
        "folder): llama.cpp's fast CPU kernels cover Q8_0, not those types.",
    )
    llm_flash_attention: bool = Field(
        True, description="llama.cpp's flash attention: faster prompts on CPU, same answers."
    )
    llm_cpu_profile: Literal["auto", "fast", "safe"] = Field(
        "auto",
        description="llama.cpp CPU settings: fast (the two above, extra buffer types such as "
        "AMX kernels), safe (the file as shipped, none of them), auto (fast unless it crashes "
        "a self-test on this machine's first start).",
    )
    llm_max_tokens: int = Field(200, ge=1, le=4096, description="Most new tokens per answer.")
    llm_temperature: float = Field(0.0, ge=0, le=2)
    llm_repeat_penalty: float = Field(1.15, ge=1, le=2)
    llm_draft_tokens: int = Field(
        0,
        ge=0,
        le=32,
        description="Prompt-lookup speculative decoding (greedy only): tokens drafted from the "
        "sources and checked in one batch (8 is a good size); 0: off.",
    )
    generation_slots: int = Field(1, ge=1, le=64, description="Generations run at once.")
    generation_queue: int = Field(
        8, ge=0, le=1024, description="Questions that may wait for a slot; more get 429."
    )
