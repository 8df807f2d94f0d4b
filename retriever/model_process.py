"""The llama.cpp model in a supervised child process, as Ollama runs its llama.cpp runner and
as Enclave runs its parsers (ingest/workers.py): a crash in native code (a SIGSEGV in a CPU
kernel, an out-of-memory kill) or a hang fails the answer being written, never the server.

The parent holds a `ModelProcessGenerator`, which implements the `Generator` protocol: it
counts tokens itself (a vocabulary-only llama.cpp model, no weights and no compute) and sends
each generation to the child over a pipe, whole `GenerationParams` included; the child runs a
`LlamaCppGenerator` (its KV cache lives on between requests, so the primed system prompt is
reused) and streams the pieces back. The parent stops the child between two tokens when the
client goes away or the request's deadline passes. A child that sends nothing by the deadline
and for `HANG_GRACE_S` after it, that does not stop when asked, or that dies, is killed and
replaced, and that request gets `ModelUnavailable`.

At start (`start_llamacpp`), the CPU profile is chosen: `fast` is what the settings ask for
(the Q8_0 rewrite, flash attention, llama.cpp's extra buffer types such as the AMX kernels);
`safe` is the file as shipped, no flash attention, no extra buffer types. With
`llm_cpu_profile = "auto"` a first start on a machine runs a short generation under `fast` in
the child; if the child crashes, Enclave runs `safe`. The verdict is kept in the data
directory, keyed by the CPU, the llama-cpp-python version and the model file.
"""

from __future__ import annotations

import hashlib
import importlib
import json
import logging
import multiprocessing
import os
import platform
import signal
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any, Literal

from retriever.child_process import PipedChild
from retriever.generation import (
    GenerationError,
    GenerationParams,
    Message,
    ModelUnavailable,
)

log = logging.getLogger(__name__)

STARTUP_TIMEOUT_S = 300.0  # loading the model (and the self-test) on a busy machine
HANG_GRACE_S = 5.0  # how long past a deadline a silent child is given before it is killed
# Pieces written within this long of the last message go in the next one: a message per token
# wakes the parent between two decodes, on the cores llama.cpp decodes on (decode rate against
# llama.cpp's own, 1k-token prompt, 2-core EPYC, two A/B pairs: 0.98 and 0.96 with, 0.95 and
# 0.95 without). The first piece goes at once (time to first token); a reader sees text at
# least every 30 ms; a cancel is still read between any two tokens.
PIECE_INTERVAL_S = 0.03
# Test hook: a child whose profile is named here (comma-separated) crashes (SIGSEGV) on its
# first generation, as llama.cpp's AMX kernels did on some Xeons; only the tests set it.
CRASH_HOOK_ENV = "ENCLAVE_TEST_CRASH_PROFILE"
SELF_TEST: list[Message] = [{"role": "user", "content": "Say hello in one word."}]
VERDICTS_FILE = "llm-cpu-profile.json"

Profile = Literal["fast", "safe"]


@dataclass(frozen=True)
class ModelSpec:
    """What the child loads: `factory` ("module:callable") called with `kwargs`, a Generator."""

    factory: str
    kwargs: dict[str, Any] = field(default_factory=dict)
    profile: str = "fast"

    def describe(self) -> str:
        k = self.kwargs
        if "model_path" not in k:
            return self.profile
        return (
            f"{Path(k['model_path']).name}, flash attention "
            f"{'on' if k.get('flash_attention', True) else 'off'}, extra buffer types "
            f"{'on' if k.get('extra_buffer_types', True) else 'off'}"
        )


def _load(spec: ModelSpec) -> Any:
    module, _, name = spec.factory.partition(":")
    return getattr(importlib.import_module(module), name)(**spec.kwargs)


def _crash_hook(profile: str) -> None:
    if profile in os.environ.get(CRASH_HOOK_ENV, "").split(","):
        os.kill(os.getpid(), signal.SIGSEGV)


