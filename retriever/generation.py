"""Model runtimes behind one small interface: llama.cpp in process (default), an
OpenAI-compatible server on the premises, ctransformers (legacy GGML), and a fake for tests."""

from __future__ import annotations

import json
import math
import re
import threading
import weakref
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

import numpy as np

from retriever.token_loop import PromptLookup, StreamedText, accept_draft, pick_token

if TYPE_CHECKING:
    import llama_cpp
    from llama_cpp import Llama
    from llama_cpp.llama_chat_format import Jinja2ChatFormatter

Message = dict[str, str]


class GenerationError(RuntimeError):
    pass


class ModelUnavailable(GenerationError):
    """The model's process crashed, hung or could not start: this answer failed, the process
    is being restarted, the next question can be answered (HTTP 503 `model_unavailable`)."""


@dataclass
class GenerationParams:
    max_tokens: int = 200
    temperature: float = 0.0
    repeat_penalty: float = 1.15
    stop: list[str] = field(default_factory=list)
    # `time.perf_counter()` by which the reply must be over; None: the generator's own limit.
    # A model in another process that sends nothing by then is stopped (retriever.model_process).
    deadline: float | None = None
    # Prompt-lookup speculative decoding, greedy only (temperature 0): up to this many tokens
    # drafted from the prompt where the answer so far repeats it, checked in one batch, the
    # same text as without. 0: off. Only Enclave's own llama.cpp loop drafts.
    draft_tokens: int = 0


class Generator(Protocol):
    name: str
    context_size: int

    def count_tokens(self, text: str) -> int: ...

    def stream(self, messages: list[Message], params: GenerationParams) -> Iterator[str]: ...


