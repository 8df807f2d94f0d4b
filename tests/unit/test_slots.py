from __future__ import annotations

import threading

import pytest

from retriever.slots import GenerationSlots, SlotsBusy


def test_slots_run_queue_then_refuse_in_arrival_order() -> None:
    slots = GenerationSlots(slots=1, queue=2)
    running = slots.admit()
    assert running.running
    second, third = slots.admit(), slots.admit()
    assert not second.running and not third.running
    with pytest.raises(SlotsBusy) as busy:
        slots.admit()
    assert busy.value.retry_after >= 1
    assert slots.stats() == {"slots": 1, "queue": 2, "active": 1, "waiting": 2}

    order: list[str] = []
    waiters = [
        threading.Thread(target=lambda t=t, n=n: (t.wait(), order.append(n), t.release()))
        for t, n in ((second, "second"), (third, "third"))
    ]

    def blocked(n: int) -> None:  # until n threads wait on the condition (CPython detail)
        for _ in range(1000):
            if len(slots._cond._waiters) == n:
                return
            threading.Event().wait(0.005)
        raise AssertionError("the waiter never blocked")

    waiters[0].start()
    blocked(1)
    waiters[1].start()
    blocked(2)
    running.release()
    for w in waiters:
        w.join(timeout=5)
    assert order == ["second", "third"]
    assert slots.stats()["active"] == slots.stats()["waiting"] == 0


def test_a_queued_ticket_released_without_running_gives_its_place_back() -> None:
    slots = GenerationSlots(slots=1, queue=1)
    running = slots.admit()
    queued = slots.admit()
    queued.release()
    queued.release()  # idempotent
    assert slots.stats()["waiting"] == 0
    again = slots.admit()  # the queue place is free again
    running.release()
    with again:
        assert again.running
    assert slots.stats() == {"slots": 1, "queue": 1, "active": 0, "waiting": 0}


def test_nobody_overtakes_the_queue() -> None:
    slots = GenerationSlots(slots=1, queue=1)
    running = slots.admit()
    queued = slots.admit()
    running.release()  # a slot is free, but `queued` is first in line
    with pytest.raises(SlotsBusy):
        slots.admit()
    queued.wait()
    assert queued.running
    queued.release()
