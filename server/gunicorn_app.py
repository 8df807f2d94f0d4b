"""`enclave serve --workers N` (N > 1): gunicorn with N worker processes, each with its own
app (models loaded after the fork, in the background). The generation slots and queue are
shared through Redis (`redis_url`), ingestion goes to Celery workers, and one of the
processes follows the inbox (`ingest.inbox.InboxLeader`)."""

from __future__ import annotations

from typing import Any

from gunicorn.app.base import BaseApplication

from config.settings import Settings


class EnclaveGunicorn(BaseApplication):
    def __init__(self, settings: Settings, threads: int) -> None:
        self.settings = settings
        self.threads = threads
        super().__init__()

    def load_config(self) -> None:
        s = self.settings
        self.cfg.set("bind", [f"{s.host}:{s.port}"])
        self.cfg.set("workers", s.web_workers)
        # Threads, as with waitress: a streamed answer holds one for its whole length.
        self.cfg.set("worker_class", "gthread")
        self.cfg.set("threads", self.threads)
        self.cfg.set("timeout", int(s.llm_timeout_s) + 60)
        self.cfg.set("graceful_timeout", 30)
        self.cfg.set("preload_app", False)  # torch and llama.cpp are not fork-safe
        self.cfg.set("proc_name", "enclave")

    def load(self) -> Any:
        from server.app import create_app

        return create_app(self.settings, load="background")


def serve_gunicorn(settings: Settings, threads: int) -> int:
    print(
        f"Enclave serving on http://{settings.host}:{settings.port} with {settings.web_workers} "
        f"gunicorn workers (data: {settings.data_dir.resolve()})",
        flush=True,
    )
    EnclaveGunicorn(settings, threads).run()
    return 0