def _serve(conn: Connection, spec: ModelSpec, self_test: bool, prime: list[Message] | None) -> None:
    """The child: load, self-test if asked, prime the KV cache with the system prompt the
    previous child had, say ("ready", info) or ("failed", reason); then serve requests:
    ("stream", messages, params) -> ("piece", text)... ("end", None) | ("error", reason),
    stopped early by ("cancel",); ("prime", messages); ("call", method, args) -> ("value", x)."""
    try:
        generator = _load(spec)
        if self_test:
            _crash_hook(spec.profile)
            for _ in generator.stream(SELF_TEST, GenerationParams(max_tokens=8)):
                pass
        if prime is not None and hasattr(generator, "prime"):
            _crash_hook(spec.profile)
            generator.prime(prime)
    except Exception as exc:
        conn.send(("failed", f"{type(exc).__name__}: {exc}"))
        return
    conn.send(("ready", {"name": generator.name, "context_size": generator.context_size}))
    while True:
        try:
            request = conn.recv()
        except EOFError:  # the parent went away
            return
        kind = request[0]
        try:
            if kind == "stream":
                _crash_hook(spec.profile)
                _stream(conn, generator.stream(request[1], request[2]))
            elif kind == "prime":
                _crash_hook(spec.profile)
                if hasattr(generator, "prime"):
                    generator.prime(request[1])
                conn.send(("end", None))
            elif kind == "call":
                conn.send(("value", getattr(generator, request[1])(*request[2])))
            # else: a "cancel" that crossed the end of its generation; nothing to stop
        except GenerationError as exc:
            conn.send(("error", str(exc)))
        except Exception as exc:
            conn.send(("error", f"the model failed: {type(exc).__name__}: {exc}"))


def _stream(conn: Connection, pieces: Iterator[str]) -> None:
    held: list[str] = []
    sent = float("-inf")
    try:
        for piece in pieces:
            if conn.poll():  # the only message a parent sends mid-generation: cancel
                conn.recv()
                held.clear()
                break
            held.append(piece)
            now = time.perf_counter()
            if now - sent >= PIECE_INTERVAL_S:
                conn.send(("piece", "".join(held)))
                held.clear()
                sent = now
    finally:
        close = getattr(pieces, "close", None)
        if close is not None:
            close()
    if held:
        conn.send(("piece", "".join(held)))
    conn.send(("end", None))


def exit_reason(code: int | None) -> str:
    """How a child ended, in words: 'killed by SIGSEGV', 'exited with code 1'..."""
    if code is None:
        return "still running"
    if code < 0:
        try:
            name = signal.Signals(-code).name
        except ValueError:
            name = f"signal {-code}"
        return f"killed by {name}" + (" (out of memory?)" if name == "SIGKILL" else "")
    return f"exited with code {code}"


class _Child(PipedChild):
    def __init__(self, spec: ModelSpec, self_test: bool, prime: list[Message] | None) -> None:
        # spawn: never fork a threaded server
        context = multiprocessing.get_context("spawn")
        super().__init__(context, _serve, (spec, self_test, prime), "enclave-model")
        self.info: dict[str, Any] | None = None
        self.error = ""
        self.died = False
        self.started = time.perf_counter()

    def wait_ready(self, timeout_s: float) -> dict[str, Any] | None:
        """The child's info once it is up; None if it failed, died or is not up in time."""
        if self.info is None and not self.error:
            try:
                if self.conn.poll(max(0.0, timeout_s)):
                    kind, payload = self.conn.recv()
                    if kind == "ready":
                        self.info = payload
                    else:
                        self.error = str(payload)
            except (EOFError, OSError):
                self.died = True  # its exit code says how
        return self.info

    def stop(self) -> str:
        """Kill the child (if it still runs); how it ended."""
        return exit_reason(self.kill())


