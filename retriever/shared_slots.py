"""Generation slots shared by every web process through Redis (`redis_url` set): the same
admission as `GenerationSlots` (a few running, a bounded first-come-first-served queue, then
`SlotsBusy`), counted across gunicorn workers and nodes instead of per process.

Each place is a lease: a process that dies while holding a slot or a queue place loses it when
its lease runs out, so a crash never leaks capacity. The decisions are Lua scripts, atomic in
Redis, and use Redis's clock, so the web nodes' clocks do not matter.
"""

from __future__ import annotations

import time
import uuid
from typing import Any

from retriever.slots import GenerationSlots, SlotsBusy, Ticket, retry_after_estimate

POLL_S = 0.05  # how often a queued request asks whether it may run

_PURGE = """
local t = redis.call('TIME')
local now = tonumber(t[1]) + tonumber(t[2]) / 1e6
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now)
for _, m in ipairs(redis.call('ZRANGE', KEYS[2], 0, -1)) do
  local expires = tonumber(redis.call('HGET', KEYS[3], m) or '0')
  if expires < now then
    redis.call('ZREM', KEYS[2], m)
    redis.call('HDEL', KEYS[3], m)
  end
end
"""

# KEYS: active, waiting, leases, sequence. ARGV: id, slots, queue, lease seconds.
# Returns 1 running, 0 queued, -1 busy.
_ADMIT = (
    _PURGE
    + """
local active = redis.call('ZCARD', KEYS[1])
local waiting = redis.call('ZCARD', KEYS[2])
if active < tonumber(ARGV[2]) and waiting == 0 then
  redis.call('ZADD', KEYS[1], now + tonumber(ARGV[4]), ARGV[1])
  return 1
end
if waiting < tonumber(ARGV[3]) then
  redis.call('ZADD', KEYS[2], redis.call('INCR', KEYS[4]), ARGV[1])
  redis.call('HSET', KEYS[3], ARGV[1], now + tonumber(ARGV[4]))
  return 0
end
return -1
"""
)

# A queued request moves to a slot when it is among the first `free slots` in the queue.
# Returns 1 running now, 0 still waiting (lease renewed), -1 no longer queued.
_PROMOTE = (
    _PURGE
    + """
local rank = redis.call('ZRANK', KEYS[2], ARGV[1])
if not rank then return -1 end
redis.call('HSET', KEYS[3], ARGV[1], now + tonumber(ARGV[4]))
local free = tonumber(ARGV[2]) - redis.call('ZCARD', KEYS[1])
if rank < free then
  redis.call('ZREM', KEYS[2], ARGV[1])
  redis.call('HDEL', KEYS[3], ARGV[1])
  redis.call('ZADD', KEYS[1], now + tonumber(ARGV[4]), ARGV[1])
  return 1
end
return 0
"""
)

_STATS = (
    _PURGE
    + """
return {redis.call('ZCARD', KEYS[1]), redis.call('ZCARD', KEYS[2])}
"""
)


class RedisGenerationSlots(GenerationSlots):
    def __init__(
        self,
        client: Any,
        slots: int = 1,
        queue: int = 8,
        lease_s: float = 180.0,
        prefix: str = "enclave:generation",
    ) -> None:
        """`client`: a redis.Redis; `lease_s`: how long a place outlives a process that died
        holding it (a running generation ends within llm_timeout_s, so a little above)."""
        super().__init__(slots, queue)
        self.client = client
        self.lease_s = lease_s
        self.keys = [f"{prefix}:{k}" for k in ("active", "waiting", "leases", "sequence")]
        self._mean_key = f"{prefix}:mean_hold_s"
        self._admit = client.register_script(_ADMIT)
        self._promote = client.register_script(_PROMOTE)
        self._stats = client.register_script(_STATS)

    def _args(self, ticket_id: str) -> list[object]:
        return [ticket_id, self.slots, self.queue, self.lease_s]

    def admit(self) -> Ticket:
        ticket_id = uuid.uuid4().hex
        placed = int(self._admit(keys=self.keys, args=self._args(ticket_id)))
        if placed < 0:
            raise SlotsBusy(self._retry_after())
        return Ticket(self, ticket_id, running=placed == 1)

    def stats(self) -> dict[str, int]:
        active, waiting = self._stats(keys=self.keys)
        return {
            "slots": self.slots,
            "queue": self.queue,
            "active": int(active),
            "waiting": int(waiting),
        }

    def _retry_after(self) -> int:
        mean = float(self.client.get(self._mean_key) or 1.0)
        return retry_after_estimate(mean, self.stats()["waiting"], self.slots)

    def _wait(self, ticket_id: str, timeout: float | None) -> bool:
        deadline = None if timeout is None else time.monotonic() + timeout
        while True:
            placed = int(self._promote(keys=self.keys, args=self._args(ticket_id)))
            if placed == 1:
                return True
            if placed < 0:  # the lease ran out (this process stalled): queue again
                placed = int(self._admit(keys=self.keys, args=self._args(ticket_id)))
                if placed == 1:
                    return True
                if placed < 0:
                    return False
            if deadline is not None and time.monotonic() >= deadline:
                return False
            time.sleep(POLL_S)

    def _release(self, ticket_id: str, running: bool, held_s: float | None) -> None:
        active, waiting, leases, _ = self.keys
        pipe = self.client.pipeline()
        pipe.zrem(active, ticket_id)
        pipe.zrem(waiting, ticket_id)
        pipe.hdel(leases, ticket_id)
        pipe.execute()
        if running and held_s is not None:
            mean = float(self.client.get(self._mean_key) or 1.0)
            self.client.set(self._mean_key, 0.7 * mean + 0.3 * held_s)