class LlamaCppGenerator:
    """llama-cpp-python, in process. The chat template comes from the GGUF's metadata."""

    def __init__(
        self,
        model_path: Path,
        context_size: int = 2048,
        threads: int = 0,
        flash_attention: bool = True,
        name: str = "",
        extra_buffer_types: bool = True,
    ) -> None:
        """`extra_buffer_types=False` loads the weights without llama.cpp's extra CPU buffer
        types (no repacking for the AMX or other tiled kernels): slower on some CPUs, and the
        way around kernels that crash on others (`llm_cpu_profile`)."""
        try:
            import llama_cpp
            from llama_cpp import Llama
        except ImportError as exc:  # pragma: no cover - depends on the install
            raise GenerationError(
                "llama-cpp-python is not installed: `pip install llama-cpp-python`"
            ) from exc
        import os

        self.name = name or model_path.name
        self.context_size = context_size
        load_cpu_backends()
        with _model_params(extra_buffer_types):
            self.llm = Llama(
                model_path=str(model_path),
                n_ctx=context_size,
                n_threads=threads or os.cpu_count() or 1,
                flash_attn=flash_attention,
                verbose=False,
            )
        # A llama.cpp context is not thread-safe: one generation at a time per instance.
        self._lock = threading.Lock()
        self._n_vocab = self.llm.n_vocab()
        self._vocab = llama_cpp.llama_model_get_vocab(self.llm.model)
        self._chat_template = _chat_template(self.llm)
        self._batch: llama_cpp.llama_batch | None = None  # for drafted tokens, made when needed
        self._batch_size = 0
        self._free_batch: weakref.finalize | None = None
        # The last generation's counts: prompt tokens evaluated, tokens generated, drafted,
        # drafted and accepted, drafted batches (benchmarks read them through `stats`).
        self.last_stats: dict[str, int] = {}
        self.last_tokens: list[int] = []  # the last generation's tokens (tests compare them)

    def count_tokens(self, text: str) -> int:
        return len(self.llm.tokenize(text.encode("utf-8"), add_bos=False, special=True))

    def stream(self, messages: list[Message], params: GenerationParams) -> Iterator[str]:
        """The reply, piece by piece: llama.cpp decodes; choosing each token and cutting the
        text at stop strings is `retriever.token_loop` (cheaper per token than
        llama-cpp-python's completion loop, same choices). With `params.draft_tokens` and
        greedy decoding, the tokens that follow are drafted from the prompt and checked in
        one batch (`_decode_drafted`): the same tokens, fewer decode calls."""
        import llama_cpp

        with self._lock:
            prompt = self._prompt_tokens(messages)
            room = self.context_size - len(prompt)
            if room <= 0:
                raise GenerationError(
                    f"the prompt is {len(prompt)} tokens; the model's context holds "
                    f"{self.context_size} (llm_context_size)"
                )
            stats = self.last_stats = {"prompt_evaluated": self._evaluate(prompt)}
            limit = min(params.max_tokens, room)
            drafting = params.draft_tokens > 0 and params.temperature <= 0
            lookup = PromptLookup(prompt) if drafting else None
            stats.update(drafted=0, accepted=0, batches=0)
            text = StreamedText(params.stop)
            rng = np.random.default_rng()
            generated: list[int] = []
            self.last_tokens = generated
            token = pick_token(
                self._logits(-1), generated, params.repeat_penalty, params.temperature, rng
            )
            # `pending`: tokens chosen and not yet shown, the last of them not yet evaluated.
            pending = [token]
            while pending:
                token = pending.pop(0)
                if llama_cpp.llama_vocab_is_eog(self._vocab, token):
                    break
                generated.append(token)
                if lookup is not None:
                    lookup.add(token)
                piece = text.add(self.llm.detokenize([token]))
                if piece:
                    yield piece
                if text.stopped or len(generated) >= limit:
                    break
                if pending:
                    continue  # a confirmed draft token: evaluated already
                draft = (
                    lookup.draft(min(params.draft_tokens, limit - len(generated)))
                    if lookup is not None
                    else []
                )
                if draft:
                    pending = self._decode_drafted(token, draft, generated, params)
                    stats["drafted"] += len(draft)
                    stats["accepted"] += len(pending) - 1
                    stats["batches"] += 1
                else:
                    self.llm.eval([token])
                    pending = [
                        pick_token(
                            self._logits(-1),
                            generated,
                            params.repeat_penalty,
                            params.temperature,
                            rng,
                        )
                    ]
            stats["generated"] = len(generated)
            rest = text.finish()
            if rest:
                yield rest

    def _logits(self, i: int) -> np.ndarray:
        """llama.cpp's own logits row of the last decode's i-th output (-1: the last)."""
        import llama_cpp

        row = llama_cpp.llama_get_logits_ith(self.llm.ctx, i)
        return np.ctypeslib.as_array(row, shape=(self._n_vocab,))

    def _decode_drafted(
        self, token: int, draft: list[int], generated: list[int], params: GenerationParams
    ) -> list[int]:
        """Evaluate the chosen `token` and the `draft` after it in one batch, with logits at
        every position; keep in the KV cache what greedy decoding confirms (`accept_draft`)
        and drop the rest. Returns the confirmed draft tokens (evaluated) and the token
        chosen after them (not yet evaluated)."""
        import llama_cpp

        llm = self.llm
        batch = self._draft_batch(1 + len(draft))
        n_past = llm.n_tokens
        memory = llama_cpp.llama_get_memory(llm.ctx)
        llama_cpp.llama_memory_seq_rm(memory, 0, n_past, -1)  # as `Llama.eval` does first
        for i, t in enumerate([token, *draft]):
            batch.token[i] = t
            batch.pos[i] = n_past + i  # type: ignore[call-overload]  # llama_cpp's ctypes stubs
            batch.n_seq_id[i] = 1
            batch.seq_id[i][0] = 0
            batch.logits[i] = True
        batch.n_tokens = 1 + len(draft)
        code = llama_cpp.llama_decode(llm.ctx, batch)
        if code != 0:
            raise GenerationError(f"llama_decode returned {code} on a drafted batch")
        chosen = accept_draft(self._logits, draft, generated, params.repeat_penalty)
        kept = [token, *chosen[:-1]]
        llm.input_ids[n_past : n_past + len(kept)] = kept
        llm.n_tokens = n_past + len(kept)
        llama_cpp.llama_memory_seq_rm(memory, 0, llm.n_tokens, -1)
        return chosen

    def _draft_batch(self, size: int) -> llama_cpp.llama_batch:
        """A `llama_batch` for `size` tokens, one sequence (kept, grown as needed)."""
        import llama_cpp

        if self._batch is None or self._batch_size < size:
            if self._free_batch is not None:
                self._free_batch()
            self._batch_size = max(size, 16)
            self._batch = llama_cpp.llama_batch_init(self._batch_size, 0, 1)
            self._free_batch = weakref.finalize(self, llama_cpp.llama_batch_free, self._batch)
        return self._batch

    def _prompt_tokens(self, messages: list[Message]) -> list[int]:
        """The messages through the GGUF's chat template, as llama-cpp-python's chat
        completion renders and tokenizes them."""
        rendered = self._chat_template(messages=messages)  # type: ignore[arg-type]
        return self.llm.tokenize(
            rendered.prompt.encode("utf-8"), add_bos=not rendered.added_special, special=True
        )

    def _evaluate(self, prompt: list[int]) -> int:
        """Evaluate the prompt, reusing the KV cache for the part it shares with the previous
        one (the system prompt, at least); the last token is always evaluated again, so its
        logits are this prompt's. Returns how many tokens were evaluated."""
        n = min(self.llm.n_tokens, len(prompt) - 1)
        differ = np.flatnonzero(self.llm.input_ids[:n] != np.asarray(prompt[:n]))
        shared = int(differ[0]) if differ.size else n
        self.llm.n_tokens = shared  # `eval` drops the KV cache from here on
        self.llm.eval(prompt[shared:])
        return len(prompt) - shared

    def prime(self, messages: list[Message]) -> None:
        """Evaluate a prompt's fixed opening (the system prompt) once, at start-up. llama.cpp
        keeps the previous prompt's tokens in its KV cache and re-evaluates only what follows
        the longest common prefix, so every question then starts after the system prompt;
        the first one also no longer pays for the compute graph's first run."""
        for _ in self.stream(messages, GenerationParams(max_tokens=1)):
            pass

    def stats(self) -> dict[str, int]:
        """`last_stats`, for a caller in another process (`ModelProcessGenerator.call`)."""
        return dict(self.last_stats)

    def perf_counters(self, reset: bool = False) -> dict[str, float]:
        """llama.cpp's own counters since the last reset (prompt and decode tokens, ms)."""
        import llama_cpp

        counters = llama_cpp.llama_perf_context(self.llm.ctx)
        values = {
            name: float(getattr(counters, name))
            for name in ("n_p_eval", "n_eval", "t_p_eval_ms", "t_eval_ms")
        }
        if reset:
            llama_cpp.llama_perf_context_reset(self.llm.ctx)
        return values

    def forget(self) -> None:
        """Empty the KV cache: the next prompt is evaluated whole (a benchmark's cold run)."""
        with self._lock:
            self.llm.reset()


