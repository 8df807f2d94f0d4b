"""The `enclave` command line: ingest, serve, mcp, worker, reindex, ask, status, eval, tune,
users, groups, keys, audit."""

from __future__ import annotations

import argparse
import contextlib
import json
import logging
import os
import re
import signal
import sys
import threading
from collections.abc import Sequence
from datetime import UTC
from pathlib import Path
from typing import TYPE_CHECKING, Any

import retriever.privacy  # noqa: F401  (offline switches before heavy imports)
from ingest.lock import lock_or_server
from retriever.settings import Settings, SettingsError, load_settings

if TYPE_CHECKING:
    pass


def _common() -> argparse.ArgumentParser:
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--config", help="TOML settings file (or ENCLAVE_CONFIG)")
    common.add_argument(
        "--data", type=Path, help="data directory (or ENCLAVE_DATA; default ./data)"
    )
    return common


def build_parser() -> argparse.ArgumentParser:
    common = _common()
    parser = argparse.ArgumentParser(
        prog="enclave", description="Private question answering over your own documents."
    )
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("ingest", parents=[common], help="index files or folders")
    p.add_argument("paths", nargs="*", type=Path)
    p.add_argument("--force", action="store_true", help="re-index even unchanged files")
    p.add_argument("--retry-failed", action="store_true", help="retry every failed document")
    p.add_argument("--json", action="store_true", help="end with one JSON summary line")

    p = sub.add_parser("serve", parents=[common], help="run the web app and API")
    p.add_argument("--host")
    p.add_argument("--port", type=int)
    p.add_argument(
        "--threads",
        type=int,
        help="HTTP worker threads (default: enough for every generation slot and queue place, "
        "plus 4, so a full queue is answered 429 rather than left waiting)",
    )
    p.add_argument(
        "--workers",
        type=int,
        help="web server processes (setting web_workers; above 1: gunicorn, which needs "
        'work_queue = "celery")',
    )

    sub.add_parser(
        "mcp",
        parents=[common],
        help="serve MCP over stdio for an assistant or IDE (key in ENCLAVE_API_KEY)",
    )

    p = sub.add_parser("worker", parents=[common], help="run a Celery indexing worker")
    p.add_argument("--loglevel", default="INFO")

    p = sub.add_parser(
        "reindex", parents=[common], help="rebuild both indexes from the registry and files"
    )
    p.add_argument("--json", action="store_true", help="end with one JSON summary line")

    p = sub.add_parser("ask", parents=[common], help="answer one question")
    p.add_argument("question")
    p.add_argument("--top-k", type=int)
    p.add_argument("--mode", choices=["hybrid", "dense", "bm25"])
    p.add_argument("--answer-mode", choices=["generative", "extractive"])
    p.add_argument("--json", action="store_true", help="print the API's JSON answer")

    p = sub.add_parser("status", parents=[common], help="documents by status, failures")
    p.add_argument("--json", action="store_true")

    _identity_parsers(sub, common)

    p = sub.add_parser("eval", help="measure quality")
    kinds = p.add_subparsers(dest="eval_kind", required=True)
    p = kinds.add_parser("retrieval", parents=[common], help="retrieval metrics on a dataset")
    source = p.add_mutually_exclusive_group(required=True)
    source.add_argument("--beir", type=Path, help="BEIR folder: corpus/queries.jsonl, qrels/")
    source.add_argument("--qa", type=Path, help="folder with passages.jsonl and qa.jsonl")
    p.add_argument("--split", default="test")
    p.add_argument("--mode", choices=["hybrid", "dense", "bm25"])
    p.add_argument("--limit", type=int, default=0, help="evaluate only the first N queries")
    p.add_argument("--json", action="store_true", help="end with one JSON line")

    p = kinds.add_parser("answers", parents=[common], help="answer quality on a question set")
    p.add_argument(
        "--qa",
        type=Path,
        required=True,
        help="folder with passages.jsonl + qa.jsonl, or a questions.jsonl beside its documents",
    )
    p.add_argument("--mode", choices=["generative", "extractive"], help="answer mode")
    p.add_argument("--retrieval", choices=["hybrid", "dense", "bm25"])
    p.add_argument("--limit", type=int, default=0, help="evaluate only the first N questions")
    p.add_argument("--json", action="store_true", help="end with one JSON line")
    p.add_argument("--details", type=Path, help="write each question's answer to this JSONL file")

    from server.tune_cli import add_parser as add_tune_parser

    add_tune_parser(sub, common)
    return parser


