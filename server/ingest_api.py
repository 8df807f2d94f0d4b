"""Ingestion progress under /api/v1/ingest."""

from __future__ import annotations

from typing import Annotated, Any

from flask import Blueprint
from pydantic import BaseModel, Field

from server.access import readable
from server.common import require_ready
from server.contract import Invalid, digits, route
from server.errors import ApiError
from server.state import state

ingest_api = Blueprint("ingest_api", __name__, url_prefix="/api/v1/ingest")


class JobsQuery(BaseModel):
    limit: Annotated[
        int,
        Field(ge=1, le=200, description="How many jobs, at most."),
        digits,
        Invalid("'limit' must be an integer from 1 to 200"),
    ] = 50


class JobList(BaseModel):
    jobs: Annotated[
        list[dict[str, Any]],
        Field(description="Newest first: kind, status, counts by outcome, rates and ETA."),
    ]


class Retried(BaseModel):
    documents: Annotated[list[str], Field(description="The ids of the documents pending again.")]
    count: int


@route(ingest_api, "/jobs", scope="admin", query=JobsQuery, responses={200: JobList})
def list_ingest_jobs(query: JobsQuery) -> JobList:
    """Recent ingestion jobs (CLI runs, inbox scans, uploads) with progress, rates and ETA."""
    return JobList(jobs=state().pipeline.jobs.list(query.limit))


@route(
    ingest_api,
    "/jobs/<job_id>",
    scope="admin",
    responses={200: dict[str, Any]},
    errors=(404,),
)
def get_ingest_job(job_id: str) -> dict[str, Any]:
    """One job with the state of each of its files."""
    job = state().pipeline.jobs.get(job_id)
    if job is None:
        raise ApiError(404, "job_not_found", f"no ingestion job with id '{job_id}'")
    return job


@route(
    ingest_api,
    "/retry-failed",
    "POST",
    scope="ingest",
    responses={202: Retried},
    errors=(503,),
)
def retry_failed() -> tuple[Retried, int]:
    """Index every failed document again from its file, as one job.

    Files that are gone stay failed."""
    require_ready()
    st = state()
    failed = [r for r in st.pipeline.registry.list("failed") if readable(r)]
    pending = st.reindex(failed, "retry")
    return Retried(documents=[r.id for r in pending], count=len(pending)), 202