def load_cpu_backends() -> None:
    """Load llama.cpp's CPU backends if it was built with `GGML_BACKEND_DL` (the portable
    build of docs/deployment.md: one library per instruction-set level, the best one for this
    CPU picked at run time). llama-cpp-python does not load them, and without one llama.cpp
    loads no model. A default (native) build has its CPU backend built in: nothing to do.

    Two snags of llama-cpp-python 0.3.36's wheel: it puts the variants
    (`libggml-cpu-<level>.so`) in a `bin/` folder beside the `llama_cpp` package, not in
    `llama_cpp/lib`; and its `lib` folder holds copies, not links, of `libggml.so` and
    `libggml.so.0`, so `llama_cpp._ggml`'s `libggml.so` is a second instance beside the one
    libllama uses, and backends registered there are not seen by libllama."""
    import ctypes

    from llama_cpp._ggml import libggml_base_path

    libggml = _libggml_in_use()
    libggml.ggml_backend_reg_count.restype = ctypes.c_size_t
    libggml.ggml_backend_load_all_from_path.argtypes = [ctypes.c_char_p]
    folders = [Path(libggml_base_path), Path(libggml_base_path).parent.parent / "bin"]
    for folder in folders:
        if libggml.ggml_backend_reg_count() > 0:
            return
        if any(folder.glob("libggml-cpu-*")):
            libggml.ggml_backend_load_all_from_path(str(folder).encode())
    if libggml.ggml_backend_reg_count() == 0:
        raise GenerationError(
            "llama.cpp was built with GGML_BACKEND_DL but no CPU backend library "
            f"(libggml-cpu-*.so) was found in {' or '.join(map(str, folders))}; rebuild it "
            "as docs/deployment.md says"
        )


