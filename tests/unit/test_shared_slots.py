"""Generation slots shared through Redis (several web processes): the same admission as the
in-process slots, plus leases so a process that dies holding a place does not leak it."""

from __future__ import annotations

import shutil
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from retriever.shared_slots import RedisGenerationSlots
from retriever.slots import SlotsBusy
from tests.integration.stack import redis_server

pytestmark = pytest.mark.skipif(
    shutil.which("redis-server") is None, reason="needs redis-server (make test installs it)"
)


@pytest.fixture(scope="module")
def redis_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    with redis_server(tmp_path_factory.mktemp("redis")) as url:
        yield url


def make(redis_url: str, prefix: str, **kwargs: float) -> RedisGenerationSlots:
    import redis

    return RedisGenerationSlots(redis.Redis.from_url(redis_url), prefix=prefix, **kwargs)  # type: ignore[arg-type]


def test_two_processes_share_one_slot_and_one_queue(redis_url: str, tmp_path: Path) -> None:
    # Two instances stand for two web processes: each sees the other's places.
    web1, web2 = make(redis_url, "t1", slots=1, queue=1), make(redis_url, "t1", slots=1, queue=1)
    running = web1.admit()
    assert running.running
    queued = web2.admit()
    assert not queued.running
    with pytest.raises(SlotsBusy) as busy:
        web1.admit()
    assert busy.value.retry_after >= 1
    assert web1.stats() == {"slots": 1, "queue": 1, "active": 1, "waiting": 1}
    assert not queued.wait(timeout=0.2)  # the slot is still taken
    released = threading.Timer(0.2, running.release)
    released.start()
    assert queued.wait(timeout=5)
    assert web2.stats()["active"] == 1 and web2.stats()["waiting"] == 0
    queued.release()
    queued.release()  # idempotent
    assert web1.stats() == {"slots": 1, "queue": 1, "active": 0, "waiting": 0}


def test_nobody_overtakes_the_queue(redis_url: str) -> None:
    slots = make(redis_url, "t2", slots=1, queue=1)
    running = slots.admit()
    queued = slots.admit()
    running.release()  # a slot is free, but `queued` is first in line
    with pytest.raises(SlotsBusy):
        slots.admit()
    assert queued.wait(timeout=5)
    queued.release()


def test_first_come_first_served_across_processes(redis_url: str) -> None:
    web1, web2 = make(redis_url, "t3", slots=1, queue=2), make(redis_url, "t3", slots=1, queue=2)
    running = web1.admit()
    first, second = web2.admit(), web1.admit()
    order: list[str] = []
    threads = [
        threading.Thread(target=lambda t=t, n=n: (t.wait(5), order.append(n), t.release()))
        for t, n in ((second, "second"), (first, "first"))
    ]
    for thread in threads:
        thread.start()
    time.sleep(0.2)
    running.release()
    for thread in threads:
        thread.join(timeout=10)
    assert order == ["first", "second"]


def test_a_dead_holder_loses_its_slot_when_the_lease_ends(redis_url: str) -> None:
    slots = make(redis_url, "t4", slots=1, queue=0, lease_s=1.0)
    slots.admit()  # never released: its process died
    with pytest.raises(SlotsBusy):
        slots.admit()
    time.sleep(1.2)
    again = slots.admit()
    assert again.running
    again.release()


def test_rate_limit_buckets_are_shared_by_web_processes(redis_url: str) -> None:
    """With redis_url, a caller's questions count once across every web process."""
    import redis

    from service.limits import RedisRateLimiter, build_limiter

    web1 = build_limiter(2, redis_url)
    web2 = build_limiter(2, redis_url)
    assert isinstance(web1, RedisRateLimiter)
    assert web1.take("key:ann") == 0 and web2.take("key:ann") == 0  # the bucket holds 2
    wait = web1.take("key:ann")
    assert 0 < wait <= 30  # empty for both processes: a token every 30 s
    assert web2.take("key:ann") > 0
    assert web2.take("key:bob") == 0  # another caller has a bucket of its own
    assert redis.Redis.from_url(redis_url).ttl("enclave:rate:key:ann") > 0  # idle buckets expire
