"""`enclave tune ...`: make training pairs, tune the embedder, activate a tuned model, roll
back, show which embedder serves."""

from __future__ import annotations

import argparse
import json
import signal
import sys
import threading
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

from config.settings import Settings
from ingest.lock import lock_or_server
from retriever.tuning.generations import GenerationError, Generations
from retriever.tuning.train import TrainConfig
from server.handoff import auth_headers


def add_parser(sub: Any, common: argparse.ArgumentParser) -> None:
    p = sub.add_parser("tune", help="adapt the embedder to the indexed documents")
    kinds = p.add_subparsers(dest="tune_kind", required=True)

    t = kinds.add_parser("embedder", parents=[common], help="fine-tune the embedder")
    t.add_argument(
        "--pairs",
        default="auto",
        help="'auto' (titles, headings and SLM-written questions from the index) or a JSONL "
        'file of {"query", "passage"} lines',
    )
    t.add_argument("--epochs", type=int, default=1)
    t.add_argument("--out", type=Path, help="output folder (default: data/models/tuned-N)")
    t.add_argument("--batch-size", type=int, default=32)
    t.add_argument("--lr", type=float, default=5e-5, help="peak learning rate")
    t.add_argument(
        "--max-seq-length", type=int, default=192, help="tokens of a passage read in training"
    )
    t.add_argument("--checkpoint-steps", type=int, default=10)
    t.add_argument(
        "--questions", type=int, default=200, help="chunks the SLM writes a question for"
    )
    t.add_argument("--max-pairs", type=int, default=5000, help="most pairs used (auto)")
    t.add_argument("--beir", type=Path, help="also compare on this BEIR folder's test split")
    t.add_argument("--json", action="store_true", help="end with the report as one JSON line")

    t = kinds.add_parser(
        "pairs", parents=[common], help="write a pairs JSONL from a BEIR folder's qrels"
    )
    t.add_argument("--beir", type=Path, required=True)
    t.add_argument("--split", default="train")
    t.add_argument("--out", type=Path, required=True, help="JSONL file to write")

    t = kinds.add_parser("activate", parents=[common], help="serve from a tuned model")
    t.add_argument("model", type=Path, help="a `tune embedder` output folder or a model")
    t.add_argument("--json", action="store_true")

    t = kinds.add_parser("rollback", parents=[common], help="back to the previous embedder")
    t.add_argument("--json", action="store_true")

    t = kinds.add_parser("status", parents=[common], help="which embedder serves")
    t.add_argument("--json", action="store_true")


def cmd_tune(args: argparse.Namespace, settings: Settings) -> int:
    if args.tune_kind == "pairs":
        from retriever.tuning.pairs import pairs_from_beir, write_pairs

        n = write_pairs(args.out, pairs_from_beir(args.beir, args.split))
        print(f"{n} pairs from {args.beir} ({args.split} split) written to {args.out}")
        return 0
    if args.tune_kind == "embedder":
        return _tune(args, settings)
    if args.tune_kind == "status":
        current, previous = Generations(settings.data_dir).read()
        body = {"current": vars(current), "previous": vars(previous) if previous else None}
        if args.json:
            print(json.dumps(body))
        else:
            print(f"serving: {current.describe()}, collection {current.collection}")
            if previous:
                print(f"rollback goes to: {previous.describe()}")
        return 0
    return _switch(args, settings, args.model.resolve() if args.tune_kind == "activate" else None)


