"""`enclave ingest`, `enclave reindex` and `enclave status`: the documents in the data dir."""

from __future__ import annotations

import json
import signal
import sys
import threading
from pathlib import Path

import click

from cli.common import enclave_command, fail, path_type
from config.settings import Settings
from ingest.lock import lock_or_server

JSON_SUMMARY = "end with one JSON summary line"


@enclave_command("ingest", "index files or folders")
@click.argument("paths", nargs=-1, type=path_type())
@click.option("--force", is_flag=True, help="re-index even unchanged files")
@click.option("--retry-failed", is_flag=True, help="retry every failed document")
@click.option("--json", "as_json", is_flag=True, help=JSON_SUMMARY)
def ingest(
    settings: Settings, paths: tuple[Path, ...], force: bool, retry_failed: bool, as_json: bool
) -> int:
    from ingest.pipeline import discover

    if not paths and not retry_failed:
        fail("name files or folders to ingest, or --retry-failed")
    files = list(discover(list(paths)))
    lock = lock_or_server(settings, "enclave ingest")
    if isinstance(lock, str):
        from cli.handoff import upload_files

        print(f"the server at {lock} holds {settings.data_dir}; handing the files to it")
        return upload_files(lock, files, json_summary=as_json, settings=settings)
    try:
        summary = _ingest_locally(settings, list(paths), files, force, retry_failed)
    finally:
        lock.release()
    print(
        f"{summary['indexed']} indexed, {summary['renamed']} moved, {summary['unchanged']} "
        f"unchanged, {summary['deleted']} deleted, {summary['failed']} failed, "
        f"{summary['skipped']} skipped; "
        f"{summary['chunks']} chunks in {summary['seconds']} s"
    )
    for failure in summary["failures"]:  # type: ignore[attr-defined]
        print(f"failed: {failure['path']}: {failure['error']}")
    if as_json:
        print(json.dumps(summary))
    return 1 if summary["failed"] else 0


def _ingest_locally(
    settings: Settings, paths: list[Path], files: list[Path], force: bool, retry_failed: bool
) -> dict[str, object]:
    from tqdm import tqdm

    from ingest.pipeline import FileOutcome, build_pipeline
    from retriever.components import Components

    pipeline = build_pipeline(Components(settings))

    def interrupted(signum: int, frame: object) -> None:
        pipeline.stopping.set()  # files parsed ahead are dropped, not parsed on the way out
        raise KeyboardInterrupt

    main_thread = threading.current_thread() is threading.main_thread()
    previous = signal.signal(signal.SIGINT, interrupted) if main_thread else None
    try:
        pipeline.jobs.close_interrupted()  # runs killed before this one
        chunks = 0
        bar = tqdm(total=len(files), unit="file", desc="Ingesting", file=sys.stderr, disable=None)

        job = pipeline.jobs.start("cli", len(files))
        log_file = pipeline.jobs.recorder(job)

        def progress(path: str, outcome: FileOutcome) -> None:
            nonlocal chunks
            log_file(path, outcome)
            chunks += outcome.chunks
            bar.set_postfix(chunks=chunks, last=Path(path).name[:24], refresh=False)
            bar.update(1)

        pipeline.resume_pending()
        report = pipeline.ingest_file_list(files, progress=progress, force=force)
        # A folder ingested again: its files that are gone leave the index too.
        for outcome in pipeline.remove_missing(p for p in paths if p.is_dir()):
            log_file(outcome.path, outcome)
            report.outcomes.append(outcome)
        if retry_failed:
            report.outcomes += pipeline.retry_failed()
        pipeline.jobs.finish(job)
        bar.close()
    finally:
        if main_thread:
            signal.signal(signal.SIGINT, previous)
        pipeline.close()  # a job cut short (Ctrl-C) ends `interrupted`
    return report.to_dict()


@enclave_command("reindex", "rebuild both indexes from the registry and files")
@click.option("--json", "as_json", is_flag=True, help=JSON_SUMMARY)
def reindex(settings: Settings, as_json: bool) -> int:
    from ingest.lock import DataDirLock
    from ingest.pipeline import build_pipeline
    from ingest.reindex import reindex_all
    from retriever.components import Components

    with DataDirLock(settings.data_dir, "enclave reindex"):
        pipeline = build_pipeline(Components(settings))
        try:
            report = reindex_all(pipeline)
        finally:
            pipeline.close()
    body = report.to_dict()
    print(
        f"{report.indexed} of {report.documents} documents indexed again ({report.chunks} "
        f"chunks, {body['seconds']} s); {report.failed} failed, {len(report.missing)} missing"
    )
    for path in report.missing:
        print(f"missing (marked deleted): {path}")
    if as_json:
        print(json.dumps(body))
    return 1 if report.failed else 0


@enclave_command("status", "documents by status, failures")
@click.option("--json", "as_json", is_flag=True)
def status(settings: Settings, as_json: bool) -> int:
    from ingest.registry import Registry

    if not (settings.database_url or settings.registry_path.exists()):
        counts: dict[str, int] = {}
        failed: list[dict[str, object]] = []
    else:
        registry = Registry(settings.database_for(settings.registry_path))
        counts = registry.counts()
        failed = [{"path": r.path, "error": r.error} for r in registry.list("failed")]
    body = {"data_dir": str(settings.data_dir.resolve()), "documents": counts, "failed": failed}
    if as_json:
        print(json.dumps(body))
        return 0
    print(f"data: {body['data_dir']}")
    if not counts:
        print("no documents yet: `enclave ingest PATH`")
    for state, n in counts.items():
        print(f"  {state:8} {n}")
    for f in failed:
        print(f"failed: {f['path']}: {f['error']}")
    return 0
