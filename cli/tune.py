"""`enclave tune ...`: make training pairs, tune the embedder, activate a tuned model, roll
back, show which embedder serves."""

from __future__ import annotations

import json
import signal
import sys
import threading
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

import click

from cli.common import enclave_command, path_type
from cli.handoff import auth_headers
from config.settings import Settings
from ingest.lock import lock_or_server
from retriever.tuning.generations import GenerationError, Generations
from retriever.tuning.train import TrainConfig

tune = click.Group(
    "tune",
    help="adapt the embedder to the indexed documents",
    short_help="adapt the embedder to the indexed documents",
)


@enclave_command("embedder", "fine-tune the embedder", parent=tune)
@click.option(
    "--pairs",
    default="auto",
    show_default=True,
    help="'auto' (titles, headings and SLM-written questions from the index) or a JSONL "
    'file of {"query", "passage"} lines',
)
@click.option("--epochs", type=int, default=1, show_default=True)
@click.option("--out", type=path_type(), help="output folder (default: data/models/tuned-N)")
@click.option("--batch-size", type=int, default=32, show_default=True)
@click.option("--lr", type=float, default=5e-5, show_default=True, help="peak learning rate")
@click.option(
    "--max-seq-length",
    type=int,
    default=192,
    show_default=True,
    help="tokens of a passage read in training",
)
@click.option("--checkpoint-steps", type=int, default=10, show_default=True)
@click.option(
    "--questions",
    type=int,
    default=200,
    show_default=True,
    help="chunks the SLM writes a question for",
)
@click.option(
    "--max-pairs", type=int, default=5000, show_default=True, help="most pairs used (auto)"
)
@click.option("--beir", type=path_type(), help="also compare on this BEIR folder's test split")
@click.option("--json", "as_json", is_flag=True, help="end with the report as one JSON line")
def embedder(settings: Settings, **options: Any) -> int:
    return _tune(settings, **options)


@enclave_command("pairs", "write a pairs JSONL from a BEIR folder's qrels", parent=tune)
@click.option("--beir", type=path_type(), required=True)
@click.option("--split", default="train", show_default=True)
@click.option("--out", type=path_type(), required=True, help="JSONL file to write")
def pairs(settings: Settings, beir: Path, split: str, out: Path) -> int:
    from retriever.tuning.pairs import pairs_from_beir, write_pairs

    n = write_pairs(out, pairs_from_beir(beir, split))
    print(f"{n} pairs from {beir} ({split} split) written to {out}")
    return 0


@enclave_command("activate", "serve from a tuned model", parent=tune)
@click.argument("model", type=path_type())
@click.option("--json", "as_json", is_flag=True)
def activate(settings: Settings, model: Path, as_json: bool) -> int:
    """A `tune embedder` output folder or a model."""
    return _switch(settings, model.resolve(), as_json)


@enclave_command("rollback", "back to the previous embedder", parent=tune)
@click.option("--json", "as_json", is_flag=True)
def rollback(settings: Settings, as_json: bool) -> int:
    return _switch(settings, None, as_json)


@enclave_command("status", "which embedder serves", parent=tune)
@click.option("--json", "as_json", is_flag=True)
def status(settings: Settings, as_json: bool) -> int:
    current, previous = Generations(settings.data_dir).read()
    body = {"current": vars(current), "previous": vars(previous) if previous else None}
    if as_json:
        print(json.dumps(body))
    else:
        print(f"serving: {current.describe()}, collection {current.collection}")
        if previous:
            print(f"rollback goes to: {previous.describe()}")
    return 0


def _tune(
    settings: Settings,
    pairs: str,
    epochs: int,
    out: Path | None,
    batch_size: int,
    lr: float,
    max_seq_length: int,
    checkpoint_steps: int,
    questions: int,
    max_pairs: int,
    beir: Path | None,
    as_json: bool,
) -> int:
    from tqdm import tqdm

    from service.tuning import TuneHooks, TuneOptions, tune_embedder

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
        pairs=pairs,
        out=out,
        config=TrainConfig(
            epochs=epochs,
            batch_size=batch_size,
            learning_rate=lr,
            max_seq_length=max_seq_length,
            checkpoint_steps=checkpoint_steps,
        ),
        questions=questions,
        max_pairs=max_pairs,
        beir=beir,
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
    folder = Path(report["out"])
    print((folder / "report.md").read_text(encoding="utf-8"))
    if as_json:
        print(json.dumps(report))
    return 0


def _switch(settings: Settings, model: Path | None, as_json: bool) -> int:
    """Activate `model` (None: roll back), here or through the server holding the data dir."""
    lock = lock_or_server(settings, "enclave tune")
    if isinstance(lock, str):
        print(f"the server at {lock} holds {settings.data_dir}; it switches while serving")
        return _switch_through_server(lock, model, as_json)
    try:
        return _switch_here(settings, model, as_json)
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