def _identity_parsers(sub: Any, common: argparse.ArgumentParser) -> None:
    """`enclave users|groups|keys|audit`: identities and the audit log, in the data dir."""
    users = sub.add_parser("users", help="users: add, list, disable, enable, role, password")
    users_sub = users.add_subparsers(dest="action", required=True)
    p = users_sub.add_parser("add", parents=[common], help="add a user")
    p.add_argument("name")
    p.add_argument("--role", choices=["ask", "ingest", "admin"], default="ask")
    p.add_argument("--group", action="append", default=[], help="add to this group (repeat)")
    p.add_argument("--password-stdin", action="store_true", help="read a UI password from stdin")
    p = users_sub.add_parser("list", parents=[common], help="list users")
    p.add_argument("--json", action="store_true")
    for action in ("disable", "enable"):
        p = users_sub.add_parser(action, parents=[common], help=f"{action} a user")
        p.add_argument("name")
    p = users_sub.add_parser("role", parents=[common], help="set a user's role")
    p.add_argument("name")
    p.add_argument("role", choices=["ask", "ingest", "admin"])
    p = users_sub.add_parser("password", parents=[common], help="set a password (from stdin)")
    p.add_argument("name")

    groups = sub.add_parser("groups", help="groups: add, list, remove, members")
    groups_sub = groups.add_subparsers(dest="action", required=True)
    p = groups_sub.add_parser("add", parents=[common], help="add a group")
    p.add_argument("name")
    p = groups_sub.add_parser("remove", parents=[common], help="remove a group")
    p.add_argument("name")
    p = groups_sub.add_parser("list", parents=[common], help="groups with their members")
    p.add_argument("--json", action="store_true")
    for action in ("add-member", "remove-member"):
        p = groups_sub.add_parser(action, parents=[common], help=f"{action} (group, user)")
        p.add_argument("name")
        p.add_argument("user")

    keys = sub.add_parser("keys", help="API keys: create, list, revoke")
    keys_sub = keys.add_subparsers(dest="action", required=True)
    p = keys_sub.add_parser("create", parents=[common], help="create a key (shown once)")
    p.add_argument("--user", required=True)
    p.add_argument("--scope", choices=["ask", "ingest", "admin"], default="ask")
    p.add_argument("--expires", help="lifetime: 30d, 12h, 90m, or a date YYYY-MM-DD")
    p.add_argument("--json", action="store_true")
    p = keys_sub.add_parser("list", parents=[common], help="keys, without their secret")
    p.add_argument("--user")
    p.add_argument("--json", action="store_true")
    p = keys_sub.add_parser("revoke", parents=[common], help="revoke a key by id")
    p.add_argument("key_id")

    audit = sub.add_parser("audit", help="the audit log")
    audit_sub = audit.add_subparsers(dest="action", required=True)
    p = audit_sub.add_parser("tail", parents=[common], help="the newest entries")
    p.add_argument("-n", "--lines", type=int, default=20)
    p.add_argument("--action", dest="only_action", help="only this action (ask, login, ...)")
    p.add_argument("--actor", help="only entries whose actor starts with this")
    p.add_argument("--json", action="store_true", help="one JSON object per line")


def _settings(args: argparse.Namespace) -> Settings:
    overrides: dict[str, Any] = {"data_dir": args.data}
    for name in ("host", "port"):
        if getattr(args, name, None) is not None:
            overrides[name] = getattr(args, name)
    if getattr(args, "workers", None) is not None:
        overrides["web_workers"] = args.workers
    return load_settings(args.config, **overrides)


