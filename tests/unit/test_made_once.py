"""made_once: a derived model file is made by one process, appears whole, or not at all."""

from __future__ import annotations

import multiprocessing
import time
from pathlib import Path

import pytest

from retriever.made_once import made_once


def _slow_make(out: Path) -> None:
    with (out.parent.parent / "makes.log").open("a") as log:
        log.write("made\n")
    time.sleep(0.3)
    out.write_text("weights")


def _in_another_process(target: str) -> None:
    made_once(Path(target), _slow_make)


def test_made_by_the_first_caller_only(tmp_path: Path) -> None:
    target = tmp_path / "cache" / "model.onnx"
    assert made_once(target, _slow_make) == target
    assert target.read_text() == "weights"
    assert made_once(target, _slow_make) == target
    assert (tmp_path / "cache" / "makes.log").read_text() == "made\n"


def test_processes_starting_at_once_make_it_once(tmp_path: Path) -> None:
    target = tmp_path / "cache" / "model.onnx"
    context = multiprocessing.get_context("spawn")
    workers = [context.Process(target=_in_another_process, args=(str(target),)) for _ in range(3)]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join(60)
        assert worker.exitcode == 0
    assert target.read_text() == "weights"
    assert (tmp_path / "cache" / "makes.log").read_text() == "made\n"


def test_a_failed_make_leaves_nothing_behind(tmp_path: Path) -> None:
    target = tmp_path / "cache" / "model.onnx"

    def half_then_crash(out: Path) -> None:
        out.write_text("half")
        raise RuntimeError("out of disk")

    with pytest.raises(RuntimeError, match="out of disk"):
        made_once(target, half_then_crash)
    assert not target.exists()
    assert [p.name for p in target.parent.iterdir() if not p.name.endswith(".lock")] == []
    assert made_once(target, _slow_make).read_text() == "weights"


def test_a_make_that_writes_nothing_is_an_error(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match=r"model\.onnx"):
        made_once(tmp_path / "model.onnx", lambda out: None)
    assert not (tmp_path / "model.onnx").exists()