class ModelProcessGenerator:
    """A `Generator` whose model runs in a child process, restarted when it fails."""

    def __init__(
        self,
        spec: ModelSpec,
        count_tokens: Callable[[str], int],
        context_size: int,
        name: str = "",
        timeout_s: float = 120.0,
        self_test: bool = False,
        startup_timeout_s: float = STARTUP_TIMEOUT_S,
    ) -> None:
        self.spec = spec
        self._count_tokens = count_tokens
        self.context_size = context_size
        self.name = name or spec.profile
        self.timeout_s = timeout_s
        self.startup_timeout_s = startup_timeout_s
        self.hang_grace_s = HANG_GRACE_S
        self.profile_reason = ""
        self.restarts = 0
        self.last_crash: dict[str, Any] | None = None
        # One generation at a time: the child has one llama.cpp context.
        self._lock = threading.Lock()
        self._primed: list[Message] | None = None  # a replacement child primes it too
        self._child = _Child(spec, self_test, None)

    # -- the Generator protocol --------------------------------------------------------
    def count_tokens(self, text: str) -> int:
        return self._count_tokens(text)

    def stream(self, messages: list[Message], params: GenerationParams) -> Iterator[str]:
        deadline = params.deadline or time.perf_counter() + self.timeout_s
        # The deadline is the parent's clock; the child gets the rest of the params as given.
        with self._use(deadline) as child:
            child.conn.send(("stream", messages, replace(params, deadline=None)))
            ended = False
            try:
                while True:
                    kind, payload = self._receive(child, deadline, "writing an answer")
                    if kind == "piece":
                        yield payload
                    elif kind == "end":
                        ended = True
                        return
                    else:
                        ended = True
                        raise GenerationError(str(payload))
            finally:
                if not ended:  # closed early (client gone, deadline) or failed above
                    self._cancel(child)

    def prime(self, messages: list[Message]) -> None:
        """Evaluate the system prompt into the child's KV cache (start-up warm-up)."""
        deadline = time.perf_counter() + self.startup_timeout_s
        self._primed = messages
        with self._use(deadline) as child:
            child.conn.send(("prime", messages))
            kind, payload = self._receive(child, deadline, "warming up")
            if kind == "error":
                raise GenerationError(str(payload))

    # -- for benchmarks and tools --------------------------------------------------------
    def call(self, method: str, *args: Any) -> Any:
        """A method of the model in the child (e.g. `perf_counters`, `forget`)."""
        deadline = time.perf_counter() + self.timeout_s
        with self._use(deadline) as child:
            child.conn.send(("call", method, args))
            kind, payload = self._receive(child, deadline, f"running {method}")
            if kind == "error":
                raise GenerationError(str(payload))
            return payload

    # -- supervision -------------------------------------------------------------------
    @property
    def pid(self) -> int | None:
        return self._child.process.pid

    def wait_ready(self, restart: bool = True) -> None:
        """Block until the model process is up; `ModelUnavailable` if it failed to start
        (then replaced by a new one, unless `restart` is False)."""
        deadline = time.perf_counter() + self.startup_timeout_s
        with self._use(deadline, restart):
            pass

    def status(self) -> dict[str, Any]:
        """For /api/v1/health and the admin page."""
        return {
            "pid": self.pid,
            "alive": self._child.process.is_alive(),
            "profile": self.spec.profile,
            "profile_reason": self.profile_reason,
            "settings": self.spec.describe(),
            "restarts": self.restarts,
            "last_crash": self.last_crash,
        }

    def close(self) -> None:
        self._child.stop()

    @contextmanager
    def _use(self, deadline: float, restart: bool = True) -> Iterator[_Child]:
        """The child, started and ready, held for one request until the `with` ends."""
        if not self._lock.acquire(timeout=max(0.0, deadline - time.perf_counter())):
            raise GenerationError("the model was busy until this request's time ran out")
        try:
            child = self._child
            wait = min(deadline, time.perf_counter() + self.startup_timeout_s)
            if child.wait_ready(wait - time.perf_counter()) is None:
                if child.died:  # its pipe closed: give it a moment to exit, for its exit code
                    child.process.join(timeout=1.0)
                if child.error:
                    self._fail(child, f"could not start: {child.error}", restart=restart)
                if child.died or child.process.exitcode is not None:
                    self._fail(child, "crashed while starting", restart=restart)
                if time.perf_counter() - child.started >= self.startup_timeout_s:
                    self._fail(child, "was not up in time", restart=restart)
                # Still loading (a restart on a busy machine): not a reason to kill it.
                raise ModelUnavailable(
                    "the model is still starting; ask again in a moment (retrieval, "
                    "extractive answers and ingestion are not affected)"
                )
            info = child.info or {}
            self.name = str(info.get("name") or self.name)
            yield child
        finally:
            self._lock.release()

    def _receive(self, child: _Child, deadline: float, doing: str) -> tuple[str, Any]:
        """The child's next message. One that sends nothing by the deadline and for
        `hang_grace_s` after it (the caller stops a generation that goes on past its deadline,
        at the next piece) is hung: it is killed and replaced, as is one that died, and the
        request gets `ModelUnavailable`."""
        wait = max(0.0, deadline - time.perf_counter()) + self.hang_grace_s
        try:
            if child.conn.poll(wait):
                return child.conn.recv()
        except (EOFError, OSError):
            self._fail(child, f"stopped while {doing}")
        self._fail(child, f"hung while {doing}: nothing from it by the deadline", hung=True)
        raise AssertionError("unreachable")  # pragma: no cover

    def _cancel(self, child: _Child) -> None:
        """Stop the generation in the child (between two tokens); kill a child that cannot."""
        if child is not self._child or child.conn.closed:
            return  # already replaced
        if not self._stopped_within(child, self.hang_grace_s):
            try:
                self._fail(child, "hung: it did not stop when asked", hung=True)
            except ModelUnavailable as exc:
                log.warning("%s", exc)

    def _stopped_within(self, child: _Child, grace_s: float) -> bool:
        """Send cancel and read up to the generation's end; False if it did not come."""
        try:
            child.conn.send(("cancel",))
            end = time.perf_counter() + grace_s
            while child.conn.poll(max(0.0, end - time.perf_counter())):
                if child.conn.recv()[0] in ("end", "error", "value"):
                    return True
        except (EOFError, OSError):
            pass
        return False

    def _fail(self, child: _Child, what: str, hung: bool = False, restart: bool = True) -> None:
        """Replace the child (unless not `restart`); raise `ModelUnavailable` saying why."""
        how = child.stop()
        reason = f"the model process {what}" + ("; it was killed" if hung else f" ({how})")
        self.last_crash = {
            "reason": reason,
            "at": time.time(),
            "profile": self.spec.profile,
            "exitcode": child.process.exitcode,
        }
        if restart:
            self.restarts += 1
            log.error("%s; starting a new one (restart %d)", reason, self.restarts)
            self._child = _Child(self.spec, False, self._primed)
        raise ModelUnavailable(
            f"{reason}. The model is restarting; ask again in a moment (retrieval, "
            "extractive answers and ingestion are not affected)."
        )