def _tune(args: argparse.Namespace, settings: Settings) -> int:
    from tqdm import tqdm

    from server.tuning import TuneHooks, TuneOptions, tune_embedder

    bars: dict[str, Any] = {}

    def counter(name: str, unit: str) -> Any:
        def update(done: int, total: int, loss: float | None = None) -> None:
            bar = bars.get(name)
            if bar is None or bar.total != total:
                bar = bars[name] = tqdm(total=total, unit=unit, desc=name, file=sys.stderr)
            if loss is not None and loss == loss:  # not NaN (no step taken yet)
                bar.set_postfix(loss=f"{loss:.4f}", refresh=False)
            bar.update(done - bar.n)

        return update

    options = TuneOptions(
        pairs=args.pairs,
        out=args.out,
        config=TrainConfig(
            epochs=args.epochs,
            batch_size=args.batch_size,
            learning_rate=args.lr,
            max_seq_length=args.max_seq_length,
            checkpoint_steps=args.checkpoint_steps,
        ),
        questions=args.questions,
        max_pairs=args.max_pairs,
        beir=args.beir,
    )
    # The first Ctrl-C stops after the current step with a checkpoint; a second one kills.
    interrupted = threading.Event()

    def on_interrupt(signum: int, frame: Any) -> None:
        if interrupted.is_set():
            raise KeyboardInterrupt
        interrupted.set()
        print("\nstopping after this step (Ctrl-C again to quit now)", file=sys.stderr)

    hooks = TuneHooks(
        training=counter("Training", "step"),
        questions=counter("Questions", "chunk"),
        indexing=counter("Indexing", "doc"),
        stop=lambda step: interrupted.is_set(),
        say=lambda text: print(text, file=sys.stderr, flush=True),
    )
    previous = signal.signal(signal.SIGINT, on_interrupt)
    try:
        report = tune_embedder(settings, options, hooks)
    finally:
        signal.signal(signal.SIGINT, previous)
        for bar in bars.values():
            bar.close()
    if not report["finished"]:
        print(
            f"interrupted at step {report['steps']} of {report['of']}; checkpoint in "
            f"{report['out']}: run the same command (with --out {report['out']}) to resume",
            file=sys.stderr,
        )
        return 130
    out = Path(report["out"])
    print((out / "report.md").read_text(encoding="utf-8"))
    if args.json:
        print(json.dumps(report))
    return 0


def _switch(args: argparse.Namespace, settings: Settings, model: Path | None) -> int:
    """Activate `model` (None: roll back), here or through the server holding the data dir."""
    lock = lock_or_server(settings, "enclave tune")
    if isinstance(lock, str):
        print(f"the server at {lock} holds {settings.data_dir}; it switches while serving")
        return _switch_through_server(lock, model, args.json)
    try:
        return _switch_here(settings, model, args.json)
    finally:
        lock.release()


def _switch_here(settings: Settings, model: Path | None, as_json: bool) -> int:
    from tqdm import tqdm

    from retriever.components import Components
    from retriever.tuning.activation import EmbedderActivation

    activation = EmbedderActivation(Components(settings))
    outcome: dict[str, Any] = {}

    def run() -> None:
        try:
            outcome["generation"] = activation.activate(model) if model else activation.rollback()
        except Exception as exc:  # reported below, in the main thread
            outcome["error"] = exc

    worker = threading.Thread(target=run, name="enclave-embedder")
    worker.start()
    bar = tqdm(unit="chunk", desc="Re-embedding", file=sys.stderr, disable=None)
    while worker.is_alive():
        worker.join(0.5)
        status = activation.status
        bar.total = status.total
        bar.update(status.done - bar.n)
    bar.close()
    if "error" in outcome:
        raise outcome["error"]
    return _print_switched(activation.status.to_dict(), settings.data_dir, as_json)


def _print_switched(status: dict[str, Any], data_dir: Path, as_json: bool) -> int:
    current, previous = Generations(data_dir).read()
    if status.get("phase") == "failed":
        print(f"enclave: activation failed: {status.get('error')}", file=sys.stderr)
        return 1
    print(f"serving {current.describe()}; re-embedded {status.get('report')}")
    if previous:
        print(f"`enclave tune rollback` returns to {previous.describe()}")
    if as_json:
        print(json.dumps({"current": vars(current), "activation": status}))
    return 0


def _request(url: str, body: dict[str, Any] | None = None) -> dict[str, Any]:
    data = json.dumps(body).encode() if body is not None else None
    request = urllib.request.Request(
        url,
        data=data,
        method="POST" if data else "GET",
        headers={"Content-Type": "application/json", **auth_headers()},
    )
    try:
        with urllib.request.urlopen(request, timeout=60) as response:
            return dict(json.load(response))
    except urllib.error.HTTPError as exc:
        message = json.loads(exc.read() or b"{}").get("error", {}).get("message", str(exc))
        raise GenerationError(message) from None


def _switch_through_server(url: str, model: Path | None, as_json: bool) -> int:
    if model is None:
        _request(f"{url}/api/v1/embedder/rollback", {})
    else:
        _request(f"{url}/api/v1/embedder/activate", {"model": str(model)})
    while True:
        body = _request(f"{url}/api/v1/embedder")
        status = body["activation"]
        if status["phase"] in ("done", "failed"):
            break
        print(f"{status['phase']}: {status['done']}/{status['total']} chunks", file=sys.stderr)
        time.sleep(2)
    current = body["current"]
    if status["phase"] == "failed":
        print(f"enclave: activation failed: {status['error']}", file=sys.stderr)
        return 1
    print(f"the server now serves generation {current['number']} ({current['collection']})")
    if as_json:
        print(json.dumps(body))
    return 0
