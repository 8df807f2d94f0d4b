"""Fine-tune a sentence-transformers model on (query, passage) pairs with in-batch negatives
(MultipleNegativesRankingLoss), on the CPU, checkpointing so an interrupted run resumes.

The batch order and every random draw depend only on the seed and the step number, so a run
that resumes from a checkpoint takes the same steps as one that was never interrupted."""

from __future__ import annotations

import json
import random
import shutil
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import retriever.privacy  # noqa: F401
from retriever.tuning.pairs import Pair

Progress = Callable[[int, int, float], None]  # (step, total steps, loss)
StopHook = Callable[[int], bool]  # after a step: True stops (after a checkpoint)

STATE_FILE = "trainer_state.json"
DONE_MARKER = "complete"


@dataclass(frozen=True)
class TrainConfig:
    epochs: int = 1
    batch_size: int = 32
    learning_rate: float = 3e-5
    warmup_fraction: float = 0.1
    checkpoint_steps: int = 10
    seed: int = 13
    max_seq_length: int = 256

    def identity(self, base_model: Path, pairs: list[Pair]) -> dict[str, Any]:
        """What a checkpoint must match to be resumed: same settings, model and pairs."""
        digest = __import__("hashlib").sha256()
        for pair in pairs:
            digest.update(f"{pair.query}\x00{pair.passage}\x01".encode())
        return {**asdict(self), "base_model": str(base_model), "pairs": digest.hexdigest()}


@dataclass
class TrainResult:
    finished: bool
    steps: int
    total_steps: int
    seconds: float
    resumed_from: int = 0
    losses: list[float] = field(default_factory=list)
    model_dir: Path | None = None


def batches(pairs: list[Pair], batch_size: int, seed: int) -> list[list[int]]:
    """Shuffled batches in which no query and no passage appears twice: a duplicate would be
    an in-batch negative that is in fact a positive."""
    order = list(range(len(pairs)))
    random.Random(seed).shuffle(order)
    result: list[list[int]] = []
    open_batches: list[tuple[list[int], set[str]]] = []
    for i in order:
        keys = {"q:" + pairs[i].query, "p:" + pairs[i].key}
        for members, used in open_batches:
            if not keys & used:
                members.append(i)
                used |= keys
                if len(members) == batch_size:
                    result.append(members)
                    open_batches.remove((members, used))
                break
        else:
            open_batches.append(([i], set(keys)))
            if batch_size == 1:
                result.append(open_batches.pop()[0])
    result += [members for members, _ in open_batches if len(members) >= 2]
    return result


def plan(pairs: list[Pair], config: TrainConfig) -> list[list[int]]:
    """Every step's batch, epoch after epoch."""
    steps: list[list[int]] = []
    for epoch in range(config.epochs):
        steps += batches(pairs, config.batch_size, config.seed + epoch)
    return steps


def _checkpoints(out: Path) -> list[tuple[int, Path]]:
    found = []
    for path in out.glob("checkpoint-*"):
        if (path / DONE_MARKER).exists() and path.name.split("-")[-1].isdigit():
            found.append((int(path.name.split("-")[-1]), path))
    return sorted(found)


def latest_checkpoint(out: Path) -> tuple[int, Path] | None:
    found = _checkpoints(out)
    return found[-1] if found else None


def _max_seq_length(model_dir: Path) -> int:
    from sentence_transformers import SentenceTransformer

    model = SentenceTransformer(str(model_dir), device="cpu", local_files_only=True)
    return int(model.max_seq_length or 512)