# -- the CPU profile and its self-test ------------------------------------------------------


def cpu_identity() -> dict[str, str]:
    """The CPU's model name and flags (what decides which llama.cpp kernels run)."""
    model, flags = platform.processor() or platform.machine(), ""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            key, _, value = line.partition(":")
            key = key.strip()
            if key == "model name" and model in ("", platform.machine(), platform.processor()):
                model = value.strip()
            elif key in ("flags", "Features") and not flags:
                flags = " ".join(sorted(value.split()))
    except OSError:
        pass
    return {"model": model, "flags": flags}


def verdict_key(model_path: Path) -> tuple[str, dict[str, Any]]:
    """The verdict's key and what it is made of: CPU, llama-cpp-python version and build
    (a rebuild with other flags, such as the portable one, is tested again), model file."""
    try:
        from llama_cpp import __file__ as llama_init
        from llama_cpp import __version__ as llama_version
    except ImportError:  # pragma: no cover - depends on the install
        llama_init, llama_version = "", "none"
    library = Path(llama_init).parent / "lib" / "libllama.so"
    built = library.stat() if llama_init and library.exists() else None
    stat = model_path.stat()
    parts = {
        "cpu": cpu_identity(),
        "llama_cpp_python": llama_version,
        "llama_cpp_build": {"size": built.st_size, "mtime_ns": built.st_mtime_ns}
        if built
        else None,
        "model": {"name": model_path.name, "size": stat.st_size, "mtime_ns": stat.st_mtime_ns},
    }
    digest = hashlib.sha256(json.dumps(parts, sort_keys=True).encode()).hexdigest()[:24]
    return digest, parts