def cmd_ingest(args: argparse.Namespace, settings: Settings) -> int:
    from ingest.pipeline import discover

    if not args.paths and not args.retry_failed:
        print("enclave: name files or folders to ingest, or --retry-failed", file=sys.stderr)
        return 2
    files = list(discover(args.paths))
    lock = lock_or_server(settings, "enclave ingest")
    if isinstance(lock, str):
        from server.handoff import upload_files

        print(f"the server at {lock} holds {settings.data_dir}; handing the files to it")
        return upload_files(lock, files, json_summary=args.json, settings=settings)
    try:
        summary = _ingest_locally(args, settings, files)
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
    if args.json:
        print(json.dumps(summary))
    return 1 if summary["failed"] else 0


def _ingest_locally(
    args: argparse.Namespace, settings: Settings, files: list[Path]
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
        report = pipeline.ingest_file_list(files, progress=progress, force=args.force)
        # A folder ingested again: its files that are gone leave the index too.
        for outcome in pipeline.remove_missing(p for p in args.paths if p.is_dir()):
            log_file(outcome.path, outcome)
            report.outcomes.append(outcome)
        if args.retry_failed:
            report.outcomes += pipeline.retry_failed()
        pipeline.jobs.finish(job)
        bar.close()
    finally:
        if main_thread:
            signal.signal(signal.SIGINT, previous)
        pipeline.close()  # a job cut short (Ctrl-C) ends `interrupted`
    return report.to_dict()


def prepare_metrics_dir(settings: Settings) -> None:
    """prometheus_client's multiprocess mode for `serve --workers N`: every process writes its
    metrics under the data dir (emptied of a previous run's), and /metrics sums them. Set
    before server.metrics (and prometheus_client) is imported, as its metrics are made then."""
    import shutil

    folder = settings.data_dir / "prometheus"
    shutil.rmtree(folder, ignore_errors=True)
    folder.mkdir(parents=True, exist_ok=True)
    os.environ["PROMETHEUS_MULTIPROC_DIR"] = str(folder)
    values = sys.modules.get("prometheus_client.values")
    if values is not None:  # imported already: values made from now on use the folder
        values.ValueClass = values.get_value_class()  # type: ignore[attr-defined]


def cmd_serve(args: argparse.Namespace, settings: Settings) -> int:
    if settings.web_workers > 1:
        prepare_metrics_dir(settings)
    from waitress import serve

    from ingest.lock import DataDirLock
    from ingest.work_queue import WorkQueueError, check_settings
    from server.app import create_app
    from server.auth import check_bind

    check_bind(settings)  # before taking the data directory: auth none on loopback only

    logging.basicConfig(
        level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    logging.getLogger("httpx").setLevel(logging.WARNING)
    check_settings(settings)
    threads = args.threads or settings.generation_slots + settings.generation_queue + 4
    if not args.threads and settings.escalation_policy != "never":
        threads += settings.escalation_slots + settings.escalation_queue
    url = f"http://{settings.host}:{settings.port}"
    owner = f"enclave serve at {url}"
    if settings.web_workers > 1:
        from server.gunicorn_app import serve_gunicorn

        if settings.work_queue != "celery":
            raise WorkQueueError(
                'serve --workers above 1 needs work_queue = "celery": every process would '
                "otherwise index into the same indexes"
            )

        with DataDirLock(settings.data_dir, owner, server_url=url):
            return serve_gunicorn(settings, threads)
    # SIGTERM stops the server as Ctrl-C (SIGINT) does: waitress returns from its loop.
    signal.signal(signal.SIGTERM, _interrupt)
    with DataDirLock(settings.data_dir, owner, server_url=url):
        app = create_app(settings, load="background")
        print(
            f"Enclave serving on http://{settings.host}:{settings.port} "
            f"(data: {settings.data_dir.resolve()})",
            flush=True,
        )
        try:
            serve(app, host=settings.host, port=settings.port, threads=threads, ident="enclave")
        finally:
            _stop(app.extensions["enclave"])
    return 0


STOP_GRACE_S = 10.0  # after Ctrl-C or SIGTERM, the longest wait for indexing in flight


def _interrupt(signum: int, frame: object) -> None:
    raise KeyboardInterrupt


def _stop(state: Any) -> None:
    """Stop `serve` promptly and cleanly: indexing stops at its next file or batch, and every
    store is closed. A second Ctrl-C or SIGTERM, or indexing still busy after STOP_GRACE_S
    (one embedding batch), exits at once: the documents in flight stay pending and are
    finished at the next start, as after a crash."""

    def now(signum: int, frame: object) -> None:
        os._exit(128 + signum)

    signal.signal(signal.SIGINT, now)
    signal.signal(signal.SIGTERM, now)
    print("Enclave stopping", flush=True)
    if not state.stop(STOP_GRACE_S):
        print(
            f"indexing still busy after {STOP_GRACE_S:g} s: exiting now; the documents in "
            "flight are finished at the next start",
            flush=True,
        )
        logging.shutdown()
        os._exit(0)
    print("Enclave stopped", flush=True)


def cmd_mcp(args: argparse.Namespace, settings: Settings) -> int:
    """MCP over stdio (server/mcp_stdio.py)."""
    from server.mcp_stdio import serve_stdio

    return serve_stdio(settings)


def cmd_worker(args: argparse.Namespace, settings: Settings) -> int:
    """A Celery worker: one task at a time (solo pool) in this process, which holds the
    embedder; files are parsed in its parser processes (parse_workers). Run one per core."""
    from ingest.pipeline import build_pipeline
    from ingest.work_queue import WorkQueueError, worker_app, worker_name
    from retriever.components import Components

    logging.basicConfig(
        level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    logging.getLogger("httpx").setLevel(logging.WARNING)  # a line per Chroma server call
    if settings.work_queue != "celery":
        raise WorkQueueError('enclave worker needs work_queue = "celery" (and redis_url)')
    components = Components(settings)
    pipeline = build_pipeline(components)  # loads the embedder and starts the parsers now
    components.embedder.embed(["warm up"])
    app = worker_app(settings, pipeline)
    try:
        app.worker_main(
            ["worker", "--pool=solo", f"--loglevel={args.loglevel}", "-n", worker_name()]
        )
    finally:
        pipeline.close()
    return 0


def cmd_reindex(args: argparse.Namespace, settings: Settings) -> int:
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
    if args.json:
        print(json.dumps(body))
    return 1 if report.failed else 0


def _print_answer(body: dict[str, Any]) -> None:
    print(body["answer"])
    if body["sources"]:
        print("\nSources:")
    for s in body["sources"]:
        page = f", page {s['page']}" if s["page"] else ""
        print(f"  [{s['n']}] {s['title']}{page} ({s['path']})")
    t = body["timings"]
    print(
        f"\nretrieve {t['retrieve_ms']:.0f} ms, generate {t['generate_ms']:.0f} ms, "
        f"{t['tokens_per_s']} tokens/s"
    )


def cmd_ask(args: argparse.Namespace, settings: Settings) -> int:
    from retriever.components import Components
    from retriever.question import Question

    asked = Question(args.question, top_k=args.top_k, mode=args.mode, answer_mode=args.answer_mode)
    answer = Components(settings).answers.ask(asked)
    body = answer.to_dict()
    if args.json:
        print(json.dumps(body))
    else:
        _print_answer(body)
    return 0


def cmd_status(args: argparse.Namespace, settings: Settings) -> int:
    from ingest.registry import Registry

    if not (settings.database_url or settings.registry_path.exists()):
        counts: dict[str, int] = {}
        failed: list[dict[str, object]] = []
    else:
        registry = Registry(settings.database_for(settings.registry_path))
        counts = registry.counts()
        failed = [{"path": r.path, "error": r.error} for r in registry.list("failed")]
    body = {"data_dir": str(settings.data_dir.resolve()), "documents": counts, "failed": failed}
    if args.json:
        print(json.dumps(body))
        return 0
    print(f"data: {body['data_dir']}")
    if not counts:
        print("no documents yet: `enclave ingest PATH`")
    for status, n in counts.items():
        print(f"  {status:8} {n}")
    for f in failed:
        print(f"failed: {f['path']}: {f['error']}")
    return 0


def cmd_eval(args: argparse.Namespace, settings: Settings) -> int:
    from tqdm import tqdm

    from ingest.evaluate import evaluate_beir, evaluate_qa
    from retriever.components import Components

    active = Components(settings)
    if active.generation.number:  # measure the embedder that serves: a tuned one if active
        settings = settings.model_copy(update={"embed_model": str(active.embedder_path())})

    bar: tqdm[Any] | None = None

    def progress(done: int, total: int) -> None:
        nonlocal bar
        if bar is None:
            bar = tqdm(total=total, unit="doc", desc="Indexing", file=sys.stderr, disable=None)
        bar.update(done - bar.n)

    if args.eval_kind == "answers":
        from server.eval_answers import evaluate_answers

        questions = tqdm(unit="question", desc="Asking", file=sys.stderr, disable=None)

        def asked(done: int, total: int) -> None:
            questions.total = total
            questions.update(done - questions.n)

        with contextlib.ExitStack() as stack:
            details = stack.enter_context(args.details.open("w")) if args.details else None
            result = evaluate_answers(
                settings, args.qa, args.mode, args.retrieval, args.limit, progress, asked, details
            )
        questions.close()
    else:
        retrieval = args.mode or settings.retrieval_mode
        if args.beir:
            result = evaluate_beir(settings, args.beir, args.split, retrieval, args.limit, progress)
        else:
            result = evaluate_qa(settings, args.qa, retrieval, args.limit, progress)
    if bar is not None:
        bar.close()
    for key, value in result.items():
        print(f"{key:16} {value}")
    if args.json:
        print(json.dumps(result))
    return 0


def cmd_tune(args: argparse.Namespace, settings: Settings) -> int:
    from server.tune_cli import cmd_tune as run_tune

    return run_tune(args, settings)


def _expiry(text: str | None) -> float | None:
    if not text:
        return None
    import time
    from datetime import datetime

    match = re.fullmatch(r"(\d+)([dhm])", text.strip())
    if match:
        seconds = {"d": 86400, "h": 3600, "m": 60}[match.group(2)]
        return time.time() + int(match.group(1)) * seconds
    try:
        return datetime.strptime(text, "%Y-%m-%d").replace(tzinfo=UTC).timestamp()
    except ValueError:
        raise SettingsError(f"--expires {text!r}: use 30d, 12h, 90m or YYYY-MM-DD") from None


def cmd_identity(args: argparse.Namespace, settings: Settings) -> int:
    """users, groups and keys; every change is written to the audit log."""
    from retriever.audit import AuditLog
    from server.identity import IdentityError, IdentityStore

    store = IdentityStore(settings.database_for(settings.identity_path))
    audit = AuditLog(settings.database_for(settings.audit_path), settings.audit_retention_days)
    admin = f"cli:{_os_user()}"
    kind, action = args.command, args.action
    try:
        if kind == "users":
            return _users(args, store, audit, admin)
        if kind == "groups":
            return _groups(args, store, audit, admin)
        return _keys(args, store, audit, admin)
    except IdentityError as exc:
        print(f"enclave {kind} {action}: {exc}", file=sys.stderr)
        return 1
    finally:
        store.close()
        audit.close()


def _os_user() -> str:
    import getpass

    try:
        return getpass.getuser()
    except Exception:
        return "unknown"


def _read_password() -> str:
    password = sys.stdin.readline().rstrip("\n")
    if len(password) < 8:
        raise SettingsError("a password needs at least 8 characters")
    return password


def _users(args: argparse.Namespace, store: Any, audit: Any, admin: str) -> int:
    if args.action == "add":
        password = _read_password() if args.password_stdin else None
        user = store.add_user(args.name, args.role, password)
        for group in args.group:
            if group not in store.groups():
                store.add_group(group)
            store.add_member(group, args.name)
        audit.record(admin, "user_add", args.name, role=args.role, groups=args.group)
        print(f"user {user.name} added (role {user.role})")
    elif args.action == "list":
        users = [u.to_dict() for u in store.users()]
        if args.json:
            print(json.dumps(users))
        for u in users if not args.json else []:
            state = "disabled" if u["disabled"] else "enabled"
            print(f"{u['name']:24} {u['role']:7} {state:8} {','.join(u['groups'])}")
    elif args.action in ("disable", "enable"):
        store.set_disabled(args.name, args.action == "disable")
        audit.record(admin, f"user_{args.action}", args.name)
        print(f"user {args.name} {args.action}d")
    elif args.action == "role":
        store.set_role(args.name, args.role)
        audit.record(admin, "user_role", args.name, role=args.role)
        print(f"user {args.name} now has role {args.role}")
    elif args.action == "password":
        store.set_password(args.name, _read_password())
        audit.record(admin, "user_password", args.name)
        print(f"password of {args.name} set")
    return 0


def _groups(args: argparse.Namespace, store: Any, audit: Any, admin: str) -> int:
    if args.action == "add":
        store.add_group(args.name)
    elif args.action == "remove":
        store.remove_group(args.name)
    elif args.action == "add-member":
        store.add_member(args.name, args.user)
    elif args.action == "remove-member":
        store.remove_member(args.name, args.user)
    else:
        groups = store.groups()
        if args.json:
            print(json.dumps(groups))
        else:
            for name, members in groups.items():
                print(f"{name:24} {','.join(members)}")
        return 0
    audit.record(
        admin, f"group_{args.action.replace('-', '_')}", args.name, user=getattr(args, "user", None)
    )
    print(f"group {args.name}: {args.action} done")
    return 0


def _keys(args: argparse.Namespace, store: Any, audit: Any, admin: str) -> int:
    if args.action == "create":
        key, secret = store.create_key(args.user, args.scope, _expiry(args.expires))
        audit.record(admin, "key_create", key.id, user=args.user, scope=args.scope)
        if args.json:
            print(json.dumps({**key.to_dict(), "key": secret}))
        else:
            print(secret)
            print(
                f"key {key.id} for {args.user}, scope {args.scope}: shown once, store it now",
                file=sys.stderr,
            )
    elif args.action == "list":
        keys = [k.to_dict() for k in store.keys(args.user)]
        if args.json:
            print(json.dumps(keys))
        for k in keys if not args.json else []:
            state = "active" if k["active"] else ("revoked" if k["revoked_at"] else "expired")
            print(f"{k['id']:14} {k['user']:24} {k['scope']:7} {state}")
    else:
        store.revoke_key(args.key_id)
        audit.record(admin, "key_revoke", args.key_id)
        print(f"key {args.key_id} revoked")
    return 0


def cmd_audit(args: argparse.Namespace, settings: Settings) -> int:
    from retriever.audit import AuditLog

    audit = AuditLog(settings.database_for(settings.audit_path), settings.audit_retention_days)
    try:
        entries = audit.tail(args.lines, args.only_action, args.actor)
    finally:
        audit.close()
    for entry in entries:
        e = entry.to_dict()
        if args.json:
            print(json.dumps(e))
        else:
            print(f"{e['at']} {e['actor']} {e['action']} {e['target']} {json.dumps(e['detail'])}")
    return 0


COMMANDS = {
    "tune": cmd_tune,
    "ingest": cmd_ingest,
    "users": cmd_identity,
    "groups": cmd_identity,
    "keys": cmd_identity,
    "audit": cmd_audit,
    "serve": cmd_serve,
    "worker": cmd_worker,
    "reindex": cmd_reindex,
    "ask": cmd_ask,
    "mcp": cmd_mcp,
    "status": cmd_status,
    "eval": cmd_eval,
}


def main(argv: Sequence[str] | None = None) -> int:
    os.umask(0o077)  # the data directory's files are the server user's alone
    args = build_parser().parse_args(argv)
    try:
        settings = _settings(args)
        return COMMANDS[args.command](args, settings)
    except SettingsError as exc:
        print(f"enclave: {exc}", file=sys.stderr)
        return 2
    except (FileNotFoundError, RuntimeError, ValueError) as exc:
        print(f"enclave: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("enclave: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
