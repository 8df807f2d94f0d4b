"""Ingestion progress under /api/v1/ingest."""

from __future__ import annotations

from flask import Blueprint, jsonify, request
from flask.typing import ResponseReturnValue

from server.access import readable
from server.common import require_ready
from server.errors import ApiError
from server.state import state

ingest_api = Blueprint("ingest_api", __name__, url_prefix="/api/v1/ingest")


@ingest_api.get("/jobs")
def list_jobs() -> ResponseReturnValue:
    limit = request.args.get("limit", "50")
    if not limit.isdigit() or not 1 <= int(limit) <= 200:
        raise ApiError(400, "invalid_limit", "'limit' must be an integer from 1 to 200")
    return jsonify({"jobs": state().pipeline.jobs.list(int(limit))})


@ingest_api.get("/jobs/<job_id>")
def get_job(job_id: str) -> ResponseReturnValue:
    job = state().pipeline.jobs.get(job_id)
    if job is None:
        raise ApiError(404, "job_not_found", f"no ingestion job with id '{job_id}'")
    return jsonify(job)


@ingest_api.post("/retry-failed")
def retry_failed() -> ResponseReturnValue:
    """Index every failed document again from its file, as one job (files that are gone
    stay failed)."""
    require_ready()
    st = state()
    failed = [r for r in st.pipeline.registry.list("failed") if readable(r)]
    pending = st.reindex(failed, "retry")
    return jsonify({"documents": [r.id for r in pending], "count": len(pending)}), 202
