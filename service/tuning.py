"""`enclave tune embedder`: pairs -> fine-tuning -> old vs new evaluation -> report, all under
the output folder (by default `data/models/tuned-N`). Rerun with the same output folder to
resume: the pairs are kept, training restarts from its last checkpoint, finished steps are not
redone."""

from __future__ import annotations

import json
import random
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from config.settings import Settings
from retriever.components import Components
from retriever.question import Mode
from retriever.store import chunk_from_record
from retriever.tuning.pairs import (
    Pair,
    read_pairs,
    sample_chunks,
    split_heldout,
    structure_pairs,
    write_pairs,
)
from retriever.tuning.train import (
    DONE_MARKER,
    EmbedderTrainer,
    Progress,
    StopHook,
    TrainConfig,
    TrainResult,
)
from retriever.types import Chunk

Counter = Callable[[int, int], None]
PAIRS_META = "pairs.json"


@dataclass
class TuneOptions:
    pairs: str = "auto"  # "auto" or a JSONL file
    out: Path | None = None
    config: TrainConfig = field(default_factory=TrainConfig)
    questions: int = 200  # chunks the SLM writes a question for (auto)
    max_pairs: int = 5000  # pairs kept (auto), questions first
    beir: Path | None = None
    beir_modes: tuple[Mode, ...] = ("dense", "hybrid")


@dataclass
class TuneHooks:
    training: Progress | None = None
    questions: Counter | None = None
    indexing: Counter | None = None
    stop: StopHook | None = None  # tests interrupt training with it
    say: Callable[[str], None] = print


def default_out(data_dir: Path) -> Path:
    """The last `models/tuned-N` if its training is unfinished (resume), else the next N."""
    # Only `tuned-N` itself: ONNX exports of a tuned model share the folder (`tuned-N-<digest>-r1`).
    runs = sorted(
        (int(p.name.removeprefix("tuned-")), p)
        for p in (data_dir / "models").glob("tuned-*")
        if p.name.removeprefix("tuned-").isdigit()
    )
    if runs and not (runs[-1][1] / "model" / DONE_MARKER).exists():
        return runs[-1][1]
    return data_dir / "models" / f"tuned-{runs[-1][0] + 1 if runs else 1}"


def indexed_chunks(components: Components) -> list[Chunk]:
    return [chunk_from_record(*record) for record in components.store.records()]


def auto_pairs(
    components: Components, options: TuneOptions, hooks: TuneHooks
) -> tuple[list[Pair], dict[str, Any]]:
    """Pairs from the index itself: titles and headings for their sections, and questions the
    SLM writes for sampled chunks (kept only if they pass the filter)."""
    from retriever.tuning.questions import question_pairs

    chunks = indexed_chunks(components)
    if not chunks:
        raise ValueError(
            f"no indexed documents in {components.settings.data_dir}: ingest some first"
        )
    structure = structure_pairs(chunks)
    questions: list[Pair] = []
    written = 0
    if options.questions:
        sample = sample_chunks([c for c in chunks if len(c.text) >= 200], options.questions)
        hooks.say(f"writing questions for {len(sample)} chunks with the local model")
        questions, written = question_pairs(components.generator, sample, hooks.questions)
    random.Random(options.config.seed).shuffle(structure)
    pairs = (questions + structure)[: options.max_pairs]
    meta = {
        "chunks": len(chunks),
        "questions_written": written,
        "questions_kept": len(questions),
        "structure_pairs": len(structure),
    }
    return pairs, meta


