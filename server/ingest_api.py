"""Ingestion progress under /api/v1/ingest."""

from __future__ import annotations

from flask import Blueprint, jsonify, request
from flask.typing import ResponseReturnValue

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