class EmbedderTrainer:
    def __init__(self, base_model: Path, out: Path, config: TrainConfig) -> None:
        self.base_model = base_model
        self.out = out
        self.config = config

    @property
    def model_dir(self) -> Path:
        return self.out / "model"

    def train(
        self,
        pairs: list[Pair],
        progress: Progress | None = None,
        stop: StopHook | None = None,
    ) -> TrainResult:
        import torch
        from sentence_transformers import SentenceTransformer
        from sentence_transformers.sentence_transformer.losses import (
            MultipleNegativesRankingLoss,
        )

        config = self.config
        steps = plan(pairs, config)
        if not steps:
            raise ValueError("too few distinct pairs to make a batch of two")
        total = len(steps)
        identity = config.identity(self.base_model, pairs)
        if (self.model_dir / DONE_MARKER).exists():
            finished = json.loads((self.model_dir / "training.json").read_text())
            if finished["identity"] != identity:
                raise ValueError(
                    f"{self.out} holds a model tuned on other pairs or settings; use another --out"
                )
            return TrainResult(True, total, total, 0.0, total, model_dir=self.model_dir)
        self.out.mkdir(parents=True, exist_ok=True)

        checkpoint = latest_checkpoint(self.out)
        start_step, state = 0, None
        if checkpoint is not None:
            state = json.loads((checkpoint[1] / STATE_FILE).read_text())
            if state["identity"] != identity:
                raise ValueError(
                    f"{self.out} holds a run with other pairs or settings; use another --out"
                )
            start_step = checkpoint[0]
        source = checkpoint[1] / "model" if checkpoint else self.base_model
        base_reads = _max_seq_length(self.base_model)
        model = SentenceTransformer(str(source), device="cpu", local_files_only=True)
        # Shorter passages make training steps cheaper; the saved model reads as many tokens
        # as the base (the index's chunks are sized for it).
        model.max_seq_length = min(config.max_seq_length, base_reads)
        loss_fn = MultipleNegativesRankingLoss(model)
        optimizer = torch.optim.AdamW(model.parameters(), lr=config.learning_rate)
        warmup = max(1, int(total * config.warmup_fraction))

        def schedule(step: int) -> float:
            if step < warmup:
                return (step + 1) / warmup
            return max(0.0, (total - step) / max(1, total - warmup))

        scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, schedule)
        losses: list[float] = list(state["losses"]) if state else []
        earlier = float(state.get("seconds", 0.0)) if state else 0.0  # before the interruption
        if checkpoint is not None:
            saved = torch.load(checkpoint[1] / "optimizer.pt", weights_only=True)
            optimizer.load_state_dict(saved["optimizer"])
            scheduler.load_state_dict(saved["scheduler"])

        began = time.monotonic()
        model.train()
        if progress:
            progress(start_step, total, losses[-1] if losses else float("nan"))
        for step in range(start_step, total):
            torch.manual_seed(config.seed * 100_003 + step)  # dropout: same draws on resume
            batch = [pairs[i] for i in steps[step]]
            queries = model.preprocess([p.query for p in batch])
            passages = model.preprocess([p.passage for p in batch])
            loss = loss_fn([queries, passages], None)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
            optimizer.step()
            scheduler.step()
            optimizer.zero_grad()
            losses.append(round(float(loss.detach()), 5))
            done = step + 1
            if progress:
                progress(done, total, losses[-1])
            stopping = stop is not None and stop(done) and done < total
            if done < total and (done % config.checkpoint_steps == 0 or stopping):
                spent = earlier + time.monotonic() - began
                self._checkpoint(model, optimizer, scheduler, done, identity, losses, spent)
            if stopping:
                seconds = time.monotonic() - began
                return TrainResult(False, done, total, seconds, start_step, losses)

        model.eval()
        model.max_seq_length = base_reads
        tmp = self.out / "model.partial"
        shutil.rmtree(tmp, ignore_errors=True)
        model.save(str(tmp))
        spent = round(earlier + time.monotonic() - began, 1)
        (tmp / "training.json").write_text(
            json.dumps(
                {"identity": identity, "steps": total, "seconds": spent, "losses": losses},
                indent=1,
            )
        )
        (tmp / DONE_MARKER).write_text("")
        shutil.rmtree(self.model_dir, ignore_errors=True)
        tmp.rename(self.model_dir)
        for _, path in _checkpoints(self.out):
            shutil.rmtree(path, ignore_errors=True)
        seconds = time.monotonic() - began
        return TrainResult(True, total, total, seconds, start_step, losses, self.model_dir)

    def _checkpoint(
        self,
        model: Any,
        optimizer: Any,
        scheduler: Any,
        step: int,
        identity: dict[str, Any],
        losses: list[float],
        seconds: float,
    ) -> None:
        """Written beside the last one, marked complete last: a kill mid-write leaves the
        previous checkpoint intact."""
        import torch

        path = self.out / f"checkpoint-{step}"
        shutil.rmtree(path, ignore_errors=True)
        path.mkdir(parents=True)
        model.save(str(path / "model"))
        torch.save(
            {"optimizer": optimizer.state_dict(), "scheduler": scheduler.state_dict()},
            path / "optimizer.pt",
        )
        state = {"step": step, "identity": identity, "losses": losses, "seconds": seconds}
        (path / STATE_FILE).write_text(json.dumps(state))
        (path / DONE_MARKER).write_text("")
        for older, old_path in _checkpoints(self.out):
            if older < step:
                shutil.rmtree(old_path, ignore_errors=True)
