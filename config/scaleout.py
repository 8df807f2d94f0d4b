"""Running on several processes or machines: the Celery work queue on Redis and the number of
web server processes (docs/deployment.md)."""

from __future__ import annotations

from typing import Literal

from pydantic import ConfigDict, Field

from config.section import Section


class ScaleOutSettings(Section):
    model_config = ConfigDict(title="Scale-out")

    work_queue: Literal["local", "celery"] = Field(
        "local",
        description="Who indexes: the server's own thread (local) or Celery workers (celery).",
    )
    redis_url: str = Field(
        "",
        description="Redis (redis://host:port/db): Celery's broker, and the generation queue "
        "shared by every web worker; empty: none.",
    )
    celery_visibility_timeout_s: float = Field(
        3600.0,
        gt=0,
        le=86400,
        description="Seconds before a task a lost worker held is delivered again.",
    )
    celery_max_retries: int = Field(
        5, ge=0, le=100, description="Retries of a failing indexing task, with backoff."
    )
    web_workers: int = Field(
        1, ge=1, le=256, description="Web server processes (gunicorn above 1)."
    )