def prepare_pairs(
    components: Components, options: TuneOptions, out: Path, hooks: TuneHooks
) -> tuple[list[Pair], list[Pair], dict[str, Any]]:
    """(train, held out, description), made once per output folder and reused on resume."""
    source = "auto" if options.pairs == "auto" else str(Path(options.pairs).resolve())
    meta_path = out / PAIRS_META
    if meta_path.exists():
        meta = json.loads(meta_path.read_text())
        if meta["source"] != source:
            raise ValueError(
                f"{out} was tuned on pairs from {meta['source']}, not {source}; use another --out"
            )
        return read_pairs(out / "pairs-train.jsonl"), _read_optional(out), meta
    if options.pairs == "auto":
        pairs, details = auto_pairs(components, options, hooks)
    else:
        pairs, details = read_pairs(Path(options.pairs)), {}
    train, heldout = split_heldout(pairs)
    kinds: dict[str, int] = {}
    for pair in pairs:
        kinds[pair.source] = kinds.get(pair.source, 0) + 1
    meta = {
        "source": source,
        "train": len(train),
        "heldout": len(heldout),
        "by_kind": kinds,
        **details,
    }
    out.mkdir(parents=True, exist_ok=True)
    write_pairs(out / "pairs-train.jsonl", train)
    write_pairs(out / "pairs-heldout.jsonl", heldout)
    meta_path.write_text(json.dumps(meta, indent=2))  # last: marks the pairs complete
    return train, heldout, meta


def _read_optional(out: Path) -> list[Pair]:
    path = out / "pairs-heldout.jsonl"
    return read_pairs(path) if path.exists() and path.stat().st_size else []


def tune_embedder(settings: Settings, options: TuneOptions, hooks: TuneHooks) -> dict[str, Any]:
    """Run (or resume) a tuning; returns the report, or `{"finished": False, ...}` when the
    stop hook interrupted training."""
    from retriever.embedder import load_embedder
    from retriever.tuning.heldout import compare
    from retriever.tuning.report import write_report

    components = Components(settings)
    out = (options.out or default_out(settings.data_dir)).resolve()
    base = components.embedder_path()
    train, heldout, pairs_meta = prepare_pairs(components, options, out, hooks)
    hooks.say(f"{len(train)} training pairs, {len(heldout)} held out; output in {out}")

    trainer = EmbedderTrainer(base, out, options.config)
    result: TrainResult = trainer.train(train, hooks.training, hooks.stop)
    if not result.finished:
        return {"finished": False, "out": str(out), "steps": result.steps, "of": result.total_steps}
    training = json.loads((trainer.model_dir / "training.json").read_text())

    old = components.embedder
    # Compared as it would serve: run by the same backend as the current embedder.
    new = load_embedder(
        trainer.model_dir,
        settings.embed_backend,
        settings.embed_batch_size,
        settings.model_cache_dir,
    )
    report: dict[str, Any] = {
        "finished": True,
        "out": str(out),
        "model": str(trainer.model_dir),
        "base_model": str(base),
        "pairs": pairs_meta,
        "config": {k: v for k, v in training["identity"].items() if k != "pairs"},
        "training": {
            "steps": training["steps"],
            "seconds": training.get("seconds", round(result.seconds, 1)),
            "first_loss": training["losses"][0] if training["losses"] else None,
            "last_loss": training["losses"][-1] if training["losses"] else None,
        },
        "heldout": compare(old, new, heldout, train) if heldout else None,
    }
    if options.beir is not None:
        report["beir"] = beir_comparison(
            settings,
            base,
            trainer.model_dir,
            options,
            hooks,
            old_is_configured=components.generation.number == 0,
        )
    report["created_at"] = time.strftime("%Y-%m-%dT%H:%M:%S")
    write_report(out, report)
    return report


def beir_comparison(
    settings: Settings,
    base: Path,
    tuned: Path,
    options: TuneOptions,
    hooks: TuneHooks,
    old_is_configured: bool = False,
) -> dict[str, Any]:
    """Old and new model on the BEIR folder's test split, each mode (cached indexes under
    data/eval, one per model)."""
    from ingest.evaluate import evaluate_beir

    assert options.beir is not None
    results: dict[str, Any] = {}
    models = {
        # The configured model keeps its setting: its eval index is the one `enclave eval` made.
        "old": settings
        if old_is_configured
        else settings.model_copy(update={"embed_model": str(base)}),
        "new": settings.model_copy(update={"embed_model": str(tuned)}),
    }
    for mode in options.beir_modes:
        results[mode] = {}
        for name, s in models.items():
            hooks.say(f"BEIR {options.beir.name}: {mode} retrieval with the {name} model")
            results[mode][name] = evaluate_beir(s, options.beir, "test", mode, 0, hooks.indexing)
    return results
