"""Per-caller rate limit: a token bucket per API key (or logged-in user), refilled at
`rate_limit_per_minute`; an empty bucket is a 429 with Retry-After. In one process by default;
with `redis_url` the buckets live in Redis, so every web process and node counts together."""

from __future__ import annotations

import math
import threading
import time
from collections.abc import Callable
from typing import Any


class RateLimiter:
    def __init__(self, per_minute: int, clock: Callable[[], float] = time.monotonic) -> None:
        self.capacity = float(per_minute)
        self.rate = per_minute / 60.0  # tokens per second
        self._clock = clock
        self._buckets: dict[str, tuple[float, float]] = {}  # caller -> (tokens, at)
        self._lock = threading.Lock()

    def take(self, caller: str) -> float:
        """0 if `caller` may go on now (one token taken); else the seconds until it may."""
        if self.capacity <= 0:
            return 0.0
        now = self._clock()
        with self._lock:
            tokens, at = self._buckets.get(caller, (self.capacity, now))
            tokens = min(self.capacity, tokens + (now - at) * self.rate)
            if tokens >= 1:
                self._buckets[caller] = (tokens - 1, now)
                return 0.0
            self._buckets[caller] = (tokens, now)
            return (1 - tokens) / self.rate

    @staticmethod
    def retry_after(wait_s: float) -> str:
        return str(max(1, math.ceil(wait_s)))


# KEYS: the caller's bucket. ARGV: capacity, tokens per second. Returns 0 (a token taken) or
# the seconds until one is there, as a string (Lua numbers lose their fraction on the way out).
# Redis's clock, so the web nodes' clocks do not matter; an idle bucket expires when it is full.
_TAKE = """
local t = redis.call('TIME')
local now = tonumber(t[1]) + tonumber(t[2]) / 1e6
local capacity, rate = tonumber(ARGV[1]), tonumber(ARGV[2])
local state = redis.call('HMGET', KEYS[1], 'tokens', 'at')
local tokens = tonumber(state[1]) or capacity
local at = tonumber(state[2]) or now
tokens = math.min(capacity, tokens + (now - at) * rate)
local wait = 0
if tokens >= 1 then tokens = tokens - 1 else wait = (1 - tokens) / rate end
redis.call('HSET', KEYS[1], 'tokens', tostring(tokens), 'at', tostring(now))
redis.call('EXPIRE', KEYS[1], math.ceil(capacity / rate) + 1)
return tostring(wait)
"""


class RedisRateLimiter(RateLimiter):
    """The same bucket per caller, kept in Redis (atomic Lua script)."""

    def __init__(self, client: Any, per_minute: int, prefix: str = "enclave:rate") -> None:
        super().__init__(per_minute)
        self.prefix = prefix
        self._take = client.register_script(_TAKE)

    def take(self, caller: str) -> float:
        if self.capacity <= 0:
            return 0.0
        return float(self._take(keys=[f"{self.prefix}:{caller}"], args=[self.capacity, self.rate]))


def build_limiter(per_minute: int, redis_url: str) -> RateLimiter:
    if not redis_url:
        return RateLimiter(per_minute)
    import redis

    return RedisRateLimiter(redis.Redis.from_url(redis_url), per_minute)
