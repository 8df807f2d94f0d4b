"""Fine-tuning: batches without in-batch duplicates, resume after an interruption (the same
model as a run never interrupted), and `tune embedder` end to end on a pairs file."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from config.settings import Settings
from retriever.embedder import SentenceTransformerEmbedder
from retriever.models import bundled_embedder_path
from retriever.tuning.pairs import Pair, write_pairs
from retriever.tuning.train import EmbedderTrainer, TrainConfig, batches, latest_checkpoint
from service.tuning import TuneHooks, TuneOptions, default_out, tune_embedder

FACTS = [
    ("How long is parental leave?", "Parental leave lasts sixteen weeks at full pay."),
    ("What is the hotel allowance?", "The nightly hotel allowance is 180 euros in capitals."),
    ("When do backups run?", "Backups run nightly at two o'clock to the tape library."),
    ("Who approves overtime?", "Overtime needs the written approval of the line manager."),
    ("Where is the NOC?", "The network operations centre is on the third floor in Leeds."),
    ("What is our AS number?", "Kestrel Telecom announces its prefixes from AS 64512."),
    ("How often are passwords changed?", "Passwords are changed every ninety days."),
    ("What is the BGP hold time?", "External BGP sessions use a hold time of 90 seconds."),
]
PAIRS = [Pair(q, p) for q, p in FACTS]
TINY = TrainConfig(epochs=1, batch_size=4, checkpoint_steps=1, max_seq_length=32)


def _weights(model_dir: Path) -> dict[str, torch.Tensor]:
    from safetensors.torch import load_file

    return load_file(str(next(model_dir.rglob("model.safetensors"))))


def test_batches_never_hold_a_query_or_passage_twice() -> None:
    pairs = [
        Pair("q1", "p1"),
        Pair("q1", "p2"),
        Pair("q2", "p1"),
        Pair("q3", "p3"),
        Pair("q4", "p4"),
    ]
    for seed in range(5):
        for batch in batches(pairs, 4, seed):
            assert len({pairs[i].query for i in batch}) == len(batch)
            assert len({pairs[i].passage for i in batch}) == len(batch)
        used = [i for b in batches(pairs, 4, seed) for i in b]
        # Each pair once; one may sit out when it clashes with every batch (a batch of 1
        # has no negatives).
        assert len(used) == len(set(used)) >= 4


def test_an_interrupted_run_resumes_to_the_same_model(tmp_path: Path) -> None:
    base = bundled_embedder_path()
    whole = EmbedderTrainer(base, tmp_path / "whole", TINY).train(PAIRS)
    assert whole.finished and whole.steps == 2

    interrupted = EmbedderTrainer(base, tmp_path / "resumed", TINY)
    first = interrupted.train(PAIRS, stop=lambda step: step == 1)
    assert not first.finished and first.steps == 1
    assert latest_checkpoint(tmp_path / "resumed") is not None
    assert not (tmp_path / "resumed" / "model").exists()

    seen: list[int] = []
    second = interrupted.train(PAIRS, progress=lambda step, total, loss: seen.append(step))
    assert second.finished and second.resumed_from == 1
    assert seen == [1, 2]  # step 1 was not redone
    assert latest_checkpoint(tmp_path / "resumed") is None  # cleaned up once finished
    a, b = _weights(tmp_path / "whole" / "model"), _weights(tmp_path / "resumed" / "model")
    assert a.keys() == b.keys()
    for name in a:
        torch.testing.assert_close(a[name], b[name])
    before = _weights(base)
    assert any(not torch.equal(before[n], a[n]) for n in a if n in before)  # it did learn
    # Trained on 32-token passages, it still reads as much as the base: the index's chunks
    # are sized for that.
    assert SentenceTransformerEmbedder(tmp_path / "resumed" / "model").max_tokens == 256


def test_a_checkpoint_of_other_pairs_is_not_resumed(tmp_path: Path) -> None:
    trainer = EmbedderTrainer(bundled_embedder_path(), tmp_path / "out", TINY)
    trainer.train(PAIRS, stop=lambda step: True)
    with pytest.raises(ValueError, match="other pairs"):
        trainer.train(PAIRS[:6])


def test_tune_embedder_on_a_pairs_file_writes_a_report_and_resumes(tmp_path: Path) -> None:
    settings = Settings(data_dir=tmp_path / "data", llm_backend="fake", watch="off")
    pairs_file = tmp_path / "pairs.jsonl"
    many = [Pair(f"{q} ({n})", f"{p} Case {n}.") for n in range(3) for q, p in FACTS]
    write_pairs(pairs_file, many)
    options = TuneOptions(
        pairs=str(pairs_file), config=TrainConfig(batch_size=8, max_seq_length=32)
    )
    out = default_out(settings.data_dir)
    assert out == settings.data_dir / "models" / "tuned-1"

    stopped = tune_embedder(
        settings, options, TuneHooks(stop=lambda step: True, say=lambda _: None)
    )
    assert stopped == {"finished": False, "out": str(out.resolve()), "steps": 1, "of": 3}
    assert default_out(settings.data_dir) == out  # unfinished: the default resumes it

    report = tune_embedder(settings, options, TuneHooks(say=lambda _: None))
    assert report["finished"] and report["training"]["steps"] == 3
    assert report["training"]["seconds"] > 0  # both sessions counted, recorded with the model
    assert report["pairs"]["train"] + report["pairs"]["heldout"] == len(many)
    held = report["heldout"]
    assert held["queries"] == 2 and set(held["old"]) == {"ndcg@10", "recall@10", "mrr@10"}
    assert json.loads((out / "report.json").read_text())["model"] == str((out / "model").resolve())
    assert "| ndcg@10 |" in (out / "report.md").read_text()
    assert default_out(settings.data_dir).name == "tuned-2"  # finished: a new run is new

    other = TuneOptions(pairs="auto", out=out)
    with pytest.raises(ValueError, match="use another --out"):
        tune_embedder(settings, other, TuneHooks(say=lambda _: None))