class Verdicts:
    """Self-test results kept in the data directory, one per (CPU, llama-cpp-python, model)."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def _read(self) -> dict[str, Any]:
        try:
            data = json.loads(self.path.read_text())
            return data if isinstance(data, dict) else {}
        except (OSError, ValueError):
            return {}

    def get(self, key: str) -> dict[str, Any] | None:
        found = self._read().get(key)
        return (
            found if isinstance(found, dict) and found.get("profile") in ("fast", "safe") else None
        )

    def put(self, key: str, verdict: dict[str, Any]) -> None:
        """Keep a verdict (a failure to write is logged: the next start tests again)."""
        data = self._read()
        data[key] = verdict
        # Several web processes may self-test at once: each writes its own file, then renames.
        tmp = self.path.with_name(f"{self.path.name}.{os.getpid()}.tmp")
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            tmp.write_text(json.dumps(data, indent=2, sort_keys=True))
            tmp.replace(self.path)
        except OSError as exc:
            log.warning("could not keep the CPU profile verdict in %s: %s", self.path, exc)


def start_with_profile(
    specs: dict[Profile, ModelSpec],
    choice: Literal["auto", "fast", "safe"],
    verdicts: Verdicts,
    key: tuple[str, dict[str, Any]],
    make: Callable[[ModelSpec, bool], ModelProcessGenerator],
) -> ModelProcessGenerator:
    """The model process, started under the profile `choice` names; with "auto", the cached
    verdict for this machine, else the self-test's: `fast` unless it crashed."""
    digest, parts = key
    if choice != "auto":
        generator = make(specs[choice], False)
        generator.profile_reason = f"llm_cpu_profile = {choice}"
    else:
        verdict = verdicts.get(digest)
        if verdict is not None:
            profile: Profile = verdict["profile"]
            generator = make(specs[profile], False)
            generator.profile_reason = f"{verdict['reason']} (self-test of {verdict.get('tested')})"
        else:
            generator = _self_test(specs, verdicts, digest, parts, make)
    log.info(
        "the model runs with the %s CPU settings (%s): %s",
        generator.spec.profile,
        generator.spec.describe(),
        generator.profile_reason,
    )
    return generator


# How a process dies when native code faults (the AMX kernels died of SIGSEGV): only these make
# the self-test's verdict one to keep for this CPU.
_NATIVE_FAULTS = frozenset(
    (signal.SIGSEGV, signal.SIGILL, signal.SIGBUS, signal.SIGFPE, signal.SIGABRT)
)


def _native_fault(exitcode: int | None) -> bool:
    return exitcode is not None and exitcode < 0 and -exitcode in _NATIVE_FAULTS


def _self_test(
    specs: dict[Profile, ModelSpec],
    verdicts: Verdicts,
    digest: str,
    parts: dict[str, Any],
    make: Callable[[ModelSpec, bool], ModelProcessGenerator],
) -> ModelProcessGenerator:
    log.info(
        "first start on this CPU: testing the fast CPU settings (%s)", specs["fast"].describe()
    )

    def remember(generator: ModelProcessGenerator) -> None:
        verdicts.put(
            digest,
            {
                "profile": generator.spec.profile,
                "reason": generator.profile_reason,
                "tested": time.strftime("%Y-%m-%d %H:%M:%S"),
                **parts,
            },
        )

    fast = make(specs["fast"], True)
    try:
        fast.wait_ready(restart=False)
    except ModelUnavailable as exc:
        fast.close()
        crash = fast.last_crash or {}
        safe = make(specs["safe"], True)
        native = _native_fault(crash.get("exitcode"))
        return _safe_after(safe, crash.get("reason", str(exc)), remember if native else None)
    fast.profile_reason = "the fast settings passed the start-up self-test on this CPU"
    remember(fast)
    return fast