def _libggml_in_use() -> Any:
    """The libggml that libllama was linked with: the one mapped in this process under its
    soname (`libggml.so.0`, what libllama's NEEDED entry names) once llama_cpp is imported;
    else llama_cpp's own handle (a build whose `libggml.so` is a link, or no /proc)."""
    import ctypes

    import llama_cpp.llama_cpp  # noqa: F401  (loads libllama and the libggml it needs)
    from llama_cpp._ggml import libggml

    try:
        with open("/proc/self/maps") as maps:
            paths = {line.split()[-1] for line in maps}
    except OSError:  # no /proc: not Linux
        return libggml
    by_soname = sorted(p for p in paths if re.search(r"/libggml\.so\.\d+$", p))
    return ctypes.CDLL(by_soname[0]) if by_soname else libggml


@contextmanager
def _model_params(extra_buffer_types: bool) -> Iterator[None]:
    """llama-cpp-python (0.3.x) has no argument for `llama_model_params.use_extra_bufts`: while
    the `Llama` is built, its default model parameters come with the field set as asked."""
    import llama_cpp.llama_cpp as low_level

    if extra_buffer_types:
        yield
        return
    defaults = low_level.llama_model_default_params

    def without_extra_bufts() -> object:
        params = defaults()
        params.use_extra_bufts = False
        return params

    setattr(low_level, "llama_model_default_params", without_extra_bufts)  # noqa: B010
    try:
        yield
    finally:
        setattr(low_level, "llama_model_default_params", defaults)  # noqa: B010


def _chat_template(llm: Llama) -> Jinja2ChatFormatter:
    """The GGUF's own chat template, as llama-cpp-python sets it up for chat completions."""
    from llama_cpp.llama_chat_format import Jinja2ChatFormatter

    template = llm.metadata.get("tokenizer.chat_template")
    if not template:
        raise GenerationError(
            f"{Path(llm.model_path).name} has no chat template in its metadata "
            "(tokenizer.chat_template); Enclave needs an instruction-tuned chat model"
        )

    def text(token: int) -> str:
        return (
            llm.detokenize([token], special=True).decode("utf-8", "replace") if token >= 0 else ""
        )

    eos = llm.token_eos()
    return Jinja2ChatFormatter(template, text(eos), text(llm.token_bos()), stop_token_ids=[eos])


class CTransformersGenerator:
    """Legacy GGML models through ctransformers. It cannot load current GGUF files."""

    def __init__(self, model_path: Path, context_size: int = 2048, threads: int = 0) -> None:
        try:
            from ctransformers import AutoModelForCausalLM
        except ImportError as exc:
            raise GenerationError(
                "the ctransformers backend needs the 'legacy' extra: `pip install enclave[legacy]`"
            ) from exc
        self.name = model_path.name
        self.context_size = context_size
        try:
            self.llm = AutoModelForCausalLM.from_pretrained(
                str(model_path),
                model_type="llama",
                context_length=context_size,
                threads=threads or -1,
            )
        except (RuntimeError, OSError, ValueError) as exc:
            raise GenerationError(
                f"ctransformers could not load {model_path.name}: {exc}. It reads legacy GGML "
                'files only; use llm_backend = "llamacpp" for GGUF models.'
            ) from exc
        self._lock = threading.Lock()

    def count_tokens(self, text: str) -> int:
        return len(self.llm.tokenize(text))

    def stream(self, messages: list[Message], params: GenerationParams) -> Iterator[str]:
        # Legacy models carry no chat template: a plain role-prefixed transcript.
        prompt = "".join(f"{m['role'].capitalize()}: {m['content']}\n" for m in messages)
        prompt += "Assistant:"
        with self._lock:
            yield from self.llm(
                prompt,
                max_new_tokens=params.max_tokens,
                temperature=params.temperature,
                repetition_penalty=params.repeat_penalty,
                stop=params.stop or None,
                stream=True,
            )


class OpenAIGenerator:
    """Any OpenAI-compatible chat server (llama.cpp's, vLLM, a larger model on another machine):
    streamed `POST {base_url}/chat/completions`.

    The OpenAI API exposes no tokenizer, so token counts for the prompt budget are estimated
    on the safe side (one token per `CHARS_PER_TOKEN` characters; English text averages ~4)."""

    CHARS_PER_TOKEN = 3

    def __init__(
        self,
        base_url: str,
        model: str = "",
        api_key: str = "",
        context_size: int = 2048,
        timeout_s: float = 120.0,
    ) -> None:
        import httpx

        self.base_url = base_url.rstrip("/")
        self.context_size = context_size
        headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
        # trust_env=False: no proxy from the environment; the administrator named this host.
        self.client = httpx.Client(
            base_url=self.base_url, headers=headers, timeout=timeout_s, trust_env=False
        )
        self.name = model or self._first_model()

    def _first_model(self) -> str:
        try:
            response = self.client.get("/models")
            response.raise_for_status()
            return str(response.json()["data"][0]["id"])
        except Exception as exc:
            raise GenerationError(
                f"cannot list the models of {self.base_url}: {exc}; name one in the settings"
            ) from exc

    def count_tokens(self, text: str) -> int:
        return math.ceil(len(text) / self.CHARS_PER_TOKEN)

    def stream(self, messages: list[Message], params: GenerationParams) -> Iterator[str]:
        import httpx

        body = {
            "model": self.name,
            "messages": messages,
            "max_tokens": params.max_tokens,
            "temperature": params.temperature,
            "stream": True,
        }
        if params.stop:
            body["stop"] = params.stop
        try:
            # Leaving the `with` (finished, or closed early by a client that went away)
            # closes the connection, which stops the server's generation.
            with self.client.stream("POST", "/chat/completions", json=body) as response:
                if response.status_code != 200:
                    response.read()
                    raise GenerationError(
                        f"{self.base_url} answered {response.status_code}: {response.text[:300]}"
                    )
                for line in response.iter_lines():
                    text = _sse_delta(line)
                    if text is None:
                        break
                    if text:
                        yield text
        except httpx.HTTPError as exc:
            raise GenerationError(f"model server {self.base_url} failed: {exc}") from exc


def _sse_delta(line: str) -> str | None:
    """The text of one server-sent event line of a chat completion stream; None at the end."""
    if not line.startswith("data:"):
        return ""
    data = line[5:].strip()
    if data == "[DONE]":
        return None
    try:
        choices = json.loads(data).get("choices") or [{}]
    except json.JSONDecodeError as exc:
        raise GenerationError(f"the model server sent an unreadable event: {data[:200]}") from exc
    return str((choices[0].get("delta") or {}).get("content") or "")


class FakeGenerator:
    """Deterministic stand-in at the model boundary, for fast unit tests.

    Replies with queued texts (`enqueue`), else quotes the first sentence of source [1];
    `history` records every message list it was given, `yielded` the pieces of the last
    reply handed out and `stopped_early` how many replies were closed before their end.
    """

    def __init__(self, context_size: int = 2048) -> None:
        self.name = "fake"
        self.context_size = context_size
        self.queue: list[str] = []
        self.history: list[list[Message]] = []
        self.yielded = 0
        self.stopped_early = 0

    def enqueue(self, *replies: str) -> None:
        self.queue.extend(replies)

    def count_tokens(self, text: str) -> int:
        return len(re.findall(r"\w+|[^\w\s]", text))

    def stream(self, messages: list[Message], params: GenerationParams) -> Iterator[str]:
        self.history.append(messages)
        if self.queue:
            reply = self.queue.pop(0)
        else:
            match = re.search(r"\[1\][^\n]*\n([^\n.]+\.)", messages[-1]["content"])
            reply = f"{match.group(1).strip()} [1]" if match else "I don't know."
        words = reply.split(" ")[: params.max_tokens]
        self.yielded = 0
        finished = False
        try:
            for i, word in enumerate(words):
                self.yielded += 1
                yield word if i == 0 else " " + word
            finished = True
        finally:
            if not finished:
                self.stopped_early += 1