def _safe_after(
    safe: ModelProcessGenerator,
    crash: str,
    remember: Callable[[ModelProcessGenerator], None] | None,
) -> ModelProcessGenerator:
    """The safe settings, started after the fast ones failed the self-test with `crash`. Only
    a fault in native code is remembered for this CPU (`remember` is given): a load error, a
    hang or the out-of-memory killer says nothing sure about its kernels, and the next start
    tests again."""
    log.warning(
        "the fast CPU settings crashed the model's self-test: %s; falling back to the safe "
        "settings (%s)",
        crash,
        safe.spec.describe(),
    )
    reason = (
        f"the fast settings crashed the start-up self-test on this CPU: {crash}"
        if remember
        else f"the fast settings failed the start-up self-test ({crash}), not by a fault in "
        "native code: the safe settings for this start only"
    )
    try:
        safe.wait_ready()
    except ModelUnavailable as again:
        # Nothing to fall back to. The server still serves (retrieval, extractive answers,
        # ingestion); answers that need the model get 503 until this is fixed, and the next
        # start tests again (no verdict kept).
        safe.profile_reason = f"{reason}; the safe settings crashed too: {again}"
        log.error("the model cannot run on this machine: %s", safe.profile_reason)
        return safe
    safe.profile_reason = reason
    if remember:
        remember(safe)
    return safe


# -- the production model -------------------------------------------------------------------

LLAMACPP = "retriever.generation:LlamaCppGenerator"


class VocabTokenizer:
    """Counts tokens as the model in the child does, from the GGUF's vocabulary alone: no
    weights, no compute, nothing a CPU kernel could crash in. Safe from several threads."""

    def __init__(self, model_path: Path) -> None:
        import llama_cpp
        from llama_cpp._internals import LlamaModel

        params = llama_cpp.llama_model_default_params()
        params.vocab_only = True
        # The model alone, no context: llama-cpp-python's `Llama` would make one (and warn).
        self.model = LlamaModel(path_model=str(model_path), params=params, verbose=False)

    def __call__(self, text: str) -> int:
        return len(self.model.tokenize(text.encode("utf-8"), add_bos=False, special=True))


def llamacpp_specs(
    model_path: Path,
    fast_path: Path,
    fast_name: str,
    context_size: int,
    threads: int,
    flash_attention: bool,
) -> dict[Profile, ModelSpec]:
    """The two CPU profiles of a llama.cpp model: what the settings ask for, and the file as
    shipped without flash attention or extra buffer types (no AMX or other repacked kernels)."""
    common = {"context_size": context_size, "threads": threads}
    return {
        "fast": ModelSpec(
            LLAMACPP,
            {
                "model_path": fast_path,
                "flash_attention": flash_attention,
                "name": fast_name,
                **common,
            },
            "fast",
        ),
        "safe": ModelSpec(
            LLAMACPP,
            {
                "model_path": model_path,
                "flash_attention": False,
                "extra_buffer_types": False,
                "name": f"{model_path.name} (safe CPU settings)",
                **common,
            },
            "safe",
        ),
    }


def start_llamacpp(
    specs: dict[Profile, ModelSpec],
    model_path: Path,
    choice: Literal["auto", "fast", "safe"],
    data_dir: Path,
    timeout_s: float,
) -> ModelProcessGenerator:
    """The llama.cpp model in its supervised process, under the CPU profile `choice` asks for
    (`llm_cpu_profile`); "auto" self-tests the fast one on a machine's first start."""
    count = VocabTokenizer(model_path)
    context_size = int(specs["fast"].kwargs["context_size"])

    def make(spec: ModelSpec, self_test: bool) -> ModelProcessGenerator:
        return ModelProcessGenerator(
            spec,
            count,
            context_size,
            name=str(spec.kwargs.get("name", "")),
            timeout_s=timeout_s,
            self_test=self_test,
        )

    return start_with_profile(
        specs, choice, Verdicts(data_dir / VERDICTS_FILE), verdict_key(model_path), make
    )
